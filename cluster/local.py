"""A real multi-node Ray cluster on one machine: a head and worker nodes, each its own `ray start`
process with its own CPUs, node labels and custom resources. For the multi-node test, the
submit-vs-embedded benchmark, and trying a placement before a real cluster exists.

Token authentication is on, as on a real cluster, with a token made for this cluster: every process
that talks to it (nodes, `ray job submit`, state queries) gets it through `env`. Teardown is
`ray stop --force`, which stops every `ray start` process on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class NodeSpec:
    num_cpus: int
    labels: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class LocalCluster:
    dashboard: str  # http://127.0.0.1:<port>: `ray job submit --address`
    gcs_address: str  # 127.0.0.1:<port>: `ray start --address`, `distill run --address`
    env: dict[str, str]  # PATH with this venv first, the cluster's auth token
    nodes: list[dict]  # `ray list nodes` rows of the live nodes

    def node_id(self, **labels: str) -> str:
        """The id of the one node carrying these labels."""
        (node,) = [n for n in self.nodes if all(n["labels"].get(k) == v for k, v in labels.items())]
        return node["node_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(bin_dir: Path, *args: str, env: dict, timeout: float = 180) -> str:
    r = subprocess.run([str(bin_dir / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


@contextlib.contextmanager
def local_cluster(workers: list[NodeSpec], head_cpus: int = 1, bin_dir: Path | None = None, timeout: float = 120):
    """Start a head with `head_cpus` CPUs and one node per spec; yield a LocalCluster; stop them all."""
    bin_dir = Path(bin_dir or Path(sys.executable).parent)  # the venv whose `ray` and `distill` run
    # A short temp dir: Ray's unix sockets live under it and their paths are limited to 107 bytes.
    temp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
    }
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    try:
        _ray(
            bin_dir,
            "start",
            "--head",
            f"--port={gcs}",
            f"--num-cpus={head_cpus}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
            env=env,
        )
        for w in workers:
            args = [f"--address=127.0.0.1:{gcs}", f"--num-cpus={w.num_cpus}", "--disable-usage-stats"]
            if w.labels:
                args.append("--labels=" + ",".join(f"{k}={v}" for k, v in w.labels.items()))
            if w.resources:
                args.append("--resources=" + json.dumps(w.resources))
            _ray(bin_dir, "start", *args, env=env)
        dashboard = f"http://127.0.0.1:{dash}"
        nodes: list[dict] = []
        t_end = time.time() + timeout
        while time.time() < t_end:
            try:  # the dashboard answers a little after `ray start` returns
                out = _ray(bin_dir, "list", "nodes", "--address", dashboard, "--format", "json", env=env, timeout=60)
                nodes = [n for n in json.loads(out) if n["state"] == "ALIVE"]
            except RuntimeError:
                nodes = []
            if len(nodes) == 1 + len(workers):
                break
            time.sleep(1)
        if len(nodes) != 1 + len(workers):
            raise RuntimeError(f"the cluster never had {1 + len(workers)} live nodes: {nodes}")
        yield LocalCluster(dashboard, f"127.0.0.1:{gcs}", env, nodes)
    finally:
        subprocess.run([str(bin_dir / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
