"""A tiny granularity sweep end to end on the smoke run's real traces (generated once, reused)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_sweep_trains_one_student_per_variant_and_writes_the_frontier(run_dir, tmp_path):
    # a relative --from-store, as the help shows it: the trials run in Ray Tune's own working dir
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "sweep",
            "smoke",
            "--variants",
            "answer_only,full",
            "--from-store",
            os.path.relpath(run_dir / "store", tmp_path),
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "train.epochs=1",
            "--set",
            "eval.validation.0.size=6",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    (d,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    s = json.loads((d / "summary.json").read_text())
    rows = {x["arm"]: x for x in s["arms"]}
    assert set(rows) == {"answer_only", "full"}
    # same traces for both students; answer_only is far less supervision than the full trace
    assert rows["answer_only"]["examples"] == rows["full"]["examples"] > 0
    assert rows["answer_only"]["mean_supervision_tokens"] < rows["full"]["mean_supervision_tokens"] / 3
    for x in rows.values():
        assert 0 <= x["accuracy"] <= 1 and x["train_steps"] > 0 and x["ci"][0] <= x["accuracy"] <= x["ci"][1]
        assert "diff" in x["vs_best"] and "p_mcnemar" in x["vs_untrained"]
    assert s["best"] == s["arms"][0]["arm"] and s["arms"][0]["vs_best"]["diff"] == 0
    assert s["validation"]["n"] == 6 and 0 <= s["wrong_intermediate_share"] <= 1
    for name in ("untrained", "answer_only", "full"):
        preds = (d / "eval" / f"{name}.jsonl").read_text().splitlines()
        assert len(preds) == 6
    assert (d / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    report = (d / "report.md").read_text()
    assert "| answer_only |" in report and "| full |" in report
    assert (d / "students" / "full" / "model.safetensors").exists()


def test_sweep_on_an_empty_store_is_an_error_not_a_frontier(tmp_path):
    (tmp_path / "empty" / "traces").mkdir(parents=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "sweep",
            "smoke",
            "--from-store",
            "empty",
            "--set",
            f"output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "no traces" in r.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sweep-")]  # nothing trained, nothing reported
