"""The driver's event pump: its callbacks fire once, at the right event, from real Ray queue traffic."""

import time

import pytest

pytestmark = pytest.mark.ray


def test_teacher_ready_fires_on_the_first_teacher_batch_and_done_on_the_last(tmp_path):
    import ray
    from ray.util.queue import Queue

    from distill.events import StageEvent
    from distill.metrics import RunMetrics
    from distill.pipelines.stages import EventPump

    calls = []
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        q = Queue(actor_options={"num_cpus": 0})
        metrics = RunMetrics(tmp_path, time.time(), tensorboard=False)

        def teacher(n: int) -> StageEvent:
            return StageEvent("teacher", "t", 0.0, 1.0, rows_in=n, rows_out=n, counts={"problems": n})

        with EventPump(
            q,
            metrics,
            n_problems=5,
            samples=1,
            interval=0.05,
            on_teacher_ready=lambda: calls.append(("ready", metrics.counters["teacher/problems"])),
            on_teacher_done=lambda: calls.append(("done", metrics.counters["teacher/problems"])),
        ):
            q.put(StageEvent("scorer", "s", 0.0, 1.0, rows_in=1, rows_out=1))
            time.sleep(0.3)
            assert calls == []  # a scorer event is not the teacher being up
            for n in (2, 2, 1):
                q.put(teacher(n))
                time.sleep(0.3)
        assert calls == [("ready", 2), ("done", 5)]  # each once, in that order
    finally:
        ray.shutdown()
