"""Final-answer extraction and verification for teacher traces.

Pure Python (no ray / vllm / torch). Every regex here is either anchored or has no
nested quantifiers, so extraction stays linear on adversarial model output.
"""

from __future__ import annotations

import math
import re
import threading
from fractions import Fraction
from functools import lru_cache
from typing import Any, Callable

RULES = ("answer_line", "boxed", "last_number", "none")
VERIFIERS = ("reasoning_gym", "math", "exact", "auto")

MAX_ANSWER_CHARS = 4096  # extracted answers are cut here so scoring cost stays bounded
MAX_MATH_CHARS = 1000  # math-verify/sympy gets slow on long inputs; longer -> exact only
_MATH_TIMEOUT_S = 5  # math-verify's own SIGALRM timeout, usable on the main thread only
_BLOCK_MAX_LINES = 32  # "Answer:" on its own line: take at most this many following lines

# "Answer:" at line start, with optional markdown (#, >, -, **) and "Final".
_LINE_MARKER = re.compile(r"[\s#>*_\-]*(?:final\s+)?answer[\s*_]*[:：][\s*]*", re.IGNORECASE)
# "The (final) answer is X" anywhere in a line; the last occurrence wins.
_IS_MARKER = re.compile(r"\banswer\s+is\b[\s*]*:?", re.IGNORECASE)
_HAS_ANSWER = re.compile(r"answer", re.IGNORECASE)
# \boxed{ / \fbox{ openers, escaped braces (skipped), plain braces.
_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")
# Integers, negatives, decimals, 1,234-style separators, a/b fractions. The sign
# counts only when not glued to a preceding token ("5-3" -> 3, "= -3" -> -3).
_NUMBER = re.compile(
    r"(?:(?<![0-9A-Za-z)\]}])-)?(?<![0-9.])"
    r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?(?:/[0-9]+)?"
)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]{1,3})?")
_FRACTION = re.compile(r"([+-]?[0-9]+)\s*/\s*([0-9]+)")
_LATEXISH = re.compile(r"\\|\$|\^|_\{|\bsqrt\b|\bpi\b")  # any backslash: LaTeX
# Inputs on which sympy can run for minutes (power towers, huge exponents or
# factorials). Checked before math-verify because off the main thread it has no timeout.
_RISKY_MATH = re.compile(
    r"\^\s*\{[^{}]*\^|\^\s*\([^()]*\^|\^\s*[0-9A-Za-z.]+\s*\^"
    r"|\*\*\s*[0-9A-Za-z.(]+\s*\*\*|(?:\^|\*\*)\s*[{(]?\s*[0-9]{5,}"
    r"|[0-9]{4,}\s*!|!\s*\)?\s*!"
)


# --------------------------------------------------------------------------- extraction


def _clean(s: str) -> str:
    """Strip whitespace, $ / ** wrappers, \\( \\) and trailing periods (bounded passes)."""
    for _ in range(8):
        prev = s
        s = s.strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= 4 and s.startswith(left) and s.endswith(right):
                s = s[2:-2]
        s = s.strip().strip("*$").rstrip(".").strip()
        if s == prev:
            break
    return s


def _last_boxed(text: str) -> str | None:
    """Content of the last completed \\boxed{...} (balanced braces), or None."""
    stack: list[tuple[bool, int]] = []  # (opened by \boxed, content start)
    spans: list[tuple[int, int]] = []  # completed boxes, in order of closing
    for m in _BOX_TOKENS.finditer(text):
        tok = m.group()
        if len(tok) == 2 and tok[0] == "\\":
            continue  # \{ or \}: literal brace, not structure
        if tok == "}":
            if stack:
                is_box, start = stack.pop()
                if is_box:
                    spans.append((start, m.start()))
        else:
            stack.append((tok != "{", m.end()))
    # Slice lazily: nested boxes would make eager slicing quadratic.
    for start, end in reversed(spans):
        content = _clean(text[start:end])
        if content:
            return content
    return None


def _answer_line(text: str) -> str | None:
    lines = text.split("\n")
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if not _HAS_ANSWER.search(line):
            continue
        start = -1
        m = _LINE_MARKER.match(line)
        if m:
            start = m.end()
        for m2 in _IS_MARKER.finditer(line):
            start = max(start, m2.end())  # the later marker in the line wins
        if start < 0:
            continue
        content = line[start:]
        if not _clean(content):
            # "Answer:" alone on its line: the answer is the following block
            # (after at most two blank lines), up to a blank or another marker line.
            k = i + 1
            while k < len(lines) and k - i <= 2 and not lines[k].strip():
                k += 1
            j = k
            while j < len(lines) and j - k < _BLOCK_MAX_LINES and lines[j].strip():
                if _LINE_MARKER.match(lines[j]):
                    break
                j += 1
            content = "\n".join(lines[k:j])
        boxed = _last_boxed(content)
        answer = boxed if boxed is not None else _clean(content)
        if answer:
            return answer
    return None


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return last.group() if last else None


