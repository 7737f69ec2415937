"""Student training: `train_loop_per_worker` for Ray Train's TorchTrainer, driving actors/student.py's
StudentStep (the model and its optimizer step).

Epoch 1 consumes accepted traces as a stream from the live pipeline (`get_dataset_shard`), so training
starts while the teacher is still generating. Epochs >= 2 read the trace store instead (nothing is
generated twice), reshuffled with a seeded permutation. Every rank runs the same number of micro-
batches and optimizer steps in every epoch (equal streaming splits; equal shards of the store),
otherwise DDP's collectives deadlock. What to train in which order, and at which learning rate, is
decided by the pure functions of distill/train/schedule.py; where a restarted worker resumes by
distill/train/resume.py; what a step counts (trained weight, the run's horizon) by distill/train/accounting.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from functools import partial
from typing import Callable, Iterable

from distill.actors.checkpoint_storage import checkpoint_scratch, drop_stale_scratch, move_into_storage
from distill.actors.student import StudentStep
from distill.config import TrainConfig
from distill.data.schema import TRAIN_INPUT, require_columns
from distill.events import StageEvent
from distill.faults import fault_point
from distill.metrics import emit
from distill.train.accounting import (
    estimated_horizon,
    exact_horizon,
)
from distill.train.resume import (
    checkpoint_due,
    epoch_start,
    epochs_to_run,
    fresh_position,
    in_step,
    merged_ids,
    position_record,
    resume_message,
    untrained,
)
from distill.train.schedule import epoch_rows, micro_batches, optimizer_steps


def store_training_rows(store_root: str, supervision: dict[str, float]) -> list[dict]:
    """What epochs >= 2 train on: per accepted trace, the variant the mixture picks, if its re-check
    passed (`ok`): the same rule as the live stream's (distill/trace/scoring.py training_table)."""
    from distill.data.store import TraceStore
    from distill.trace.variants import picked_variants

    return [
        dict(r, trace_id=r["parent_trace_id"])
        for r in picked_variants(TraceStore(store_root).variants(ok_only=True).to_pylist(), supervision)
    ]


def shared_store_rows(store_root: str, supervision: dict[str, float], rank: int, world: int) -> list[dict]:
    """`store_training_rows` listed once, by rank 0, and broadcast: ranks listing a shared filesystem
    each on their own can see different parts (NFS attribute caching), get unequal steps and deadlock."""
    if world == 1:
        return store_training_rows(store_root, supervision)
    import torch.distributed as dist

    box = [store_training_rows(store_root, supervision) if rank == 0 else None]
    # over gloo (host memory) even when training on NCCL: the rows are text, not tensors for a GPU
    dist.broadcast_object_list(box, src=0, group=_gloo_group())
    return box[0]


def all_ranks(obj, world: int) -> list:
    """`obj` of every rank, in rank order (all_gather_object; over gloo even when training on NCCL)."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, obj, group=_gloo_group())
    return out


_GLOO = None


def _gloo_group():
    """None (the default group) under gloo; else one gloo group made once (new_group is itself a collective)."""
    global _GLOO
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if _GLOO is None:
        _GLOO = dist.new_group(backend="gloo")
    return _GLOO


def store_epoch_batches(
    rows: list[dict], epoch: int, t: TrainConfig, seed: int, rank: int, world: int
) -> list[list[dict]]:
    """One rank's micro-batches of an epoch read from the store (shuffled, optionally length-grouped)."""
    mine = epoch_rows(rows, epoch, seed, rank, world, t.shuffle)
    length = (lambda r: r.get("student_tokens") or len(r["text"])) if t.group_by_length else None
    return micro_batches(mine, t.batch_size, length, seed=seed * 1000 + epoch)


class StreamHorizon:
    """How many optimizer steps the run will take, estimated while epoch 1 still streams.

    The stream's length is unknown until the teacher is done: the store says how many traces were
    scored so far and how many training rows they gave, so the rows of the whole epoch are estimated
    as rows_so_far x expected_traces / scored_so_far. Parts are immutable once committed, so each is
    read once."""

    def __init__(self, store_root: str, supervision: dict[str, float], expected_traces: int):
        from distill.data.store import TraceStore

        self.store, self.supervision, self.expected = TraceStore(store_root), supervision, expected_traces
        self._trace_parts: dict[str, int] = {}
        self._committed: set[str] = set()
        self._variant_parts: dict[str, list[dict]] = {}

    def epoch_rows(self) -> float | None:
        import pyarrow.parquet as pq

        from distill.trace.variants import picked_variants

        for p in self.store.parts(self.store.traces_dir):
            if p.name not in self._trace_parts:
                ids = pq.read_table(p, columns=["trace_id"]).column("trace_id").to_pylist()
                self._trace_parts[p.name] = len(ids)
                self._committed.update(ids)
        for p in self.store.parts(self.store.variants_dir):
            if p.name not in self._variant_parts:
                t = pq.read_table(p, columns=["parent_trace_id", "variant", "ok"]).to_pylist()
                self._variant_parts[p.name] = picked_variants(t, self.supervision)
        scored = sum(self._trace_parts.values())
        if not scored:
            return None
        # a block's variants are written before its traces (its commit): count those of committed blocks
        rows = sum(r["parent_trace_id"] in self._committed for v in self._variant_parts.values() for r in v)
        return rows * max(self.expected, scored) / scored


