"""The ledger rules on hand-made rows: teacher replay and the scorer's exactly-once filter."""

from distill.data.ledger import TEACHER_OUTPUT, exactly_once, sample_ids, split_replayed, teacher_ledger
from distill.data.schema import TRACE_SCHEMA, to_table, trace_id

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "stop": [], "seed": 0, "logprobs": None}


def test_sample_ids_are_the_trace_ids_of_each_sample():
    assert sample_ids("p", "m", SAMPLING, 2) == [trace_id("p", "m", SAMPLING, 0), trace_id("p", "m", SAMPLING, 1)]
    assert len(set(sample_ids("p", "m", SAMPLING, 3))) == 3
    assert sample_ids("p", "m", {**SAMPLING, "temperature": 0.5}, 1) != sample_ids("p", "m", SAMPLING, 1)


def test_teacher_ledger_keeps_the_teacher_columns_by_trace_id():
    rows = [{"trace_id": "a", "problem_id": "p", "text": "t", "verdict": "accepted", "sample_index": 0}]
    ledger = teacher_ledger(to_table(rows, TRACE_SCHEMA))
    assert list(ledger) == ["a"] and set(ledger["a"]) == set(TEACHER_OUTPUT)
    assert ledger["a"]["text"] == "t" and "verdict" not in ledger["a"]
    assert teacher_ledger(to_table([], TRACE_SCHEMA)) == {}


def test_split_replayed_replays_only_problems_with_every_sample_committed():
    ids = {p: sample_ids(p, "m", SAMPLING, 2) for p in ("p", "q", "r")}
    ledger = {t: {"trace_id": t} for t in ids["p"] + ids["r"]}
    ledger.pop(ids["r"][1])  # r has one of its two samples: generated whole again
    todo, replayed = split_replayed(["p", "q", "r"], ledger, "m", SAMPLING, 2)
    assert todo == [1, 2] and [r["trace_id"] for r in replayed] == ids["p"]
    # another model or other sampling settings make other traces: nothing to replay
    assert split_replayed(["p"], ledger, "other", SAMPLING, 2) == ([0], [])
    assert split_replayed(["p", "q"], {}, "m", SAMPLING, 2) == ([0, 1], [])


def test_exactly_once_writes_only_what_the_store_lacks():
    rows = [{"trace_id": "old"}, {"trace_id": "new"}]
    variants = [{"parent_trace_id": "old", "v": 1}, {"parent_trace_id": "new", "v": 2}]
    quarantine = [{"key": "old"}, {"key": "new"}]
    w = exactly_once(rows, variants, quarantine, {"old", "elsewhere"})
    assert w.traces == [{"trace_id": "new"}] and w.variants == [variants[1]] and w.quarantine == [{"key": "new"}]
    assert exactly_once(rows, variants, quarantine, {"old", "new"}) == ([], [], [])
    assert exactly_once(rows, variants, [], set()).traces == rows
