"""Decode post-processing: an engine's outputs -> samples -> trace rows.

A sample is {text, token_ids, finish_reason, topk}, whichever engine made it; a trace row is a
problem row plus one sample, its prompt, and what defines it (teacher model, sampling settings,
sample index: its trace_id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from distill.data.schema import SCHEMA_VERSION, trace_id


def engine_samples(outputs: Iterable, logprobs: int | None) -> list[dict]:
    """vLLM's completion outputs of one request -> its samples, in sample order. topk: per generated
    token, the top `logprobs` alternatives by rank ({token_id: Logprob} per step in vLLM)."""
    samples = []
    for o in sorted(outputs, key=lambda o: o.index):
        topk = None
        if logprobs and o.logprobs:
            topk = [
                [
                    {"token_id": int(t), "logprob": float(lp.logprob)}
                    for t, lp in sorted(step.items(), key=lambda kv: kv[1].rank or 0)[:logprobs]
                ]
                for step in o.logprobs
            ]
        samples.append(
            {"text": o.text, "token_ids": list(o.token_ids), "finish_reason": o.finish_reason or "stop", "topk": topk}
        )
    return samples


def cut_at_eos(tokens: list[int], eos: set[int], max_new: int) -> tuple[list[int], str]:
    """A row of a batched generation (padded to the longest) -> its own tokens and finish reason:
    through its first end-of-sequence token ("stop"), else its first `max_new` ("length")."""
    stop_at = next((n for n, t in enumerate(tokens) if t in eos), None)
    if stop_at is None:
        return tokens[:max_new], "length"
    return tokens[: stop_at + 1], "stop"


def cut_at_stop(text: str, stop: list[str], finish: str) -> tuple[str, str]:
    """A decoded text cut before its first stop string (then it finished by "stop")."""
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, finish)


def trace_rows(
    problems: list[dict],
    prompts: list[str],
    prompt_ids: list[list[int]],
    outputs: list[list[dict]],
    model_name: str,
    sampling: Mapping,
    now: float,
) -> list[dict]:
    """Per problem (its rendered prompt, prompt tokens, samples), one trace row per sample."""
    return [
        {
            **p,
            "schema_version": SCHEMA_VERSION,
            "trace_id": trace_id(p["problem_id"], model_name, sampling, j),
            "prompt": text,
            "teacher_model": model_name,
            "sampling": json.dumps(sampling, sort_keys=True),
            "sample_index": j,
            "text": s["text"],
            "prompt_tokens": len(ids),
            "completion_tokens": len(s["token_ids"]),
            "finish_reason": s["finish_reason"],
            "topk_logprobs": s.get("topk"),
            "generated_at": now,
        }
        for p, text, ids, samples in zip(problems, prompts, prompt_ids, outputs)
        for j, s in enumerate(samples)
    ]
