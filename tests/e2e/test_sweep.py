"""A tiny granularity sweep end to end on the smoke run's real traces (generated once, reused)."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_sweep_trains_one_student_per_variant_and_writes_the_frontier(run_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "distill.cli", "sweep", "smoke", "--variants", "answer_only,full",
                        "--from-store", str(run_dir / "store"), "--set", f"output_dir={tmp_path}",
                        "--set", "train.epochs=1", "--set", "eval.in_distribution.0.size=6"],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    (d,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    s = json.loads((d / "summary.json").read_text())
    rows = {x["variant"]: x for x in s["frontier"]}
    assert set(rows) == {"answer_only", "full"}
    # same traces for both students; answer_only is far less supervision than the full trace
    assert rows["answer_only"]["examples"] == rows["full"]["examples"] > 0
    assert rows["answer_only"]["mean_supervision_tokens"] < rows["full"]["mean_supervision_tokens"] / 3
    for x in rows.values():
        assert 0 <= x["accuracy"] <= 1 and x["train_steps"] > 0
    assert s["held_out"]["n"] == 6 and 0 <= s["wrong_intermediate_share"] <= 1
    for name in ("untrained", "answer_only", "full"):
        preds = (d / "eval" / f"{name}.jsonl").read_text().splitlines()
        assert len(preds) == 6
    assert (d / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    report = (d / "report.md").read_text()
    assert "| answer_only |" in report and "| full |" in report
    assert (d / "students" / "full" / "model.safetensors").exists()
