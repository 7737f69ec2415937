"""A real multi-node Ray cluster on one machine: a head and worker nodes, each its own `ray start`
process with its own CPUs, node labels and custom resources. For the multi-node test, the
submit-vs-embedded benchmark, and trying a placement before a real cluster exists.

Token authentication is on, as on a real cluster, with a token made for this cluster: every process
that talks to it (nodes, `ray job submit`, state queries) gets it through `env`. With `own_homes`, each
node is as separate as one machine allows: its own home directory (so its own `~/.ray`, model cache and
pip/HF caches), holding only the embedded models its spec names, and the other nodes' homes hidden from
its processes (a mount namespace per `ray start`), and the token is made as a user makes
it -- `ray get-auth-token --generate` in the head's home, the file copied to every node as the shipped
launcher's file_mounts do -- with nothing in the environment but `RAY_AUTH_MODE=token`. Teardown is
`ray stop --force`, which stops every `ray start` process on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
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
    models: tuple[str, ...] = ()  # with own_homes: the embedded models already in this node's own cache


@dataclass
class _Node:
    args: list[str]
    env: dict[str, str]
    home: Path | None


@dataclass
class LocalCluster:
    dashboard: str  # http://127.0.0.1:<port>: `ray job submit --address`
    gcs_address: str  # 127.0.0.1:<port>: `ray start --address`, `distill run --address`
    env: dict[str, str]  # PATH with this venv first, the cluster's auth token (with own_homes: the head's home)
    nodes: list[dict]  # `ray list nodes` rows of the live nodes
    homes: list[Path] = field(default_factory=list)  # with own_homes: the head's home, then each node's in order

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


def _ray_start(bin_dir: Path, args: list[str], env: dict, hide: list[Path]) -> None:
    """`ray start`; with `hide`, in a mount namespace of its own where those directories (the other nodes'
    homes) are empty: the node's raylet and workers inherit it, so a file under another node's home -- a
    driver's resolved model path -- is as absent as on another machine. Needs CAP_SYS_ADMIN (root)."""
    if not hide:
        _ray(bin_dir, "start", *args, env=env)
        return
    mounts = " && ".join(f"mount -t tmpfs none {shlex.quote(str(h))}" for h in hide)
    cmd = f"{mounts} && exec {shlex.quote(str(bin_dir / 'ray'))} start {shlex.join(args)}"
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if r.returncode != 0:
        raise RuntimeError(f"ray start in its own mount namespace failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def can_hide_homes() -> bool:
    """Can this process give a node its own mount namespace (own_homes)? Root, or CAP_SYS_ADMIN."""
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return r.returncode == 0


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def _own_home(temp: str, i: int, env: dict, models: tuple[str, ...]) -> tuple[Path, dict]:
    """A node's own home: its model cache holds `models` (hard links to this machine's copies: the files a
    node image or an earlier fetch would carry), at a path no other node shares."""
    from distill.models import model_dir

    home = Path(temp) / f"home{i}"
    cache = home / ".cache" / "distill" / "models"
    cache.mkdir(parents=True)
    for m in models:
        shutil.copytree(model_dir(m), cache / m, copy_function=_link)
    env = {**env, "HOME": str(home)}
    env.pop("DISTILL_MODEL_CACHE", None)  # each node's cache follows its home
    return home, env


def _user_token(bin_dir: Path, homes: list[Path], env: dict) -> None:
    """The token as a user makes it (in the head's home), copied to every node's ~/.ray like file_mounts."""
    _ray(bin_dir, "get-auth-token", "--generate", env={**env, "HOME": str(homes[0])})
    token = homes[0] / ".ray" / "auth_token"
    for h in homes[1:]:
        (h / ".ray").mkdir(parents=True, exist_ok=True)
        shutil.copy2(token, h / ".ray" / "auth_token")


def _nodes(workers: list[NodeSpec], gcs: int, temp: str, env: dict, own_homes: bool, head_models) -> list[_Node]:
    nodes = []
    for i, w in enumerate([None, *workers]):
        if w is None:
            args = ["--head", f"--port={gcs}"]  # the head: its own flags are added by the caller
        else:
            args = [f"--address=127.0.0.1:{gcs}", f"--num-cpus={w.num_cpus}", "--disable-usage-stats"]
            if w.labels:
                args.append("--labels=" + ",".join(f"{k}={v}" for k, v in w.labels.items()))
            if w.resources:
                args.append("--resources=" + json.dumps(w.resources))
        home, node_env = (None, env)
        if own_homes:
            home, node_env = _own_home(temp, i, env, head_models if w is None else w.models)
        nodes.append(_Node(args, node_env, home))
    return nodes


@contextlib.contextmanager
def local_cluster(
    workers: list[NodeSpec],
    head_cpus: int = 1,
    bin_dir: Path | None = None,
    timeout: float = 120,
    own_homes: bool = False,
    head_models: tuple[str, ...] = (),
):
    """Start a head with `head_cpus` CPUs and one node per spec; yield a LocalCluster; stop them all.
    `own_homes`: every node its own home and model cache, the others' homes hidden from it, and a user-made
    token (module docstring)."""
    bin_dir = Path(bin_dir or Path(sys.executable).parent)  # the venv whose `ray` and `distill` run
    # A short temp dir: Ray's unix sockets live under it and their paths are limited to 107 bytes.
    temp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    if not own_homes:
        env["RAY_AUTH_TOKEN"] = uuid.uuid4().hex + uuid.uuid4().hex
    if own_homes and not can_hide_homes():
        raise RuntimeError("own_homes needs mount namespaces (`unshare --mount`: root or CAP_SYS_ADMIN)")
    gcs, dash = _free_port(), _free_port()
    head_env = env
    try:
        nodes = _nodes(workers, gcs, temp, env, own_homes, head_models)
        homes = [n.home for n in nodes if n.home is not None]
        if own_homes:
            _user_token(bin_dir, homes, env)
        head = nodes[0]
        head_env = head.env
        head.args += [
            f"--num-cpus={head_cpus}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ]
        for n in nodes:
            hide = [h for h in homes if h != n.home]
            _ray_start(bin_dir, n.args, n.env, hide)
        dashboard = f"http://127.0.0.1:{dash}"
        live = _wait_for_nodes(bin_dir, dashboard, head.env, 1 + len(workers), timeout)
        yield LocalCluster(dashboard, f"127.0.0.1:{gcs}", head.env, live, homes)
    finally:
        subprocess.run([str(bin_dir / "ray"), "stop", "--force"], env=head_env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(bin_dir: Path, dashboard: str, env: dict, n: int, timeout: float) -> list[dict]:
    nodes: list[dict] = []
    t_end = time.time() + timeout
    while time.time() < t_end:
        try:  # the dashboard answers a little after `ray start` returns
            out = _ray(bin_dir, "list", "nodes", "--address", dashboard, "--format", "json", env=env, timeout=60)
            nodes = [n for n in json.loads(out) if n["state"] == "ALIVE"]
        except RuntimeError:
            nodes = []
        if len(nodes) == n:
            return nodes
        time.sleep(1)
    raise RuntimeError(f"the cluster never had {n} live nodes: {nodes}")
