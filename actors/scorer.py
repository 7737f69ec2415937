"""Scorer actors (CPU): verify each teacher sample, flag bad outputs, select per problem, store all.

Receives whole teacher output blocks (wired with batch_size=None), so all k samples of a problem are
in one call and the per-problem selection policy sees them together. Every scored row, accepted or
not, is appended to the trace store before it is passed on: a crash loses at most what was in flight.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pyarrow as pa

from distill.data.schema import SCHEMA_VERSION, SCORER_INPUT, TRAIN_SCHEMA, require_columns, to_table
from distill.data.store import TraceStore
from distill.faults import fault_point
from distill.metrics import emit
from distill.trace.anatomy import analyse, trace_columns
from distill.trace.answers import extract_answer, is_correct, verify
from distill.trace.quality import flag_output, select
from distill.trace.variants import count_tokens, picked_variants, variant_rows


def score_rows(rows: list[dict], cfg: dict) -> list[dict]:
    """Pure scoring: adds answer, answer_rule, score, correct, flags, selected, verdict, reason."""
    now = time.time()
    for r in rows:
        answer, rule = extract_answer(r["text"] or "")
        try:
            meta = json.loads(r["metadata"]) if r["metadata"] else {}
            score = float(verify(answer, r["reference_answer"], r["verifier"], meta, r["question"]))
            err = None
        except Exception as e:  # a verifier crash rejects the sample, never the batch
            score, err = 0.0, f"verifier error: {type(e).__name__}: {e}"[:300]
        flags = flag_output(r["text"] or "", r["finish_reason"], cfg["repetition_ngram"], cfg["repetition_threshold"])
        correct = is_correct(score)
        r["_anatomy"] = analyse(r["text"] or "")  # kept for the variants; dropped before storing
        anatomy = trace_columns(r["_anatomy"], correct)
        if anatomy["wrong_intermediate"]:
            flags = flags + ["wrong_intermediate"]
        blocking = [f for f in flags if f in cfg["reject_flags"]]
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
        cfg["policy"],
    )
    for r, k in zip(rows, keep):
        r["selected"] = bool(k)
        r["verdict"] = "accepted" if k else "rejected"
        if r.pop("_ok") and not k:
            r["reason"] = f"not selected ({cfg['policy']})"
    return rows


class TraceScorer:
    def __init__(
        self,
        scorer: dict,
        store_root: str,
        events=None,
        supervision: dict | None = None,
        student_path: str | None = None,
    ):
        self.cfg = scorer
        self.store = TraceStore(store_root)
        self.events = events
        self.supervision = supervision or {"full": 1.0}
        self.actor = f"scorer@{socket.gethostname()}:{os.getpid()}"
        self.committed = self.store.trace_ids()  # the ledger: committed traces are passed on, not rewritten
        self.tokenizer = None
        if student_path:  # variant lengths are counted in the student's tokens
            from transformers import AutoTokenizer

            from distill.models import on_this_node

            self.tokenizer = AutoTokenizer.from_pretrained(on_this_node(student_path))

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.time()
        require_columns("scorer", batch.column_names, SCORER_INPUT)
        rows = score_rows(batch.to_pylist(), self.cfg)
        variants = []
        for r in rows:
            anatomy = r.pop("_anatomy")
            if r["verdict"] == "accepted":
                variants += [
                    {**v, "problem_id": r["problem_id"], "question": r["question"], "created_at": t0}
                    for v in variant_rows(r, anatomy)
                ]
        count_tokens(variants, self.tokenizer)  # one batched tokenizer call for the whole block
        # Unparseable outputs (no final answer at all) also go to quarantine, so they are counted with
        # their reason next to malformed problems; the trace row keeps verdict=rejected.
        unparseable = [
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
        # Exactly once: rows already in the store (replayed by the teacher from the ledger) still go on to
        # the trainer, but are not written again.
        # The trace part is written last: it is the block's commit (distill/data/store.py). Killed before it, the
        # retried block finds its traces uncommitted and writes all three again, under the same part names.
        fresh = {r["trace_id"] for r in rows if r["trace_id"] not in self.committed}
        self.store.append_variants([v for v in variants if v["parent_trace_id"] in fresh])
        if any(q["key"] in fresh for q in unparseable):
            self.store.append_quarantine([q for q in unparseable if q["key"] in fresh])
        fault_point("scorer.before_commit")
        self.store.append_traces([r for r in rows if r["trace_id"] in fresh])
        self.committed |= fresh
        accepted = sum(r["verdict"] == "accepted" for r in rows)
        emit(
            self.events,
            {
                "stage": "scorer",
                "actor": self.actor,
                "t0": t0,
                "t1": time.time(),
                "rows_in": len(rows),
                "rows_out": accepted,
                "count/accepted": accepted,
                "count/rejected": len(rows) - accepted,
                "count/correct": sum(r["correct"] for r in rows),
                "count/quarantined": len(unparseable),
                "count/wrong_intermediate": sum(bool(r["wrong_intermediate"]) for r in rows),
                "count/variants_failed": sum(not v["ok"] for v in variants),
            },
        )
        return training_table(variants, self.supervision)


def training_table(variants: list[dict], supervision: dict[str, float]) -> pa.Table:
    """The supervision the student trains on: per accepted trace, the variant the mixture picks."""
    return to_table(
        [{**v, "trace_id": v["parent_trace_id"]} for v in picked_variants(variants, supervision)], TRAIN_SCHEMA
    )
