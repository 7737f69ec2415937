"""Arms of `distill sweep` compared on the same validation problems, and the sweep's report.md.

A trial is one arm trained with one seed; its evaluation is one prediction per validation problem. An
arm's per-problem accuracy is the mean over its seeds; its accuracy gets a bootstrap interval over
problems, and its difference from the best arm (and from the untrained student) a paired one.
Pure Python: trials and evaluations in, rows of numbers and markdown out.
"""

from __future__ import annotations

import random

from distill.eval.stats import bootstrap, paired_diff


def share(flags: list) -> float:
    """The fraction of true flags (0.0 when there are none)."""
    return sum(bool(f) for f in flags) / len(flags) if flags else 0.0


def correct_by_problem(preds: list[dict]) -> dict[str, float]:
    return {p["problem_id"]: float(p["correct"]) for p in preds}


def per_problem_accuracy(
    trials: dict, evals: dict, seeds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """arm -> its accuracy on each validation problem (the untrained student's order), averaged over
    seeds; and arm -> each seed's overall accuracy, in trial order."""
    ids = [p["problem_id"] for p in evals["untrained"]["predictions"]]
    per_arm: dict[str, list[float]] = {}
    seed_accs: dict[str, list[float]] = {}
    for name, t in trials.items():
        by = correct_by_problem(evals[name]["predictions"])
        seed_accs.setdefault(t["arm"], []).append(evals[name]["accuracy"])
        acc = per_arm.setdefault(t["arm"], [0.0] * len(ids))
        for i, pid in enumerate(ids):
            acc[i] += by[pid] / seeds
    return per_arm, seed_accs


def mean_ci(v: list[float]) -> list[float] | None:
    """Bootstrap interval of the mean over problems, rounded."""
    ci = bootstrap(lambda idx: sum(v[i] for i in idx) / len(idx), len(v))
    return [round(x, 4) for x in ci] if ci else None


def paired(a: list[float], b: list[float], seeds: int) -> dict:
    """a - b on the same problems: Newcombe + McNemar with one seed (0/1 outcomes), else a bootstrap
    interval of the mean per-problem difference (seed-averaged accuracies)."""
    if seeds == 1:
        d = paired_diff([x > 0.5 for x in a], [x > 0.5 for x in b])
        return {
            "diff": round(d["diff"], 4),
            "ci": [round(x, 4) for x in d["ci"]],
            "p_mcnemar": round(d["p_mcnemar"], 4),
        }
    diffs = [x - y for x, y in zip(a, b)]
    ci = bootstrap(
        lambda idx: sum(diffs[i] for i in idx) / len(idx), len(diffs), seed=random.Random(1).randrange(10**6)
    )
    return {"diff": round(sum(diffs) / len(diffs), 4), "ci": [round(x, 4) for x in ci] if ci else None}


def arm_accuracy(trials: dict, evals: dict, seeds: int) -> dict[str, dict]:
    """arm -> accuracy (mean over seeds) with its interval, each seed's accuracy, and the paired
    differences from the best arm and from the untrained student; arms in trial order."""
    per_arm, seed_accs = per_problem_accuracy(trials, evals, seeds)
    by_untrained = correct_by_problem(evals["untrained"]["predictions"])
    untrained = [by_untrained[p["problem_id"]] for p in evals["untrained"]["predictions"]]
    mean = {a: sum(v) / len(v) for a, v in per_arm.items()}
    best = max(mean, key=mean.get)
    return {
        arm: {
            "accuracy": round(mean[arm], 4),
            "ci": mean_ci(v),
            "seed_accuracies": [round(x, 4) for x in seed_accs[arm]],
            "vs_best": paired(v, per_arm[best], seeds),
            "vs_untrained": paired(v, untrained, seeds),
        }
        for arm, v in per_arm.items()
    }


def arm_training(trials: dict, evals: dict, arm: str, seeds: int) -> dict:
    """What an arm's trials did: tokens its students generated (mean over seeds), steps, final losses."""
    mine = {n: t for n, t in trials.items() if t["arm"] == arm}
    return {
        "mean_generated_tokens": round(sum(evals[n]["mean_tokens"] for n in mine) / seeds, 1),
        "train_steps": next(t["steps"] for t in mine.values()),
        "final_loss": [t["final_loss"] for t in mine.values()],
    }


def _ci(x) -> str:
    return f"[{x[0]:.3f}, {x[1]:.3f}]" if x else "[–]"


def report_md(s: dict) -> str:
    """report.md of a sweep summary: what was compared, then one table row per arm, then the frontier."""
    v = s["validation"]
    lines = [
        f"# Sweep {s['run_id']}",
        "",
        f"Traces: {s['traces']} ({s['accepted']} accepted); wrong intermediate step: "
        f"{s['wrong_intermediate_share']:.1%} of all traces, {s['wrong_intermediate_share_accepted']:.1%} "
        f"of accepted. Validation problems (training tasks, never a test split): {v['n']} "
        f"({v['dropped_overlap']} dropped for overlapping training or test problems). Untrained student: "
        f"{s['baseline_accuracy']:.3f}. {s['seeds']} seed(s) per arm. Wall {s['wall_s']:.0f} s.",
        "",
        "| arm | accuracy [95% CI] | vs best (paired) | vs untrained (paired) | seeds | examples | "
        "mean supervision tokens | mean generated tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["arms"]:
        vb, vu = r["vs_best"], r["vs_untrained"]
        lines.append(
            f"| {r['arm']} | {r['accuracy']:.3f} {_ci(r['ci'])} | {vb['diff']:+.3f} {_ci(vb['ci'])} | "
            f"{vu['diff']:+.3f} {_ci(vu['ci'])} | {', '.join(f'{x:.3f}' for x in r['seed_accuracies'])} | "
            f"{r['examples']} | {r['mean_supervision_tokens']} | {r['mean_generated_tokens']} |"
        )
    lines += ["", "![frontier](frontier.png)", ""]
    return "\n".join(lines)
