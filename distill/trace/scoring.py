"""The scorer's rules: verify each teacher sample, flag bad outputs, select per problem, and what of
a scored block goes on (the supervision variants of accepted traces) or to quarantine.

Pure Python on row dicts; actors/scorer.py applies them to each block and writes the store.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pyarrow as pa

from distill.data.schema import SCHEMA_VERSION, TRAIN_SCHEMA, to_table
from distill.trace.anatomy import analyse, trace_columns
from distill.trace.answers import extract_answer, is_correct, verify
from distill.trace.quality import flag_output, select
from distill.trace.variants import picked_variants, variant_rows

if TYPE_CHECKING:
    from distill.config import ScorerConfig


def score_rows(rows: list[dict], cfg: ScorerConfig) -> list[dict]:
    """Pure scoring: adds answer, answer_rule, score, correct, flags, selected, verdict, reason (and
    `_anatomy`, for the variants; dropped before storing)."""
    now = time.time()
    for r in rows:
        _score(r, cfg, now)
    keep = select(
        [
            {
                "problem_id": r["problem_id"],
                "sample_index": r["sample_index"],
                "ok": r["_ok"],
                "completion_tokens": r["completion_tokens"],
            }
            for r in rows
        ],
        cfg.policy,
    )
    for r, k in zip(rows, keep):
        r["selected"] = bool(k)
        r["verdict"] = "accepted" if k else "rejected"
        if r.pop("_ok") and not k:
            r["reason"] = f"not selected ({cfg.policy})"
    return rows


def _score(r: dict, cfg: ScorerConfig, now: float) -> None:
    """One sample on its own: its answer, verification, flags, anatomy and reason; `_ok` whether it may be
    selected (correct and no rejecting flag)."""
    answer, rule = extract_answer(r["text"] or "")
    try:
        meta = json.loads(r["metadata"]) if r["metadata"] else {}
        score = float(verify(answer, r["reference_answer"], r["verifier"], meta, r["question"]))
        err = None
    except Exception as e:  # a verifier crash rejects the sample, never the batch
        score, err = 0.0, f"verifier error: {type(e).__name__}: {e}"[:300]
    flags = flag_output(r["text"] or "", r["finish_reason"], cfg.repetition_ngram, cfg.repetition_threshold)
    correct = is_correct(score)
    r["_anatomy"] = analyse(r["text"] or "")  # kept for the variants; dropped before storing
    anatomy = trace_columns(r["_anatomy"], correct)
    if anatomy["wrong_intermediate"]:
        flags = flags + ["wrong_intermediate"]
    blocking = [f for f in flags if f in cfg.reject_flags]
    r.update(
        answer=answer,
        answer_rule=rule,
        score=score,
        correct=correct,
        flags=flags,
        scored_at=now,
        _ok=correct and not blocking,
        **anatomy,
    )
    if err:
        r["reason"] = err
    elif blocking:
        r["reason"] = blocking[0]
    elif answer is None:
        r["reason"] = "no_answer"
    elif not correct:
        r["reason"] = "wrong_answer"
    else:
        r["reason"] = ""


def accepted_variants(rows: list[dict], created_at: float) -> list[dict]:
    """The variant rows of the accepted traces of scored rows (each row's `_anatomy` is dropped)."""
    variants = []
    for r in rows:
        anatomy = r.pop("_anatomy")
        if r["verdict"] == "accepted":
            for v in variant_rows(r, anatomy):  # fresh rows: completed in place
                v.update(problem_id=r["problem_id"], question=r["question"], created_at=created_at)
                variants.append(v)
    return variants


def unparseable(rows: list[dict]) -> list[dict]:
    """Quarantine rows of the scored outputs with no final answer at all: counted with their reason next
    to malformed problems (the trace row keeps verdict=rejected)."""
    return [
        {
            "schema_version": SCHEMA_VERSION,
            "stage": "scorer",
            "key": r["trace_id"],
            "reason": "unparseable teacher output: no final answer found",
            "payload": json.dumps({"text": (r["text"] or "")[-1000:]}),
            "at": time.time(),
        }
        for r in rows
        if r["answer"] is None
    ]


def training_table(variants: list[dict], supervision: dict[str, float]) -> pa.Table:
    """The supervision the student trains on: per accepted trace, the variant the mixture picks."""
    return to_table(
        [{**v, "trace_id": v["parent_trace_id"]} for v in picked_variants(variants, supervision)], TRAIN_SCHEMA
    )
