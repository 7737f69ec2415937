"""Prompt-length quarantine: a prompt must leave the model room to answer.

A prompt longer than the teacher's context (less a minimum answer) never reaches the engine: it is
quarantined with its reason, and the others are given what room they have, up to max_tokens.
"""

from __future__ import annotations

import json

from distill.data.schema import SCHEMA_VERSION

MIN_NEW_TOKENS = 16  # a prompt leaving fewer than this for the answer is quarantined as too long


def room_to_answer(prompt_tokens: int, max_model_len: int, max_tokens: int) -> int | None:
    """New tokens a prompt of `prompt_tokens` may generate; None: too long, quarantine it."""
    room = max_model_len - prompt_tokens
    return None if room < MIN_NEW_TOKENS else min(max_tokens, room)


def too_long(problem: dict, prompt_tokens: int, max_model_len: int, at: float) -> dict:
    """The quarantine row of a problem whose prompt leaves no room to answer."""
    return {
        "schema_version": SCHEMA_VERSION,
        "stage": "teacher",
        "key": problem["problem_id"],
        "reason": f"prompt too long: {prompt_tokens} tokens, context {max_model_len}",
        "payload": json.dumps({"question": problem["question"][:2000]}),
        "at": at,
    }
