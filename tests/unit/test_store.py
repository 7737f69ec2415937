import pyarrow.parquet as pq

from distill.schema import SCHEMA_VERSION, TRACE_SCHEMA, MissingColumnError, require_columns, trace_id
from distill.store import TraceStore

import pytest


def _row(tid, verdict="accepted", scored_at=1.0, pid="p1", j=0):
    return {"trace_id": tid, "problem_id": pid, "sample_index": j, "question": "1+1?", "text": "2",
            "verdict": verdict, "scored_at": scored_at, "flags": [], "topk_logprobs": None}


def test_trace_id_is_deterministic_and_sensitive():
    s = {"temperature": 0.7, "max_tokens": 10}
    a = trace_id("p1", "qwen", s, 0)
    assert a == trace_id("p1", "qwen", dict(reversed(list(s.items()))), 0)
    assert len({a, trace_id("p1", "qwen", s, 1), trace_id("p2", "qwen", s, 0), trace_id("p1", "llama", s, 0),
                trace_id("p1", "qwen", {**s, "temperature": 0.0}, 0)}) == 5


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
    store = TraceStore(tmp_path)
    path = store.append_traces([_row("a")])
    t = pq.read_table(path)
    assert t.schema.equals(TRACE_SCHEMA)
    assert t.column("schema_version").to_pylist() == [SCHEMA_VERSION]


def test_empty_store_and_quarantine(tmp_path):
    store = TraceStore(tmp_path)
    assert store.traces().num_rows == 0 and store.quarantine().num_rows == 0
    store.append_quarantine([{"schema_version": 1, "stage": "source", "key": "line3", "reason": "empty question",
                              "payload": "{}", "at": 0.0}])
    q = store.quarantine()
    assert q.column("reason").to_pylist() == ["empty question"]


def test_require_columns_names_the_missing_one():
    require_columns("scorer", ["a", "b"], ["a"])
    with pytest.raises(MissingColumnError, match="'text'"):
        require_columns("scorer", ["a", "b"], ["a", "text"])
