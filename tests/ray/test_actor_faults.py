"""Real faults on a local Ray cluster: teacher and scorer actors killed by their process ids mid-stream.

The ledger (the trace store) and Ray Data's actor restarts + task retries must leave every trace in
the store exactly once: no trace lost, none generated or written twice.
"""

import os
import signal
import threading
import time

import pytest
from test_stream import _cfg  # tests/ray is on sys.path (pytest prepend import mode)

from distill.data.schema import trace_id
from distill.data.store import TraceStore

pytestmark = pytest.mark.ray


def _kill_first(queue, stage: str, killed: list, after: int = 1, timeout: float = 120) -> threading.Thread:
    """Watch stage events; SIGKILL the process of the `stage` actor that reported `after` batches."""

    def run():
        seen, t_end = {}, time.time() + timeout
        while time.time() < t_end and not killed:
            n = queue.size()
            for ev in queue.get_nowait_batch(n) if n else []:
                if ev.stage != stage:
                    continue
                pid = int(ev.actor.rsplit(":", 1)[1])
                seen[pid] = seen.get(pid, 0) + 1
                if seen[pid] >= after and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.05)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _run_stream_with_kill(tiny_model, tmp_path, stage: str, extra=()):
    from ray.util.queue import Queue

    from distill.cluster.session import ray_session
    from distill.data.sources import load_problems
    from distill.pipelines.stages import generation_stream

    cfg = _cfg(
        tmp_path,
        tiny_model,
        tiny_model,
        ["teacher.max_tokens=48", "teacher.batch_size=1", "teacher.replicas_min=2", "teacher.replicas_max=2", *extra],
    )
    problems = load_problems(cfg.sources).problems
    store = TraceStore(tmp_path / "store")
    killed: list = []
    with ray_session(cfg.ray):
        q = Queue(actor_options={"num_cpus": 0})
        ds = generation_stream(cfg, problems, tiny_model, str(store.root), q)
        watcher = _kill_first(q, stage, killed)
        ds.take_all()
        watcher.join(timeout=1)
    return cfg, problems, store, killed


def _expected_ids(cfg, problems):
    sampling = {k: getattr(cfg.teacher, k) for k in ("temperature", "top_p", "max_tokens", "stop", "seed", "logprobs")}
    # the one over-long prompt is quarantined by the teacher, so it has no traces
    return {
        trace_id(p["problem_id"], cfg.teacher.model, sampling, j)
        for p in problems
        if len(p["question"]) < 1000
        for j in range(cfg.teacher.samples)
    }


def test_teacher_actor_killed_mid_generation_loses_and_duplicates_nothing(tiny_model, tmp_path):
    cfg, problems, store, killed = _run_stream_with_kill(tiny_model, tmp_path, "teacher")
    assert killed, "the teacher actor was never killed"
    ids = store.trace_ids()
    assert ids == _expected_ids(cfg, problems) and len(ids) == 24
    assert store.physical_trace_rows() == 24  # every trace written exactly once


def test_scorer_actor_killed_loses_and_duplicates_nothing(tiny_model, tmp_path):
    cfg, problems, store, killed = _run_stream_with_kill(
        tiny_model, tmp_path, "scorer", ["scorer.replicas_min=2", "scorer.replicas_max=2"]
    )
    assert killed, "the scorer actor was never killed"
    ids = store.trace_ids()
    assert ids == _expected_ids(cfg, problems) and store.physical_trace_rows() == len(ids) == 24


