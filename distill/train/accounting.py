"""What the trainer counts, as pure functions: the loss weight an optimizer step trains on, the run's
length in optimizer steps (the schedule's horizon: estimated while epoch 1 streams, exact after), and
the metrics of a step that trained nothing. No torch, no ray.
"""

from __future__ import annotations

from typing import Iterable

from distill.train.schedule import steps_per_epoch
from distill.train.tokenize import IGNORE


def trained_weight(examples: Iterable[dict]) -> float:
    """Sum of the loss weights at the positions that are trained (labels past the first, not IGNORE):
    the denominator of the step's token-mean loss once summed over ranks."""
    return sum(float(sum(w for w, lab in zip(e["weights"][1:], e["labels"][1:]) if lab != IGNORE)) for e in examples)


def agreed_horizon(horizon_sum: float, steps: int, current: int) -> int:
    """The horizon after the ranks' estimates are summed (only rank 0 estimates; 0: no news): never
    before the step about to be taken."""
    return max(int(round(horizon_sum)), steps + 1) if horizon_sum > 0 else current


def estimated_horizon(rows: float, epochs: int, world: int, batch_size: int, grad_accum: int) -> int:
    """The run's steps if every epoch has the `rows` estimated for the streaming epoch 1."""
    return epochs * steps_per_epoch(int(rows), world, batch_size, grad_accum)


def exact_horizon(epoch1_steps: int, later_rows: int, epochs: int, world: int, batch_size: int, grad_accum: int) -> int:
    """The run's steps once epoch 1 is over: its steps, plus the later epochs over the store's rows."""
    return epoch1_steps + (epochs - 1) * steps_per_epoch(later_rows, world, batch_size, grad_accum)


def empty_step_metrics(n_rows: int, skipped: int, lr: float) -> dict:
    """A step in which no rank had a token to train: no forward, no update, no schedule step."""
    return {
        "loss": float("nan"),
        "tokens": 0,
        "trained_tokens": 0,
        "examples": n_rows - skipped,
        "skipped": skipped,
        "lr": lr,
        "stepped": False,
    }
