"""Output quality flags and per-problem sample selection.

Pure Python (no ray / vllm / torch); deterministic and linear in the text length.
"""

from __future__ import annotations

import math
import re

FLAGS = ("empty", "truncated", "repetitive")
POLICIES = ("all_correct", "first_correct", "shortest_correct")

MIN_PERIODIC_CHARS = 128  # a whitespace-free periodic stretch this long is degenerate
_MAX_UNIT = 32  # longest repeating unit looked for ("!", "ab", "\\quad", ...)
# A unit of 1.._MAX_UNIT non-space chars followed by >= 3 copies of itself. Every
# attempt fails at the first mismatch and finditer never rescans a match: linear.
_PERIODIC = re.compile(r"(\S{1,%d}?)\1{3,}" % _MAX_UNIT)


def _repeated_ngram_share(words: list[str], n: int) -> float:
    """Share of word n-grams that repeat an earlier n-gram: (total - distinct) / total."""
    total = len(words) - n + 1
    seen = {tuple(words[i : i + n]) for i in range(total)}
    return (total - len(seen)) / total


def _has_periodic_run(text: str) -> bool:
    return any(m.end() - m.start() >= MIN_PERIODIC_CHARS for m in _PERIODIC.finditer(text))


def flag_output(text: str, finish_reason: str, ngram: int = 8, threshold: float = 0.5) -> list[str]:
    """Flags (subset of FLAGS, in that order) for one generated output.

    - empty: blank after strip
    - truncated: finish_reason == "length"
    - repetitive: repeated word n-gram share >= threshold (only with >= 2*ngram
      words), or a whitespace-free stretch of >= MIN_PERIODIC_CHARS chars made of
      one short unit repeated ("!!!!...", "abcabc...")
    """
    text = text if isinstance(text, str) else ""
    flags: list[str] = []
    if not text.strip():
        flags.append("empty")
    if finish_reason == "length":
        flags.append("truncated")
    if text.strip():
        n = max(1, int(ngram))
        words = text.split()
        repetitive = len(words) >= 2 * n and _repeated_ngram_share(words, n) >= threshold
        # A periodic run is whitespace-free (\S, the characters str.split() keeps): only a word that long holds one.
        if repetitive or (max(map(len, words)) >= MIN_PERIODIC_CHARS and _has_periodic_run(text)):
            flags.append("repetitive")
    return flags


def _tokens(row: dict) -> float:
    t = row.get("completion_tokens")
    return math.inf if t is None else float(t)  # unknown length sorts last


def select(rows: list[dict], policy: str) -> list[bool]:
    """Keep mask aligned with rows.

    all_correct: every ok row. first_correct: per problem_id, the ok row with the
    lowest sample_index. shortest_correct: per problem_id, the ok row with the fewest
    completion_tokens, ties -> lowest sample_index. Remaining ties -> earliest row.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown selection policy {policy!r}; expected one of {POLICIES}")
    if policy == "all_correct":
        return [bool(r.get("ok")) for r in rows]
    best: dict[object, tuple[tuple, int]] = {}  # problem_id -> (sort key, row position)
    for pos, row in enumerate(rows):
        if not row.get("ok"):
            continue
        if policy == "first_correct":
            key: tuple = (row["sample_index"], pos)
        else:
            key = (_tokens(row), row["sample_index"], pos)
        pid = row["problem_id"]
        if pid not in best or key < best[pid][0]:
            best[pid] = (key, pos)
    keep = [False] * len(rows)
    for _, pos in best.values():
        keep[pos] = True
    return keep
