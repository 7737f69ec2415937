"""Per-token loss weights from the role spans of a variant (distill.trace.variants), and the weighted loss.

Tokenisation and masks come from `distill.train.tokenize.encode_example`; here we only add a weight per
token: 0 on the prompt (and anything else unlabelled), the role's weight on completion tokens inside a
step span (times `path_weight` on the decision path), 1.0 on separators and on the end-of-turn token,
which the student must always learn to emit.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Sequence

from distill.train.tokenize import IGNORE, collate, encode_example, render_prompt


def _completion_offsets(
    tokenizer, messages: list[dict], completion: str, prefill: str = ""
) -> tuple[list[int], list[int]]:
    """Completion-side token ids (as encode_example makes them) and each token's char position in
    `completion`: its first non-whitespace char, or its first char for a whitespace-only token.

    Byte-level BPE glues the leading space to the word (" Great"); keying on that space would put the
    first word of a step in the gap before it.
    """
    prompt_text = render_prompt(tokenizer, messages) + prefill
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": prefill + completion}], tokenize=False
    )
    comp_text = full_text[len(prompt_text) :]
    base = comp_text.find(completion)
    if base < 0:  # a template that strips the reply: locate the stripped text, keep our coordinates
        lead = len(completion) - len(completion.lstrip())
        base = comp_text.find(completion.strip()) - lead
        if base + lead < 0:
            raise ValueError("chat template rewrites the completion; cannot map tokens to spans")
    enc = tokenizer(comp_text, add_special_tokens=False, return_offsets_mapping=True)
    positions = []
    for a, b in enc["offset_mapping"]:
        first = next((c for c in range(a, b) if not comp_text[c].isspace()), a)
        positions.append(first - base)
    return list(enc["input_ids"]), positions


def _span_weight(
    pos: int, spans: Sequence[dict], starts: list[int], role_weights: dict[str, float], path_weight: float | None
) -> float:
    k = bisect_right(starts, pos) - 1
    if k < 0 or pos >= spans[k]["end"]:
        return 1.0  # separator between steps, or template text after the completion
    span = spans[k]
    w = float(role_weights.get(span["role"], 1.0))
    if path_weight is not None and span.get("on_path"):
        w *= path_weight
    return w


def token_weights(
    tokenizer,
    messages: list[dict],
    completion: str,
    spans: Sequence[dict],
    role_weights: dict[str, float],
    max_len: int,
    path_weight: float | None = None,
    prefill: str = "",
) -> dict[str, Any] | None:
    """-> {input_ids, labels, weights} (equal lengths), or None when it does not fit in max_len.

    `spans` are {start, end, role, on_path} char spans in `completion`, non-overlapping. `prefill` is
    text the assistant turn starts with (part of the prompt, not trained).
    """
    ex = encode_example(tokenizer, messages, completion, max_len, prefill)
    if ex is None:
        return None
    ids, labels = ex["input_ids"], ex["labels"]
    comp_ids, positions = _completion_offsets(tokenizer, messages, completion, prefill)
    # Trained tokens start right after the prompt, and there is always at least one (end of turn).
    p = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    n = min(len(comp_ids), len(ids) - p)
    if ids[p : p + n] != comp_ids[:n]:
        raise ValueError("re-tokenised completion differs from encode_example's; cannot align weights")
    spans = sorted(spans, key=lambda s: s["start"])
    starts = [s["start"] for s in spans]
    last = max(i for i, lab in enumerate(labels) if lab != IGNORE)
    weights = [0.0] * len(ids)
    for i in range(p, last + 1):
        if labels[i] == IGNORE:
            continue
        if i == last or i - p >= n:
            weights[i] = 1.0  # end of turn (encode_example's last label, maybe an appended eos): learn to stop
        else:
            weights[i] = _span_weight(positions[i - p], spans, starts, role_weights, path_weight)
    return {"input_ids": ids, "labels": labels, "weights": weights}


def weighted_loss_sum(logits, labels, weights):
    """sum(w * ce) over label tokens of next-token cross entropy (divide by the weight mass for a mean).

    logits [B, T, V]; labels [B, T] aligned with input_ids (IGNORE where untrained); weights [B, T].
    """
    import torch.nn.functional as F

    logits = logits[:, :-1, :].float()  # [B, T-1, V]: position t predicts token t+1
    target = labels[:, 1:]  # [B, T-1]
    w = weights[:, 1:].float() * (target != IGNORE).float()  # [B, T-1]
    ce = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view_as(w)  # [B, T-1]
    return (ce * w).sum()


def weighted_loss(logits, labels, weights):
    """Weighted next-token cross entropy: sum(w * ce) / sum(w) over label tokens."""
    import torch

    w = weights[:, 1:].float() * (labels[:, 1:] != IGNORE).float()
    return weighted_loss_sum(logits, labels, weights) / torch.clamp(w.sum(), min=1e-8)


def collate_weighted(examples: list[dict], pad_id: int):
    """Right-pad. -> input_ids [B, T], attention_mask [B, T], labels [B, T], weights [B, T] (pad 0)."""
    import torch

    ids, mask, labels = collate(examples, pad_id)
    weights = torch.zeros(ids.shape, dtype=torch.float32)
    for i, e in enumerate(examples):
        weights[i, : len(e["weights"])] = torch.tensor(e["weights"], dtype=torch.float32)
    return ids, mask, labels, weights
