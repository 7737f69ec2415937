"""The transfer suite: splits by problem_id, requests per split and style, scoring, the eval object."""

import json

import pytest

from distill.config import EvalConfig, PromptConfig, SourceConfig
from distill.data.sources import load_problems
from distill.eval.suite import (
    build_requests,
    load_suite,
    messages_for,
    prediction,
    score_answer,
    side_by_side,
    style_of,
    summarize,
)


def _rg(task, size, seed, **kw):
    return SourceConfig(kind="reasoning_gym", task=task, size=size, seed=seed, task_kwargs=kw)


def test_splits_never_overlap_training_problem_ids():
    # reasoning-gym item i comes from seed + i: seeds 11 and 40 with 64 items share items 29..63.
    train = load_problems([_rg("chain_sum", 64, 11)]).problems
    train_ids = {p["problem_id"] for p in train}
    ev = EvalConfig(
        in_distribution=[_rg("chain_sum", 64, 40)],
        related=[_rg("chain_sum", 10, 70)],
        difficulty_shift=[_rg("chain_sum", 8, 100000, min_terms=6, max_terms=8)],
    )
    raw = {p["problem_id"] for p in load_problems(ev.in_distribution).problems}
    expected_overlap = len(raw & train_ids)
    assert expected_overlap == 64 - 29  # the seed arithmetic above, checked independently of load_suite
    suite = load_suite(ev, train_ids)
    assert suite["checks"]["in_distribution"] == {"n": 29, "dropped_overlap": 35, "quarantined": 0}
    assert suite["checks"]["related"]["dropped_overlap"] == 5  # items 70..74 of 70..79 are training items
    for split, problems in suite["problems"].items():
        assert not {p["problem_id"] for p in problems} & train_ids, split
    assert suite["checks"]["difficulty_shift"] == {"n": 8, "dropped_overlap": 0, "quarantined": 0}


def test_a_split_made_only_of_training_problems_is_an_error():
    train_ids = {p["problem_id"] for p in load_problems([_rg("chain_sum", 16, 11)]).problems}
    with pytest.raises(ValueError, match="in_distribution: all 8 problems are training problems"):
        load_suite(EvalConfig(in_distribution=[_rg("chain_sum", 8, 12)]), train_ids)


def test_messages_for_system_few_shot_and_instruction():
    style = {
        "system": "Be brief.",
        "instruction": "Think.",
        "prefill": "",
        "examples": [{"question": "1+1=", "answer": "2"}],
    }
    assert messages_for(" 3+4= ", style) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1=\n\nThink."},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "3+4=\n\nThink."},
    ]
    bare = style_of(PromptConfig(system=None, instruction=""))
    assert messages_for("3+4=", bare) == [{"role": "user", "content": "3+4="}]


def _suite(n):
    probs = [
        {
            "problem_id": f"p{i}",
            "source": "reasoning_gym:chain_sum",
            "question": f"{i} + 1 =",
            "reference_answer": str(i + 1),
            "verifier": "math",
            "metadata": "{}",
        }
        for i in range(n)
    ]
    return {"problems": {"in_distribution": probs, "related": probs[:2]}, "checks": {}}


def test_build_requests_per_split_and_style():
    ev = EvalConfig.model_validate(
        {
            "in_distribution": [{"kind": "reasoning_gym", "task": "chain_sum"}],
            "style_problems": 3,
            "samples": 4,
            "max_tokens": 100,
            "direct_max_tokens": 7,
            "prompt_styles": {"terse": {"instruction": "Solve."}, "sys": {"system": "S", "instruction": ""}},
        }
    )
    reqs = build_requests(_suite(5), ev, PromptConfig())
    by = {}
    for r in reqs:
        by.setdefault((r["split"], r["style"]), []).append(r)
    assert {k: len(v) for k, v in by.items()} == {
        ("in_distribution", "training prompt"): 5,
        ("related", "training prompt"): 2,
        ("in_distribution_sampled", "training prompt"): 5,
        ("prompt_style", "terse"): 3,
        ("prompt_style", "sys"): 3,
        ("direct", "direct"): 5,
    }
    assert [r["problem"]["problem_id"] for r in by[("prompt_style", "terse")]] == ["p0", "p1", "p2"]
    assert all(r["n"] == 4 and r["temperature"] == 0.7 for r in by[("in_distribution_sampled", "training prompt")])
    d = by[("direct", "direct")][0]
    assert d["max_tokens"] == 7 and d["prefill"] == "The answer is" and d["n"] == 1 and d["temperature"] == 0.0
    assert by[("prompt_style", "sys")][0]["messages"][0] == {"role": "system", "content": "S"}
    only = build_requests(_suite(5), ev, PromptConfig(), ["in_distribution"])
    assert {r["split"] for r in only} == {"in_distribution", "in_distribution_sampled"}


