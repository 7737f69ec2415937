"""Fault points (distill/faults.py): each named point kills the first process that reaches it, once."""

import os
import subprocess
import sys

CODE = "import sys; from distill.faults import fault_point; fault_point(sys.argv[1]); print('passed')"


def _reach(point: str, spec: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL_FAULT": spec}
    return subprocess.run([sys.executable, "-c", CODE, point], capture_output=True, text=True, env=env, timeout=60)


def test_each_point_of_several_fires_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    spec = f"scorer.before_commit:{a},train.before_report:{b}"
    first = _reach("train.before_report", spec)
    assert first.returncode == 137 and first.stdout == "" and b.exists() and not a.exists()
    assert b.read_text().startswith("train.before_report pid ")
    assert _reach("train.before_report", spec).stdout == "passed\n"  # the retry passes
    assert _reach("scorer.before_commit", spec).returncode == 137 and a.exists()
    assert _reach("scorer.before_commit", spec).stdout == "passed\n"
    assert _reach("correction.after_commit", spec).stdout == "passed\n"  # a point not named never fires
