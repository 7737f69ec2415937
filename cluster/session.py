"""The only place that calls `ray.init`: embedded local Ray, or an existing cluster by address."""
from __future__ import annotations

import contextlib
import os

from distill.config import RayConfig

# Environment every Ray worker gets. Tokenizer thread pools fight the pinned stage threads on a small
# machine; Ray Data's own progress bars would interleave with distill's.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
              "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}


def alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


@contextlib.contextmanager
def ray_session(cfg: RayConfig):
    import ray

    kwargs = dict(runtime_env={"env_vars": WORKER_ENV}, log_to_driver=True, configure_logging=True,
                  logging_level="WARNING")
    # Under `ray job submit` the job's driver has RAY_ADDRESS set: join that cluster (the job's
    # runtime_env -- its working_dir -- is merged with ours by Ray). Otherwise no address means embedded.
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        print(f"[distill] joined the Ray cluster at {address}: {len(alive_nodes(ray))} node(s)", flush=True)
    else:
        # Token authentication stays on (Ray's default); the dashboard binds to loopback unless configured.
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=cfg.dashboard, dashboard_host=cfg.dashboard_host,
                 **kwargs)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        if cfg.stream_buffer_mib is not None:  # backpressure: a slow trainer pauses the teacher
            ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
                object_store_memory=int(cfg.stream_buffer_mib * 2**20))
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        yield ray
    finally:
        ray.shutdown()
