"""Scorer actors (CPU): verify each teacher sample, flag bad outputs, select per problem, store all.

Receives whole teacher output blocks (wired with batch_size=None), so all k samples of a problem are
in one call and the per-problem selection policy sees them together. Every scored row, accepted or
not, is appended to the trace store before it is passed on: a crash loses at most what was in flight.
The rules are distill/trace/scoring.py's; the exactly-once filter is distill/data/ledger.py's.
"""

from __future__ import annotations

import os
import socket
import time

import pyarrow as pa

from distill.config import ScorerConfig
from distill.data.ledger import exactly_once
from distill.data.schema import SCORER_INPUT, require_columns
from distill.data.store import TraceStore
from distill.events import StageEvent
from distill.faults import fault_point
from distill.metrics import emit
from distill.trace.scoring import accepted_variants, score_rows, training_table, unparseable
from distill.trace.variants import count_tokens


class TraceScorer:
    def __init__(
        self,
        scorer: ScorerConfig,
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
        variants = accepted_variants(rows, t0)
        count_tokens(variants, self.tokenizer)  # one batched tokenizer call for the whole block
        quarantined = unparseable(rows)
        # The trace part is written last: it is the block's commit (distill/data/store.py). Killed before it, the
        # retried block finds its traces uncommitted and writes all three again, under the same part names.
        new = exactly_once(rows, variants, quarantined, self.committed)
        self.store.append_variants(new.variants)
        if new.quarantine:
            self.store.append_quarantine(new.quarantine)
        fault_point("scorer.before_commit")
        self.store.append_traces(new.traces)
        self.committed |= {r["trace_id"] for r in new.traces}
        self._emit(t0, rows, variants, len(quarantined))
        return training_table(variants, self.supervision)

    def _emit(self, t0: float, rows: list[dict], variants: list[dict], quarantined: int) -> None:
        """The block's stage event."""
        if self.events is None:  # no sink: emit would drop the event, so nothing to count
            return
        accepted = sum(r["verdict"] == "accepted" for r in rows)
        emit(
            self.events,
            StageEvent(
                "scorer",
                self.actor,
                t0,
                time.time(),
                rows_in=len(rows),
                rows_out=accepted,
                counts={
                    "accepted": accepted,
                    "rejected": len(rows) - accepted,
                    "correct": sum(r["correct"] for r in rows),
                    "quarantined": quarantined,
                    "wrong_intermediate": sum(bool(r["wrong_intermediate"]) for r in rows),
                    "variants_failed": sum(not v["ok"] for v in variants),
                },
            ),
        )
