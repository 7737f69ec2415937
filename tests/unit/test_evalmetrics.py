import math

import pytest

from distill.eval.metrics import (
    _lcs_len,
    accuracy,
    imitation_fidelity,
    maj_at_k,
    normalize_answer,
    pass_at_k,
    prompt_style_metrics,
    reasoning_delta,
    rouge_l,
    split_metrics,
    token_f1,
)


def test_accuracy():
    assert accuracy([True, False, True, True]) == 0.75
    assert accuracy([]) == 0.0


def test_pass_at_k_matches_the_binomial_definition():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # only 2 wrong samples: every 3-subset holds a right one
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_normalize_answer_merges_number_spellings_and_case():
    assert normalize_answer("1,000") == normalize_answer("1000.0") == normalize_answer("1000")
    assert normalize_answer("Paris.") == normalize_answer("  paris ") == "paris"
    assert normalize_answer(None) is None


def test_maj_at_k_votes_ties_to_first_and_ignores_none():
    votes = ["7", None, "1,000", "1000", None, None, "7"]  # 7 and 1000 tie at 2; 7 came first
    assert maj_at_k(votes, "7", "exact", None) is True
    assert maj_at_k(votes, "1000", "exact", None) is False
    assert maj_at_k(["Paris", "paris.", "London"], "Paris", "exact", None) is True
    assert maj_at_k(["London", "Paris", "paris."], "Paris", "exact", None) is True
    assert maj_at_k([None, None], "Paris", "exact", None) is False


def test_split_metrics_exact_values():
    preds = [
        {
            "problem_id": "p1",
            "correct": True,
            "answer": "4",
            "tokens": 100,
            "samples": [
                {"answer": "4", "correct": True},
                {"answer": "5", "correct": False},
                {"answer": "4", "correct": True},
            ],
        },
        {
            "problem_id": "p2",
            "correct": False,
            "answer": None,
            "tokens": 300,
            "samples": [
                {"answer": None, "correct": False},
                {"answer": "9", "correct": False},
                {"answer": "8", "correct": True},
                {"answer": "9", "correct": False},
            ],
        },
        {"problem_id": "p3", "correct": True, "answer": "x", "tokens": 200},
    ]
    m = split_metrics(preds)
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["no_answer_rate"] == pytest.approx(1 / 3)
    assert m["mean_tokens"] == 200.0
    assert m["accuracy_per_100_tokens"] == pytest.approx(1 / 3)  # 100 * (2/3) / 200
    assert m["k"] == 3  # the smallest sample count
    # p1: n=3 c=2 k=3 -> 1.0; p2: n=4 c=1 k=3 -> 1 - C(3,3)/C(4,3) = 0.75
    assert m["pass@k"] == pytest.approx(0.875)
    # p1: 4,5,4 -> "4" (right); p2 first 3: None,9,8 -> tie, "9" first (wrong)
    assert m["maj@k"] == 0.5


def test_split_metrics_without_samples_or_tokens():
    m = split_metrics([{"problem_id": "a", "correct": True, "answer": "1", "tokens": 0}])
    assert m == {
        "n": 1,
        "accuracy": 1.0,
        "ci": [pytest.approx(0.2065493), 1.0],
        "no_answer_rate": 0.0,
        "wrong_steps_rate": 0.0,
        "mean_tokens": 0.0,
        "accuracy_per_100_tokens": 0.0,
    }  # Wilson 1/1


def _p(pid, correct, answer, tokens=10):
    return {"problem_id": pid, "correct": correct, "answer": answer, "tokens": tokens}


