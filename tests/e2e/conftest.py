import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """One real `distill run smoke`, shared by the e2e tests that inspect its outputs."""
    out = tmp_path_factory.mktemp("e2e")
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", "smoke", "--set", f"output_dir={out}"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    (out / "terminal.txt").write_text(r.stdout + "\n" + r.stderr)  # what the user saw (test_quiet_terminal)
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    return d