def test_prediction_keeps_prefill_and_scores_samples():
    (p,) = _suite(1)["problems"]["related"][:1]
    req = {"split": "direct", "style": "direct", "problem": p, "prefill": "The answer is", "n": 3}
    out = prediction(req, [(" 1.", 2, "stop"), (" 7", 1, "stop"), ("", 0, "length")])
    assert out["text"] == "The answer is 1." and out["answer"] == "1" and out["correct"] is True
    assert [(s["answer"], s["correct"]) for s in out["samples"]] == [("1", True), ("7", False), (None, False)]
    cut = prediction(dict(req, n=1, prefill=""), [("1 + 1 makes 2 and then 3", 5, "length")])
    assert (cut["answer"], cut["answer_rule"], cut["correct"]) == (None, "truncated", False)
    stated = prediction(dict(req, n=1, prefill=""), [("Answer: 1\nThen more wor", 9, "length")])
    assert (stated["answer"], stated["correct"]) == ("1", True)


def test_score_answer_bigbench_multiple_choice():
    p = {
        "problem_id": "b",
        "source": "bigbench:toy",
        "question": "pick",
        "reference_answer": "apple",
        "verifier": "exact",
        "metadata": json.dumps(
            {"mc": True, "choices": ["carrot", "apple"], "target_scores": {"carrot": 0, "apple": 1}}
        ),
    }
    assert score_answer(p, "(B)") and score_answer(p, "apple") and not score_answer(p, "A")


def _pred(split, pid, correct, answer, tokens, style="training prompt", text="", source="s"):
    return {
        "split": split,
        "style": style,
        "problem_id": pid,
        "correct": correct,
        "answer": answer,
        "tokens": tokens,
        "text": text,
        "source": source,
        "question": "q",
        "reference": "1",
    }


def test_summarize_exact_values():
    student = [
        _pred("in_distribution", "a", True, "1", 10, text="x y z"),
        _pred("in_distribution", "b", False, None, 30, text="p q"),
        _pred("direct", "a", False, "5", 2),
        _pred("direct", "b", False, "6", 2),
        _pred("prompt_style", "a", True, "1", 4, style="s1"),
        _pred("prompt_style", "b", True, "2", 4, style="s1"),
        _pred("prompt_style", "a", True, "1", 8, style="s2"),
        _pred("prompt_style", "b", False, "3", 8, style="s2"),
        _pred("related", "r1", True, "1", 5, source="A"),
        _pred("related", "r2", False, "0", 15, source="B"),
        {
            **_pred("in_distribution_sampled", "a", False, None, 0),
            "samples": [{"answer": "1", "correct": True}, {"answer": "2", "correct": False}],
        },
        {
            **_pred("in_distribution_sampled", "b", False, None, 0),
            "samples": [{"answer": "9", "correct": False}, {"answer": "9", "correct": False}],
        },
    ]
    teacher = [
        _pred("in_distribution", "a", True, "1", 10, text="x y z"),
        _pred("in_distribution", "b", True, "2", 10, text="a b"),
    ]
    ev = summarize({"student": student, "teacher": teacher})
    ind = ev["splits"]["in_distribution"]["student"]
    assert ind == {
        "n": 2,
        "accuracy": 0.5,
        "ci": [0.0945, 0.9055],
        "no_answer_rate": 0.5,
        "wrong_steps_rate": 0.0,
        "mean_tokens": 20.0,
        "accuracy_per_100_tokens": 2.5,
        "k": 2,
        "pass@k": 0.5,
        "maj@k": 0.5,
    }
    assert ev["splits"]["in_distribution"]["teacher"]["accuracy"] == 1.0
    rel = ev["splits"]["related"]["student"]
    assert rel["accuracy"] == 0.5 and rel["by_source"]["A"]["accuracy"] == 1.0 and rel["by_source"]["B"]["n"] == 1
    st = ev["prompt_style"]["student"]
    assert st["per_style"] == {"s1": 1.0, "s2": 0.5} and st["mean"] == 0.75 and st["sensitivity"] == 0.25
    assert st["agreement"] == 0.5 and st["mean_tokens"] == {"s1": 4.0, "s2": 8.0}
    # the student against the teacher, paired on the same two problems: a both right, b teacher only
    vs = ev["comparisons"]["splits"]["in_distribution"]["student_vs_teacher"]
    assert (vs["n"], vs["diff"], vs["a_only"], vs["b_only"], vs["p_mcnemar"]) == (2, -0.5, 0, 1, 1.0)
    assert ev["splits"]["prompt_style"]["student"]["accuracy"] == 0.75
    rh = ev["reasoning_help"]["student"]
    assert (rh["direct_accuracy"], rh["reasoning_accuracy"], rh["delta"]) == (0.0, 0.5, 0.5)
    assert ev["imitation_fidelity"]["student"] == {"n": 2, "rouge_l": 0.5, "token_f1": 0.5}
    assert "teacher" not in ev["imitation_fidelity"] and "student" not in ev["reasoning_help"].get("teacher", {})


def test_side_by_side_takes_right_and_wrong():
    student = [
        _pred("in_distribution", p, c, "1", 3, text=f"s{p}")
        for p, c in [("a", True), ("b", False), ("c", True), ("d", False), ("e", True)]
    ]
    teacher = [_pred("in_distribution", p, True, "1", 3, text=f"t{p}") for p in "abcde"]
    out = side_by_side({"student": student, "teacher": teacher}, "student", "teacher", 2)
    assert [(s["problem_id"], s["student_correct"]) for s in out] == [
        ("a", True),
        ("c", True),
        ("b", False),
        ("d", False),
    ]
    assert out[0]["teacher_text"] == "ta" and out[0]["student_text"] == "sa"
