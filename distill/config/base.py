"""The building blocks every component's config shares: strict models, placement, actor pools, core lists."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


def _core_bind(v: Any) -> Any:
    """A VLLM_CPU_OMP_THREADS_BIND value (`--set x.cpu_threads_bind=0` parses as a YAML int), checked
    by the parser that later reads it, so a malformed one ('0-x', '3-1') is a config error naming the
    field, not a ValueError inside a running engine."""
    from distill.hardware import core_set

    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if isinstance(v, str):  # anything else: pydantic's own str check names the type
        core_set(v)
    return v


CoreBind = Annotated[str, BeforeValidator(_core_bind)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_k_samples(samples: int, temperature: float, hint: str = "") -> None:
    """k samples per problem need sampling: at temperature 0 they would all be the same."""
    if samples > 1 and temperature == 0:
        raise ValueError(f"samples={samples} at temperature 0: greedy samples are all the same{hint}")


class _Placement(_Strict):
    """Where a stage's replicas may run: custom Ray resources and a node-label selector."""

    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica, e.g. {teacher_node: 1} when "
        "inference nodes are started with `ray start --resources '{\"teacher_node\": 8}'`.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Node-label selector per replica, e.g. {role: teacher} for nodes "
        "started with `ray start --labels role=teacher`. Values: 'v', '!v', 'in(a,b)', '!in(a,b)'.",
    )

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if x < 0 or k in ("CPU", "GPU", "memory", "object_store_memory")]
        if bad:
            raise ValueError(f"{bad} must be custom resources with amounts >= 0 (CPUs and GPUs have their own fields)")
        return v

    def placement_options(self) -> dict:
        """Ray options placing this stage's replicas: its custom resources and node-label selector."""
        out: dict = {}
        if self.resources:
            out["resources"] = dict(self.resources)
        if self.labels:
            out["label_selector"] = dict(self.labels)
        return out


class _ActorPool(_Placement):
    """An actor pool: size min..max, autoscaled by Ray Data between the two."""

    replicas_min: int = Field(1, ge=1, description="Actor pool minimum size.")
    replicas_max: int = Field(1, ge=1, description="Actor pool maximum size.")

    @model_validator(mode="after")
    def _pool(self):
        if self.replicas_min > self.replicas_max:
            raise ValueError(f"replicas_min ({self.replicas_min}) > replicas_max ({self.replicas_max})")
        return self
