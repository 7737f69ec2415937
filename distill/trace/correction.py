"""Corrections (issue 14's text-level error signal): where a student's own answer first goes wrong, the
teacher's request to continue it from there, and whether the continuation is good supervision.

The anatomy already finds the first step with a wrong arithmetic claim. A correction keeps the
student's text before that step (its own right start), asks the teacher to continue from it (an
assistant prefill, so it works for any teacher/student pair: no shared tokenizer, no logprobs), and
is accepted only if the whole text reaches the right answer and the continuation itself makes no
wrong claim. As supervision the student's prefix is context (a prefill, not trained) and the
teacher's continuation is the target. Pure Python (no ray / vllm / torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.prompts import Style, messages_for
from distill.trace.anatomy import Anatomy, analyse
from distill.trace.answers import extract_answer, is_correct, verify


@dataclass(frozen=True)
class CorrectionPoint:
    """Where a wrong student answer is cut: `prefix == text[:cut]` is kept, the rest is rewritten."""

    cut: int  # character offset in the student's text
    prefix: str
    step: int  # index of the step the rewrite starts at
    reason: str  # "wrong_claim": the first wrong arithmetic claim; "answer": no wrong claim, wrong answer


def correction_point(text: str, reference: str, anatomy: Anatomy | None = None) -> CorrectionPoint | None:
    """Where to cut a student's answer for the teacher to continue; None when there is nothing to correct
    (the answer is right) or no step to cut at (no wrong claim and no answer step: nothing localises the
    error, and restarting from nothing is an ordinary trace, not a correction)."""
    a = anatomy if anatomy is not None else analyse(text, reference)
    if a.answer_correct:
        return None
    if a.first_error_step is not None:
        step, reason = a.first_error_step, "wrong_claim"
    else:  # every claim checks out but the answer is wrong: rewrite from the step that states it
        step = next((s.index for s in a.steps if s.role == "answer"), None)
        if step is None:
            return None
        reason = "answer"
    cut = a.steps[step].start
    return CorrectionPoint(cut, text[:cut], step, reason)


def continuation_request(question: str, style: Style, prefix: str) -> tuple[list[dict], str]:
    """(chat messages, assistant prefill) asking the teacher to continue the student's prefix: the
    problem in `style` (the student's prompt, so the continuation fits where it will be trained), the
    assistant turn opened with the style's own prefill followed by the student's text."""
    return messages_for(question, style), style.get("prefill", "") + prefix


def accept_continuation(prefix: str, continuation: str, reference: str) -> tuple[bool, str]:
    """(accepted, reason): the teacher's continuation must state the right answer itself (read from the
    whole text, the answer could be a number of the student's prefix), and no step reaching into the
    continuation may hold a wrong claim (the prefix holds none: the cut is before the first one)."""
    if not continuation.strip():
        return False, "empty continuation"
    own, _ = extract_answer(continuation)
    if own is None or not is_correct(verify(own, reference, "exact", None)):
        return False, "wrong answer"
    a = analyse(prefix + continuation, reference)
    if any(not c.ok and not c.retracted for st in a.steps if st.end > len(prefix) for c in st.claims):
        return False, "wrong claim in the continuation"
    return True, "ok"


def correction_example(question: str, style: Style, prefix: str, continuation: str) -> dict:
    """What the trainer encodes (distill/train/loss_weights.py token_weights): the prompt in the
    student's style, the student's prefix as prefill (context: never trained), the continuation as
    the completion (trained, end of turn included)."""
    return {
        "messages": messages_for(question, style),
        "prefill": style.get("prefill", "") + prefix,
        "completion": continuation,
    }
