"""Local Ray cluster, CPU actors: the generation stream and a full run with tiny on-disk models."""

import json

import pytest
from helpers import NO_EVAL  # these tests are about the stream: no eval suite

from distill.config import load_config
from distill.data.store import TraceStore

pytestmark = pytest.mark.ray


def _cfg(tmp_path, teacher, student, extra=()):
    problems = tmp_path / "problems.jsonl"
    rows = [json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) for i in range(12)]
    rows += [
        "{broken",
        json.dumps({"question": "no answer"}),
        json.dumps({"question": "What is 1 + 1? " * 300, "answer": "2"}),
    ]  # too long for the teacher
    problems.write_text("\n".join(rows) + "\n")
    return load_config(
        "smoke",
        [
            f"output_dir={tmp_path / 'runs'}",
            "sources=[{kind: file, path: '%s', size: 100}]" % problems,
            "source_blocks=4",
            "teacher.backend=transformers",
            f"teacher.model={teacher}",
            "teacher.samples=2",
            "teacher.temperature=1.0",
            "teacher.max_tokens=8",
            "teacher.max_model_len=256",
            "teacher.batch_size=3",
            f"train.student={student}",
            "train.epochs=2",
            "ray.num_cpus=4",
            *NO_EVAL,
            *extra,
        ],
    )


def test_stream_stores_every_sample_once_and_counts_rejects(tiny_model, tmp_path):
    from ray.util.queue import Queue

    from distill.cluster.session import ray_session
    from distill.data.sources import load_problems
    from distill.pipelines.stages import generation_stream

    cfg = _cfg(tmp_path, tiny_model, tiny_model)
    loaded = load_problems(cfg.sources)
    assert len(loaded.problems) == 13 and len(loaded.quarantined) == 2
    store = TraceStore(tmp_path / "store")
    with ray_session(cfg.ray):
        q = Queue(actor_options={"num_cpus": 0})
        ds = generation_stream(cfg, loaded.problems, tiny_model, str(store.root), q)
        accepted = ds.take_all()
        events = [e.record() for e in q.get_nowait_batch(q.size())]
    traces = store.traces()
    assert traces.num_rows == 12 * 2  # 12 valid prompts x 2 samples; the long prompt was quarantined
    assert len(set(traces.column("trace_id").to_pylist())) == 24
    assert sorted(set(traces.column("sample_index").to_pylist())) == [0, 1]
    assert len(accepted) == sum(v == "accepted" for v in traces.column("verdict").to_pylist())
    reasons = [r["reason"] for r in store.quarantine().to_pylist()]
    assert sum(r.startswith("prompt too long") for r in reasons) == 1
    stages = {e["stage"] for e in events}
    assert stages == {"teacher", "scorer"}
    assert sum(e["rows_in"] for e in events if e["stage"] == "teacher") == 13
    assert sum(e["rows_in"] for e in events if e["stage"] == "scorer") == 24


def test_run_with_a_useless_teacher_still_finishes(tiny_model, tmp_path):
    """Random weights answer nothing right: zero accepted traces must not hang or crash training."""
    from distill.pipelines.run import main

    summary = main(_cfg(tmp_path, tiny_model, tiny_model))
    st = summary["stages"]
    assert st["teacher"]["problems"] == 13 and summary["quarantined"]["source"] == 2
    assert summary["quarantined"]["teacher"] == 1
    assert st["scorer"]["accepted"] + st["scorer"]["rejected"] == 24 == summary["stored_traces"]
    assert summary["student_checkpoint"] is not None


def test_scorer_pool_actors_start_on_the_configured_allocator(tiny_model, tmp_path):
    """A scorer pool's actors are new processes started with `scorer.actor_options()` (as scored_stream and
    the correction rounds start them): LD_PRELOAD reaches them through the runtime_env, and Ray's own
    LD_PRELOAD stripping for workers leaves it alone."""
    import ray.data

    from distill.cluster.session import ray_session

    class _AllocatorProbe:  # defined here: pickled by value (the workers cannot import this test module)
        def __call__(self, batch):
            from distill.hardware import allocator_in_use

            return {"allocator": [allocator_in_use()] * len(batch["id"])}

    cfg = _cfg(tmp_path, tiny_model, tiny_model)
    system = _cfg(tmp_path, tiny_model, tiny_model, ["scorer.allocator=system"])
    with ray_session(cfg.ray):
        for c, want in ((cfg, "jemalloc"), (system, "system")):
            got = ray.data.range(4, override_num_blocks=2).map_batches(
                _AllocatorProbe,
                batch_size=None,
                compute=ray.data.ActorPoolStrategy(size=1),
                **c.scorer.actor_options(),
            )
            assert {r["allocator"] for r in got.take_all()} == {want}


def test_the_students_evaluator_engine_yields_its_core_to_training(tiny_model, tmp_path):
    """The run's EvalEngine actor (untrained, in-loop and final evaluations) runs under SCHED_IDLE on CPU,
    and at equal priority with eval.yield_to_training=false. Asked of the actor process itself."""
    import os

    import ray

    from distill.cluster.session import ray_session
    from distill.pipelines.evaluate import eval_engine

    def policy(actor) -> int:
        return os.sched_getscheduler(0)

    cfg = _cfg(tmp_path, tiny_model, tiny_model)
    equal = _cfg(tmp_path, tiny_model, tiny_model, ["eval.yield_to_training=false"])
    with ray_session(cfg.ray):
        for c, want in ((cfg, os.SCHED_IDLE), (equal, os.SCHED_OTHER)):
            engine = eval_engine(c.eval, c.seed)
            assert ray.get(engine.__ray_call__.remote(policy)) == want
            ray.kill(engine)
