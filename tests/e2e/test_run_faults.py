"""Real kills on `distill run smoke`: the driver itself, then a training worker (of two) of the resumed run,
once inside epoch 1 (the live stream) and once inside epoch 2 (the store).

Processes are killed by their ids with SIGKILL. The uninterrupted `run_dir` fixture run of the same
recipe is the reference: same set of trace_ids, each stored exactly once.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import NO_EVAL

from distill.actors.train_loop import store_training_rows
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


def test_driver_killed_then_resumed_run_survives_worker_kills_in_both_epochs_and_matches_an_uninterrupted_run(
    run_dir, tmp_path
):
    """All kills in one run (each costs a whole smoke run on 2 cores): the driver while traces stream in,
    then, in the resumed run, a training worker of two (DDP) right after a checkpoint inside epoch 1 and
    again right after the first checkpoint of epoch 2: each new worker group must continue from that
    checkpoint's position, on both ranks, training no row of the epoch twice."""
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
        # lands inside each epoch whatever the number of accepted traces.
        cmd = [sys.executable, "-m", "distill.cli", "run", "--resume", str(run), "--set", "train.checkpoint_every=1"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    # Kill rank 0 (the rank that emits the events) once Ray Train has registered a checkpoint of the
    # epoch (the controller's snapshot names it).
    snapshot = run / "ray_train" / "train" / "checkpoint_manager_snapshot.json"

    def checkpoint_of(epoch: int) -> int | None:
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):  # not there yet, or being written
            return None
        return next((r["metrics"]["step"] for r in results if r["metrics"]["epoch"] == epoch), None)

    new_pids = lambda: [p for p in _train_pids(run) if p not in killed_run_pids]  # noqa: E731
    _wait_for(lambda: checkpoint_of(1), proc, 900, "a checkpoint inside epoch 1")
    first = _wait_for(new_pids, proc, 60, "a training step")[-1]
    os.kill(first, signal.SIGKILL)  # epoch 1 streams from the live pipeline: the hard restart
    _wait_for(lambda: len(new_pids()) == 2, proc, 900, "the second worker group's first step")
    ckpt = _wait_for(lambda: checkpoint_of(2), proc, 900, "the first checkpoint of epoch 2")
    pid = new_pids()[-1]
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=900) == 0, (tmp_path / "resume.log").read_text()[-4000:]
    s = json.loads((run / "summary.json").read_text())

    # the driver kill: the ledger replayed, nothing generated or stored twice
    after = store.trace_ids()
    assert after == TraceStore(run_dir / "store").trace_ids() and len(after) == 24
    assert store.physical_trace_rows() == 24  # each trace stored exactly once
    # Committed problems never reach the teacher: the ledger replays them, at the resume and again when
    # the epoch-1 worker kill restarts the stream (its teacher sees every problem once more).
    assert s["resumed"] and s["replayed_traces"] >= len(before)
    # What the teacher generated: each problem uncommitted at the resume, and again only what was in flight
    # (generated, not yet committed: at most a block being generated and one waiting for the scorer, 4
    # problems each in smoke) when the worker kill stopped the stream; stored once either way (above).
    generated = s["stages"]["teacher"]["problems"] - s["replayed_traces"]
    assert 24 - len(before) <= generated <= 24 - len(before) + 8 and s["stored_traces"] == 24
    assert (run / "student" / "config.json").is_file() and not (run / "student" / "trainer_state.pt").exists()

    pids = new_pids()
    assert pids[:2] == [first, pid] and len(pids) == 3, "a new worker group must have taken over after each kill"
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["stage"] == "train" and int(e["actor"].rsplit(":", 1)[1]) in pids]
    by = lambda p, epoch: [e for e in train if e["actor"].endswith(f":{p}") and e["epoch"] == epoch]  # noqa: E731
    rows = store_training_rows(str(run / "store"), load_config("smoke").train.supervision)
    # the workers' own output is off the terminal: the run copied it to runs/<id>/logs/
    log = "".join(p.read_text(errors="replace") for p in sorted((run / "logs").rglob("worker-*.out")))
    assert "resumed at step" not in (tmp_path / "resume.log").read_text()  # a quiet terminal

    # the epoch-1 kill: the second group skipped the rows trained on either rank before the checkpoint
    # (the replayed stream re-deals them to ranks unevenly) and trained the rest once: rows trained in
    # epoch 1 add up to the stream's rows, less at most one row per split that an equal split drops.
    m = re.search(r"resumed at step (\d+) \(epoch 1, \d+ batches in, (\d+) traces trained\)", log)
    assert m, "the second worker group must resume inside epoch 1 from a checkpoint"
    k1, done1 = int(m.group(1)), int(m.group(2))
    assert done1 >= 2 * k1  # every step of two ranks trained at least one row each
    second = by(pids[1], 1)
    assert [e["step"] for e in second] == list(range(k1 + 1, k1 + len(second) + 1)), "epoch 1 on from the checkpoint"
    trained1 = done1 + sum(e["rows_in"] for e in second)  # rows_in: the step's rows on both ranks
    assert len(rows) - 1 <= trained1 <= len(rows), f"epoch 1 trained {trained1} rows of {len(rows)}"

    # the epoch-2 kill: the third group continued from the checkpoint, mid-epoch
    epoch1 = max([k1] + [e["step"] for e in second])  # where the second group ended epoch 1
    # Epoch 2's steps come from this run's own training rows (its store): greedy decoding on CPU is not
    # bit-stable across batch compositions, so the accepted count may differ from the reference's.
    later = steps_per_epoch(len(rows), 2, 2, 1)  # 2 ranks, smoke's train.batch_size 2, no accumulation
    assert epoch1 < ckpt < epoch1 + later, "the killed checkpoint must fall inside epoch 2 (the hard moment)"
    assert f"resumed at step {ckpt} (epoch 2, {ckpt - epoch1} batches in)" in log  # loaded the checkpoint
    after_kill = [e["step"] for e in train if e["actor"].endswith(f":{pids[2]}")]
    assert after_kill == list(range(ckpt + 1, epoch1 + later + 1)), "the rest of epoch 2 once, from the checkpoint"
    # Steps the killed workers took after their checkpoints are counted too: they were done, then lost.
    assert s["stages"]["train"]["steps"] >= epoch1 + later
    assert s["student_checkpoint"]
