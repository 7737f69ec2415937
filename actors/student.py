"""Student training: `train_loop_per_worker` for Ray Train's TorchTrainer.

Epoch 1 consumes accepted traces as a stream from the live pipeline (`get_dataset_shard`), so training
starts while the teacher is still generating. Epochs >= 2 read the trace store instead: nothing is
generated twice. Every rank runs the same number of steps in every epoch (equal streaming splits;
equal shards of the store), otherwise DDP's collectives deadlock.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from typing import Iterator

from distill.metrics import emit
from distill.schema import TRAIN_INPUT, require_columns
from distill.sources import teacher_messages
from distill.tokenize import IGNORE, ensure_chat_template
from distill.weights import collate_weighted, token_weights, weighted_loss

STATE_FILE = "trainer_state.pt"  # optimizer + scheduler (torch.save of tensors; loaded weights_only)
POSITION_FILE = "trainer_position.json"  # epoch, batches done in it, epoch-1 trace ids trained
TRAINING_STATE_FILES = (STATE_FILE, POSITION_FILE)  # not part of the exported HF model directory


def store_epoch_rows(store_root: str, supervision: dict[str, float], rank: int, world: int) -> list[dict]:
    """The chosen supervision of every accepted trace, from the store; an equal shard per rank
    (the remainder is dropped, so every rank runs the same number of steps)."""
    from distill.store import TraceStore
    from distill.variants import choose_variant

    rows = [dict(r, trace_id=r["parent_trace_id"]) for r in TraceStore(store_root).variants().to_pylist()
            if r["variant"] == choose_variant(r["parent_trace_id"], supervision)]
    per_rank = len(rows) // world
    return rows[rank * per_rank:(rank + 1) * per_rank]


def _batches(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


class StudentStep:
    """Model + optimiser + one `step(rows) -> metrics` (Ray-free, so it is testable on its own)."""

    def __init__(self, cfg: dict, student_path: str, wrap=lambda m: m):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t = cfg["train"]
        self.cfg, self.prompt = t, cfg["prompt"]
        self.tokenizer = AutoTokenizer.from_pretrained(student_path, trust_remote_code=t["trust_remote_code"])
        ensure_chat_template(self.tokenizer)
        base = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32,
                                                    trust_remote_code=t["trust_remote_code"])
        base.config.use_cache = False
        self.base = base
        self.model = wrap(base)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
        warm = max(t["warmup_steps"], 1)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warm))
        self.device = next(self.model.parameters()).device
        self.steps = 0

    def encode(self, rows: list[dict]) -> tuple[list[dict], int]:
        out, skipped = [], 0
        for r in rows:
            msgs = teacher_messages(r["question"], self.prompt["system"], self.prompt["instruction"])
            ex = token_weights(self.tokenizer, msgs, r["text"], r.get("spans") or [], self.cfg["role_weights"],
                               self.cfg["max_seq_len"], self.cfg["path_weight"])
            if ex is None:
                skipped += 1
            else:
                out.append(ex)
        return out, skipped

    def step(self, rows: list[dict]) -> dict:
        import torch

        examples, skipped = self.encode(rows)
        if not examples:
            # Every rank must still join the collective: a step with no trained tokens (loss 0).
            examples = [{"input_ids": [self.tokenizer.pad_token_id], "labels": [IGNORE], "weights": [0.0]}]
        ids, mask, labels, weights = (x.to(self.device) for x in collate_weighted(examples, self.tokenizer.pad_token_id))
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.cfg["bf16"]):
            logits = self.model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
        # Next-token loss over completion tokens only, weighted per token by role (all 1 by default).
        loss = weighted_loss(logits.float(), labels, weights)
        n_tok = (labels[:, 1:] != IGNORE).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.steps += 1
        return {"loss": float(loss.detach()), "tokens": int(mask.sum()), "trained_tokens": int(n_tok),
                "examples": len(rows) - skipped, "skipped": skipped, "lr": self.sched.get_last_lr()[0]}

    def save(self, directory: str) -> None:
        self.base.save_pretrained(directory)  # safetensors
        self.tokenizer.save_pretrained(directory)

    def save_state(self, directory: str, position: dict) -> None:
        """Optimizer, scheduler and data position next to the weights, so training can resume exactly."""
        import json

        import torch

        torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()},
                   os.path.join(directory, STATE_FILE))
        with open(os.path.join(directory, POSITION_FILE), "w") as f:
            json.dump({**position, "steps": self.steps}, f)

    def load_state(self, directory: str) -> dict:
        """Restore what save_state wrote; returns the data position. Tensors only: weights_only=True."""
        import json

        import torch

        state = torch.load(os.path.join(directory, STATE_FILE), weights_only=True, map_location=self.device)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        with open(os.path.join(directory, POSITION_FILE)) as f:
            position = json.load(f)
        self.steps = position["steps"]
        return position


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch
    from ray.train import Checkpoint

    t = config["train"]
    torch.set_num_threads(t["torch_threads"])
    torch.manual_seed(config["seed"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    events = config["events"] if rank == 0 else None
    actor = f"train@{socket.gethostname()}:{os.getpid()}"
    # Resume (a restarted worker group, or `distill run --resume`): weights, optimizer and data position
    # from the latest checkpoint Ray Train reports for this run's storage path.
    resume_ckpt = ray.train.get_checkpoint()
    position = {"epoch": 1, "epoch_done": False, "batches": 0, "trained_ids": []}
    if resume_ckpt is not None:
        with resume_ckpt.as_directory() as d:
            # prepare_model moves the model to this worker's device and wraps it in DDP when world > 1.
            student = StudentStep(config, d, wrap=ray.train.torch.prepare_model)
            position = student.load_state(d)
        print(f"[distill] train: resumed at step {student.steps} (epoch {position['epoch']}, "
              f"{'done' if position['epoch_done'] else str(position['batches']) + ' batches in'})")
    else:
        student = StudentStep(config, config["student_path"], wrap=ray.train.torch.prepare_model)

    def run_step(rows: list[dict], epoch: int) -> dict:
        t0 = time.time()
        m = student.step(rows)
        emit(events, {"stage": "train", "actor": actor, "t0": t0, "t1": time.time(), "step": student.steps,
                      "rows_in": len(rows), "rows_out": m["examples"], "loss": m["loss"], "lr": m["lr"],
                      "epoch": epoch, "count/tokens": m["tokens"], "count/skipped_too_long": m["skipped"]})
        return m

    def checkpoint(epoch: int, last: dict, batches: int, trained_ids: list[str], final: bool = False,
                   epoch_done: bool = False) -> None:
        from ray.train import ValidationTaskConfig

        metrics = {"epoch": epoch, "step": student.steps, "loss": last.get("loss", float("nan"))}
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                student.save(tmp)
                student.save_state(tmp, {"epoch": epoch, "epoch_done": epoch_done, "batches": batches,
                                         "trained_ids": trained_ids if epoch == 1 and not epoch_done else []})
                # In-loop evaluation: Ray Train scores this checkpoint in a task while we keep training.
                # The final checkpoint is scored on the whole suite by the driver instead.
                validation = (ValidationTaskConfig(fn_kwargs={"step": student.steps, "epoch": epoch})
                              if config.get("in_loop_eval") and not final else False)
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"checkpoint-step{student.steps:06d}", validation=validation)
            else:
                ray.train.report(metrics)

    every = t["checkpoint_every"]
    last: dict = {}
    start = position["epoch"] + 1 if position["epoch_done"] else position["epoch"]
    for epoch in range(start, t["epochs"] + 1):
        resuming = epoch == position["epoch"] and not position["epoch_done"]
        trained: list[str] = list(position["trained_ids"]) if resuming else []
        done_ids = set(trained)
        skip = position["batches"] if resuming and epoch > 1 else 0
        if epoch == 1:
            shard = ray.train.get_dataset_shard("train")
            batches = (b.to_pylist() for b in shard.iter_batches(batch_size=t["batch_size"], batch_format="pyarrow"))
            if done_ids and world == 1:
                # Rows trained before the restart come round again (replayed from the ledger): skip
                # them. With several ranks, skipping would give ranks unequal steps (a DDP deadlock),
                # so epoch 1 is then trained again from its start.
                batches = (kept for b in batches if (kept := [r for r in b if r["trace_id"] not in done_ids]))
            elif world > 1:
                trained = []
        else:
            if t["torch_threads_later"]:  # the live stream is over: the teacher's cores are free now
                torch.set_num_threads(t["torch_threads_later"])
            rows = store_epoch_rows(config["store_root"], t["supervision"], rank, world)
            batches = _batches(rows[skip * t["batch_size"]:], t["batch_size"])
        n_batches = skip
        for rows in batches:
            if rows:
                require_columns("train", rows[0].keys(), TRAIN_INPUT)
            last = run_step(rows, epoch)
            n_batches += 1
            if epoch == 1:
                trained += [r["trace_id"] for r in rows]
            if every and student.steps % every == 0:
                checkpoint(epoch, last, n_batches, trained)
        if not every or student.steps % every:
            checkpoint(epoch, last, n_batches, trained, final=epoch == t["epochs"], epoch_done=True)
