"""Packing the student's examples into rows of `max_seq_len`, examples kept apart, and the loss at
label positions only.

A micro-batch of examples of unequal length right-padded to its longest wastes the padding's
compute. Packed, the examples of a micro-batch share as few rows as fit (first-fit decreasing), each
example with its own position ids starting at 0: transformers turns position ids that restart into a
block-diagonal causal mask when no attention mask is given (masking_utils.find_packed_sequence_indices;
SDPA on CPU, varlen flash attention where the model uses it), so attention never crosses examples.

The loss needs logits only where a label is trained (the completion; not the prompt, not padding):
`LabelLogits` runs the body, keeps the hidden states of those positions and applies the LM head to
them alone, so the full [B, T, V] logits never exist, and the cross entropy upcasts one chunk of
label positions at a time. It is a module of its own so that DDP wraps it (DDP's gradient hooks are
set up in its forward).

Hand-written rather than TRL's `DataCollatorWithFlattening` / padding-free mode: those pack a whole
dataset into one row for flash attention and compute full logits; here packing is per micro-batch
(the optimizer steps, the token-mean loss and the schedule stay exactly those of the padded path) and
per-token weights ride along.
"""

from __future__ import annotations

from typing import Sequence

from distill.train.tokenize import IGNORE


def pack_rows(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """First-fit decreasing: -> rows of example indices, each row's total length <= max_len
    (an example longer than max_len gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        n = lengths[i]
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max_len - n)
    return rows


def padding_fraction(lengths: Sequence[int], rows: Sequence[Sequence[int]]) -> float:
    """Share of a [rows, longest row] batch that is padding."""
    if not rows:
        return 0.0
    width = max(sum(lengths[i] for i in r) for r in rows)
    return 1.0 - sum(lengths) / (len(rows) * width)


def collate_packed(examples: list[dict], max_len: int, pad_id: int):
    """-> input_ids [R, T], position_ids [R, T], labels [R, T], weights [R, T].

    Each example keeps its labels and weights (its first label is IGNORE: a prompt token, never
    predicted from the example before it). The tail of a row is padding with positions that restart
    at 0 (its own block), label IGNORE and weight 0."""
    import torch

    lengths = [len(e["input_ids"]) for e in examples]
    rows = pack_rows(lengths, max_len)
    T = max(sum(lengths[i] for i in r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    weights = torch.zeros((len(rows), T), dtype=torch.float32)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            e, n = examples[i], lengths[i]
            ids[r, at : at + n] = torch.tensor(e["input_ids"])
            pos[r, at : at + n] = torch.arange(n)
            lab = torch.tensor(e["labels"])
            lab[0] = IGNORE
            labels[r, at : at + n] = lab
            weights[r, at : at + n] = torch.tensor(e["weights"], dtype=torch.float32)
            at += n
        pos[r, at:] = torch.arange(T - at)
    return ids, pos, labels, weights


def label_positions(labels):
    """Bool [B, T]: positions t whose next token t+1 is a trained label (the only logits the loss needs)."""
    import torch

    sel = torch.zeros_like(labels, dtype=torch.bool)
    sel[:, :-1] = labels[:, 1:] != IGNORE
    return sel


def _label_logits_class():
    import torch

    class LabelLogits(torch.nn.Module):
        """A causal LM that returns logits only at the selected positions: [N, V], N = select.sum()."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, select, position_ids=None, attention_mask=None):
            out = self.lm.get_decoder()(
                input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False
            )
            hidden = out.last_hidden_state[select]  # [N, H]
            return self.lm.get_output_embeddings()(hidden)  # [N, V]

    return LabelLogits


PER_EXAMPLE = "distill_per_example"  # the attention implementation name registered with transformers


def per_example_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids=None,
    **kwargs,
):
    """Causal SDPA over each example of a packed row alone: query [B, H, T, D], key/value [B, Hkv, T, D]
    -> ([B, T, H, D], None). Examples are the runs of `position_ids` that start at 0.

    Hand-written because the libraries that skip the cross-example blocks do not run here: flash-attn's
    varlen kernel is GPU-only, and flex_attention needs torch.compile on a CPU (minutes per shape). SDPA
    with transformers' block-diagonal mask computes the whole row x row score matrix instead: measured on
    2 CPU cores, that ate the gain of removing the padding (distill bench, train_packed). Per example,
    each SDPA call is causal and dense over the example's own length only."""
    import torch
    import torch.nn.functional as F

    special = attention_mask is not None or any(
        kwargs.get(k) is not None for k in ("sliding_window", "softcap", "s_aux")
    )
    if position_ids is None or query.shape[2] != key.shape[2] or special:
        # not a packed training forward, or an attention this function does not implement: transformers' SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if special and position_ids is not None:
            raise NotImplementedError(
                "per_example attention handles plain causal attention only (no mask, sliding "
                "window, softcap or sinks): set train.packed_attention=block_mask"
            )
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention, laid out as transformers' repeat_kv: kv head j serves j*g..j*g+g-1
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    T = query.shape[2]
    position_ids = position_ids.expand(query.shape[0], -1)
    rows = []
    for b in range(query.shape[0]):
        # an example starts wherever positions do not continue (transformers' find_packed_sequence_indices rule)
        pos = position_ids[b]
        starts = [0] + ((pos[1:] - pos[:-1]) != 1).nonzero().flatten().add(1).tolist()
        bounds = zip(starts, starts[1:] + [T])
        rows.append(
            torch.cat(
                [
                    F.scaled_dot_product_attention(
                        query[b : b + 1, :, s:e],
                        key[b : b + 1, :, s:e],
                        value[b : b + 1, :, s:e],
                        dropout_p=dropout,
                        is_causal=True,
                        scale=scaling,
                    )
                    for s, e in bounds
                ],
                dim=2,
            )
        )
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # per_example_attention finds the examples in position_ids: no [T, T] mask is built


