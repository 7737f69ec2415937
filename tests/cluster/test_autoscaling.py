"""A live autoscaler, and a run that needs a node type with no node alive at launch.

The cluster is Ray's fake multi-node one: `ray start --head --autoscaling-config FILE` with the
`fake_multinode` provider starts Ray's real autoscaler (v1, the default of Ray 2.60 and of `ray up`),
which answers pending demand by starting real raylets on this machine as nodes of a worker type. The
worker type here is the only one with `teacher_node`, at 0 nodes and at most 1; the run asks its
teacher for `teacher_node`. So at launch the plan does not fit the alive cluster, and fits it grown.

Ray 2.60 keeps no autoscaler config in the GCS (`get_cluster_config()` is None under both of its
autoscalers), so `distill run` reads the config the autoscaler runs with from its command line on the
head (cluster/session.py autoscaler_config). Before that, this run exited 2: "does not fit".

`ray stop --force` (start and end) stops every Ray of this user on the machine: never run this test
beside another Ray test. Ray's own helper (ray.cluster_utils.AutoscalingCluster) does the same, but
reads a fake_multi_node/example.yaml that the Ray wheel does not ship, so the commands are here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import NO_EVAL

pytestmark = [pytest.mark.ray, pytest.mark.e2e]

BIN = Path(sys.executable).parent  # the venv whose `ray` the cluster runs

CONFIG = {
    "cluster_name": "distill-autoscaling-test",
    "max_workers": 1,
    "provider": {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
    },
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 4}, "node_config": {}, "max_workers": 0},
        "teacher_box": {
            "resources": {"CPU": 1, "teacher_node": 1},
            "node_config": {},
            "min_workers": 0,
            "max_workers": 1,
        },
    },
    "head_node_type": "ray.head.default",
    "auth": {},
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 5,
    "docker": {},
    "file_mounts": {},
    "initialization_commands": [],
    "setup_commands": [],
    "head_setup_commands": [],
    "worker_setup_commands": [],
    "head_start_ray_commands": [],
    "worker_start_ray_commands": [],
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
}


def _ray(*args: str, env: dict | None = None) -> str:
    return subprocess.run(
        [str(BIN / "ray"), *args], check=True, capture_output=True, text=True, env=env, timeout=120
    ).stdout


@pytest.fixture
def autoscaling_cluster(tmp_path):
    config = tmp_path / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = dict(os.environ, AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_FAKE_CLUSTER="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # the provider's nodes and the monitor run this venv's ray
    _ray("stop", "--force")
    _ray("start", "--head", f"--autoscaling-config={config}", "--num-cpus=4", "--disable-usage-stats", env=env)
    try:
        yield env
    finally:
        _ray("stop", "--force")


_NODES = """
import json, ray
from ray._private.state import state
ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
free = state.available_resources_per_node()
print(json.dumps([dict(n, Available=free.get(n["NodeID"], {})) for n in ray.nodes() if n["Alive"]]))
"""


def _nodes(env: dict) -> list[dict]:
    """The alive nodes (`ray.nodes()`, with what is free on each) from a driver of its own: the state
    API would need the dashboard."""
    r = subprocess.run([sys.executable, "-c", _NODES], check=True, capture_output=True, text=True, env=env, timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_run_that_needs_a_node_the_autoscaler_has_not_started_launches_says_so_and_gets_it(
    autoscaling_cluster, tmp_path
):
    env = autoscaling_cluster
    before = _nodes(env)
    assert len(before) == 1 and "teacher_node" not in before[0]["Resources"]
    out = tmp_path / "runs"
    sets = [*NO_EVAL, f"output_dir={out}", "teacher.resources={teacher_node: 1}", "ray.dashboard=false"]
    cmd = [sys.executable, "-m", "distill.cli", "run", "smoke", "--address", "auto"]
    cmd += [arg for s in sets for arg in ("--set", s)]
    log = tmp_path / "driver.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        # the teacher's replica holds the new node's teacher_node: the autoscaler added the node for it
        t_end, grown = time.time() + 300, []
        while time.time() < t_end and not grown:
            assert proc.poll() is None, log.read_text()[-3000:]
            nodes = _nodes(env)
            grown = [n for n in nodes if "teacher_node" in n["Resources"] and not n["Available"].get("teacher_node")]
            time.sleep(1)
        text = log.read_text()
        assert grown, f"no teacher on an added node; nodes {nodes}\n" + text[-3000:]
        assert len(nodes) == 2  # the head, and the one node of the type (its max_workers)
        # launched, saying which stage waits for the nodes the autoscaler must add
        assert "the plan fits only once the autoscaler adds nodes: teacher wait(s) for scale-up" in text, text[-3000:]
        assert "does not fit" not in text
    finally:
        if proc.poll() is None:  # the rest of the run is other tests' business: stop it here
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
