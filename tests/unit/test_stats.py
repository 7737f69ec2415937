"""Intervals and tests against hand-computed values (distill/eval/stats.py), and the comparisons built on them."""

import math

import pytest

from distill.eval.compare import compare, split_comparison, style_retention
from distill.eval.stats import accuracy_ci, binom_two_sided, bootstrap, gap_closed, paired_diff, wilson


def test_wilson_by_hand():
    # 5/20: centre (0.25 + 1.96^2/40) / (1 + 1.96^2/20) = 0.29028, half-width 0.17842
    assert wilson(5, 20) == pytest.approx((0.11186, 0.46870), abs=1e-5)
    # 0/10: the upper limit is z^2 / (n + z^2) = 3.8415 / 13.8415
    assert wilson(0, 10) == pytest.approx((0.0, 3.841459 / 13.841459), abs=1e-6)
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / 13.841459, abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)
    assert accuracy_ci([True, False, False, False]) == {"n": 4, "k": 1, "accuracy": 0.25, "ci": list(wilson(1, 4))}


def test_exact_mcnemar_by_hand():
    # 8 discordant pairs one way, 2 the other: 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert binom_two_sided(8, 10) == pytest.approx(2 * 56 / 1024)
    assert binom_two_sided(5, 10) == 1.0 and binom_two_sided(0, 0) == 1.0
    assert binom_two_sided(0, 6) == pytest.approx(2 / 64)


def test_newcombe_paired_interval_by_hand():
    # both right 2, a only 8, b only 2, neither 38 (n = 50): p1 = 0.20, p2 = 0.08, D = 0.12
    a = [1] * 2 + [1] * 8 + [0] * 2 + [0] * 38
    b = [1] * 2 + [0] * 8 + [1] * 2 + [0] * 38
    d = paired_diff(a, b)
    l1, u1 = wilson(10, 50)
    l2, u2 = wilson(4, 50)
    phi = (2 * 38 - 8 * 2) / math.sqrt(10 * 40 * 4 * 46)  # 0.22116
    assert phi == pytest.approx(0.221163, abs=1e-6)
    lower = 0.12 - math.sqrt((0.2 - l1) ** 2 - 2 * phi * (0.2 - l1) * (u2 - 0.08) + (u2 - 0.08) ** 2)
    upper = 0.12 + math.sqrt((u1 - 0.2) ** 2 - 2 * phi * (u1 - 0.2) * (0.08 - l2) + (0.08 - l2) ** 2)
    assert d["diff"] == pytest.approx(0.12) and d["ci"] == pytest.approx([lower, upper])
    assert d["ci"] == pytest.approx([-0.00335, 0.24865], abs=1e-5)  # just includes 0: not distinguishable
    assert (d["a_only"], d["b_only"], d["p_mcnemar"]) == (8, 2, pytest.approx(0.109375))
    with pytest.raises(ValueError):
        paired_diff([1], [1, 0])


def test_bootstrap_and_gap_closed():
    xs = [1, 0] * 50
    lo, hi = bootstrap(lambda idx: sum(xs[i] for i in idx) / len(idx), len(xs), reps=1000, seed=1)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.2, abs=0.06)  # about 2 x 1.96 x 0.05
    assert bootstrap(lambda idx: 1.0, 10, seed=3) == bootstrap(lambda idx: 1.0, 10, seed=3) == [1.0, 1.0]
    # (0.5 - 0) / (0.75 - 0) on the same four problems
    g = gap_closed([1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0])
    assert g["value"] == pytest.approx(2 / 3) and g["n"] == 4
    # no gap to close: the teacher is no better than the untrained student
    assert gap_closed([1, 0], [1, 0], [1, 0])["value"] is None
    # a teacher measured on other problems is resampled on its own
    g2 = gap_closed([1, 1, 0, 0] * 10, [0, 0, 0, 1] * 10, [1, 0] * 30, teacher_paired=False)
    assert g2["value"] == pytest.approx((0.5 - 0.25) / (0.5 - 0.25)) and g2["n_teacher"] == 60
    assert g2["ci"][0] < 1.0 < g2["ci"][1]


def _p(split, pid, correct, style="training prompt", answer="1"):
    return {"split": split, "problem_id": pid, "correct": correct, "style": style, "answer": answer}


def test_comparisons_verdict_gap_and_retention():
    ids = [f"p{i}" for i in range(40)]
    student = [_p("in_distribution", p, i < 20) for i, p in enumerate(ids)]
    untrained = [_p("in_distribution", p, i < 4) for i, p in enumerate(ids)]
    teacher = [_p("in_distribution", p, i < 28) for i, p in enumerate(ids)]
    # the styles ask the first 10 problems: student right on 4 of them (gain 0.4 = 100% of... see below)
    for st in ("s1", "s2"):
        student += [_p("prompt_style", p, i < 4, st) for i, p in enumerate(ids[:10])]
        untrained += [_p("prompt_style", p, i < 2, st) for i, p in enumerate(ids[:10])]
    preds = {"student": student, "untrained": untrained, "teacher": teacher}
    c = split_comparison(preds, "in_distribution")
    su = c["student_vs_untrained"]
    assert (su["diff"], su["a_only"], su["b_only"]) == (pytest.approx(0.4), 16, 0)
    assert su["p_mcnemar"] == pytest.approx(2 / 2**16) and su["verdict"].startswith("student vs untrained +40.0 pts [")
    assert su["verdict"].endswith(": distinguishable")
    assert c["gap_closed"]["value"] == pytest.approx((0.5 - 0.1) / (0.7 - 0.1)) and c["gap_closed"]["teacher_paired"]
    r = style_retention(preds)
    # gain under the styles (0.4 - 0.2) / gain in distribution (0.5 - 0.1) = 0.5
    assert r["value"] == pytest.approx(0.5) and r["n_problems"] == 10 and r["styles"] == ["s1", "s2"]
    assert r["ci"][0] <= 0.5 <= r["ci"][1]
    full = compare(preds)
    assert full["verdicts"][0].startswith("in_distribution: student vs untrained +40.0 pts")
    assert any(v.startswith("style retention") for v in full["verdicts"])


def test_a_split_where_every_model_scores_zero_measures_nothing():
    preds = {m: [_p("difficulty_shift", f"q{i}", False) for i in range(5)] for m in ("student", "untrained", "teacher")}
    c = split_comparison(preds, "difficulty_shift")
    assert "measures nothing" in c["measures_nothing"] and c["gap_closed"]["value"] is None
