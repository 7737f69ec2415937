import json

import pytest

from distill.data.bigbench import load_task, score_bigbench
from distill.data.schema import stable_id


def _write(tmp_path, task, name="task.json"):
    f = tmp_path / name
    f.write_text(json.dumps(task), encoding="utf-8")
    return f


GENERATIVE = {
    "name": "toy_arith",
    "description": "tiny",
    "task_prefix": "Solve.",
    "metrics": ["exact_str_match"],
    "preferred_score": "exact_str_match",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "examples": [
        {"input": "2+2=", "target": "4"},
        {"input": "Capital of France?", "target": ["Paris", "City of Paris", "Paris"]},
        {"input": "half of 3", "target": ["1.5", "3/2"]},
        {"input": "3+4=", "target": 7},
        {"input": "   ", "target": "1"},
        {"target": "1"},
        ["not", "a", "dict"],
        {"input": "no target here"},
        {"input": "2+2=", "target": "4"},
        {"input": "empty list", "target": []},
    ],
}

MC = {
    "name": "toy_mc",
    "description": "tiny mc",
    "append_choices_to_input": False,
    "examples": [
        {"input": "Which is a fruit?", "target_scores": {"carrot": 0, "apple": 1, "potato": 0}},
        {"input": "Pick a prime", "target_scores": {"4": 0, "2": 1, "3": 1, "9": 0}, "target": "2"},
        {"input": "bad", "target_scores": {}},
        {"input": "flat", "target_scores": {"x": 0, "y": 0}},
        {"input": "nonnum", "target_scores": {"x": "1", "y": 0}},
        {"input": "too many", "target_scores": {f"o{i}": i for i in range(27)}},
    ],
}


def test_generative_task_rows_and_quarantine(tmp_path):
    out = load_task(_write(tmp_path, GENERATIVE))
    ps = out.problems
    assert [p["question"] for p in ps] == [
        "Solve.\n\n2+2=",
        "Solve.\n\nCapital of France?",
        "Solve.\n\nhalf of 3",
        "Solve.\n\n3+4=",
    ]
    assert [p["verifier"] for p in ps] == ["math", "exact", "math", "math"]
    assert [p["reference_answer"] for p in ps] == ["4", "Paris", "1.5", "7"]
    assert json.loads(ps[1]["metadata"]) == {"targets": ["Paris", "City of Paris"], "mc": False}
    assert json.loads(ps[2]["metadata"])["targets"] == ["1.5", "3/2"]
    assert all(p["source"] == "bigbench:toy_arith" for p in ps)
    assert ps[0]["problem_id"] == stable_id("bigbench", "toy_arith", "2+2=")
    assert [p["problem_id"] for p in load_task(_write(tmp_path, GENERATIVE)).problems] == [p["problem_id"] for p in ps]
    q = out.quarantined
    assert [(r["key"], r["reason"]) for r in q] == [
        ("bigbench:toy_arith#example4", "empty field 'input'"),
        ("bigbench:toy_arith#example5", "missing field 'input'"),
        ("bigbench:toy_arith#example6", "expected a JSON object, got list"),
        ("bigbench:toy_arith#example7", "missing field 'target' (and no 'target_scores')"),
        ("bigbench:toy_arith#example8", f"duplicate problem_id {ps[0]['problem_id']}"),
        ("bigbench:toy_arith#example9", "empty target list"),
    ]
    assert q[2]["stage"] == "source" and json.loads(q[2]["payload"]) == ["not", "a", "dict"]


def test_score_generative_any_target(tmp_path):
    ps = load_task(_write(tmp_path, GENERATIVE)).problems
    assert score_bigbench("4", ps[0]) and score_bigbench("4.0", ps[0])
    assert score_bigbench("city of paris", ps[1]) and score_bigbench("Paris.", ps[1])
    assert not score_bigbench("Lyon", ps[1])
    assert score_bigbench("3/2", ps[2]) and score_bigbench("1.5", ps[2])
    assert score_bigbench("7", ps[3])
    assert not score_bigbench(None, ps[0]) and not score_bigbench("  ", ps[0])


def test_multiple_choice_rows_and_quarantine(tmp_path):
    out = load_task(_write(tmp_path, MC))
    fruit, prime = out.problems
    assert fruit["question"] == "Which is a fruit?\n\nOptions:\n(A) carrot\n(B) apple\n(C) potato"
    assert fruit["reference_answer"] == "apple" and prime["reference_answer"] == "2"  # first best
    assert json.loads(fruit["metadata"]) == {
        "choices": ["carrot", "apple", "potato"],
        "target_scores": {"carrot": 0, "apple": 1, "potato": 0},
        "mc": True,
    }
    assert [r["reason"] for r in out.quarantined] == [
        "empty target_scores",
        "target_scores do not single out a best option (all scores equal)",
        "score of option 'x' is not a number",
        "27 options, more than the 26 option letters",
    ]