def test_prompt_style_metrics_three_styles():
    by_style = {
        "plain": [_p("a", True, "1"), _p("b", True, "2"), _p("c", True, "7"), _p("d", False, None)],
        "formal": [_p("a", True, "1"), _p("b", False, "5"), _p("c", False, None), _p("d", False, None)],
        # e and f are not in every style: they count for accuracy, not for agreement
        "casual": [
            _p("a", True, "1.0"),
            _p("b", True, "2"),
            _p("c", False, "8"),
            _p("d", False, None),
            _p("e", True, "q"),
            _p("f", False, "r"),
        ],
    }
    m = prompt_style_metrics(by_style)
    assert m["per_style"] == {"plain": 0.75, "formal": 0.25, "casual": 0.5}
    assert m["mean"] == pytest.approx(0.5)
    assert m["sensitivity"] == pytest.approx(math.sqrt((0.25**2 + 0.25**2 + 0) / 3))
    # pairwise agreement: a: 1/1/1.0, 3 of 3 pairs agree; b: 2/5/2, 1 of 3; c: 7/None/8, 0 of 3;
    # d: None everywhere, 0 (a missing answer agrees with nothing)
    assert m["agreement"] == pytest.approx((1 + 1 / 3 + 0 + 0) / 4)
    lo, hi = m["agreement_ci"]
    assert 0 <= lo <= m["agreement"] <= hi <= 1
    assert m["per_style_ci"]["plain"] == pytest.approx([0.3006, 0.9544], abs=1e-4)  # Wilson 3/4
    assert m["n_shared"] == 4


def test_prompt_style_metrics_rejects_duplicate_ids():
    with pytest.raises(ValueError, match="duplicate problem_id 'a'"):
        prompt_style_metrics({"s": [_p("a", True, "1"), _p("a", False, "2")]})


def test_reasoning_delta_matches_by_problem_id():
    direct = [_p("p1", False, "1", 5), _p("p2", True, "2", 3), _p("p3", False, "3", 4), _p("p4", True, "4", 2)]
    reasoning = [_p("p3", False, "3", 100), _p("p1", True, "1", 120), _p("p2", True, "2", 80), _p("p5", True, "5", 50)]
    m = reasoning_delta(direct, reasoning)
    assert m["n"] == 3
    assert m["direct_accuracy"] == pytest.approx(1 / 3)
    assert m["reasoning_accuracy"] == pytest.approx(2 / 3)
    assert m["delta"] == pytest.approx(1 / 3)
    assert m["direct_mean_tokens"] == 4.0
    assert m["reasoning_mean_tokens"] == 100.0


def test_lcs_and_rouge_l_by_hand():
    assert _lcs_len(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example
    # LCS "the cat on mat" = 4 of 6 each side
    assert rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3)
    # LCS "a c" = 2: P = 2/5, R = 2/3, F = 2PR/(P+R) = 0.5
    assert rouge_l("a b c d e", "a x c") == pytest.approx(0.5)
    assert rouge_l("A b", "a b") == pytest.approx(0.5)  # case-sensitive
    assert rouge_l("", "") == 1.0 and rouge_l("a", "") == 0.0 and rouge_l("a", "b") == 0.0


def test_rouge_l_truncates_each_side():
    # "x" is token 2001 of the first text: cut off, so nothing is shared
    assert rouge_l("y " * 2000 + "x", "x") == 0.0
    assert rouge_l("y " * 1999 + "x", "x") == pytest.approx(2 * (1 / 2000) / (1 / 2000 + 1))


def test_token_f1_squad_style():
    # "the" and "." dropped: [cat, sat] vs [cat, sat, down] -> P=1, R=2/3, F=0.8
    assert token_f1("The cat sat.", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)  # bag overlap x1 + y1
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("the", "") == 1.0  # both empty after normalisation
    assert token_f1("cat", "!!") == 0.0


def test_imitation_fidelity_over_shared_ids():
    student = {"p1": "a b c d e", "p2": "The cat sat.", "p3": "only the student"}
    teacher = {"p1": "a x c", "p2": "a cat sat down", "p4": "only the teacher"}
    m = imitation_fidelity(student, teacher)
    assert m["n"] == 2
    # p1 rouge 0.5; p2 LCS "cat" (sat. != sat): P=1/3, R=1/4 -> 2/7
    assert m["rouge_l"] == pytest.approx((0.5 + 2 / 7) / 2)
    # p1 token_f1: "a" is an article -> [b,c,d,e] vs [x,c]: P=1/4, R=1/2 -> 1/3; p2 -> 0.8
    assert m["token_f1"] == pytest.approx((1 / 3 + 0.8) / 2)
    assert imitation_fidelity({}, teacher) == {"n": 0, "rouge_l": 0.0, "token_f1": 0.0}
