"""The only place that calls `ray.init`: embedded local Ray, or an existing cluster by address."""

from __future__ import annotations

import contextlib
import os

from distill.config import RayConfig

# Environment every Ray worker gets. Tokenizer thread pools fight the pinned stage threads on a small
# machine; Ray Data's own progress bars would interleave with distill's.
WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
}


def worker_env(job_config_json: str | None = None) -> dict[str, str]:
    """WORKER_ENV less the keys a submitted job's own runtime_env sets: Ray refuses to merge a job's
    runtime_env with ray.init's when both set one env var, even to the same value (ray/_private/worker.py,
    `_merge_runtime_env`). The user's value wins -- it reaches every worker of the job anyway.
    `job_config_json`: what Ray's job manager puts in RAY_JOB_CONFIG_JSON_ENV_VAR (None: not a job)."""
    import json

    if not job_config_json:
        return dict(WORKER_ENV)
    try:
        theirs = (json.loads(job_config_json).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        theirs = {}
    return {k: v for k, v in WORKER_ENV.items() if k not in theirs}


def unshared_nodes(ray, directory, nodes: list[dict], timeout_s: float = 300) -> dict[str, str]:
    """{node id: what went wrong} for the alive `nodes` that do not see a file the driver has just written
    in `directory` ("not shared"), or could not be asked ("no answer ..."): on a multi-node cluster every
    stage reads or writes the run directory (the store, checkpoints), so it must be shared storage mounted
    at the same path everywhere (a failed mount leaves a local directory of the same name)."""
    import uuid
    from pathlib import Path

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = directory / f".distill-shared-{token}"
    marker.write_text(token)

    def sees(path: str, want: str) -> bool:
        try:
            with open(path) as f:
                return f.read() == want
        except OSError:
            return False

    probe = ray.remote(num_cpus=0, max_retries=0)(sees)
    try:
        # the path as the stages get it (absolute, symlinks kept), not a driver-only resolution of it
        refs = {
            n["NodeID"]: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(os.path.abspath(marker), token)
            for n in nodes
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        out = {}
        for nid, r in refs.items():
            if r not in ready:
                out[nid] = f"no answer in {timeout_s:.0f} s"
                ray.cancel(r, force=True)
                continue
            try:
                if not ray.get(r):
                    out[nid] = "not shared"
            except Exception as e:  # the node died, its worker could not start, ...
                out[nid] = f"no answer ({type(e).__name__})"
        return out
    finally:
        marker.unlink(missing_ok=True)


def autoscaler_config(ray):
    """The autoscaler's node groups (resources, min/max count) as a ClusterConfig, or None (no
    autoscaler: an embedded Ray, a fixed `ray start` cluster, or one whose autoscaler runs elsewhere).

    First what the autoscaler stored in the GCS (`get_cluster_config()`, a private Ray API: read
    defensively). Ray 2.60's autoscalers (v1 and v2) never store it -- only later releases' v2 does; the
    GCS client of 2.60 has no call to do so -- so, else, the autoscaling config file the autoscaler on
    this node runs with: `ray up` starts it on the head with `--autoscaling-config
    ~/ray_bootstrap_config.yaml`, where `ray job submit` runs the driver too."""
    try:
        cc = ray._private.state.state.get_cluster_config()
    except Exception:
        cc = None
    if cc is not None and cc.node_group_configs:
        return cc
    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:
        return None
    path = autoscaling_config_path(gcs)
    if path is None:
        return None
    import yaml

    from distill.cluster.planner import cluster_config_from_launcher

    try:  # a file we cannot read or make sense of means no limits known, not a failed launch
        with open(path) as f:
            return cluster_config_from_launcher(yaml.safe_load(f))
    except Exception:
        return None


def autoscaling_config_path(gcs_address: str, proc: str = "/proc") -> str | None:
    """The `--autoscaling-config` of the autoscaler process (Ray's monitor) on this node that serves the
    cluster at `gcs_address`. Read from /proc by hand: Ray exposes neither the path nor the config, and
    psutil is not a dependency of ours."""
    for pid in os.listdir(proc) if os.path.isdir(proc) else []:
        if not pid.isdigit():
            continue
        try:
            with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:  # gone, or not ours to read
            continue
        config = _flag(args, "--autoscaling-config")
        if config and _flag(args, "--gcs-address") == gcs_address:
            if config.startswith("~") or os.path.isabs(config):
                return os.path.expanduser(config)
            try:  # relative to the autoscaler's working directory, not ours
                return os.path.join(os.readlink(os.path.join(proc, pid, "cwd")), config)
            except OSError:
                return None
    return None


def _flag(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in a command line."""
    for i, a in enumerate(args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None


def alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


@contextlib.contextmanager
def ray_session(cfg: RayConfig, logs_dir=None):
    """Ray for one command. Unless `cfg.verbose`, workers' output (engine and library chatter) stays off
    the terminal and is copied into `logs_dir` when the session ends."""
    import ray
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    env = worker_env(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR))
    kwargs = dict(
        runtime_env={"env_vars": env} if env else None,
        log_to_driver=cfg.verbose,
        configure_logging=True,
        logging_level="WARNING",
    )
    # Under `ray job submit` the job's driver has RAY_ADDRESS set: join that cluster (the job's
    # runtime_env -- its working_dir, its env vars -- is merged with ours by Ray). No address: embedded.
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        print(f"[distill] joined the Ray cluster at {address}: {len(alive_nodes(ray))} node(s)", flush=True)
    else:
        # Token authentication stays on (Ray's default); the dashboard binds to loopback unless configured.
        # Ray announces that default on every start ("Token authentication is enabled ... RAY_AUTH_MODE"):
        # true and expected here, so its logger is kept to errors (setting RAY_AUTH_MODE=token ourselves
        # would silence it too, but Ray caches its config at import: the driver then skips making a token
        # the GCS demands).
        import logging

        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=cfg.dashboard, dashboard_host=cfg.dashboard_host, **kwargs)
    _divert_raylet_notices(ray, None if cfg.verbose else (logs_dir or ""))
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        if cfg.stream_buffer_mib is not None:  # backpressure: a slow trainer pauses the teacher
            ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
                object_store_memory=int(cfg.stream_buffer_mib * 2**20)
            )
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        if logs_dir is not None and not cfg.verbose:
            print(
                f"[distill] workers' output (vLLM, Ray Train, ...): {logs_dir} (--verbose: on the terminal)", flush=True
            )
        yield ray
    finally:
        if logs_dir is not None and not cfg.verbose:
            save_worker_logs(ray, logs_dir)
        ray.shutdown()


# Raylet notices that say nothing is wrong: a run starts its stage actors at once, more than the raylet's
# startup concurrency (the core count) -- expected, and not something a user can act on.
_BENIGN_RAYLET = ("PYTHON worker processes have been started",)
_NOTICES: dict = {"divert": False, "dir": ""}  # this process's current session: divert? and where to


def _divert_raylet_notices(ray, logs_dir: str | None) -> None:
    """The driver prints the raylet's error channel on the terminal whatever `log_to_driver` says. Ray has
    no filter for it, so its printer is wrapped (once per process): while a quiet session runs, benign
    notices go to `logs_dir/raylet-notices.log` (nowhere when logs_dir is ""); everything else -- a killed
    worker, an OOM -- still reaches the terminal. logs_dir None (a --verbose session) prints everything."""
    import ray._private.worker as rw

    _NOTICES.update(divert=logs_dir is not None, dir=logs_dir or "")
    printer = getattr(rw, "print_to_stdstream", None)
    if printer is None or getattr(printer, "_distill", False):
        return

    def filtered(data, *args, **kwargs):
        lines = data.get("lines") or []
        if (
            _NOTICES["divert"]
            and data.get("pid") == "raylet"
            and any(b in line for line in lines for b in _BENIGN_RAYLET)
        ):
            if _NOTICES["dir"]:
                from pathlib import Path

                try:  # Ray's listener thread dies on an OSError: a full disk must not silence real errors
                    Path(_NOTICES["dir"]).mkdir(parents=True, exist_ok=True)
                    with open(Path(_NOTICES["dir"]) / "raylet-notices.log", "a") as f:
                        f.write("\n".join(lines) + "\n")
                except OSError:
                    pass
            return None
        return printer(data, *args, **kwargs)

    filtered._distill = True
    rw.print_to_stdstream = filtered


def save_worker_logs(ray, dest, cap_mib: float = 64) -> int:
    """Copy this node's Ray session logs (worker stdout/stderr, raylet, ...) into `dest`, newest
    first up to `cap_mib`: -> files copied. Ray keeps them under its temp dir; a run's own dir is where
    a user looks. (Only this node's: on a cluster the others' stay where Ray keeps them.)"""
    import shutil
    from pathlib import Path

    try:
        src = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except Exception:  # not connected, or a Ray without this private path: nothing to copy
        return 0
    if not src.is_dir():
        return 0
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    budget, n = cap_mib * 2**20, 0
    for p in files:
        size = p.stat().st_size
        if size == 0 or size > budget:
            continue
        target = dest / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        budget -= size
        n += 1
    return n