def extract_answer(text: str) -> tuple[str | None, str]:
    """Return (answer, rule); rule is one of RULES. Never raises on str input."""
    if not isinstance(text, str) or not text:
        return None, "none"
    return _extract(text)


@lru_cache(maxsize=256)  # pure in `text`: the scorer asks again for each variant of a trace and its check
def _extract(text: str) -> tuple[str | None, str]:
    for rule, fn in (("answer_line", _answer_line), ("boxed", _last_boxed), ("last_number", _last_number)):
        answer = fn(text)
        if answer:
            return answer[:MAX_ANSWER_CHARS].rstrip(), rule
    return None, "none"


# --------------------------------------------------------------------------- verification


def parse_number(s: str) -> Fraction | None:
    s = s.strip()
    if not s or len(s) > 64:  # also avoids int() digit limits on huge strings
        return None
    m = _FRACTION.fullmatch(s)
    if m:
        den = int(m.group(2))
        return Fraction(int(m.group(1)), den) if den else None
    if not _DECIMAL.fullmatch(s) or not any(c.isdigit() for c in s):
        return None
    try:
        return Fraction(s.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def norm_text(s: str) -> str:
    return " ".join(s.casefold().split()).rstrip(".").strip()


def _exact_equal(answer: str, reference: str) -> bool:
    a, r = norm_text(answer), norm_text(reference)
    if a == r:
        return True
    na, nr = parse_number(a), parse_number(r)
    return na is not None and nr is not None and na == nr


@lru_cache(maxsize=None)
def _rg_score_fn(dataset: str) -> Callable[[str | None, dict[str, Any]], float]:
    # get_score_answer_fn builds the dataset with its default config on every call,
    # so cache one bound score_answer per dataset name.
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(dataset)


def _rg_score(answer: str, reference: str, metadata: dict | None, question: str) -> float:
    if not metadata or not metadata.get("source_dataset"):
        raise ValueError("reasoning_gym verifier needs metadata['source_dataset']")
    fn = _rg_score_fn(str(metadata["source_dataset"]))  # unknown name -> ValueError
    entry = {"question": question, "answer": reference, "metadata": metadata}
    try:
        return float(fn(answer, entry))
    except Exception:
        return 0.0  # scorers may choke on malformed model output


def _mv_parse(s: str, timeout: int | None) -> list:
    from math_verify import parse

    # Our input is an already-extracted answer, so parse it as one LaTeX expression:
    # the raw free-text mode picks the last number ("(1, 2)" -> 2, "2\sqrt{2}" -> 2).
    if "$" not in s:
        parsed = parse(f"${s}$", parsing_timeout=timeout)
        if parsed:
            return parsed
    return parse(s, parsing_timeout=timeout)


def _math_score(answer: str, reference: str) -> float:
    if _exact_equal(answer, reference):
        return 1.0
    if max(len(answer), len(reference)) > MAX_MATH_CHARS:
        return 0.0
    if _RISKY_MATH.search(answer) or _RISKY_MATH.search(reference):
        return 0.0
    from math_verify import verify as mv_verify
    from math_verify.errors import TimeoutException

    # math-verify's timeout uses signal.alarm, which raises ValueError off the main
    # thread (Ray actor threads); there we disable it and rely on the guards above.
    timeout = _MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        gold = _mv_parse(reference, timeout)
        pred = _mv_parse(answer, timeout)
        if not gold or not pred:
            return 0.0
        return 1.0 if mv_verify(gold, pred, timeout_seconds=timeout) else 0.0
    except (Exception, TimeoutException):  # TimeoutException derives from BaseException
        return 0.0


def _auto_verifier(reference: str, metadata: dict | None) -> str:
    if metadata and metadata.get("source_dataset"):
        return "reasoning_gym"
    if parse_number(reference) is not None or _LATEXISH.search(reference):
        return "math"
    return "exact"


def verify(
    answer: str | None,
    reference: str,
    verifier: str,
    metadata: dict | None,
    question: str = "",
) -> float:
    """Score an extracted answer against the reference, in [0, 1].

    Raises ValueError only for configuration errors (unknown verifier, missing or
    unknown reasoning-gym dataset); scorer failures on model output give 0.0.
    """
    if answer is None:
        return 0.0
    answer = str(answer)
    if not answer.strip():
        return 0.0
    reference = "" if reference is None else str(reference)
    if verifier == "auto":
        verifier = _auto_verifier(reference, metadata)
    if verifier == "reasoning_gym":
        score = _rg_score(answer, reference, metadata, question)
    elif verifier == "math":
        score = _math_score(answer, reference)
    elif verifier == "exact":
        score = 1.0 if _exact_equal(answer, reference) else 0.0
    else:
        raise ValueError(f"unknown verifier {verifier!r}; expected one of {VERIFIERS}")
    if math.isnan(score):
        return 0.0
    return min(1.0, max(0.0, score))


def is_correct(score: float) -> bool:
    """Only full credit counts: reasoning-gym gives partial credit for near misses."""
    return score >= 1.0 - 1e-9
