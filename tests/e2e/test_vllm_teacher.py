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
