"""The driver's raylet-notice filter (cluster/session.py): a benign startup notice leaves the terminal for
the run's logs, a real error still reaches the terminal, and a --verbose session prints everything. Ray's
own printer is called; no Ray cluster is started."""

import ray
import ray._private.worker as rw

from distill.cluster.session import _divert_raylet_notices

BENIGN = (
    "WARNING: 8 PYTHON worker processes have been started on node: abc with address: 1.2.3.4, which is "
    "4x the maximum expected startup concurrency (2)."
)
REAL = "A worker died or was killed while executing a task by an unexpected system error."


def _say(line):
    rw.print_to_stdstream({"lines": [line], "pid": "raylet", "is_err": False}, ignore_prefix=False)


def test_benign_raylet_notice_goes_to_the_logs_real_errors_stay(tmp_path, capsys):
    logs = tmp_path / "logs"
    _divert_raylet_notices(ray, logs)
    _say(BENIGN)
    _say(REAL)
    out = capsys.readouterr().out
    assert "worker processes have been started" not in out and REAL in out
    assert "worker processes have been started" in (logs / "raylet-notices.log").read_text()

    _divert_raylet_notices(ray, None)  # --verbose: everything on the terminal, even from the same process
    _say(BENIGN)
    assert "worker processes have been started" in capsys.readouterr().out


def test_a_logs_dir_that_cannot_be_written_does_not_raise(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _divert_raylet_notices(ray, blocker / "logs")  # mkdir fails with an OSError
    _say(BENIGN)  # must not raise: Ray's listener thread would die and silence later errors
    assert "worker processes" not in capsys.readouterr().out


def test_a_job_runtime_env_setting_our_env_vars_merges_with_ray_init():
    """`ray job submit --runtime-env-json '{"env_vars": {"HF_HUB_OFFLINE": "1"}}'`: Ray's own merge (the
    one ray.init runs in the job's driver) refuses a key set on both sides; distill leaves the job's alone."""
    import json

    from ray.runtime_env.runtime_env import _merge_runtime_env

    from distill.cluster.session import WORKER_ENV, worker_env

    job_rt = {"working_dir": "gcs://_ray_pkg_x.zip", "env_vars": {"HF_HUB_OFFLINE": "0", "MY_VAR": "x"}}
    injected = json.dumps({"runtime_env": job_rt, "metadata": {}})
    assert _merge_runtime_env(job_rt, {"env_vars": WORKER_ENV}) is None  # the failure this guards against
    ours = worker_env(injected)
    assert "HF_HUB_OFFLINE" not in ours and ours["TOKENIZERS_PARALLELISM"] == "false"
    merged = _merge_runtime_env(job_rt, {"env_vars": ours})
    assert merged["env_vars"]["HF_HUB_OFFLINE"] == "0" and merged["env_vars"]["MY_VAR"] == "x"  # theirs wins
    assert merged["working_dir"] == job_rt["working_dir"]
    assert worker_env(None) == WORKER_ENV == worker_env(json.dumps({"runtime_env": None}))