def _ray_reduce(world: int) -> Callable[[list[float]], list[float]]:
    """Sum floats over all training ranks (gloo / nccl all_reduce); identity on one rank."""
    if world == 1:
        return lambda xs: xs

    def reduce(xs: list[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        t = torch.tensor(xs, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    return reduce


class WorkerLoop:
    """One training worker's epochs: the steps (with their events), the checkpoints with the data
    position, and each epoch's micro-batches (epoch 1 from the stream, later ones from the store).
    `config` is the train_loop_config student_trainer (pipelines/stages.py) builds."""

    def __init__(
        self,
        config: dict,
        student: StudentStep,
        position: dict,
        rank: int,
        world: int,
        cores_at_start: set[int] | None = None,
    ):
        self.config, self.t, self.student, self.position = config, config["train"], student, position
        self.rank, self.world = rank, world
        self.cores_at_start = cores_at_start  # bound to train.cpu_threads_bind: the cores to widen to later
        self.events = config["events"] if rank == 0 else None
        self.actor = f"train@{socket.gethostname()}:{os.getpid()}"
        self.horizon = (
            StreamHorizon(config["store_root"], self.t.supervision, config["expected_traces"]) if rank == 0 else None
        )
        self.store_rows: list[dict] | None = None  # epochs >= 2: listed once, when epoch 2 begins
        self.last: dict = {}  # the latest step's metrics (an epoch without steps reports the one before)

    def run(self) -> None:
        for epoch in epochs_to_run(self.position, self.t.epochs):
            self.run_epoch(epoch)

    def run_epoch(self, epoch: int) -> None:
        every = self.t.checkpoint_every
        skip, trained = epoch_start(self.position, epoch, self.world)
        n_batches = skip
        for group in optimizer_steps(self.epoch_batches(epoch, skip, set(trained)), self.t.grad_accum):
            for b in group:
                if b:
                    require_columns("train", b[0].keys(), TRAIN_INPUT)
            self.last = self.run_step(group, epoch, estimate=epoch == 1)
            n_batches += len(group)
            if epoch == 1:
                trained += [r["trace_id"] for b in group for r in b]
            if checkpoint_due(self.student.steps, every):
                self.checkpoint(epoch, n_batches, trained)
        if epoch == 1:  # later checkpoints carry it, even when no epoch-end one is written (every | steps)
            self.position["epoch1_steps"] = self.student.steps
        if not checkpoint_due(self.student.steps, every):
            self.checkpoint(epoch, n_batches, trained, final=epoch == self.t.epochs, epoch_done=True)

    def epoch_batches(self, epoch: int, skip: int, done_ids: set[str]) -> Iterable[list[dict]]:
        """This rank's micro-batches of `epoch`, less those trained before a restart."""
        import ray.train
        import torch

        t = self.t
        if epoch == 1:
            shard = ray.train.get_dataset_shard("train")
            batches = (b.to_pylist() for b in shard.iter_batches(batch_size=t.batch_size, batch_format="pyarrow"))
            if not done_ids:
                return batches
            # a restart: the replayed stream less what the checkpoint trained, dealt unevenly to ranks
            left = untrained(batches, done_ids)
            return in_step(left, self.student.reduce) if self.world > 1 else left
        if t.torch_threads_later:  # the live stream is over: the teacher's cores are free now
            if self.cores_at_start is not None:  # before the new threads start: they inherit this thread's cores
                os.sched_setaffinity(0, self.cores_at_start)
            torch.set_num_threads(t.torch_threads_later)
        if self.store_rows is None:
            self.store_rows = shared_store_rows(self.config["store_root"], t.supervision, self.rank, self.world)
            # The run's length is now exact: epoch 1's steps, plus the later epochs of known size.
            epoch1 = self.position.get("epoch1_steps") or self.student.steps
            exact = exact_horizon(epoch1, len(self.store_rows), t.epochs, self.world, t.batch_size, t.grad_accum)
            self.student.total_steps = max(exact, self.student.steps + 1)
        return store_epoch_batches(self.store_rows, epoch, t, self.config["seed"], self.rank, self.world)[skip:]

    def run_step(self, group: list[list[dict]], epoch: int, estimate: bool) -> dict:
        t, student = self.t, self.student
        t0 = time.time()
        est = 0.0
        if estimate and self.horizon is not None and (rows := self.horizon.epoch_rows()):
            est = estimated_horizon(rows, t.epochs, self.world, t.batch_size, t.grad_accum)
        m = student.step(group, horizon=est)
        emit(
            self.events,
            StageEvent(
                "train",
                self.actor,
                t0,
                time.time(),
                rows_in=m["examples"] + m["skipped"],  # the step's rows on every rank (tokens: this rank's)
                rows_out=m["examples"],
                counts={"tokens": m["tokens"], "skipped_too_long": m["skipped"], "empty_steps": int(not m["stepped"])},
                step=student.steps,
                epoch=epoch,
                loss=m["loss"],
                lr=m["lr"],
                horizon=student.total_steps,
            ),
        )
        return m

    def checkpoint(
        self,
        epoch: int,
        batches: int,
        trained_ids: list[str],
        final: bool = False,
        epoch_done: bool = False,
    ) -> None:
        """Rank 0 saves weights, optimizer state and data position and reports them; the others report
        the metrics only (every rank must call report)."""
        import ray.train

        student = self.student
        metrics = {"epoch": epoch, "step": student.steps, "loss": self.last.get("loss", float("nan"))}
        if epoch == 1 and not epoch_done and self.world > 1:  # a restart skips what any rank trained
            trained_ids = merged_ids(all_ranks(trained_ids, self.world))
        if self.rank != 0:
            ray.train.report(metrics)
            return
        tmp = checkpoint_scratch()
        try:
            student.save(tmp)
            epoch1_steps = self.position.get("epoch1_steps")
            position = position_record(epoch, epoch_done, batches, trained_ids, epoch1_steps)
            student.save_state(tmp, position, optimizer=not final)
            fault_point("train.before_report")  # written, not yet in the storage: the restart must not read it
            self.report(metrics, tmp, epoch, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when the report moved it into the storage

    def report(self, metrics: dict, directory: str, epoch: int, final: bool) -> None:
        """Report a checkpoint. In-loop evaluation: Ray Train scores it in a task while we keep
        training; the final checkpoint is scored on the whole suite by the driver instead."""
        import ray.train
        from ray.train import Checkpoint, ValidationTaskConfig

        steps = self.student.steps
        validation = (
            ValidationTaskConfig(fn_kwargs={"step": steps, "epoch": epoch})
            if self.config.get("in_loop_eval") and not final
            else False
        )
        ray.train.report(
            metrics,
            checkpoint=Checkpoint.from_directory(directory),
            checkpoint_dir_name=f"checkpoint-step{steps:06d}",
            checkpoint_upload_fn=move_into_storage,
            validation=validation,
        )


def load_student(config: dict, world: int) -> tuple[StudentStep, dict]:
    """The student and its data position: from the latest checkpoint Ray Train reports for this run's
    storage path when resuming (a restarted worker group, or `distill run --resume`), else fresh."""
    import ray.train
    import ray.train.torch

    # prepare_model moves the model to this worker's device and wraps it in DDP when world > 1.
    reduce = _ray_reduce(world)
    make = partial(StudentStep, config["train"], config["prompt"], wrap=ray.train.torch.prepare_model, reduce=reduce)
    resume_ckpt = ray.train.get_checkpoint()
    if resume_ckpt is None:
        return make(config["student_path"], world=world), fresh_position()
    with resume_ckpt.as_directory() as d:
        student = make(d, world=world)
        position = student.load_state(d)
    if not position.get("optimizer_saved", True) and epochs_to_run(position, config["train"].epochs):
        raise ValueError(
            f"train.epochs: the checkpoint to resume from ends the run's {position['epoch']} epoch(s) and holds no "
            f"optimizer state; train.epochs = {config['train'].epochs} would train on from it (start a new run)"
        )
    print(resume_message(student.steps, position))
    return student, position


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import torch

    from distill.hardware import confine

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cores_at_start = os.sched_getaffinity(0)
    # This thread computes (torch_threads 1) or starts torch's pool. One worker only: several data-parallel
    # workers on one node would share the cores named.
    bound = confine(config["train"].cpu_threads_bind) if world == 1 else None
    torch.set_num_threads(config["train"].torch_threads)
    torch.manual_seed(config["seed"])
    if rank == 0:
        drop_stale_scratch()
    student, position = load_student(config, world)
    WorkerLoop(config, student, position, rank, world, cores_at_start if bound else None).run()
