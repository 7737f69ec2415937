"""The student's model and its optimizer step, Ray-free: `StudentStep` loads the model, trains one
optimizer step on micro-batches (padded or packed; loss weights per token), and saves and loads its own
state beside an HF checkpoint. The Ray Train worker loop that drives it is actors/train_loop.py.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable

from distill.config import PromptConfig, TrainConfig
from distill.prompts import messages_for, pick_style, style_of
from distill.train.accounting import (
    agreed_horizon,
    empty_step_metrics,
    trained_weight,
)
from distill.train.loss_weights import collate_weighted, token_weights, weighted_loss_sum
from distill.train.packing import collate_packed, label_logits_model, packed_loss_sum
from distill.train.schedule import lr_multiplier
from distill.train.tokenize import IGNORE, ensure_chat_template

STATE_FILE = "trainer_state.pt"  # optimizer, fp32 master weights (torch.save of tensors; loaded weights_only)
POSITION_FILE = "trainer_position.json"  # epoch, batches done in it, epoch-1 trace ids trained, steps, horizon
TRAINING_STATE_FILES = (STATE_FILE, POSITION_FILE)  # not part of the exported HF model directory


class StudentStep:
    """Model + optimiser + one `step(micro_batches) -> metrics` (Ray-free, so it is testable on its own).

    `reduce` sums a list of floats over all ranks (identity on one process): the trained-token count
    of an optimizer step is global (so are its row counts), so the loss is a token mean over the whole
    effective batch, and a step in which no rank has a token to train is skipped by every rank alike
    (no AdamW update, no schedule step: AdamW's momentum and weight decay would otherwise move the
    weights on nothing)."""

    def __init__(
        self,
        train: TrainConfig,
        prompt: PromptConfig,
        student_path: str,
        wrap=lambda m: m,
        reduce: Callable[[list[float]], list[float]] = lambda xs: xs,
        world: int = 1,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from distill.hardware import train_bf16
        from distill.models import on_this_node

        student_path = on_this_node(student_path)  # the driver's cache path may not exist on this node
        self.bf16 = train_bf16(train.bf16, torch.cuda.is_available() and train.use_gpu)
        self.cfg, self.reduce, self.world = train, reduce, world
        self.prompt = style_of(prompt)
        self.pool = {k: style_of(v) for k, v in train.prompt_pool.items()}
        self.tokenizer = AutoTokenizer.from_pretrained(student_path, trust_remote_code=train.trust_remote_code)
        ensure_chat_template(self.tokenizer)
        # fp32 master weights; bf16 autocast for the compute where native (self.bf16); saved in bf16 then.
        base = AutoModelForCausalLM.from_pretrained(
            student_path, dtype=torch.float32, trust_remote_code=train.trust_remote_code
        )
        base.config.use_cache = False
        if train.gradient_checkpointing:  # HF's own: each decoder layer re-run in the backward pass
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.base = base
        # packing: the wrapped module returns logits at label positions only (distill/train/packing.py); DDP wraps it
        self.packing = train.packing
        self.model = wrap(label_logits_model(base, train.packed_attention == "per_example") if self.packing else base)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.device = next(self.model.parameters()).device
        self.steps = 0  # optimizer steps taken
        self.total_steps = 1  # the schedule's horizon: set by the trainer (estimated, then exact)

    def lr(self) -> float:
        t = self.cfg
        return t.lr * lr_multiplier(self.steps, self.total_steps, t.lr_schedule, t.warmup_ratio, t.min_lr_ratio)

    def encode(self, rows: list[dict]) -> tuple[list[dict], int]:
        out, skipped = [], 0
        for r in rows:
            _, style = pick_style(r["trace_id"], self.prompt, self.pool, self.cfg.prompt_pool_share)
            ex = token_weights(
                self.tokenizer,
                messages_for(r["question"], style),
                r["text"],
                r.get("spans") or [],
                self.cfg.role_weights,
                self.cfg.max_seq_len,
                self.cfg.path_weight,
                # a correction: the student's own prefix is context after the style's prefill, never trained
                prefill=style["prefill"] + (r.get("prefix") or ""),
            )
            if ex is None:
                skipped += 1
            else:
                out.append(ex)
        return out, skipped

    def step(self, batches: list[list[dict]] | list[dict], horizon: float = 0.0) -> dict:
        """One optimizer step over micro-batches (gradient accumulation); a flat list of rows is one
        micro-batch. `horizon`: this rank's estimate of the run's total steps (0: no news)."""
        if batches and isinstance(batches[0], dict):
            batches = [batches]
        encoded = [self.encode(b) for b in batches]
        local_w = trained_weight(e for ex, _ in encoded for e in ex)
        local_rows, local_skipped = sum(len(b) for b in batches), sum(s for _, s in encoded)
        # one collective for the step's numbers: rows and skips are counted over all ranks
        global_w, horizon_sum, rows, skips = self.reduce([local_w, float(horizon), local_rows, local_skipped])
        self.total_steps = agreed_horizon(horizon_sum, self.steps, self.total_steps)
        n_rows, skipped = int(rows), int(skips)
        if global_w <= 0:  # nothing to train on any rank: no forward, no update, no schedule step
            return empty_step_metrics(n_rows, skipped, self.lr())
        loss_sum, tokens, trained, padded = 0.0, 0, 0, 0
        for i, (examples, _) in enumerate(encoded):
            part, ids, labels = self._backward(examples, last=i == len(encoded) - 1, global_w=global_w)
            loss_sum += float(part.detach())
            tokens += sum(len(e["input_ids"]) for e in examples)
            padded += int(ids.numel())  # what the step computed on, padding included
            trained += int((labels[:, 1:] != IGNORE).sum())
        lr = self._update()
        return {
            "loss": loss_sum / local_w if local_w else float("nan"),
            "tokens": tokens,
            "trained_tokens": trained,
            "padded_tokens": padded,
            "examples": n_rows - skipped,
            "skipped": skipped,
            "lr": lr,
            "stepped": True,
        }

    def _backward(self, examples: list[dict], last: bool, global_w: float):
        """Forward and backward of one micro-batch; DDP syncs gradients on the `last` one only.
        Returns (its weighted loss sum, the input ids and labels it computed on)."""
        import torch

        if not examples:  # this rank has nothing here but others do: join the collective with no tokens
            examples = [{"input_ids": [self.tokenizer.pad_token_id], "labels": [IGNORE], "weights": [0.0]}]
        sync = self.model.no_sync() if hasattr(self.model, "no_sync") and not last else nullcontext()
        with sync:
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                if self.packing:  # rows of max_seq_len, logits at label positions only
                    pack_len = max(self.cfg.pack_len, self.cfg.max_seq_len)
                    batch = collate_packed(examples, pack_len, self.tokenizer.pad_token_id)
                    ids, pos, labels, weights = (x.to(self.device) for x in batch)
                    part = packed_loss_sum(self.model, ids, pos, labels, weights)
                else:
                    batch = collate_weighted(examples, self.tokenizer.pad_token_id)
                    ids, mask, labels, weights = (x.to(self.device) for x in batch)
                    logits = self.model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
                    part = weighted_loss_sum(logits, labels, weights)  # sum of w * ce over this micro-batch
            # DDP averages gradients over ranks: x world makes the result the global token mean.
            (part * (self.world / global_w)).backward()
        return part, ids, labels

    def _update(self) -> float:
        """The optimizer step at the schedule's lr (gradients clipped to norm 1); returns that lr."""
        import torch

        for g in self.opt.param_groups:
            g["lr"] = self.lr()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps += 1
        return self.opt.param_groups[0]["lr"]

    def save(self, directory: str) -> None:
        """The HF model (safetensors) in the dtype it trained in: bf16 under bf16 autocast (half the
        size of the fp32 master copy, and what vLLM loads without a cast)."""
        import torch

        if not self.bf16:
            self.base.save_pretrained(directory)
        else:
            import json

            self.base.save_pretrained(
                directory, state_dict={k: v.detach().to(torch.bfloat16) for k, v in self.base.state_dict().items()}
            )
            # save_pretrained records the in-memory (fp32) dtype; the file holds bf16
            cfg_file = os.path.join(directory, "config.json")
            with open(cfg_file) as f:
                hf_cfg = json.load(f)
            with open(cfg_file, "w") as f:
                json.dump({**hf_cfg, "dtype": "bfloat16"}, f, indent=2)
        self.tokenizer.save_pretrained(directory)

    def save_state(self, directory: str, position: dict, optimizer: bool = True) -> None:
        """Optimizer, fp32 master weights and data position next to the weights: an exact resume.
        `optimizer=False` (the last epoch's checkpoint: nothing trains after it) writes the position only:
        the optimizer's moments and the fp32 master are 12 bytes a parameter (1.6 GB for the 135M
        student, 5-12 s of a core to write on the VM measured) that no resume would read."""
        import json

        import torch

        if optimizer:
            state = {"optimizer": self.opt.state_dict()}
            if self.bf16:  # the exported weights are bf16: keep the fp32 ones to continue from
                state["master"] = {k: v.detach().clone() for k, v in self.base.state_dict().items()}
            torch.save(state, os.path.join(directory, STATE_FILE))
        with open(os.path.join(directory, POSITION_FILE), "w") as f:
            record = {**position, "steps": self.steps, "total_steps": self.total_steps, "optimizer_saved": optimizer}
            json.dump(record, f)

    def load_state(self, directory: str) -> dict:
        """Restore what save_state wrote; returns the data position. Tensors only: weights_only=True."""
        import json

        import torch

        with open(os.path.join(directory, POSITION_FILE)) as f:
            position = json.load(f)
        if position.get("optimizer_saved", True):
            state = torch.load(os.path.join(directory, STATE_FILE), weights_only=True, map_location=self.device)
            if "master" in state:
                self.base.load_state_dict(state["master"])
            self.opt.load_state_dict(state["optimizer"])
        self.steps, self.total_steps = position["steps"], position.get("total_steps", 1)
        return position
