"""Evaluation metrics over student predictions: accuracy, pass@k / maj@k, prompt-style sensitivity,
reasoning vs direct answering, and imitation fidelity (reported next to transfer, never optimised).

Pure Python (no ray / vllm / torch). A prediction is a dict with `problem_id`, `correct` (bool),
`answer` (extracted answer or None), `tokens` (completion length) and, for k > 1, optional `samples`
(list of {"answer", "correct"}). Empty inputs give 0.0 rather than NaN so summaries stay valid JSON.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

from distill.eval.stats import bootstrap, wilson
from distill.trace.answers import is_correct, norm_text, parse_number, verify

ROUGE_MAX_TOKENS = 2000  # the LCS table is O(n*m): 2000 x 2000 cells is about a second in Python
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(answer: str | None) -> str | None:
    """Canonical form used for voting and cross-style comparison.

    Case-folded, whitespace collapsed, trailing period dropped; a number becomes its exact rational
    value, so "1,000", "1000.0" and "1000" are one vote. None stays None.
    """
    if answer is None:
        return None
    text = norm_text(str(answer))
    num = parse_number(text)
    return f"#{num}" if num is not None else text


def accuracy(correct: list[bool]) -> float:
    """Share of True values: sum(correct) / len(correct); 0.0 for an empty list."""
    return sum(1 for c in correct if c) / len(correct) if correct else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) for n samples of which c are correct.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i), which avoids huge binomials. 1.0 when n - c < k
    (every size-k subset holds a correct sample).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _majority(answers: list[str | None]) -> int | None:
    """Index of the first occurrence of the most common normalised non-None answer (None if none)."""
    keys = [normalize_answer(a) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    # Counter keeps insertion order, so the first key reaching `best` is the first-occurring one.
    winner = next(k for k, v in counts.items() if v == best)
    return keys.index(winner)


def maj_at_k(
    answers: list[str | None], reference: str, verifier: str, metadata: dict | None, question: str = ""
) -> bool:
    """Majority vote: the most frequent normalised answer (None ignored; ties -> the one that occurs
    first) is verified against `reference` with `distill.trace.answers.verify`; True only at full credit.
    False when every answer is None."""
    i = _majority(answers)
    if i is None:
        return False
    return is_correct(verify(answers[i], reference, verifier, metadata, question))


def _by_id(preds: list[dict], what: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for p in preds:
        pid = p["problem_id"]
        if pid in out:
            raise ValueError(f"{what}: duplicate problem_id {pid!r}")
        out[pid] = p
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def split_metrics(preds: list[dict]) -> dict:
    """Metrics of one eval split.

    - accuracy: pass@1 of the greedy prediction, accuracy([p["correct"]]); ci: its 95% Wilson interval
    - no_answer_rate: share of predictions whose `answer` is None
    - wrong_steps_rate: share of the right answers reached through a wrong arithmetic step
    - mean_tokens: mean of `tokens`
    - accuracy_per_100_tokens: 100 * accuracy / mean_tokens (0.0 when mean_tokens == 0)
    - n: number of predictions
    When any prediction has `samples`, with k = the smallest sample count among those that do:
    - k, pass@k: mean over those problems of pass_at_k(len(samples), #correct, k)
    - maj@k: share of those problems whose majority answer over the first k samples is correct;
      the winner's correctness is its own sample's `correct` flag (samples are already verified).
    """
    acc = accuracy([bool(p["correct"]) for p in preds])
    mean_tokens = _mean([float(p["tokens"]) for p in preds])
    out = {
        "n": len(preds),
        "accuracy": acc,
        "ci": list(wilson(sum(bool(p["correct"]) for p in preds), len(preds))),
        "no_answer_rate": accuracy([p.get("answer") is None for p in preds]),
        # right answers reached through a wrong arithmetic step, as a share of right answers
        "wrong_steps_rate": accuracy([bool(p.get("wrong_steps")) for p in preds if p["correct"]]),
        "mean_tokens": mean_tokens,
        "accuracy_per_100_tokens": 100.0 * acc / mean_tokens if mean_tokens > 0 else 0.0,
    }
    sampled = [p["samples"] for p in preds if p.get("samples")]
    if sampled:
        k = min(len(s) for s in sampled)
        out["k"] = k
        out["pass@k"] = _mean([pass_at_k(len(s), sum(1 for x in s if x["correct"]), k) for s in sampled])
        votes = []
        for s in sampled:
            i = _majority([x.get("answer") for x in s[:k]])
            votes.append(i is not None and bool(s[i]["correct"]))
        out["maj@k"] = accuracy(votes)
    return out


def _pair_agreement(keys: list[str | None]) -> float:
    """Share of style pairs giving the same normalised answer; a missing answer agrees with nothing."""
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    return sum(1 for a, b in pairs if a is not None and a == b) / len(pairs) if pairs else 1.0


def prompt_style_metrics(by_style: dict[str, list[dict]], seed: int = 0) -> dict:
    """Robustness of one model to the prompt style.

    - per_style: {style: accuracy of that style's predictions}; per_style_ci: their Wilson intervals
    - mean: mean of the per-style accuracies
    - sensitivity: population standard deviation of the per-style accuracies (0 = style-invariant)
    - agreement: over problems present in every style, the mean share of style pairs that give the
      same normalised answer (a missing answer agrees with nothing, so a model that never answers does
      not look consistent); agreement_ci: bootstrap interval over problems. Unlike "the same answer in
      all styles", it moves with partial agreement.
    - n_shared: how many problems that was taken over
    """
    per_style = {s: accuracy([bool(p["correct"]) for p in preds]) for s, preds in by_style.items()}
    per_style_ci = {
        s: list(wilson(sum(bool(p["correct"]) for p in preds), len(preds))) for s, preds in by_style.items()
    }
    accs = list(per_style.values())
    mean = _mean(accs)
    sensitivity = math.sqrt(_mean([(a - mean) ** 2 for a in accs])) if accs else 0.0
    indexed = [_by_id(preds, f"style {s!r}") for s, preds in by_style.items()]
    shared = sorted(set.intersection(*(set(ix) for ix in indexed))) if indexed else []
    agree = [_pair_agreement([normalize_answer(ix[pid].get("answer")) for ix in indexed]) for pid in shared]
    ci = bootstrap(lambda idx: _mean([agree[i] for i in idx]), len(agree), seed=seed) if agree else None
    return {
        "per_style": per_style,
        "per_style_ci": per_style_ci,
        "mean": mean,
        "sensitivity": sensitivity,
        "agreement": _mean(agree),
        "agreement_ci": ci,
        "n_shared": len(shared),
    }


def reasoning_delta(direct: list[dict], reasoning: list[dict]) -> dict:
    """Does reasoning raise accuracy, or only length? Over problems present in both lists (by id):

    - direct_accuracy / reasoning_accuracy: accuracy when forced to answer directly / allowed to reason
    - delta: reasoning_accuracy - direct_accuracy
    - direct_mean_tokens / reasoning_mean_tokens: mean `tokens` of each
    - n: number of matched problems
    """
    d, r = _by_id(direct, "direct"), _by_id(reasoning, "reasoning")
    shared = [pid for pid in d if pid in r]
    d_acc = accuracy([bool(d[pid]["correct"]) for pid in shared])
    r_acc = accuracy([bool(r[pid]["correct"]) for pid in shared])
    return {
        "n": len(shared),
        "direct_accuracy": d_acc,
        "reasoning_accuracy": r_acc,
        "delta": r_acc - d_acc,
        "direct_mean_tokens": _mean([float(d[pid]["tokens"]) for pid in shared]),
        "reasoning_mean_tokens": _mean([float(r[pid]["tokens"]) for pid in shared]),
    }


def _lcs_len(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence: the O(len(a) * len(b)) DP, one row at a time."""
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 over whitespace tokens (case-sensitive): with L = LCS length, P = L / len(a),
    R = L / len(b), F = 2PR / (P + R). Each side is cut to its first 2000 tokens to bound the DP.
    1.0 when both are empty, 0.0 when exactly one is."""
    ta, tb = a.split()[:ROUGE_MAX_TOKENS], b.split()[:ROUGE_MAX_TOKENS]
    if not ta or not tb:
        return float(not ta and not tb)
    lcs = _lcs_len(ta, tb)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(ta), lcs / len(tb)
    return 2 * p * r / (p + r)


def _squad_tokens(s: str) -> list[str]:
    # SQuAD's normalize_answer: lowercase, drop punctuation, drop articles, split on whitespace.
    return _ARTICLES.sub(" ", s.lower().translate(_PUNCT)).split()


def token_f1(a: str, b: str) -> float:
    """SQuAD-style F1 of the token multisets after SQuAD normalisation (lowercase, punctuation and the
    articles a/an/the removed): with c = |bag(a) & bag(b)|, P = c / len(a), R = c / len(b),
    F = 2PR / (P + R). 1.0 when both are empty after normalisation, 0.0 when exactly one is."""
    ta, tb = _squad_tokens(a), _squad_tokens(b)
    if not ta or not tb:
        return float(not ta and not tb)
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def imitation_fidelity(student_texts: dict[str, str], teacher_texts: dict[str, str]) -> dict:
    """How closely the student's text copies the teacher's, over problem ids present in both:
    mean rouge_l, mean token_f1 and n. Reported beside transfer to show the difference; not a goal."""
    shared = [pid for pid in student_texts if pid in teacher_texts]
    pairs = [(student_texts[pid], teacher_texts[pid]) for pid in shared]
    return {
        "n": len(shared),
        "rouge_l": _mean([rouge_l(s, t) for s, t in pairs]),
        "token_f1": _mean([token_f1(s, t) for s, t in pairs]),
    }
