"""Run configuration: one pydantic model per component, YAML + `--set key=value` overrides.

Every model forbids unknown keys, so a typo in a recipe is an error naming the field, not a silent
default. Cross-field rules live in validators. The resolved config is written into the run dir.

The models live in submodules by component (base, sources, stages, evals); this module holds the run's
own (Ray, storage, the whole run), loading and overrides, and names every model, so `from distill.config
import TeacherConfig` is the one import path.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from distill.config.base import _Strict
from distill.config.evals import EvalConfig, SweepConfig
from distill.config.sources import FewShotExample, PromptConfig, PromptStyle, SourceConfig
from distill.config.stages import ROLE_NAMES, CorrectionConfig, ScorerConfig, TeacherConfig, TrainConfig

__all__ = [
    "RECIPE_DIR",
    "ROLE_NAMES",
    "ConfigError",
    "CorrectionConfig",
    "EvalConfig",
    "FewShotExample",
    "PromptConfig",
    "PromptStyle",
    "RayConfig",
    "RunConfig",
    "ScorerConfig",
    "SourceConfig",
    "StorageConfig",
    "SweepConfig",
    "TeacherConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "read_recipe",
    "recipe_path",
]

# pipelines/recipes/ in a source tree, distill/pipelines/recipes/ in an install (found without importing pipelines)
RECIPE_DIR = Path(importlib.util.find_spec("distill.pipelines").submodule_search_locations[0]) / "recipes"


class RayConfig(_Strict):
    address: str | None = Field(
        None, description="Ray address ('auto' for `ray start`); None starts an embedded local Ray."
    )
    num_cpus: int | None = Field(
        8,
        ge=1,
        description="Logical CPUs of the embedded Ray (ignored with an "
        "address). More logical than physical CPUs lets all stages co-exist on a "
        "small machine; threads are pinned per stage instead.",
    )
    dashboard: bool = Field(True, description="Start the Ray dashboard (embedded Ray).")
    verbose: bool = Field(
        False,
        description="Stream every Ray worker's output (vLLM, Ray Train, transformers) to "
        "the terminal. Off: the terminal shows distill's progress, plan and summary, and the "
        "workers' output is copied to runs/<id>/logs/ at the end (`--verbose` turns it on).",
    )
    dashboard_host: str = Field("127.0.0.1", description="Dashboard bind address.")
    stream_buffer_mib: float | None = Field(
        512,
        gt=0,
        description="Object-store budget of the trace stream (Ray Data resource limit): when the "
        "trainer is slower than the teacher, finished traces wait in at most about this much memory and the "
        "teacher pauses (backpressure) instead of buffering without bound. None: Ray Data's default share.",
    )


class StorageConfig(_Strict):
    uri: str | None = Field(
        None,
        description="Shared storage for the run's metrics: a path or any fsspec URL (s3://bucket/distill, "
        "gs://..., file:///mnt/shared). TensorBoard logs, summary.json, events, timeline, report and the "
        "resolved config are mirrored to <uri>/<run_id>/ while the run goes (every sync_every_s) and at its "
        "end, so they do not stay on whichever node the driver ran on. None: only output_dir.",
    )
    sync_every_s: float = Field(30.0, gt=0, description="Seconds between mirror passes during a run.")

    @field_validator("uri")
    @classmethod
    def _known_protocol(cls, v: str | None) -> str | None:
        if v:
            import fsspec
            from fsspec.registry import known_implementations, registry

            protocol = fsspec.utils.get_protocol(v)
            if protocol not in known_implementations and protocol not in registry:
                raise ValueError(f"fsspec knows no protocol {protocol!r}") from None
        return v  # the protocol's package (s3fs, gcsfs, ...) is checked when the run starts


class RunConfig(_Strict):
    name: str = Field("run", description="Recipe name; prefix of the run id.")
    output_dir: str = Field(
        "runs",
        description="Where <run_id>/ is written. On a multi-node cluster, an absolute "
        "path every node mounts (the trace store is written by scorers on any node and "
        "read by trainers on any node).",
    )
    seed: int = Field(0, description="Seed for everything that draws random numbers.")
    sources: list[SourceConfig] = Field(min_length=1, description="Problem sources, concatenated.")
    source_blocks: int = Field(
        8, ge=1, description="Blocks the problem dataset is cut into; one block would defeat streaming."
    )
    prompt: PromptConfig = Field(
        default_factory=PromptConfig,
        description="The task prompt: what the student "
        "is asked at inference and trains on, and what the in_distribution split asks. "
        "The teacher is asked the same unless teacher.prompt is set.",
    )
    stages: Literal["streamed", "sequential"] = Field(
        "streamed",
        description="streamed: generation, scoring, training and evaluation at once (the product). "
        "sequential: generation and scoring run to their end (the stream materialised), then training, then "
        "every evaluation (eval.in_loop is skipped: it would overlap training): the baseline `distill bench`'s "
        "overlap arms measure streaming against.",
    )
    teacher: TeacherConfig = Field(description="Teacher generation.")
    scorer: ScorerConfig = Field(default_factory=ScorerConfig, description="Verification and selection.")
    train: TrainConfig = Field(description="Student training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation of students.")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="`distill sweep`: one student per variant.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Where metrics are mirrored.")

    def teacher_prompt(self) -> PromptConfig:
        """How the teacher is asked: its own prompt, or the task prompt."""
        return self.teacher.prompt or self.prompt

    @model_validator(mode="after")
    def _arms_valid(self) -> "RunConfig":
        for name, over in self.sweep.arms.items():
            try:
                TrainConfig.model_validate({**self.train.model_dump(), **over})
            except ValidationError as e:
                raise ValueError(
                    f"sweep.arms.{name}: "
                    + "; ".join(
                        f"{'.'.join(str(x) for x in err['loc']) or 'train'}: {err['msg']}" for err in e.errors()
                    )
                ) from None
        return self

    @model_validator(mode="after")
    def _pool_unseen(self) -> "RunConfig":
        from distill.prompts import pool_clashes

        clashes = pool_clashes(self.train.prompt_pool, {**self.eval.prompt_styles, "direct": self.eval.direct})
        if clashes:
            raise ValueError(
                "; ".join(
                    f"train.prompt_pool.{p} is identical to eval.{'direct' if e == 'direct' else 'prompt_styles.' + e}"
                    for p, e in clashes
                )
                + ": a style trained on would no longer test robustness to an unseen prompt"
            )
        return self


class ConfigError(ValueError):
    """Invalid config: message names the field and what was expected. The CLI exits 2 on it."""


def _format_validation(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {json.dumps(got, default=str)[:80]})"
        lines.append(f"  {loc}: {e['msg']}{got_s}")
    return "invalid config:\n" + "\n".join(lines)


def _parse_value(raw: str) -> Any:
    # YAML scalars: 3 -> int, 0.5 -> float, true -> bool, [a, b] -> list, null -> None.
    return yaml.safe_load(raw)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`--set a.b.0.c=value`: dotted keys into mappings, non-negative indices into lists. A bad path is
    a ConfigError naming the key (exit 2), never a traceback or a silent write elsewhere."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node: Any = data
        parts = key.strip().split(".")
        for depth, p in enumerate(parts):
            where = ".".join(parts[: depth + 1])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):  # "-1" is not a digit string: no counting from the end
                    raise ConfigError(
                        f"--set {key}: {where!r} is not an index of a {len(node)}-item list (0..{len(node) - 1})"
                    )
                if last:
                    node[int(p)] = _parse_value(raw)
                else:
                    node = node[int(p)]
            elif isinstance(node, dict):
                if last:
                    node[p] = _parse_value(raw)
                else:
                    if node.get(p) is None:  # absent or null: a new mapping
                        node[p] = {}
                    node = node[p]
            else:
                raise ConfigError(
                    f"--set {key}: {'.'.join(parts[:depth])!r} is a value "
                    f"({json.dumps(node, default=str)[:40]}), not a mapping or list"
                )
    return data


def read_recipe(path: Path, seen: tuple[str, ...] = ()) -> dict:
    """A recipe's mapping; `extends: <recipe>` starts from that recipe (a shipped name, or a path relative
    to this file) and merges this one over it: mappings key by key, anything else (lists too) replaced."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("extends", None)
    if base is None:
        return data
    local = path.parent / str(base)
    parent = local if local.suffix in (".yaml", ".yml") and local.exists() else recipe_path(str(base))
    if str(parent.resolve()) in seen or parent.resolve() == path.resolve():
        raise ConfigError(f"{path}: extends {base!r} extends itself ({' -> '.join([*seen, str(parent)])})")
    return _merged(read_recipe(parent, (*seen, str(path.resolve()))), data)


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def recipe_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"recipe file not found: {p}")
        return p
    cand = RECIPE_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        known = ", ".join(sorted(x.stem for x in RECIPE_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown recipe {name_or_path!r}; shipped recipes: {known}")
    return cand


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    data = read_recipe(recipe_path(name_or_path))
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e)) from None
