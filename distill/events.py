"""The stage event: what an actor tells the driver about one unit of its work (a teacher batch, a scored
block, an optimizer step, an evaluation). Actors send it through a Ray queue; the driver's one metrics
thread turns it into TensorBoard scalars, progress bars, the timeline and summary.json, and stores its
record, flat, as a line of events.jsonl.

A declared type, so a field misspelt at an emit site fails where it is written, not as a silently empty
plot; `record()` keeps events.jsonl's flat keys (`count/<name>`, `acc/<split>`) for `tail -f` and jq.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class StageEvent:
    stage: Literal["teacher", "scorer", "train", "eval"]
    actor: str  # "<stage>@<host>:<pid>", or "eval <model>"
    t0: float  # wall-clock seconds (time.time()) when the work began ...
    t1: float  # ... and ended: the timeline's bar, the stage's busy time
    rows_in: int
    rows_out: int
    counts: dict[str, float] = field(default_factory=dict)  # summed per stage (tokens_out, accepted, ...)
    cores: int | None = None  # cores the work held, where it is not one (a teacher replica's binding)
    step: int | None = None  # train: the optimizer step; eval: the checkpoint's step
    epoch: int | None = None
    loss: float | None = None
    lr: float | None = None
    horizon: int | None = None  # train: the run's (estimated) total steps, for the progress bar
    model: str | None = None  # eval: which model
    accuracy: dict[str, float] = field(default_factory=dict)  # eval: split -> accuracy
    node: str | None = None  # the Ray node it ran on (filled by `emit`)

    def record(self) -> dict:
        """The flat dict the metrics read and events.jsonl stores: unset fields left out, counts as
        `count/<name>`, accuracies as `acc/<split>`."""
        rec: dict = {"stage": self.stage, "actor": self.actor, "t0": self.t0, "t1": self.t1}
        for k in ("cores", "model", "step"):
            if (v := getattr(self, k)) is not None:
                rec[k] = v
        rec |= {"rows_in": self.rows_in, "rows_out": self.rows_out}
        for k in ("loss", "lr", "epoch"):
            if (v := getattr(self, k)) is not None:
                rec[k] = v
        rec |= {f"count/{k}": v for k, v in self.counts.items()}
        rec |= {f"acc/{k}": v for k, v in self.accuracy.items()}
        for k in ("horizon", "node"):
            if (v := getattr(self, k)) is not None:
                rec[k] = v
        return rec
