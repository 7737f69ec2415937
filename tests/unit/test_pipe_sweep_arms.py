"""A sweep's arms compared (distill/eval/arms.py): per-problem accuracy over seeds, paired differences, report.md."""

import pytest

from distill.eval.arms import arm_accuracy, arm_training, paired, per_problem_accuracy, report_md, share
from distill.eval.stats import paired_diff


def _eval(correct: list[int], mean_tokens: float = 10.0) -> dict:
    preds = [{"problem_id": f"p{i}", "correct": bool(c)} for i, c in enumerate(correct)]
    return {"predictions": preds, "accuracy": sum(correct) / len(correct), "mean_tokens": mean_tokens}


def _trial(arm: str, seed: int, steps: int = 3, loss: float = 1.0) -> dict:
    return {"arm": arm, "seed": seed, "steps": steps, "final_loss": loss}


def test_share():
    assert share([True, False, None, 1]) == 0.5 and share([]) == 0.0


def test_per_problem_accuracy_is_the_mean_over_seeds_in_the_untrained_order():
    evals = {
        "untrained": _eval([0, 0, 0, 0]),
        "a#seed0": _eval([1, 1, 0, 0]),
        "a#seed1": _eval([1, 0, 1, 0]),
    }
    # the arm's predictions in another order than the untrained student's: matched by problem_id
    evals["a#seed1"]["predictions"].reverse()
    trials = {"a#seed0": _trial("a", 0), "a#seed1": _trial("a", 1)}
    per_arm, seed_accs = per_problem_accuracy(trials, evals, seeds=2)
    assert per_arm == {"a": [1.0, 0.5, 0.5, 0.0]}
    assert seed_accs == {"a": [0.5, 0.5]}


def test_arm_accuracy_one_seed_pairs_against_best_and_untrained():
    evals = {
        "untrained": _eval([0, 0, 0, 1]),
        "lo": _eval([1, 0, 0, 0]),
        "hi": _eval([1, 1, 1, 0]),
    }
    trials = {"lo": _trial("lo", 0), "hi": _trial("hi", 0)}
    acc = arm_accuracy(trials, evals, seeds=1)
    assert list(acc) == ["lo", "hi"]  # trial order; the caller sorts
    assert acc["hi"]["accuracy"] == 0.75 and acc["lo"]["accuracy"] == 0.25
    assert acc["hi"]["seed_accuracies"] == [0.75]
    assert acc["hi"]["vs_best"]["diff"] == 0 and acc["lo"]["vs_best"]["diff"] == -0.5
    d = paired_diff([True, False, False, False], [True, True, True, False])
    assert acc["lo"]["vs_best"] == {
        "diff": round(d["diff"], 4),
        "ci": [round(x, 4) for x in d["ci"]],
        "p_mcnemar": round(d["p_mcnemar"], 4),
    }
    assert acc["hi"]["vs_untrained"]["diff"] == 0.5 and "p_mcnemar" in acc["hi"]["vs_untrained"]
    lo, hi = acc["hi"]["ci"]
    assert 0 <= lo <= 0.75 <= hi <= 1


def test_paired_with_seeds_is_a_bootstrap_of_the_mean_difference():
    d = paired([1.0, 0.5, 0.5, 0.0], [0.0, 0.5, 0.0, 0.0], seeds=2)
    assert d["diff"] == pytest.approx(0.375) and "p_mcnemar" not in d  # (1 + 0 + 0.5 + 0) / 4
    assert d["ci"][0] <= 0.375 <= d["ci"][1]


def test_arm_training_means_over_seeds():
    evals = {"a#seed0": _eval([1], mean_tokens=10.0), "a#seed1": _eval([1], 20.0), "b": _eval([0], 99.0)}
    trials = {"a#seed0": _trial("a", 0, 4, 0.5), "a#seed1": _trial("a", 1, 4, 0.7), "b": _trial("b", 0, 9, 2.0)}
    assert arm_training(trials, evals, "a", seeds=2) == {
        "mean_generated_tokens": 15.0,
        "train_steps": 4,
        "final_loss": [0.5, 0.7],
    }


def test_report_md_has_one_row_per_arm():
    row = {
        "arm": "full",
        "accuracy": 0.5,
        "ci": [0.25, 0.75],
        "vs_best": {"diff": 0.0, "ci": None},
        "vs_untrained": {"diff": 0.25, "ci": [0.0, 0.5]},
        "seed_accuracies": [0.5],
        "examples": 12,
        "mean_supervision_tokens": 40.0,
        "mean_generated_tokens": 30.0,
    }
    s = {
        "run_id": "sweep-x",
        "validation": {"n": 4, "dropped_overlap": 1},
        "traces": 20,
        "accepted": 12,
        "wrong_intermediate_share": 0.1,
        "wrong_intermediate_share_accepted": 0.05,
        "baseline_accuracy": 0.25,
        "seeds": 1,
        "wall_s": 61.0,
        "arms": [row],
    }
    md = report_md(s)
    assert md.startswith("# Sweep sweep-x\n")
    assert "10.0% of all traces, 5.0% of accepted" in md and "Validation problems (training tasks" in md
    assert "| full | 0.500 [0.250, 0.750] | +0.000 [–] | +0.250 [0.000, 0.500] | 0.500 | 12 | 40.0 | 30.0 |" in md
    assert md.endswith("![frontier](frontier.png)\n")
