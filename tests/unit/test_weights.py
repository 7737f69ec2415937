"""Per-token loss weights on the real student tokenizer (SmolLM2) and the weighted loss, pinned against
per-token cross entropy computed by hand."""

from __future__ import annotations

import pytest

from distill.models import resolve_model
from distill.trace.anatomy import analyse
from distill.trace.variants import variant_rows
from distill.train.loss_weights import collate_weighted, token_weights, weighted_loss
from distill.train.tokenize import IGNORE, encode_example, end_of_turn_ids, ensure_chat_template

TRACE = (
    "Sure! Great question.\nLet's add 2 and 3.\n2 + 3 = 5\nSo the answer is 5.\n"
    "I hope this helps! Let me know if you have any other questions."
)
MSGS = [{"role": "user", "content": "What is 2 + 3?"}]
ROLE_W = {"filler": 0.1, "plan": 0.5, "compute": 2.0, "answer": 1.5}
PATH_W = 3.0


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    ensure_chat_template(t)
    return t


def _spans(variant: str):
    row = dict(
        trace_id="t",
        text=TRACE,
        answer="5",
        reference_answer="5",
        verifier="exact",
        metadata=None,
        question="What is 2 + 3?",
    )
    r = next(r for r in variant_rows(row, analyse(TRACE, "5")) if r["variant"] == variant)
    return r["text"], r["spans"]


def _token_texts(tok, ids, labels):
    """(index, decoded text, char start in the completion) of each trained token, by decoding prefixes."""
    trained = [i for i, lab in enumerate(labels) if lab != IGNORE]
    out = []
    for i in trained:
        start = len(tok.decode(ids[trained[0] : i]))
        out.append((i, tok.decode([ids[i]]), start))
    return out


def test_weights_follow_roles_path_and_end_of_turn(tok):
    text, spans = _spans("full")
    ex = token_weights(tok, MSGS, text, spans, ROLE_W, max_len=512, path_weight=PATH_W)
    ids, labels, w = ex["input_ids"], ex["labels"], ex["weights"]
    assert ex["input_ids"] == encode_example(tok, MSGS, text, 512)["input_ids"]  # same tokens, same masks
    assert ex["labels"] == encode_example(tok, MSGS, text, 512)["labels"]
    assert len(w) == len(ids)
    assert all(wi == 0.0 for wi, lab in zip(w, labels) if lab == IGNORE)  # prompt and post-eot: 0
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert first > 10 and all(x == 0.0 for x in w[:first])

    # Expected weight of each token from the char it starts with (leading space skipped), by decoding.
    char_w = [1.0] * len(text)
    for s in spans:
        cw = ROLE_W[s["role"]] * (PATH_W if s["on_path"] else 1.0)
        char_w[s["start"] : s["end"]] = [cw] * (s["end"] - s["start"])
    tokens = _token_texts(tok, ids, labels)
    by_text = {}
    for i, piece, start in tokens[:-1]:
        lead = len(piece) - len(piece.lstrip()) if piece.strip() else 0
        c = start + lead
        assert w[i] == pytest.approx(char_w[c] if c < len(text) else 1.0), (piece, w[i])
        by_text.setdefault(piece.strip(), set()).add(w[i])
    assert by_text["Sure"] == by_text["Great"] == by_text["question"] == {0.1}  # filler
    assert by_text["helps"] == by_text["questions"] == {0.1}
    assert by_text["Let"] == {0.1, 0.5}  # "Let's add" is plan (off path), "Let me know" is filler
    assert by_text["="] == {2.0 * PATH_W}  # "2 + 3 = 5": compute, on the decision path
    assert by_text["answer"] == {1.5 * PATH_W}
    # whitespace-only tokens: "\n" between steps 1; the " " before a digit inside a step, that step's weight
    assert by_text[""] == {1.0, 0.5, 2.0 * PATH_W, 1.5 * PATH_W}
    i, piece, _ = tokens[-1]
    assert piece == "<|im_end|>" and ids[i] in end_of_turn_ids(tok) and labels[i] == ids[i] and w[i] == 1.0


def test_weights_without_path_weight_and_unknown_role(tok):
    text, spans = _spans("decision_points")
    assert text == "2 + 3 = 5\nSo the answer is 5."
    ex = token_weights(tok, MSGS, text, spans, {"compute": 2.0}, max_len=512)
    trained = [x for x, lab in zip(ex["weights"], ex["labels"]) if lab != IGNORE]
    n_compute = len(tok("2 + 3 = 5", add_special_tokens=False)["input_ids"])
    # compute tokens 2.0 (no path factor); "\n", the answer step (role absent from the dict) and eot: 1.0
    assert trained == [2.0] * n_compute + [1.0] * (len(trained) - n_compute)


def test_too_long_is_none(tok):
    text, spans = _spans("full")
    assert token_weights(tok, MSGS, text, spans, ROLE_W, max_len=16) is None


def _batch(tok):
    a_text, a_spans = _spans("full")
    b_text, b_spans = _spans("answer_only")
    a = token_weights(tok, MSGS, a_text, a_spans, {}, 512)
    b = token_weights(tok, MSGS, b_text, b_spans, {}, 512)
    return a, b, collate_weighted([a, b], tok.pad_token_id)


def test_collate_weighted_pads_weights_with_zero(tok):
    a, b, (ids, mask, labels, w) = _batch(tok)
    assert ids.shape == mask.shape == labels.shape == w.shape == (2, len(a["input_ids"]))
    n = len(b["input_ids"])
    assert w[1, :n].tolist() == b["weights"] and (w[1, n:] == 0).all() and (labels[1, n:] == IGNORE).all()


def test_weighted_loss_all_ones_is_mean_ce_and_reweighting_is_exact(tok):
    import torch
    import torch.nn.functional as F

    a, b, (ids, mask, labels, w) = _batch(tok)
    assert set(w[labels != IGNORE].tolist()) == {1.0}  # empty role_weights: every trained token 1
    torch.manual_seed(0)
    logits = torch.randn(ids.shape[0], ids.shape[1], len(tok))  # [B, T, V]
    # Per-token CE by hand: position t predicts label t+1.
    per_tok = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(ids.shape[0], -1)  # [B, T-1]
    trained = labels[:, 1:] != IGNORE
    mean_ce = per_tok[trained].mean()
    loss = weighted_loss(logits, labels, w)
    assert torch.allclose(loss, mean_ce, atol=1e-6)

    # Double the weight of the highest-loss trained token: the loss rises to (sum + l_k) / (n + 1).
    flat = torch.where(trained, per_tok, torch.tensor(-1.0))
    bi, ti = divmod(int(flat.argmax()), flat.size(1))
    w2 = w.clone()
    w2[bi, ti + 1] = 2.0  # weights are aligned with labels, so shift by one like them
    l_k, n = per_tok[bi, ti], trained.sum()
    expected = (per_tok[trained].sum() + l_k) / (n + 1)
    loss2 = weighted_loss(logits, labels, w2)
    assert torch.allclose(loss2, expected, atol=1e-6) and loss2 > loss
    # Weight on an untrained (prompt) position is ignored; all-zero weights do not divide by zero.
    w3 = w.clone()
    w3[0, 0:3] = 5.0
    assert torch.allclose(weighted_loss(logits, labels, w3), loss)
    assert weighted_loss(logits, labels, torch.zeros_like(w)).item() == 0.0
