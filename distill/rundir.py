"""A run's directory, `<output_dir>/<name>-<date>-<time>-<hex>/`, and the config written into it.

Shared by every driver (run, sweep, evaluate); below pipelines/, so none of them imports another for it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

from distill.config import RunConfig


def new_run_dir(cfg: RunConfig, prefix: str | None = None) -> tuple[str, Path]:
    name = f"{prefix}-{cfg.name}" if prefix else cfg.name
    run_id = f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(cfg.output_dir).resolve() / run_id
    run_dir.mkdir(parents=True)
    return run_id, run_dir


def config_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (`runs/<id>/config.yaml`): `distill run <that file>` reruns it."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
