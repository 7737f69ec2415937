"""The vLLM teacher actor on its own (no Ray): real CPU engine, k samples, top-k logprobs."""

import asyncio
import gc
import json

import pyarrow as pa
import pytest

from distill.actors.teacher import VLLMTeacher
from distill.config import load_config
from distill.data.schema import PROBLEM_SCHEMA
from distill.data.sources import load_problems
from distill.data.store import TraceStore

pytestmark = pytest.mark.e2e


def test_vllm_teacher_samples_logprobs_and_quarantine(tiny_model, tmp_path):
    cfg = load_config(
        "smoke",
        [
            "teacher.samples=2",
            "teacher.max_tokens=6",
            "teacher.temperature=1.0",
            "teacher.logprobs=2",
            "teacher.max_model_len=128",
            "teacher.cpu_threads_bind=null",
        ],
    )
    problems = load_problems(cfg.sources).problems[:3]
    problems.append({**problems[0], "problem_id": "too-long", "question": "7 + 7 " * 100})
    events = []
    teacher = VLLMTeacher(cfg.teacher, cfg.prompt, tiny_model, "tiny", str(tmp_path), events)
    try:
        out = asyncio.run(teacher(pa.Table.from_pylist(problems, schema=PROBLEM_SCHEMA))).to_pylist()
    finally:
        teacher.own.close()  # now, not at interpreter exit when its module globals are gone
        del teacher.own, teacher.engine
        gc.collect()
    assert [(r["problem_id"], r["sample_index"]) for r in out] == [
        (p["problem_id"], j) for p in problems[:3] for j in range(2)
    ]
    assert len({r["trace_id"] for r in out}) == 6
    for r in out:
        assert 1 <= r["completion_tokens"] <= 6 and r["finish_reason"] in ("stop", "length")
        assert len(r["topk_logprobs"]) == r["completion_tokens"]
        assert all(1 <= len(step) <= 3 and all(x["logprob"] <= 0 for x in step) for step in r["topk_logprobs"])
        assert r["prompt"].endswith("<|im_start|>assistant\n") and r["prompt_tokens"] > 10
    assert json.loads(out[0]["sampling"])["logprobs"] == 2
    q = TraceStore(tmp_path).quarantine().to_pylist()
    assert [x["key"] for x in q] == ["too-long"]
    assert events[0]["rows_in"] == 4 and events[0]["count/quarantined"] == 1


def test_the_teachers_engine_answers_the_teacher_baseline_as_a_fresh_evaluator_does(tiny_model, tmp_path):
    """A streamed run's teacher baseline is answered by the teacher's engine, up since the run began
    (TeacherEngine.evaluate), not by an engine started for it: the same answers as a fresh evaluator engine
    on the same model -- greedy, sampled (n = 2, the evaluator's per-request seed, after the engine has
    generated traces), and a prompt too long for the eval context -- so they may share the baseline cache."""
    from distill.actors.evaluator import Evaluator
    from distill.actors.teacher import TeacherEngine
    from distill.eval.suite import build_requests
    from distill.pipelines.evaluate import evaluator_options, teacher_engine_mismatch

    cfg = load_config(
        "smoke",
        [
            "teacher.max_tokens=6",
            "teacher.max_model_len=256",
            "teacher.cpu_threads_bind=null",
            "teacher.temperature=1.0",
            "eval.max_tokens=8",
            "eval.max_model_len=256",
            "eval.samples=2",
            "eval.temperature=0.9",
            "eval.cpu_threads_bind=null",
        ],
    )
    assert teacher_engine_mismatch(cfg) is None
    problems = load_problems(cfg.sources).problems
    held_out = problems[3:6] + [{**problems[3], "problem_id": "long", "question": "7 + 7 " * 200}]
    reqs = build_requests({"problems": {"in_distribution": held_out}}, cfg.eval, cfg.prompt, ["in_distribution"])
    assert {r["n"] for r in reqs} == {1, 2}  # greedy and sampled
    options = evaluator_options(cfg.eval, cfg.seed)
    engine = TeacherEngine(cfg.teacher, tiny_model, None)
    try:

        async def traces_then_baseline(e: TeacherEngine):  # one event loop, as in its actor
            # first it generates traces (at the teacher's temperature): its history must not change the answers
            traces = await e.generate([1, 2, 3, 4], 6, "trace-0")
            return traces, await e.evaluate(reqs, options)

        traces, got = asyncio.run(traces_then_baseline(engine))
        assert len(traces) == 1 and traces[0]["token_ids"]
    finally:
        engine.close()
        del engine
        gc.collect()
    ev = Evaluator(tiny_model, **options)
    try:
        ref = ev.run(reqs)
    finally:
        ev.close()
        gc.collect()
    assert got["outputs"] == ref["outputs"]
    assert got["predictions"] == ref["predictions"]
    assert got["skipped_too_long"] == ref["skipped_too_long"] == 2  # the long prompt, greedy and sampled
    assert any(len(o) == 2 and o[0][1] > 0 and o[0] != o[1] for o in got["outputs"])  # two different samples
