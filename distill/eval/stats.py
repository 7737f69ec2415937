"""Uncertainty of accuracies and of comparisons between models: the numbers a reader can sign.

Pure Python (no numpy, scipy, ray, torch). Written by hand rather than taken from scipy/statsmodels:
each is a few lines of textbook formula, the project does not otherwise need those packages, and
every function here is pinned against hand-computed values in tests/unit/test_stats.py.

- wilson: 95% score interval of one accuracy (Wilson 1927); sane at 0/n and n/n, unlike p +- 1.96 se.
- paired_diff: difference of two accuracies on the same problems, with Newcombe's (1998, method 10)
  interval for paired proportions, and the exact McNemar test (two-sided binomial on discordant pairs).
- bootstrap: percentile interval of any statistic of problems resampled with replacement (seeded).
- gap_closed: (student - untrained) / (teacher - untrained), with a bootstrap interval.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials; (0, 1) when n == 0 (nothing measured)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_ci(correct: Sequence[bool]) -> dict:
    """{"n", "k", "accuracy", "ci": [lo, hi]} of a list of right/wrong outcomes."""
    n, k = len(correct), sum(1 for c in correct if c)
    lo, hi = wilson(k, n)
    return {"n": n, "k": k, "accuracy": k / n if n else 0.0, "ci": [lo, hi]}


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials of a fair coin: 2 * P(X <= min(k, n-k)), capped at 1."""
    if n == 0:
        return 1.0
    m = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(m + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_diff(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> dict:
    """Accuracy of `a` minus accuracy of `b`, both on the same problems (aligned lists).

    -> {"n", "diff", "ci": [lo, hi] (Newcombe's hybrid score interval for paired proportions),
        "a_only", "b_only" (discordant pairs), "p_mcnemar" (exact, two-sided)}.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_diff needs aligned lists, got {len(a)} and {len(b)}")
    n = len(a)
    both = sum(1 for x, y in zip(a, b) if x and y)
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    neither = n - both - a_only - b_only
    if n == 0:
        return {"n": 0, "diff": 0.0, "ci": [-1.0, 1.0], "a_only": 0, "b_only": 0, "p_mcnemar": 1.0}
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = wilson(both + a_only, n, z)
    l2, u2 = wilson(both + b_only, n, z)
    den = (both + a_only) * (neither + b_only) * (both + b_only) * (neither + a_only)
    phi = (both * neither - a_only * b_only) / math.sqrt(den) if den > 0 else 0.0
    d = p1 - p2
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {
        "n": n,
        "diff": d,
        "ci": [max(-1.0, d - delta), min(1.0, d + eps)],
        "a_only": a_only,
        "b_only": b_only,
        "p_mcnemar": binom_two_sided(a_only, a_only + b_only),
    }


def bootstrap(
    stat: Callable[[list[int]], float | None], n: int, reps: int = 2000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile interval of `stat(indices)` over `reps` resamples of range(n) with replacement.
    Resamples where the statistic is undefined (None) are left out; None if most are."""
    if n == 0:
        return None
    rng = random.Random(seed)
    vals = []
    for _ in range(reps):
        v = stat([rng.randrange(n) for _ in range(n)])
        if v is not None and math.isfinite(v):
            vals.append(v)
    if len(vals) < reps / 2:
        return None
    vals.sort()
    lo_i = int(math.floor((1 - level) / 2 * (len(vals) - 1)))
    hi_i = int(math.ceil((1 + level) / 2 * (len(vals) - 1)))
    return [vals[lo_i], vals[hi_i]]


MIN_GAP = 1e-9  # a teacher no better than the untrained student leaves no gap to close


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > MIN_GAP else None


def gap_closed(
    student: Sequence[bool],
    untrained: Sequence[bool],
    teacher: Sequence[bool],
    teacher_paired: bool = True,
    reps: int = 2000,
    seed: int = 0,
) -> dict:
    """(student - untrained) / (teacher - untrained) with a bootstrap interval.

    `student` and `untrained` are aligned on the same problems and resampled together. `teacher` is
    resampled with them when `teacher_paired` (same problems, same order), else independently (e.g.
    its accuracy measured on other problems of the same distribution). None where the teacher is no
    better than the untrained student (no gap to close)."""
    s = [1 if x else 0 for x in student]
    u = [1 if x else 0 for x in untrained]
    t = [1 if x else 0 for x in teacher]
    if len(s) != len(u) or (teacher_paired and len(t) != len(s)):
        raise ValueError("gap_closed: student and untrained (and a paired teacher) must be aligned")
    if not s or not t:
        return {"value": None, "ci": None, "n": len(s), "n_teacher": len(t)}

    def mean(xs: list[int], idx: list[int]) -> float:
        return sum(xs[i] for i in idx) / len(idx)

    value = _ratio(sum(s) / len(s) - sum(u) / len(u), sum(t) / len(t) - sum(u) / len(u))
    if teacher_paired:
        ci = bootstrap(lambda idx: _ratio(mean(s, idx) - mean(u, idx), mean(t, idx) - mean(u, idx)), len(s), reps, seed)
    else:
        rng = random.Random(seed + 1)

        def stat(idx: list[int]) -> float | None:
            tb = sum(t[rng.randrange(len(t))] for _ in t) / len(t)
            return _ratio(mean(s, idx) - mean(u, idx), tb - mean(u, idx))

        ci = bootstrap(stat, len(s), reps, seed)
    return {"value": value, "ci": ci, "n": len(s), "n_teacher": len(t)}


def ratio_of_gains(
    num_pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]],
    den_pairs: tuple[Sequence[bool], Sequence[bool]],
    groups: Sequence[int],
    reps: int = 2000,
    seed: int = 0,
) -> dict:
    """A ratio of two paired gains with a bootstrap interval, e.g. style retention: the student's gain
    over the untrained student under the prompt styles / its gain in distribution.

    `den_pairs` = (student, untrained) on the N in-distribution problems; `num_pairs` = one
    (student, untrained) pair per style, each aligned on problems whose in-distribution index is
    `groups` (the style problems are a subset of the in-distribution ones). Problems are resampled
    together, so both gains move with the same draw."""
    ds, du = ([1 if x else 0 for x in v] for v in den_pairs)
    n = len(ds)
    styles = [([1 if x else 0 for x in s], [1 if x else 0 for x in u]) for s, u in num_pairs]

    def stat(idx: list[int]) -> float | None:
        den = sum(ds[i] - du[i] for i in idx) / len(idx)
        weight = {}
        for i in idx:
            weight[i] = weight.get(i, 0) + 1
        num_n = num_d = 0
        for s, u in styles:
            for j, g in enumerate(groups):
                w = weight.get(g, 0)
                num_n += w * (s[j] - u[j])
                num_d += w
        if num_d == 0 or abs(den) < MIN_GAP:
            return None
        return (num_n / num_d) / den

    value = stat(list(range(n))) if n else None
    return {"value": value, "ci": bootstrap(stat, n, reps, seed) if n else None}
