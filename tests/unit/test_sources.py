import json

import pyarrow as pa
import pyarrow.parquet as pq

from distill.config import SourceConfig
from distill.data.sources import load_problems


def test_reasoning_gym_source_is_stable_and_verifiable():
    src = SourceConfig(kind="reasoning_gym", task="chain_sum", size=5, seed=3)
    a, b = load_problems([src]), load_problems([src])
    assert [p["problem_id"] for p in a.problems] == [p["problem_id"] for p in b.problems]
    assert len(a.problems) == 5 and not a.quarantined
    p = a.problems[0]
    assert p["verifier"] == "reasoning_gym" and p["source"] == "reasoning_gym:chain_sum"
    assert json.loads(p["metadata"])["source_dataset"] == "chain_sum"


def test_jsonl_bad_rows_are_quarantined_with_reasons(tmp_path):
    f = tmp_path / "p.jsonl"
    lines = [
        json.dumps({"question": "What is 2+2?", "answer": "4"}).encode(),
        b"{not json",
        json.dumps({"question": "no answer here"}).encode(),
        json.dumps({"question": "   ", "answer": "1"}).encode(),
        b'{"question": "caf\xe9 \xff", "answer": "1"}',  # not UTF-8
        json.dumps({"question": "What is 2+2?", "answer": "4"}).encode(),  # duplicate id
        json.dumps([1, 2]).encode(),
        json.dumps({"question": "Name the color of the sky.", "answer": "blue"}).encode(),
    ]
    f.write_bytes(b"\n".join(lines) + b"\n")
    out = load_problems([SourceConfig(kind="file", path=str(f), size=100)])
    assert [p["question"] for p in out.problems] == ["What is 2+2?", "Name the color of the sky."]
    assert [p["verifier"] for p in out.problems] == ["math", "exact"]
    reasons = [q["reason"] for q in out.quarantined]
    assert len(reasons) == 6
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "missing field 'answer'"
    assert reasons[2] == "empty field 'question'"
    assert "not valid UTF-8" in reasons[3]
    assert reasons[4].startswith("duplicate problem_id")
    assert "expected a JSON object" in reasons[5]
    assert all(q["stage"] == "source" for q in out.quarantined)


def test_parquet_with_id_and_custom_fields(tmp_path):
    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["x1", "x2"], "q": ["1+1?", "2+5?"], "a": [2, 7]}), f)
    src = SourceConfig(kind="file", path=str(f), question_field="q", answer_field="a", id_field="id")
    out = load_problems([src])
    assert [(p["problem_id"], p["reference_answer"]) for p in out.problems] == [("x1", "2"), ("x2", "7")]


def test_hf_dataset_from_disk(tmp_path):
    import datasets

    d = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"question": ["3*3?"], "answer": ["9"]})})
    d.save_to_disk(str(tmp_path / "ds"))
    out = load_problems([SourceConfig(kind="hf_dataset", path=str(tmp_path / "ds"), split="test")])
    assert out.problems[0]["question"] == "3*3?" and out.problems[0]["reference_answer"] == "9"


def test_size_limits_valid_rows_across_sources(tmp_path):
    out = load_problems(
        [
            SourceConfig(kind="reasoning_gym", task="chain_sum", size=2, seed=1),
            SourceConfig(kind="reasoning_gym", task="basic_arithmetic", size=3, seed=1),
        ]
    )
    assert [p["source"] for p in out.problems] == ["reasoning_gym:chain_sum"] * 2 + [
        "reasoning_gym:basic_arithmetic"
    ] * 3
