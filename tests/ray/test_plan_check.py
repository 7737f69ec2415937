"""`distill run` checks the plan against the live cluster before launching anything."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ray


def test_run_that_does_not_fit_exits_2_naming_the_shortfall(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "run",
            "smoke",
            "--set",
            "teacher.num_gpus=1",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "ray.dashboard=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "the run does not fit the cluster" in r.stderr
    assert "teacher: no node can host one replica (CPU=1, GPU=1)" in r.stderr
    assert "GPU: the stages need 1 (teacher 1 x 1) but the cluster has 0" in r.stderr
