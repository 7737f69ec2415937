"""The scorer's pure rules on hand-made rows: what goes on (variants, training table) and to quarantine."""

from distill.config import load_config
from distill.trace.scoring import accepted_variants, score_rows, training_table, unparseable

SCORER = load_config("smoke").scorer


def _trace(pid, j, text):
    return {
        "trace_id": f"{pid}-{j}",
        "problem_id": pid,
        "sample_index": j,
        "text": text,
        "finish_reason": "stop",
        "reference_answer": "5",
        "verifier": "math",
        "metadata": "{}",
        "question": "2+3?",
        "completion_tokens": 10,
    }


def test_accepted_variants_come_from_accepted_traces_only():
    rows = score_rows([_trace("p", 0, "2 + 3 = 5\nAnswer: 5"), _trace("q", 0, "Answer: 6")], SCORER)
    variants = accepted_variants(rows, 3.0)
    assert all("_anatomy" not in r for r in rows)
    assert {v["parent_trace_id"] for v in variants} == {"p-0"}
    assert all(v["problem_id"] == "p" and v["question"] == "2+3?" and v["created_at"] == 3.0 for v in variants)
    table = training_table(variants, {"full": 1.0})
    assert table.column("trace_id").to_pylist() == ["p-0"] and table.column("variant").to_pylist() == ["full"]


def test_unparseable_quarantines_outputs_without_an_answer():
    rows = score_rows([_trace("p", 0, "Answer: 5"), _trace("q", 0, ""), _trace("r", 0, None)], SCORER)
    q = unparseable(rows)
    assert [x["key"] for x in q] == ["q-0", "r-0"] and all(x["stage"] == "scorer" for x in q)
    assert q[0]["reason"] == "unparseable teacher output: no final answer found"


def test_a_verifier_crash_rejects_the_sample_not_the_block():
    bad = {**_trace("p", 0, "Answer: 5"), "metadata": "{not json"}
    rows = score_rows([bad, _trace("q", 0, "Answer: 5")], SCORER)
    assert rows[0]["verdict"] == "rejected" and rows[0]["reason"].startswith("verifier error: JSONDecodeError")
    assert rows[1]["verdict"] == "accepted" and rows[1]["reason"] == ""
