"""Where a (re)started training worker picks up, as pure functions of the data position it checkpointed.

A position is {epoch, epoch_done, batches, trained_ids, epoch1_steps} (trainer_position.json, written
next to the weights with the step counters): the epoch it was in, whether that epoch had ended, the
micro-batches of the epoch trained, and for an unfinished epoch 1 the trace ids already trained
(epoch 1 streams from the live pipeline, so it is resumed by id, not by count). No torch, no ray.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator


def fresh_position() -> dict:
    """The position of a run that has trained nothing yet."""
    return {"epoch": 1, "epoch_done": False, "batches": 0, "trained_ids": []}


def epochs_to_run(position: dict, epochs: int) -> range:
    """The epochs still to train: from the checkpointed one (the next, if it had ended) to the last."""
    start = position["epoch"] + 1 if position["epoch_done"] else position["epoch"]
    return range(start, epochs + 1)


def epoch_start(position: dict, epoch: int, world: int = 1) -> tuple[int, list[str]]:
    """(store micro-batches to skip, epoch-1 trace ids already trained) as `epoch` begins.

    Only the checkpoint's own unfinished epoch resumes part-way. Epochs >= 2 read the store in a
    seeded order, so the batches done are skipped by count. Epoch 1 streams: the ids every rank had
    trained at the checkpoint (gathered into it) are skipped when the stream replays them; the new
    streaming split deals them to ranks unevenly, so with several ranks `in_step` keeps the steps equal.
    A checkpoint written before ids were gathered holds rank 0's only: with several ranks its epoch 1
    is trained again from the start (skipping some ranks' rows but not others' would train those twice)."""
    resuming = epoch == position["epoch"] and not position["epoch_done"]
    if not resuming:
        return 0, []
    if epoch == 1:
        every_rank = world == 1 or position.get("ids_of") == "all ranks"
        return 0, list(position["trained_ids"]) if every_rank else []
    return position["batches"], []


def merged_ids(per_rank: Iterable[list[str]]) -> list[str]:
    """The epoch-1 trace ids trained on any rank, once each, in rank order (what a checkpoint records)."""
    return list(dict.fromkeys(i for ids in per_rank for i in ids))


def in_step(batches: Iterable[list[dict]], reduce: Callable[[list[float]], list[float]]) -> Iterator[list[dict]]:
    """This rank's micro-batches, as many as the rank with the most: while any rank still has one, a
    rank whose stream has ended yields an empty micro-batch (StudentStep joins the step's collectives
    with no tokens). `reduce` sums over ranks and is called once per micro-batch by every rank alike.
    Needed where ranks can hold unequal shares: an epoch-1 stream less the rows trained before a restart."""
    it = iter(batches)
    while True:
        b = next(it, None)
        (have,) = reduce([0.0 if b is None else 1.0])
        if not have:
            return
        yield [] if b is None else b


def untrained(batches: Iterable[list[dict]], done_ids: set[str]) -> Iterator[list[dict]]:
    """The stream's micro-batches less the rows trained before the restart (replayed from the ledger);
    a micro-batch left empty is dropped."""
    return (kept for b in batches if (kept := [r for r in b if r["trace_id"] not in done_ids]))


def position_record(
    epoch: int, epoch_done: bool, batches: int, trained_ids: list[str], epoch1_steps: int | None
) -> dict:
    """What a checkpoint records of the data position; trace ids only while epoch 1 is unfinished."""
    return {
        "epoch": epoch,
        "epoch_done": epoch_done,
        "batches": batches,
        "trained_ids": trained_ids if epoch == 1 and not epoch_done else [],
        "ids_of": "all ranks",  # the ids are gathered from every rank (older checkpoints: rank 0's)
        "epoch1_steps": epoch1_steps,
    }


def checkpoint_due(steps: int, every: int) -> bool:
    """A checkpoint after this optimizer step (every N steps; 0: none inside an epoch)."""
    return bool(every) and steps % every == 0


def resume_message(steps: int, position: dict) -> str:
    """The line a resumed worker prints."""
    where = "done" if position["epoch_done"] else f"{position['batches']} batches in"
    if position["epoch"] == 1 and not position["epoch_done"]:
        where += f", {len(position['trained_ids'])} traces trained"
    return f"[distill] train: resumed at step {steps} (epoch {position['epoch']}, {where})"