def use_per_example_attention(lm) -> None:
    """Make an HF causal LM attend within each packed example (per_example_attention); its saved config
    is unchanged (transformers does not save the attention implementation)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PER_EXAMPLE, per_example_attention)
    AttentionMaskInterface.register(PER_EXAMPLE, _no_mask)
    lm.set_attn_implementation(PER_EXAMPLE)


def label_logits_model(lm, per_example: bool = False):
    """Wrap an HF causal LM (see LabelLogits); its parameters are the LM's own. `per_example`: attention
    per packed example (use_per_example_attention) instead of SDPA over a block-diagonal mask."""
    if per_example:
        use_per_example_attention(lm)
    return _label_logits_class()(lm)


def weighted_ce_sum(logits, targets, weights, chunk: int = 1024):
    """sum(w * ce) of logits [N, V] against targets [N] with weights [N], upcast to fp32 one chunk of
    positions at a time (never an fp32 copy of all N x V logits)."""
    import torch.nn.functional as F

    # Starts in the graph: with no label positions (a rank's empty micro-batch, which must still join
    # DDP's gradient all-reduce) the sum is a zero whose backward reaches every parameter.
    total = logits.sum().float() * 0.0
    for s in range(0, logits.size(0), chunk):
        ce = F.cross_entropy(logits[s : s + chunk].float(), targets[s : s + chunk], reduction="none")  # [n]
        total = total + (ce * weights[s : s + chunk].float()).sum()
    return total


def packed_loss_sum(model, ids, pos, labels, weights, chunk: int = 1024):
    """sum(w * ce) over the label tokens of a packed batch; `model` is LabelLogits (or DDP of it)."""
    sel = label_positions(labels)  # [R, T]
    logits = model(input_ids=ids, select=sel, position_ids=pos)  # [N, V]
    targets = labels[:, 1:][sel[:, :-1]]  # [N]: the token after each selected position
    w = weights[:, 1:][sel[:, :-1]]  # [N]
    return weighted_ce_sum(logits, targets, w, chunk)