def test_score_multiple_choice_by_letter_or_text(tmp_path):
    fruit, prime = load_task(_write(tmp_path, MC)).problems
    for right in ["(B)", "B", "b", "b.", "(b)", "Apple", "(B) apple", "B. Apple"]:
        assert score_bigbench(right, fruit), right
    for wrong in ["(A)", "carrot", "(B) carrot", "D", "(E)", "banana", None, ""]:
        assert not score_bigbench(wrong, fruit), wrong
    # tied best options both count; an option whose text is a digit is matched by text
    assert score_bigbench("B", prime) and score_bigbench("(C)", prime) and score_bigbench("3", prime)
    assert not score_bigbench("A", prime) and not score_bigbench("9", prime)


def test_unusable_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_task(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="no 'examples' list"):
        load_task(_write(tmp_path, {"name": "parent", "description": "has subtasks"}))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid JSON task file"):
        load_task(bad)


def test_preferred_score_decides_when_an_example_has_both(tmp_path):
    both = {"input": "What is 1 plus 2?", "target": "3", "target_scores": {"3": 1.0, "4": 0.0, "banana": 0.0}}
    gen = load_task(_write(tmp_path, {"name": "a", "preferred_score": "exact_str_match", "examples": [both]}))
    mc = load_task(
        _write(tmp_path, {"name": "b", "preferred_score": "multiple_choice_grade", "examples": [both]}, "mc.json")
    )
    (g,), (m,) = gen.problems, mc.problems
    assert g["question"] == "What is 1 plus 2?" and json.loads(g["metadata"]) == {"targets": ["3"], "mc": False}
    assert "Options:\n(A) 3" in m["question"] and json.loads(m["metadata"])["mc"] is True
    assert score_bigbench("3", g) and score_bigbench("(A)", m) and not score_bigbench("(A)", g)


def test_sample_of_size_is_fixed_by_seed_and_skips_bad_examples(tmp_path):
    examples = [{"input": f"{i} + 1 =", "target": str(i + 1)} for i in range(40)] + [{"input": ""}] * 10
    f = _write(tmp_path, {"name": "big", "examples": examples})
    a, b, c = load_task(f, size=12, seed=1), load_task(f, size=12, seed=1), load_task(f, size=12, seed=2)
    ids = [p["problem_id"] for p in a.problems]
    assert len(ids) == 12 and ids == [p["problem_id"] for p in b.problems]
    assert ids != [p["problem_id"] for p in c.problems]
    assert [p["question"] for p in a.problems] != [f"{i} + 1 =" for i in range(12)]  # not just the first 12
    whole = load_task(f, size=100, seed=1)
    assert len(whole.problems) == 40 and len(whole.quarantined) == 10


def test_bigbench_source_through_load_problems(tmp_path):
    from distill.config import SourceConfig
    from distill.data.sources import load_problems

    f = _write(tmp_path, GENERATIVE)
    out = load_problems([SourceConfig(kind="bigbench", path=str(f), size=3, seed=0)])
    assert len(out.problems) == 3 and all(p["source"] == "bigbench:toy_arith" for p in out.problems)
    with pytest.raises(ValueError, match="kind=bigbench needs"):
        SourceConfig(kind="bigbench")


def _release(tmp_path, tasks: dict) -> tuple:
    import hashlib
    import io
    import tarfile

    path = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name, task in tasks.items():
            data = json.dumps(task).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{name}/task.json")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_task_verifies_the_release_and_extracts_one_task(tmp_path, monkeypatch):
    import distill.data.bigbench as bb

    archive, digest = _release(tmp_path, {"toy/sub": GENERATIVE, "other": MC})
    monkeypatch.setenv("DISTILL_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bb, "SDIST_URL", archive.as_uri())
    monkeypatch.setattr(bb, "SDIST_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        bb.fetch_task("toy/sub", progress=False)
    assert not list((tmp_path / "cache" / "bigbench").glob("*.tar.gz*"))  # nothing unverified is kept
    monkeypatch.setattr(bb, "SDIST_SHA256", digest)
    got = bb.fetch_task("toy/sub", progress=False)
    assert got == tmp_path / "cache" / "bigbench" / "tasks" / "toy" / "sub" / "task.json"
    assert json.loads(got.read_text()) == GENERATIVE
    assert not (tmp_path / "cache" / "bigbench" / "tasks" / "other").exists()  # only what was asked for
    archive.unlink()  # the cached copy serves later tasks
    assert json.loads(bb.fetch_task("other", progress=False).read_text()) == MC
    with pytest.raises(FileNotFoundError, match="BIG-bench has no task 'nope'"):
        bb.fetch_task("nope", progress=False)
    with pytest.raises(ValueError, match="bad BIG-bench task name"):
        bb.fetch_task("../etc", progress=False)
