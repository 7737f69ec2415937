"""Append-only Parquet trace store, idempotent by trace_id.

Layout: <root>/traces/part-<digest>.parquet and <root>/quarantine/part-<digest>.parquet. A part's name is
a digest of the keys it holds, and it is written to a temp file then renamed: a retried batch (a
restarted actor, a re-executed Ray Data task) rewrites the same file instead of adding a duplicate, and
a crash leaves no half-written part. Readers still dedupe by trace_id, keeping the latest scored row.

A scorer block writes its variants and quarantine rows first and its traces last: the trace part is the
block's commit. Killed between the writes, the block's traces are not in the ledger, so the retried (or
resumed) block is scored and written again -- the same part names, overwritten. Until then its variant
and scorer quarantine rows are orphans, which readers leave out (`orphans()` counts them).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.data.schema import (
    CORRECTION_SCHEMA,
    QUARANTINE_SCHEMA,
    SCHEMA_VERSION,
    TRACE_SCHEMA,
    VARIANT_SCHEMA,
    to_table,
)


class TraceStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.traces_dir = self.root / "traces"
        self.quarantine_dir = self.root / "quarantine"
        self.variants_dir = self.root / "variants"
        # correction rounds: the student's own samples (trace rows, scored and dissected) and what became of
        # them (CORRECTION_SCHEMA); a round's block commits its samples, then its corrections (readers list only
        # corrections whose sample is committed)
        self.samples_dir = self.root / "samples"
        self.corrections_dir = self.root / "corrections"

    # -- writing ---------------------------------------------------------------------------
    def _write(self, directory: Path, table: pa.Table, keys: list[str]) -> Path | None:
        if table.num_rows == 0:
            return None
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:20]
        final = directory / f"part-{digest}.parquet"
        tmp = directory / f".tmp-{uuid.uuid4().hex}.parquet"
        # Small parts (one per scorer block): dictionaries and column statistics cost more to write than
        # they save to read; readers filter by trace_id in Python, not by Parquet statistics. Nor is the
        # Arrow schema serialised into each part (a third of a trace part's write, its nested step
        # structs): every reader here passes the schema (schema.py), and the Parquet types alone
        # round-trip it (tests/unit/test_store.py).
        # Written to memory first, then to the temp file in one write: Arrow's file sink is unbuffered, three
        # system calls per column chunk (a trace part has 40), and a part is one block's rows.
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, use_dictionary=False, write_statistics=False, store_schema=False)
        try:
            f = open(tmp, "wb")
        except FileNotFoundError:  # the table's first part: one mkdir, not one per part
            directory.mkdir(parents=True, exist_ok=True)
            f = open(tmp, "wb")
        with f:
            f.write(sink.getvalue())
        os.replace(tmp, final)  # atomic on POSIX: readers see the whole part or none of it
        return final

    def append_traces(self, rows: list[dict]) -> Path | None:
        table = to_table([{**r, "schema_version": SCHEMA_VERSION} for r in rows], TRACE_SCHEMA)
        return self._write(self.traces_dir, table, [r["trace_id"] for r in rows])

    def append_variants(self, rows: list[dict]) -> Path | None:
        table = to_table([{**r, "schema_version": SCHEMA_VERSION} for r in rows], VARIANT_SCHEMA)
        return self._write(self.variants_dir, table, [r["variant_id"] for r in rows])

    def append_samples(self, rows: list[dict]) -> Path | None:
        table = to_table([{**r, "schema_version": SCHEMA_VERSION} for r in rows], TRACE_SCHEMA)
        return self._write(self.samples_dir, table, [r["trace_id"] for r in rows])

    def append_corrections(self, rows: list[dict]) -> Path | None:
        table = to_table([{**r, "schema_version": SCHEMA_VERSION} for r in rows], CORRECTION_SCHEMA)
        return self._write(self.corrections_dir, table, [r["correction_id"] for r in rows])

    def append_quarantine(self, rows: list[dict]) -> Path | None:
        table = to_table(rows, QUARANTINE_SCHEMA)
        return self._write(self.quarantine_dir, table, [f"{r['stage']}:{r['key']}" for r in rows])

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def parts(directory: Path) -> list[Path]:
        """The committed parts of a table (temp files of writes in flight are not parts)."""
        return sorted(directory.glob("part-*.parquet")) if directory.exists() else []

    @classmethod
    def _read_dir(cls, directory: Path, schema: pa.Schema) -> pa.Table:
        parts = cls.parts(directory)
        if not parts:
            return schema.empty_table()
        tables = [pq.read_table(p, schema=schema) for p in parts]
        return pa.concat_tables(tables)

    def traces(self, accepted_only: bool = False) -> pa.Table:
        t = self._read_dir(self.traces_dir, TRACE_SCHEMA)
        versions = set(t.column("schema_version").to_pylist())
        if versions - {SCHEMA_VERSION}:
            raise ValueError(
                f"trace store {self.root} holds schema versions {sorted(versions)}, this distill reads {SCHEMA_VERSION}"
            )
        t = _dedupe_latest(t, "trace_id", "scored_at")
        if accepted_only:
            t = t.filter(pc.equal(t.column("verdict"), "accepted"))
        return t.sort_by([("problem_id", "ascending"), ("sample_index", "ascending")])

    def variants(self, variant: str | None = None, ok_only: bool = True) -> pa.Table:
        t = _dedupe_latest(self._read_dir(self.variants_dir, VARIANT_SCHEMA), "variant_id", "created_at")
        t = _committed(t, "parent_trace_id", self._ledger()["accepted"])
        if variant is not None:
            t = t.filter(pc.equal(t.column("variant"), variant))
        if ok_only:
            t = t.filter(pc.equal(t.column("ok"), True))
        return t.sort_by([("problem_id", "ascending"), ("parent_trace_id", "ascending"), ("variant", "ascending")])

    def samples(self) -> pa.Table:
        """The correction rounds' committed student samples (trace rows), one per trace_id."""
        return _dedupe_latest(self._read_dir(self.samples_dir, TRACE_SCHEMA), "trace_id", "scored_at")

    def corrections(self, accepted_only: bool = False) -> pa.Table:
        """Correction rounds' rows whose student sample is committed (a block's samples are its commit)."""
        t = _dedupe_latest(self._read_dir(self.corrections_dir, CORRECTION_SCHEMA), "correction_id", "created_at")
        t = _committed(t, "parent", set(self.samples().column("trace_id").to_pylist()))
        if accepted_only:
            t = t.filter(pc.equal(t.column("verdict"), "accepted"))
        return t.sort_by([("round", "ascending"), ("problem_id", "ascending"), ("correction_id", "ascending")])

    def trace_ids(self) -> set[str]:
        """The ledger: every committed trace_id (reads one column)."""
        return {
            t
            for p in self.parts(self.traces_dir)
            for t in pq.read_table(p, columns=["trace_id"]).column("trace_id").to_pylist()
        }

    def physical_trace_rows(self) -> int:
        """Rows in all trace parts, before dedupe (equal to len(trace_ids()) when nothing is stored twice)."""
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.parts(self.traces_dir))

    def quarantine(self) -> pa.Table:
        """Quarantined rows, one per (stage, key); a scorer row only while the committed trace it names is
        unparseable (its block committed, and a retry did not score a parseable text since)."""
        t = self._quarantine_all()
        return t.filter(pc.invert(_orphan_quarantine(t, self._ledger()["unparseable"])))

    def orphans(self) -> dict[str, int]:
        """Rows readers skip: those of scorer blocks killed before their commit and not written again, and
        those a retried block made stale (its trace, scored again, no longer accepted or unparseable)."""
        ledger = self._ledger()
        v = self._read_dir(self.variants_dir, VARIANT_SCHEMA)
        ids = v.column("variant_id").to_pylist()
        parents = v.column("parent_trace_id").to_pylist()
        q = self._quarantine_all()
        return {
            "variants": len({i for i, p in zip(ids, parents) if p not in ledger["accepted"]}),
            "quarantine": sum(_orphan_quarantine(q, ledger["unparseable"]).to_pylist()),
        }

    def _ledger(self) -> dict[str, set[str]]:
        """Committed traces by their latest verdict: accepted ones (whose variants train) and unparseable
        ones (no answer: their scorer quarantine rows stand). Reads four columns."""
        cols = ["trace_id", "scored_at", "verdict", "answer"]
        parts = self.parts(self.traces_dir)
        if not parts:
            return {"accepted": set(), "unparseable": set()}
        t = _dedupe_latest(pa.concat_tables([pq.read_table(p, columns=cols) for p in parts]), "trace_id", "scored_at")
        rows = zip(t.column("trace_id").to_pylist(), t.column("verdict").to_pylist(), t.column("answer").to_pylist())
        acc, unp = set(), set()
        for tid, verdict, answer in rows:
            if verdict == "accepted":
                acc.add(tid)
            if answer is None:
                unp.add(tid)
        return {"accepted": acc, "unparseable": unp}

    def _quarantine_all(self) -> pa.Table:
        t = self._read_dir(self.quarantine_dir, QUARANTINE_SCHEMA)
        if t.num_rows == 0:
            return t
        # a retried block may write its quarantine rows again under another part name: one per (stage, key)
        keyed = t.append_column(
            "_id", pa.array([f"{s}:{k}" for s, k in zip(t.column("stage").to_pylist(), t.column("key").to_pylist())])
        )
        return _dedupe_latest(keyed, "_id", "at").drop_columns(["_id"])


def _committed(t: pa.Table, column: str, committed: set[str]) -> pa.Table:
    """Rows whose trace (in `column`) is committed in the ledger."""
    return t.filter(pc.is_in(t.column(column), pa.array(sorted(committed), pa.string()))) if t.num_rows else t


def _orphan_quarantine(t: pa.Table, unparseable: set[str]) -> pa.Array:
    """Mask of scorer quarantine rows (key: a trace_id) whose committed trace is not unparseable: its block
    died before its commit, or a retry scored a parseable text for it."""
    if t.num_rows == 0:
        return pa.array([], pa.bool_())
    return pa.array(
        [
            s == "scorer" and k not in unparseable
            for s, k in zip(t.column("stage").to_pylist(), t.column("key").to_pylist())
        ]
    )


def _dedupe_latest(t: pa.Table, key: str, order: str) -> pa.Table:
    if t.num_rows == 0:
        return t
    keys = t.column(key).to_pylist()
    stamps = t.column(order).to_pylist()
    best: dict[str, int] = {}
    for i, (k, s) in enumerate(zip(keys, stamps)):
        j = best.get(k)
        if j is None or (s or 0) >= (stamps[j] or 0):
            best[k] = i
    return t.take(sorted(best.values()))
