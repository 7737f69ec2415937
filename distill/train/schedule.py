"""The student's training plan, as pure functions: learning-rate schedule, epoch order, micro-batches.

No torch, no ray: the trainer (actors/train_loop.py) asks these what to do, and the unit tests check
them on plain lists. Every rank must run the same number of optimizer steps and micro-batches (DDP's
collectives deadlock otherwise), so everything here is a deterministic function of the seed, the
epoch and the rows, the same on every rank.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Sequence

from distill.data.schema import stable_id


def lr_multiplier(step: int, total: int, schedule: str, warmup_ratio: float = 0.0, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based) of `total`.

    Linear warm-up over ceil(warmup_ratio * total) steps (the first step gets 1/warmup of the lr, not
    0, so no step is wasted), then constant / linear / cosine decay from 1 to `min_lr_ratio` at the
    last step. Past `total` (an estimate that came out short) it stays at the floor.
    """
    total = max(int(total), 1)
    warm = math.ceil(warmup_ratio * total)
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    span = max(total - warm - 1, 1)
    progress = min(max((step - warm) / span, 0.0), 1.0)
    if schedule == "linear":
        shape = 1.0 - progress
    elif schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected constant, linear or cosine")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def steps_per_epoch(rows: int, world: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps of one epoch of `rows` examples split equally over `world` ranks."""
    micro = math.ceil((rows // max(world, 1)) / batch_size)
    return math.ceil(micro / grad_accum)


def epoch_rows(rows: Sequence[dict], epoch: int, seed: int, rank: int, world: int, shuffle: bool = True) -> list[dict]:
    """One rank's equal shard of an epoch read from the store.

    Rows are first put in a canonical order (by trace_id), then permuted with a seed of (seed, epoch)
    when `shuffle`, so every rank computes the same permutation without talking to the others; the
    remainder that does not split equally is dropped (every rank runs the same number of steps)."""
    order = sorted(rows, key=lambda r: r["trace_id"])
    if shuffle:
        random.Random(int(stable_id("epoch-order", seed, epoch), 16)).shuffle(order)
    per_rank = len(order) // max(world, 1)
    return order[rank * per_rank : (rank + 1) * per_rank]


def micro_batches(
    rows: Sequence[dict], batch_size: int, length: Callable[[dict], int] | None = None, seed: int = 0, window: int = 64
) -> list[list[dict]]:
    """Cut rows into micro-batches of `batch_size` (the last may be shorter).

    With `length`, rows of similar length share a batch (less padding): within windows of `window`
    batches the rows are sorted by length, and the batch order is then shuffled (seeded), so the
    model does not see all short examples first (the grouping of HF's LengthGroupedSampler)."""
    if length is None:
        return [list(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    span = batch_size * window
    batches: list[list[dict]] = []
    for w in range(0, len(rows), span):
        chunk = sorted(rows[w : w + span], key=length, reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def optimizer_steps(
    batches: Iterator[list[dict]] | Sequence[list[dict]], grad_accum: int
) -> Iterator[list[list[dict]]]:
    """Group micro-batches into optimizer steps of `grad_accum` (the last step may hold fewer)."""
    group: list[list[dict]] = []
    for b in batches:
        group.append(b)
        if len(group) == grad_accum:
            yield group
            group = []
    if group:
        yield group
