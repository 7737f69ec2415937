"""Completion-only masks on the real student tokenizer (SmolLM2, fetched by `make models`)."""

import pytest

from distill.models import resolve_model
from distill.train.tokenize import IGNORE, collate, encode_example, end_of_turn_ids, ensure_chat_template


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    ensure_chat_template(t)
    return t


MSGS = [{"role": "user", "content": "What is 2 + 3?"}]


def test_prompt_masked_completion_and_end_of_turn_trained(tok):
    ex = encode_example(tok, MSGS, "2 + 3 = 5.\nAnswer: 5", max_len=256)
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels)
    prompt_len = len(
        tok(tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True), add_special_tokens=False)[
            "input_ids"
        ]
    )
    assert all(x == IGNORE for x in labels[:prompt_len])  # no loss on the prompt
    trained = [i for i, x in enumerate(labels) if x != IGNORE]
    assert trained[0] == prompt_len  # loss starts at the first reply token
    eot = end_of_turn_ids(tok)
    last = trained[-1]
    assert ids[last] in eot and labels[last] == ids[last]  # the end-of-turn token is trained
    assert tok.decode([ids[last]]) == "<|im_end|>"
    assert all(labels[i] == IGNORE for i in range(last + 1, len(ids)))  # what follows it is not
    assert tok.decode([ids[i] for i in trained]).startswith("2 + 3 = 5.\nAnswer: 5")


def test_too_long_is_skipped_not_cut(tok):
    assert encode_example(tok, MSGS, "word " * 400, max_len=64) is None


def test_collate_pads_right(tok):
    a = encode_example(tok, MSGS, "5", 256)
    b = encode_example(tok, MSGS, "It is five, so 5", 256)
    ids, mask, labels = collate([a, b], tok.pad_token_id)
    assert ids.shape == mask.shape == labels.shape == (2, len(b["input_ids"]))
    assert mask[0].sum() == len(a["input_ids"]) and (labels[0, len(a["input_ids"]) :] == IGNORE).all()


def test_tokenizer_without_template_gets_chatml():
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    t.chat_template = None
    ensure_chat_template(t)
    ex = encode_example(t, MSGS, "5", 64)
    assert ex is not None and any(x != IGNORE for x in ex["labels"])
