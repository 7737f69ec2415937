"""Real faults on a local Ray cluster: teacher and scorer actors killed by their process ids mid-stream.

The ledger (the trace store) and Ray Data's actor restarts + task retries must leave every trace in
the store exactly once: no trace lost, none generated or written twice.
"""
import os
import signal
import threading
import time

import pytest

from distill.schema import trace_id
from distill.store import TraceStore
from test_stream import _cfg  # tests/ray is on sys.path (pytest prepend import mode)

pytestmark = pytest.mark.ray


def _kill_first(queue, stage: str, killed: list, after: int = 1, timeout: float = 120) -> threading.Thread:
    """Watch stage events; SIGKILL the process of the `stage` actor that reported `after` batches."""
    def run():
        seen, t_end = {}, time.time() + timeout
        while time.time() < t_end and not killed:
            n = queue.size()
            for ev in queue.get_nowait_batch(n) if n else []:
                if ev["stage"] != stage:
                    continue
                pid = int(ev["actor"].rsplit(":", 1)[1])
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

    from cluster.session import ray_session
    from distill.sources import load_problems
    from pipelines.stages import generation_stream

    cfg = _cfg(tmp_path, tiny_model, tiny_model, ["teacher.max_tokens=48", "teacher.batch_size=1",
                                                   "teacher.replicas_min=2", "teacher.replicas_max=2", *extra])
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
    return {trace_id(p["problem_id"], cfg.teacher.model, sampling, j) for p in problems
            if len(p["question"]) < 1000 for j in range(cfg.teacher.samples)}


def test_teacher_actor_killed_mid_generation_loses_and_duplicates_nothing(tiny_model, tmp_path):
    cfg, problems, store, killed = _run_stream_with_kill(tiny_model, tmp_path, "teacher")
    assert killed, "the teacher actor was never killed"
    ids = store.trace_ids()
    assert ids == _expected_ids(cfg, problems) and len(ids) == 24
    assert store.physical_trace_rows() == 24  # every trace written exactly once


def test_scorer_actor_killed_loses_and_duplicates_nothing(tiny_model, tmp_path):
    cfg, problems, store, killed = _run_stream_with_kill(tiny_model, tmp_path, "scorer",
                                                         ["scorer.replicas_min=2", "scorer.replicas_max=2"])
    assert killed, "the scorer actor was never killed"
    ids = store.trace_ids()
    assert ids == _expected_ids(cfg, problems) and store.physical_trace_rows() == len(ids) == 24