def test_scorer_killed_between_its_writes_commits_each_row_once(tiny_model, tmp_path, monkeypatch):
    """The hard moment: a scorer block has written its variants and quarantine rows but not its traces
    (the commit). The retried block must leave traces, variants and quarantine rows each exactly once."""
    import pyarrow.parquet as pq
    import ray.data

    from distill.cluster.session import ray_session
    from distill.data.sources import load_problems
    from distill.pipelines.stages import scored_stream
    from distill.trace.variants import VARIANTS

    cfg = _cfg(tmp_path, tiny_model, tiny_model)
    problems = [p for p in load_problems(cfg.sources).problems if len(p["question"]) < 1000]
    rows = []
    for p in problems:  # per problem: a right worked answer (accepted) and an unparseable one (quarantined)
        a = p["reference_answer"]
        for j, text in enumerate([f"{a} = {a}\nAnswer: {a}", "I cannot say."]):
            rows.append(
                {
                    **p,
                    "trace_id": f"{p['problem_id']}-{j}",
                    "text": text,
                    "finish_reason": "stop",
                    "completion_tokens": 8,
                    "sample_index": j,
                }
            )
    marker = tmp_path / "fault-fired"
    monkeypatch.setenv("DISTILL_FAULT", f"scorer.before_commit:{marker}")
    store = TraceStore(tmp_path / "store")
    with ray_session(cfg.ray):
        # blocks of 4 rows: every block has accepted traces and unparseable ones, so the block that dies
        # leaves variants and quarantine rows behind without their traces
        ds = ray.data.from_items(rows, override_num_blocks=len(rows) // 4)
        out = scored_stream(cfg, ds, str(store.root), None).take_all()
    assert marker.exists(), "the scorer never reached its fault point"
    accepted = {r["trace_id"] for r in rows if r["sample_index"] == 0}
    unparseable = {r["trace_id"] for r in rows if r["sample_index"] == 1}
    assert store.trace_ids() == accepted | unparseable and store.physical_trace_rows() == len(rows)
    variants = store.variants(ok_only=False).to_pylist()
    per_trace = {t: sum(v["parent_trace_id"] == t for v in variants) for t in accepted}
    assert per_trace == {t: len(VARIANTS) for t in accepted}  # none lost
    physical = sum(pq.ParquetFile(p).metadata.num_rows for p in (store.root / "variants").glob("part-*.parquet"))
    assert physical == len(variants) == len(accepted) * len(VARIANTS)  # none written twice
    q = store.quarantine().to_pylist()
    assert sorted(r["key"] for r in q if r["stage"] == "scorer") == sorted(unparseable)
    assert store.orphans() == {"variants": 0, "quarantine": 0}
    assert sorted(r["trace_id"] for r in out) == sorted(accepted)  # each accepted trace reaches the trainer once


@pytest.mark.parametrize("victim", ["engine", "teacher"])
def test_prewarmed_engine_or_its_teacher_killed_mid_generation_loses_and_duplicates_nothing(
    tiny_model, tmp_path, victim
):
    """The run's prewarmed teacher engine (a TeacherEngine actor started before the stream) answers the
    pool's batches. SIGKILLed after the first, with the next batch in flight, the teacher actor starts an
    engine of its own and goes on; the teacher actor SIGKILLed instead, its replacement claims the dead
    one's slot and drives the same engine. Either way every trace is in the store exactly once."""
    import ray
    from ray.util.queue import Queue

    from distill.cluster.session import ray_session
    from distill.data.sources import load_problems
    from distill.pipelines.stages import TeacherEngines, generation_stream

    cfg = _cfg(
        tmp_path,
        tiny_model,
        tiny_model,
        ["teacher.backend=vllm", "teacher.batch_size=1", "teacher.concurrent_batches=2", "teacher.kv_cache_gib=1"],
    )
    problems = load_problems(cfg.sources).problems
    store = TraceStore(tmp_path / "store")
    seen, killed = [], []

    def watch(q, engine_pid: int, stop: threading.Event) -> None:
        while not stop.is_set():
            n = q.size()
            for ev in q.get_nowait_batch(n) if n else []:
                if ev.stage != "teacher":
                    continue
                seen.append((int(ev.actor.rsplit(":", 1)[1]), ev.counts["prewarmed_batches"], bool(killed)))
                if not killed:
                    os.kill(engine_pid if victim == "engine" else seen[0][0], signal.SIGKILL)
                    killed.append(engine_pid if victim == "engine" else seen[0][0])
            time.sleep(0.05)

    with ray_session(cfg.ray):
        engines = TeacherEngines(cfg, tiny_model, str(store.root), nodes=1)
        assert engines.prewarmed and len(engines.handles) == cfg.teacher.replicas_min == 1
        engine_pid = ray.get(engines.handles[0].pid.remote())
        q = Queue(actor_options={"num_cpus": 0})
        stop = threading.Event()
        th = threading.Thread(target=watch, args=(q, engine_pid, stop), daemon=True)
        th.start()
        try:
            generation_stream(cfg, problems, tiny_model, str(store.root), q, prewarmed=True).take_all()
            time.sleep(1)  # the last events reach the watcher
        finally:
            stop.set()
            th.join(timeout=5)
            engines.close()
    assert killed, f"no {victim} was killed"
    before = [x for x in seen if not x[2]]
    after = [x for x in seen if x[2]]
    assert before and all(prewarmed == 1 for _, prewarmed, _ in before), seen  # the prewarmed engine answered
    assert after, seen
    if victim == "engine":  # the same teacher actor, its own engine from then on
        assert {pid for pid, _, _ in after} == {seen[0][0]} and after[-1][1] == 0, seen
    else:  # a new teacher actor (events the killed one sent before it died may come after), the prewarmed engine's
        new = [x for x in after if x[0] != seen[0][0]]
        assert new and all(prewarmed == 1 for _, prewarmed, _ in new), seen
    ids = store.trace_ids()
    assert ids == _expected_ids(cfg, problems) and len(ids) == 24
    assert store.physical_trace_rows() == 24  # every trace written exactly once
