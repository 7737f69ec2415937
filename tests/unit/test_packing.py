"""Packing: rows that fit, examples kept apart, and the same loss and gradients as right-padding, on
the real student (SmolLM2-135M, fp32)."""

import pytest

from distill.train.packing import collate_packed, pack_rows, padding_fraction
from distill.train.tokenize import IGNORE


def test_first_fit_decreasing_rows_fit_and_hold_every_example_once():
    lengths = [300, 120, 90, 200, 60, 448, 30, 250]
    rows = pack_rows(lengths, 448)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 448 for r in rows)
    assert len(rows) == 4  # 1498 tokens: 4 rows is the least that can hold them
    padded = padding_fraction(lengths, [[i] for i in range(len(lengths))])
    assert padding_fraction(lengths, rows) < 0.17 < padded


def test_packed_rows_restart_positions_and_never_label_across_examples():
    exs = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "weights": [0, 1, 1]},
        {"input_ids": [8, 9], "labels": [8, 9], "weights": [1, 1]},
        {"input_ids": [1, 2, 3, 4], "labels": [IGNORE, IGNORE, 3, 4], "weights": [0, 0, 1, 1]},
    ]
    ids, pos, labels, weights = collate_packed(exs, 8, pad_id=0)
    assert ids.shape == (2, 7)  # rows: [4 + 3 tokens], [2 tokens + padding]
    assert ids[0].tolist() == [1, 2, 3, 4, 5, 6, 7] and pos[0].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert ids[1].tolist() == [8, 9, 0, 0, 0, 0, 0] and pos[1].tolist() == [0, 1, 0, 1, 2, 3, 4]
    # the first token of an example is never a target (it would be predicted from another example)
    assert labels[0].tolist() == [IGNORE, IGNORE, 3, 4, IGNORE, 6, 7]
    assert labels[1].tolist() == [IGNORE, 9] + [IGNORE] * 5
    assert weights[1].tolist() == [1, 1, 0, 0, 0, 0, 0]


def _examples(tok, n=6):
    from distill.prompts import messages_for, style_of
    from distill.train.loss_weights import token_weights

    out = []
    for i in range(n):
        q = "State the final answer: " + " + ".join(str(7 * k + i) for k in range(2 + 3 * i)) + " ="
        comp = "\n".join(f"step {k}: {k * i} + {k} = {k * i + k}" for k in range(1 + 2 * i)) + "\nAnswer: 42"
        spans = [{"start": 0, "end": len(comp) // 2, "role": "decision", "on_path": True}]
        out.append(
            token_weights(
                tok,
                messages_for(q, style_of({"instruction": "Solve."})),
                comp,
                spans,
                {"decision": 2.0, "plan": 1.0, "verify": 0.5, "other": 1.0},
                448,
                1.5,
            )
        )
    return out


# The shipped per-example attention is checked with activation checkpointing on (the recompute changes
# no arithmetic, so it covers the plain case too; each case loads the real student: ~35 s).
@pytest.mark.parametrize("chunk,per_example,recompute", [(1024, True, True), (7, False, False)])
def test_packed_loss_and_gradients_equal_the_padded_ones_on_the_real_student(chunk, per_example, recompute):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.models import resolve_model
    from distill.train.loss_weights import collate_weighted, weighted_loss_sum
    from distill.train.packing import label_logits_model, packed_loss_sum

    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    exs = _examples(tok)
    assert len({len(e["input_ids"]) for e in exs}) == len(exs)  # unequal lengths: padding to remove

    ids, mask, labels, weights = collate_weighted(exs, tok.pad_token_id)
    padded = weighted_loss_sum(model(input_ids=ids, attention_mask=mask).logits, labels, weights)
    padded.backward()
    g_pad = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    if recompute:  # activation checkpointing (train.gradient_checkpointing): active in train mode only
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        assert model.model.gradient_checkpointing
    pids, pos, plabels, pweights = collate_packed(exs, 448, tok.pad_token_id)
    assert pids.shape[0] < len(exs) and pids.numel() < ids.numel()
    layer, calls = model.model.layers[0], []
    run = layer.forward  # counted on the instance: a recompute re-runs forward (forward hooks do not fire again)
    layer.forward = lambda *a, **k: calls.append(1) or run(*a, **k)
    packed = packed_loss_sum(label_logits_model(model, per_example), pids, pos, plabels, pweights, chunk=chunk)
    in_forward = len(calls)
    packed.backward()
    del layer.forward
    assert in_forward > 0 and len(calls) == (2 if recompute else 1) * in_forward  # recomputed in the backward
    assert packed.item() == pytest.approx(padded.item(), rel=1e-4)
    # the losses are sums over ~500 tokens, so gradients are large: compare relative to each one's size
    # (measured: ~1e-6 relative, fp32 summation order; a crossed attention or a shifted label is ~1e-1)
    for n, p in model.named_parameters():
        rel = float((p.grad - g_pad[n]).norm() / g_pad[n].norm().clamp_min(1e-12))
        assert rel < 1e-4, (n, rel)


def test_per_example_attention_splits_where_positions_do_not_continue():
    """Examples start wherever position ids do not continue (not only at 0); each attends to itself alone."""
    import torch
    import torch.nn.functional as F

    from distill.train.packing import per_example_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 10, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    pos = torch.tensor([[3, 4, 5, 0, 1, 2, 3, 7, 8, 9]])  # three runs: [0,3) [3,7) [7,10)
    out, _ = per_example_attention(None, q, k, v, None, position_ids=pos)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    want = torch.cat(
        [
            F.scaled_dot_product_attention(q[:, :, s:e], kk[:, :, s:e], vv[:, :, s:e], is_causal=True)
            for s, e in ((0, 3), (3, 7), (7, 10))
        ],
        dim=2,
    ).transpose(1, 2)
    assert out.shape == (1, 10, 4, 8) and torch.allclose(out, want, atol=1e-6)
    whole = F.scaled_dot_product_attention(q, kk, vv, is_causal=True).transpose(1, 2)
    assert not torch.allclose(out[:, 3:], whole[:, 3:], atol=1e-3)  # it did not attend across examples
