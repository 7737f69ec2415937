import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distill.events import StageEvent
from distill.metrics import RunMetrics, emit, union_length


def test_union_length_counts_overlaps_once():
    assert union_length([]) == 0
    assert union_length([(0, 2), (1, 3), (5, 6)]) == 4
    assert union_length([(0, 10), (2, 3)]) == 10


def _events(t0):
    return [
        # the first batch answered by the run's prewarmed engine, the second by the actor's own
        StageEvent(
            "teacher",
            "a",
            t0 + 1,
            t0 + 5,
            4,
            4,
            {"problems": 4, "tokens_out": 400, "quarantined": 0, "prewarmed_batches": 1},
        ),
        StageEvent(
            "teacher",
            "a",
            t0 + 5,
            t0 + 9,
            4,
            4,
            {"problems": 4, "tokens_out": 400, "quarantined": 1, "prewarmed_batches": 0},
        ),
        StageEvent(
            "scorer", "s", t0 + 5, t0 + 5.5, 4, 3, {"accepted": 3, "rejected": 1, "correct": 3, "quarantined": 0}
        ),
        StageEvent(
            "train",
            "w",
            t0 + 6,
            t0 + 7,
            2,
            2,
            {"tokens": 100, "skipped_too_long": 0},
            step=1,
            loss=2.0,
            lr=1e-4,
            epoch=1,
        ),
        StageEvent(
            "train",
            "w",
            t0 + 10,
            t0 + 11,
            1,
            1,
            {"tokens": 60, "skipped_too_long": 1},
            step=2,
            loss=1.5,
            lr=1e-4,
            epoch=2,
        ),
    ]


def test_an_event_record_is_flat_and_a_list_sink_collects_records():
    ev = StageEvent("eval", "eval student", 1.0, 2.0, 3, 3, {"tokens": 9}, step=4, model="student", accuracy={"a": 0.5})
    evs = []
    emit(evs, ev)
    assert evs == [ev.record()]
    assert ev.record() == {
        "stage": "eval",
        "actor": "eval student",
        "t0": 1.0,
        "t1": 2.0,
        "model": "student",
        "step": 4,
        "rows_in": 3,
        "rows_out": 3,
        "count/tokens": 9,
        "acc/a": 0.5,
    }


def test_summary_and_tensorboard(tmp_path):
    t0 = 1000.0
    m = RunMetrics(tmp_path, t0)
    for ev in _events(t0):
        m.add(ev)
    m.close()
    s = m.summary(12.0, extra={"run_id": "r"})
    st = s["stages"]
    assert st["teacher"] == {
        "start": 1.0,
        "end": 9.0,
        "busy_s": 8.0,
        "rows_in": 8,
        "rows_out": 8,
        "tokens_out": 800,
        "tokens_per_s": 100.0,
        "problems": 8,
        "quarantined": 1,
        "prewarmed_batches": 1,
    }
    assert st["scorer"]["accepted"] == 3 and st["scorer"]["rejected"] == 1 and st["scorer"]["accept_rate"] == 0.75
    assert st["train"]["first_step_at"] == 7.0 and st["train"]["steps"] == 2 and st["train"]["tokens"] == 160
    assert st["train"]["final_loss"] == 1.5 and st["train"]["skipped_too_long"] == 1
    assert s["overlap_ratio"] == round(12.0 / (8.0 + 0.5 + 2.0), 4)
    json.dumps(s)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"teacher/tokens_per_s", "scorer/accept_rate", "train/loss", "train/tokens_per_s"} <= tags
    assert [e.value for e in acc.Scalars("train/loss")] == [2.0, 1.5]
    assert [e.value for e in acc.Scalars("teacher/tokens_per_s")] == [100.0, 100.0]


def test_timeline_png(tmp_path):
    m = RunMetrics(tmp_path, 0.0, tensorboard=False)
    for ev in _events(0.0):
        m.add(ev)
    p = m.plot_timeline(tmp_path / "t.png", 12.0)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_core_utilisation_weighs_busy_time_by_the_cores_each_actor_held(tmp_path):
    from distill.hardware import bind_cores

    assert [bind_cores(b, 8) for b in ("0", "0-3", "0,2", "0|1", None, "auto")] == [1, 4, 2, 2, 8, 8]
    m = RunMetrics(tmp_path, 0.0, tensorboard=False)
    evs = [
        StageEvent("teacher", "t", 0.0, 60.0, 1, 1),
        StageEvent("teacher", "t", 30.0, 80.0, 1, 1),  # overlaps: once
        StageEvent("train", "w0", 10.0, 50.0, 1, 1, epoch=1),
        StageEvent("train", "w0", 80.0, 100.0, 1, 1, epoch=2),
    ]
    for ev in evs:
        m.add(ev)

    def cores(e):
        return 2.0 if e["stage"] == "train" and e["epoch"] > 1 else 1.0

    s = m.summary(100.0, cores_of=cores, machine_cores=2)
    assert s["core_seconds"] == {"teacher": 80.0, "train": 80.0}  # 80 x 1; 40 x 1 + 20 x 2
    assert s["core_utilisation"] == 0.8  # 160 / (100 s x 2 cores)
    m.close()


def test_replicas_claim_disjoint_bindings_and_a_dead_ones_is_freed(tmp_path):
    """Teacher replicas each take the first binding no live process holds (separate processes, as Ray
    actors are); a replica that dies frees its binding for its replacement; a surplus replica is refused."""
    import subprocess
    import sys

    code = (
        "import sys, time; from distill.hardware import claim_slot; "
        f"print(claim_slot('k', 2, root={str(tmp_path)!r}), flush=True); time.sleep(float(sys.argv[1]))"
    )
    first = subprocess.Popen([sys.executable, "-c", code, "30"], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "0"
    second = subprocess.Popen([sys.executable, "-c", code, "30"], stdout=subprocess.PIPE, text=True)
    assert second.stdout.readline().strip() == "1"
    third = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True, timeout=60)
    assert third.returncode != 0 and "all 2 slots of 'k' are held" in third.stderr
    first.kill()
    first.wait()
    again = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "0"  # the dead replica's binding
    second.kill()
    second.wait()


def test_replica_binds_must_cover_the_pool():
    import pytest

    from distill.config import ConfigError, load_config

    cfg = load_config("smoke", ["teacher.replica_binds=['0', '1']", "teacher.replicas_max=2"])
    assert cfg.teacher.replica_binds == ["0", "1"]
    with pytest.raises(ConfigError, match="replica_binds"):
        load_config("smoke", ["teacher.replica_binds=['0']", "teacher.replicas_max=2"])


def test_core_sets_and_which_bindings_may_share_a_core():
    """The eval runner runs a task beside the student engine only when their bindings are disjoint."""
    from distill.hardware import binds_overlap, core_set

    assert core_set("0-2,5|7") == frozenset({0, 1, 2, 5, 7})
    assert core_set(None) is None and core_set("auto") is None and core_set("nobind") is None
    assert not binds_overlap("0", "1") and not binds_overlap("0-1", "2-3|4")
    assert binds_overlap("0-2", "2") and binds_overlap("0,3", "1-3")
    assert binds_overlap(None, "1") and binds_overlap("0", "auto")  # an unbound engine may use any core
