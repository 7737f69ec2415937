"""Correction rounds end to end (issue 14) on the embedded default's models, tiny: the smoke recipe, then one
round in which the student answers 6 training problems twice, the teacher continues its wrong answers
from their first wrong step, and the student trains on the accepted corrections and its own right
answers with SFT rows mixed in. The commit stage's actor is killed once right after writing a block's
corrections (the hard moment: written, not yet passed on); the retried block must write nothing again
and the trainer must train each row once. The SFT fit's worker is killed once too, after writing its
first checkpoint and before reporting it (written inside the run's storage, not yet moved in): the new
worker group must not resume from it, and must remove it."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.e2e

SETS = [
    "sources.0.size=12",
    "train.correction.problems=6",
    "train.correction.samples=2",
    "train.correction.keep=[correction,self]",
    "train.correction.mix=1.0",
    "eval.in_loop=false",
]


def _physical(directory) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in directory.glob("part-*.parquet"))


def test_a_correction_round_streams_stores_with_lineage_and_trains_each_row_once(tmp_path):
    from distill.data.store import TraceStore

    marker = tmp_path / "fault-fired"
    train_marker = tmp_path / "train-fault-fired"
    sets = [f"output_dir={tmp_path / 'runs'}", *SETS]
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", "smoke", *sum((["--set", s] for s in sets), [])],
        capture_output=True,
        text=True,
        timeout=1500,
        # a baseline cache of its own: the session's stays empty for the smoke run's cache-miss checks
        env={
            **os.environ,
            "DISTILL_FAULT": f"correction.after_commit:{marker},train.before_report:{train_marker}",
            "DISTILL_EVAL_CACHE": str(tmp_path / "eval-cache"),
        },
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert marker.exists(), "the commit stage never reached its fault point"
    assert train_marker.exists(), "the trainer never reached its fault point"
    (d,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    s = json.loads((d / "summary.json").read_text())
    store = TraceStore(s["trace_store"])

    samples = store.samples().to_pylist()
    assert len(samples) == 12 == _physical(store.samples_dir)  # 6 problems x 2, each stored once
    corrections = store.corrections().to_pylist()
    assert len(corrections) == _physical(store.corrections_dir)  # the retried block wrote nothing again
    by_id = {x["trace_id"]: x for x in samples}
    for c in corrections:  # lineage: every row names the student sample it came from
        parent = by_id[c["parent"]]
        assert parent["question"] == c["question"] and parent["text"] == c["student_text"]
        if c["kind"] == "self":
            assert parent["correct"] and c["prefix"] == "" and c["teacher_tokens"] == 0
        else:
            assert not parent["correct"] and c["student_text"][: c["cut"]] == c["prefix"]
            assert c["teacher_tokens"] > 0 and c["verdict"] in ("accepted", "rejected")
    assert {c["parent"] for c in corrections if c["kind"] == "self"} == {x["trace_id"] for x in samples if x["correct"]}

    # the round's fit: its train events follow the SFT's (epoch 2) ones; rows trained = accepted + mixed, once each
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["stage"] == "train"]
    last_sft = max(i for i, e in enumerate(train) if e.get("epoch") == 2)
    accepted = sum(c["verdict"] == "accepted" for c in corrections)
    assert sum(e["rows_in"] for e in train[last_sft + 1 :]) == accepted + 6  # mix 1.0 x 6 problems

    ev = s["eval"]["correction"]
    (rnd,) = ev["rounds"]
    assert rnd["samples"] == 12 and rnd["corrections"] + rnd["self_accepted"] == len(corrections)
    ind = ev["student_vs_sft"]["in_distribution"]
    assert ind["n"] == s["eval"]["splits"]["in_distribution"]["student"]["n"] > 0  # the same problems, paired
    assert -1 <= ind["ci"][0] <= ind["diff"] <= ind["ci"][1] <= 1
    for name in ("student-sft", "student-round1", "student"):  # HF directories transformers and vLLM load
        assert (d / name / "config.json").exists() and (d / name / "model.safetensors").exists()
    # the killed worker's unreported checkpoint: not resumed from (a new group trained epoch 1 again), removed
    sft_train = train[: last_sft + 1]
    pid = int(train_marker.read_text().split()[-1])
    killed = [e["epoch"] for e in sft_train if e["actor"].endswith(f":{pid}")]
    assert killed and set(killed) == {1}  # died at epoch 1's end, in its checkpoint
    assert [e["step"] for e in sft_train if not e["actor"].endswith(f":{pid}")][:1] == [1]
    assert not list((d / "ray_train").rglob(".scratch-*"))
    # the round's Ray Train checkpoints (optimizer state, ~1.6 GB each) go once its student is exported
    assert (d / "ray_train" / "train").exists() and not (d / "ray_train" / "correction-1").exists()
    assert "## Correction rounds" in (d / "report.md").read_text()
    assert "correction round 1:" in r.stdout and "student vs student_sft" in r.stdout
