"""`stages: sequential`, the baseline of `distill bench`'s overlap arm: the same recipe with its stages
one after another. It must still train every accepted trace once per epoch."""

import json
import subprocess
import sys

import pytest
from helpers import NO_EVAL

pytestmark = pytest.mark.e2e


def test_sequential_stages_do_not_overlap_and_train_every_trace(tmp_path):
    from distill.actors.train_loop import store_training_rows
    from distill.config import load_config

    sets = [
        f"output_dir={tmp_path}",
        "stages=sequential",
        "sources.0.size=6",
        "train.epochs=1",
        "ray.dashboard=false",
        *NO_EVAL,
    ]
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", "smoke", *sum((["--set", s] for s in sets), [])],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    (d,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    s = json.loads((d / "summary.json").read_text())
    st = s["stages"]
    assert st["teacher"]["problems"] == 6 and st["scorer"]["accepted"] > 0
    # training starts only once every trace is generated and scored
    assert st["teacher"]["end"] <= st["scorer"]["end"] <= st["train"]["start"]
    cfg = load_config("smoke", sets)
    rows = store_training_rows(s["trace_store"], cfg.train.supervision)
    assert rows and st["train"]["rows_in"] == cfg.train.epochs * len(rows)  # none lost, none twice
    assert 0 < s["core_utilisation"] <= 1
