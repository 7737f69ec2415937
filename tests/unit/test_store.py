import pyarrow.parquet as pq
import pytest

from distill.data.schema import (
    QUARANTINE_SCHEMA,
    SCHEMA_VERSION,
    TRACE_SCHEMA,
    VARIANT_SCHEMA,
    MissingColumnError,
    require_columns,
    trace_id,
)
from distill.data.store import TraceStore


def _row(tid, verdict="accepted", scored_at=1.0, pid="p1", j=0):
    return {
        "trace_id": tid,
        "problem_id": pid,
        "sample_index": j,
        "question": "1+1?",
        "text": "2",
        "verdict": verdict,
        "scored_at": scored_at,
        "flags": [],
        "topk_logprobs": None,
    }


def test_trace_id_is_deterministic_and_sensitive():
    s = {"temperature": 0.7, "max_tokens": 10}
    a = trace_id("p1", "qwen", s, 0)
    assert a == trace_id("p1", "qwen", dict(reversed(list(s.items()))), 0)
    assert (
        len(
            {
                a,
                trace_id("p1", "qwen", s, 1),
                trace_id("p2", "qwen", s, 0),
                trace_id("p1", "llama", s, 0),
                trace_id("p1", "qwen", {**s, "temperature": 0.0}, 0),
            }
        )
        == 5
    )


def test_append_is_idempotent_and_dedupes(tmp_path):
    store = TraceStore(tmp_path)
    p1 = store.append_traces([_row("a"), _row("b", "rejected")])
    p2 = store.append_traces([_row("b", "rejected"), _row("a")])  # the same batch retried, reordered
    assert p1 == p2 and len(list(store.traces_dir.glob("part-*.parquet"))) == 1
    store.append_traces([_row("a", "rejected", scored_at=2.0)])  # a re-score: latest wins
    t = store.traces()
    assert sorted(t.column("trace_id").to_pylist()) == ["a", "b"]
    assert store.traces(accepted_only=True).num_rows == 0
    assert not list(store.traces_dir.glob(".tmp-*"))


def test_parts_carry_the_versioned_schema(tmp_path):
    # Parts are written without the serialised Arrow schema (store.py): the Parquet types alone must give
    # back every table's exact schema to a reader that passes none (pandas, DuckDB, ray.data).
    store = TraceStore(tmp_path)
    path = store.append_traces([_row("a")])
    t = pq.read_table(path)
    assert t.schema.equals(TRACE_SCHEMA)
    assert t.column("schema_version").to_pylist() == [SCHEMA_VERSION]
    v = pq.read_table(store.append_variants([_variant("a")]))
    assert v.schema.equals(VARIANT_SCHEMA) and v.column("variant").to_pylist() == ["full"]
    q = pq.read_table(
        store.append_quarantine(
            [{"schema_version": 1, "stage": "scorer", "key": "a", "reason": "x", "payload": "{}", "at": 0.0}]
        )
    )
    assert q.schema.equals(QUARANTINE_SCHEMA)


def test_empty_store_and_quarantine(tmp_path):
    store = TraceStore(tmp_path)
    assert store.traces().num_rows == 0 and store.quarantine().num_rows == 0
    store.append_quarantine(
        [
            {
                "schema_version": 1,
                "stage": "source",
                "key": "line3",
                "reason": "empty question",
                "payload": "{}",
                "at": 0.0,
            }
        ]
    )
    q = store.quarantine()
    assert q.column("reason").to_pylist() == ["empty question"]


def test_require_columns_names_the_missing_one():
    require_columns("scorer", ["a", "b"], ["a"])
    with pytest.raises(MissingColumnError, match="'text'"):
        require_columns("scorer", ["a", "b"], ["a", "text"])


def _variant(tid, name="full", created_at=1.0):
    return {
        "variant_id": f"{tid}/{name}",
        "parent_trace_id": tid,
        "variant": name,
        "problem_id": "p1",
        "question": "1+1?",
        "text": "2",
        "student_tokens": 1,
        "chars": 1,
        "ok": True,
        "spans": [],
        "created_at": created_at,
    }


def _quarantined(key, stage="scorer", at=1.0):
    return {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "key": key,
        "reason": "unparseable",
        "payload": "{}",
        "at": at,
    }


def test_a_block_killed_before_its_commit_leaves_orphans_that_readers_skip(tmp_path):
    store = TraceStore(tmp_path)
    store.append_traces([_row("a")])
    store.append_variants([_variant("a")])
    # block 2 wrote its variants and quarantine rows, then died before its trace part (the commit)
    store.append_variants([_variant("b"), _variant("b", "plan")])
    store.append_quarantine([_quarantined("c"), _quarantined("line9", stage="source")])
    assert store.variants().column("parent_trace_id").to_pylist() == ["a"]
    assert [r["key"] for r in store.quarantine().to_pylist()] == ["line9"]  # source rows need no commit
    assert store.orphans() == {"variants": 2, "quarantine": 1}
    # the retry writes the block again -- here under another part name (its rows in another order and a
    # later stamp) -- and commits it: every row once, none lost
    store.append_quarantine([_quarantined("c", at=2.0)])
    store.append_variants([_variant("b", "plan", 2.0), _variant("b", created_at=2.0)])
    store.append_traces([_row("b"), _row("c", "rejected")])
    v = store.variants().to_pylist()
    assert sorted((r["parent_trace_id"], r["variant"]) for r in v) == [("a", "full"), ("b", "full"), ("b", "plan")]
    assert all(r["created_at"] == 2.0 for r in v if r["parent_trace_id"] == "b")
    assert sorted(r["key"] for r in store.quarantine().to_pylist()) == ["c", "line9"]
    assert store.orphans() == {"variants": 0, "quarantine": 0}
    # a later attempt (a resumed run sampling again) scores b rejected and c parseable: b's variants and
    # c's "unparseable" row are stale, not training data or quarantine any more
    store.append_traces([_row("b", "rejected", scored_at=3.0), {**_row("c", "rejected", scored_at=3.0), "answer": "7"}])
    assert [r["parent_trace_id"] for r in store.variants().to_pylist()] == ["a"]
    assert [r["key"] for r in store.quarantine().to_pylist()] == ["line9"]
    assert store.orphans() == {"variants": 2, "quarantine": 1}
