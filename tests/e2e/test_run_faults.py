"""Real kills on `distill run smoke`: the driver itself, then a training worker (of two) of the resumed run.

Processes are killed by their ids with SIGKILL. The uninterrupted `run_dir` fixture run of the same
recipe is the reference: same set of trace_ids, each stored exactly once.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import NO_EVAL

from distill.actors.student import store_training_rows
from distill.config import load_config
from distill.data.store import TraceStore
from distill.train.schedule import steps_per_epoch

pytestmark = pytest.mark.e2e

SET_NO_EVAL = [arg for o in NO_EVAL for arg in ("--set", o)]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    log = open(out / "driver.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "run", "smoke", "--set", f"output_dir={out}", *SET_NO_EVAL, *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _run_dir(out: Path, timeout: float = 120) -> Path:
    t_end = time.time() + timeout
    while time.time() < t_end:
        dirs = [p for p in out.iterdir() if p.is_dir()]
        if dirs:
            return dirs[0]
        time.sleep(0.5)
    raise AssertionError("the run directory never appeared")


def _wait_for(cond, proc: subprocess.Popen, timeout: float, what: str):
    t_end = time.time() + timeout
    while time.time() < t_end:
        got = cond()
        if got:
            return got
        assert proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _train_pids(run: Path) -> list[int]:
    f = run / "events.jsonl"
    if not f.is_file():
        return []
    pids = []
    for line in f.read_text().splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if ev["stage"] == "train":
            pid = int(ev["actor"].rsplit(":", 1)[1])
            if pid not in pids:
                pids.append(pid)
    return pids


def test_driver_killed_then_resumed_run_survives_a_worker_kill_and_matches_an_uninterrupted_run(run_dir, tmp_path):
    """Both kills in one run (each costs a whole smoke run on 2 cores): the driver while traces stream in,
    then, in the resumed run, a training worker of two (DDP) right after its first checkpoint of epoch 2:
    the new worker group must continue from that batch of the epoch, on both ranks."""
    proc = _start(tmp_path, "--set", "train.workers=2", "--set", "train.torch_threads_later=1")
    run = _run_dir(tmp_path)
    store = TraceStore(run / "store")
    _wait_for(lambda: len(store.trace_ids()) >= 8, proc, 600, "8 committed traces")
    os.kill(proc.pid, signal.SIGKILL)  # the driver; embedded Ray's processes share its fate
    proc.wait()
    before = store.trace_ids()
    assert 8 <= len(before) < 24, f"killed too late: {len(before)} traces committed"
    killed_run_pids = set(_train_pids(run))  # workers of the killed driver, if training had begun
    time.sleep(3)
    with open(tmp_path / "resume.log", "w") as log:
        # A checkpoint every step from here on (the first run took the recipe's: at epoch ends), so one
        # lands inside epoch 2 whatever the number of accepted traces.
        cmd = [sys.executable, "-m", "distill.cli", "run", "--resume", str(run), "--set", "train.checkpoint_every=1"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    # Kill rank 0 (the rank that emits the events) once Ray Train has registered the first checkpoint of
    # epoch 2 (the controller's snapshot names it).
    snapshot = run / "ray_train" / "train" / "checkpoint_manager_snapshot.json"

    def epoch2_checkpoint() -> int | None:
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):  # not there yet, or being written
            return None
        return next((r["metrics"]["step"] for r in results if r["metrics"]["epoch"] == 2), None)

    ckpt = _wait_for(epoch2_checkpoint, proc, 900, "the first checkpoint of epoch 2")
    new_pids = lambda: [p for p in _train_pids(run) if p not in killed_run_pids]  # noqa: E731
    pid = _wait_for(new_pids, proc, 60, "a training step")[-1]
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=900) == 0, (tmp_path / "resume.log").read_text()[-4000:]
    s = json.loads((run / "summary.json").read_text())

    # the driver kill: the ledger replayed, nothing generated or stored twice
    after = store.trace_ids()
    assert after == TraceStore(run_dir / "store").trace_ids() and len(after) == 24
    assert store.physical_trace_rows() == 24  # each trace stored exactly once
    assert s["resumed"] and s["replayed_traces"] == len(before)  # committed problems never reached the teacher
    assert s["stages"]["teacher"]["problems"] == 24 and s["stored_traces"] == 24
    assert (run / "student" / "config.json").is_file() and not (run / "student" / "trainer_state.pt").exists()

    # the worker kill: a new worker group continued from the checkpoint, mid-epoch
    pids = new_pids()
    assert pid in pids and len(pids) == 2, "a new worker must have taken over"
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["stage"] == "train" and int(e["actor"].rsplit(":", 1)[1]) in pids]
    epoch1 = max(e["step"] for e in train if e["epoch"] == 1)
    # Epoch 2's steps come from this run's own training rows (its store): greedy decoding on CPU is not
    # bit-stable across batch compositions, so the accepted count may differ from the reference's.
    rows = store_training_rows(str(run / "store"), load_config("smoke").train.supervision)
    later = steps_per_epoch(len(rows), 2, 2, 1)  # 2 ranks, smoke's train.batch_size 2, no accumulation
    assert epoch1 < ckpt < epoch1 + later, "the killed checkpoint must fall inside epoch 2 (the hard moment)"
    # the workers' own output is off the terminal: the run copied it to runs/<id>/logs/
    log = "".join(p.read_text(errors="replace") for p in sorted((run / "logs").rglob("worker-*.out")))
    assert f"resumed at step {ckpt} (epoch 2, {ckpt - epoch1} batches in)" in log  # loaded the checkpoint
    assert "resumed at step" not in (tmp_path / "resume.log").read_text()  # a quiet terminal
    after_kill = [e["step"] for e in train if e["actor"].endswith(f":{pids[1]}")]
    assert after_kill == list(range(ckpt + 1, epoch1 + later + 1)), "the rest of epoch 2 once, from the checkpoint"
    # Steps the killed worker took after the checkpoint are counted too: they were done, then lost.
    assert s["stages"]["train"]["steps"] >= epoch1 + later
    assert s["student_checkpoint"]
