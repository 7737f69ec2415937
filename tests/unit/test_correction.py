"""Corrections (distill/trace/correction.py): where a wrong student answer is cut, what the teacher is
asked, which continuations are kept, and what the trainer then learns from (the real student tokenizer)."""

import pytest

from distill.models import resolve_model
from distill.prompts import style_of
from distill.trace.correction import (
    accept_continuation,
    continuation_request,
    correction_example,
    correction_point,
)
from distill.train.loss_weights import token_weights
from distill.train.tokenize import IGNORE, ensure_chat_template

STYLE = style_of({"instruction": "Work left to right, one operation per line.", "prefill": ""})
Q = "State the final answer to the following arithmetic problem: 41 + 7 - 15 + 2 ="


def test_a_wrong_answer_is_cut_before_its_first_wrong_claim():
    text = "41 + 7 = 48\n48 - 15 = 34\n34 + 2 = 36\nAnswer: 36"
    p = correction_point(text, "35")
    assert p is not None and p.reason == "wrong_claim" and p.step == 1
    assert p.prefix == "41 + 7 = 48\n" and text[: p.cut] == p.prefix


def test_a_right_answer_has_nothing_to_correct_and_a_wrong_answer_without_a_wrong_claim_is_cut_at_its_answer():
    assert correction_point("41 + 7 = 48\n48 - 15 = 33\n33 + 2 = 35\nAnswer: 35", "35") is None
    text = "41 + 7 = 48\n48 - 15 = 33\n33 + 2 = 35\nAnswer: 53"  # every step right, the answer miscopied
    p = correction_point(text, "35")
    assert p is not None and p.reason == "answer" and p.prefix == "41 + 7 = 48\n48 - 15 = 33\n33 + 2 = 35\n"
    assert correction_point("I do not know.", "35") is None  # nothing localises the error


def test_a_prefix_ending_on_the_right_number_does_not_pass_an_answerless_continuation():
    prefix = "41 + 7 = 48\n48 - 15 = 33\n33 + 2 = 35\n"  # the "answer" cut: every step right
    assert accept_continuation(prefix, "That is all.", "35") == (False, "wrong answer")
    assert accept_continuation(prefix, "Answer: 35", "35") == (True, "ok")


def test_the_teacher_continues_the_students_own_text_in_the_students_prompt():
    messages, prefill = continuation_request(Q, style_of({**STYLE, "prefill": "Steps:\n"}), "41 + 7 = 48\n")
    assert messages[-1] == {"role": "user", "content": f"{Q}\n\n{STYLE['instruction']}"}
    assert prefill == "Steps:\n41 + 7 = 48\n"


@pytest.mark.parametrize(
    "continuation, ok, reason",
    [
        ("48 - 15 = 33\n33 + 2 = 35\nAnswer: 35", True, "ok"),
        ("48 - 15 = 33\n33 + 2 = 36\nAnswer: 36", False, "wrong answer"),
        ("48 - 15 = 31\n33 + 2 = 35\nAnswer: 35", False, "wrong claim in the continuation"),  # right by luck
        ("  \n", False, "empty continuation"),
        ("Done.", False, "wrong answer"),  # no answer of its own: the prefix's last number must not count
        ("48 - 15 = 33\n33 + 2 = 35\n35 + 0 = 36\nAnswer: 35", False, "wrong claim in the continuation"),
    ],
)
def test_a_continuation_is_kept_only_if_it_reaches_the_answer_without_a_wrong_claim(continuation, ok, reason):
    assert accept_continuation("41 + 7 = 48\n", continuation, "35") == (ok, reason)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    ensure_chat_template(t)
    return t


def test_the_student_trains_on_the_continuation_only_with_its_own_prefix_as_context(tok):
    prefix, continuation = "41 + 7 = 48\n", "48 - 15 = 33\n33 + 2 = 35\nAnswer: 35"
    ex = correction_example(Q, STYLE, prefix, continuation)
    w = token_weights(tok, ex["messages"], ex["completion"], [], {}, 512, prefill=ex["prefill"])
    trained = [i for i, lab in zip(w["input_ids"], w["labels"]) if lab != IGNORE]
    text = tok.decode(trained)
    assert text.startswith("48 - 15 = 33") and "41 + 7" not in text  # the prefix is context, never a target
    assert text.endswith("Answer: 35" + tok.eos_token)  # the end of turn is learned too
    first = next(k for k, lab in enumerate(w["labels"]) if lab != IGNORE)
    prompt = tok.decode(w["input_ids"][:first])  # everything before the first trained token
    assert prompt.endswith(prefix) and Q in prompt
