"""Trace anatomy: split a teacher trace into steps and say what each step does for the answer.

segment -> steps (char spans that never lose text); step_values -> what each step computes and
uses; label -> plan / compute / check / answer / filler; decision_points -> the steps the final
answer depends on, traced back through produced values; analyse -> all of it plus the error
signals (first wrong arithmetic claim, whether the answer collapsed on it). Pure Python, no
ray / vllm / torch; every regex is linear, so 100k-char model output stays cheap.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from distill.trace.answers import extract_answer, is_correct, verify
from distill.trace.arith import Claim, canonical_answer, find_claims

ROLES = ("plan", "compute", "check", "answer", "filler")


@dataclass(frozen=True)
class Step:
    """One step of a trace: `text == trace[start:end]`, never with outer whitespace."""

    index: int
    start: int
    end: int
    text: str


@dataclass
class StepValues:
    """Canonical numbers ("1234", "-3", "0.5", "50%") a step computes and consumes."""

    produces: list[str]
    uses: list[str]
    claims: list[Claim]
    tainted: set[str] = field(default_factory=set)  # produced by a wrong claim


@dataclass
class StepAnatomy:
    index: int
    start: int
    end: int
    text: str
    role: str
    produces: list[str]
    uses: list[str]
    claims: list[Claim]
    on_path: bool


@dataclass
class Anatomy:
    steps: list[StepAnatomy]
    final_answer: str | None
    answer_correct: bool | None  # None without a reference answer
    first_error_step: int | None
    answer_collapsed: bool
    wrong_intermediate: bool
    decision_points: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- segmentation

_BLOCK_OPEN = re.compile(r"(?<!\\)\\\[|\$\$|\\begin\{([A-Za-z*]{1,30})\}")
_DISPLAY_CLOSE = re.compile(r"(?<!\\)\\\]")
_DOLLARS = re.compile(r"\$\$")
_ENV_CLOSE = re.compile(r"\\end\{([A-Za-z*]{1,30})\}")
_MARKER = (
    r"[ \t]*(?:[#>]+[ \t]*)?(?:\*\*|__)?(?:(?:step|part)[ \t]*[0-9]{1,3}[ \t]*[:.)\-–]?"
    r"|[0-9]{1,3}[.)](?=\s|$)|\((?:[0-9]{1,3}|[a-z])\)|[a-z]\)(?=\s)|[-*+•‣▪◦][ \t])(?:\*\*|__)?"
)
_LIST_MARKER = re.compile(_MARKER, re.I)
# The lookbehind starts a match only at the first mark of a run: "....." stays linear.
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]+[\"')\]*_”’]*(?=\s)")
_WORD_BEFORE = re.compile(r"[A-Za-z.]{1,10}$")
_ENUMERATOR = re.compile(r"(?:^|[:;.!?]\s)\s*[0-9]{1,2}$", re.M)  # "steps: 1. Add" is not a sentence end
_ABBREVIATIONS = {
    "e.g",
    "i.e",
    "etc",
    "vs",
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "jr",
    "sr",
    "cf",
    "approx",
    "fig",
    "eq",
    "no",
    "al",
    "resp",
    "viz",
    "ca",
}


def _add_piece(text: str, a: int, b: int, block: bool, pieces: list[tuple[int, int, bool]]) -> None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if a < b:
        pieces.append((a, b, block))


def _blocks(text: str) -> list[tuple[int, int]]:
    """Display-math spans (\\[..\\], $$..$$, \\begin{env}..\\end{env}); unclosed openers are text."""
    if not _BLOCK_OPEN.search(text):
        return []  # the usual trace: no opener, so no closer to look for
    display = [m.end() for m in _DISPLAY_CLOSE.finditer(text)]
    dollars = [m.start() for m in _DOLLARS.finditer(text)]
    envs: dict[str, list[int]] = {}
    for m in _ENV_CLOSE.finditer(text):
        envs.setdefault(m.group(1), []).append(m.end())
    blocks, pos = [], 0
    while m := _BLOCK_OPEN.search(text, pos):
        if m.group() == "$$":
            j = bisect_left(dollars, m.end())
            end = dollars[j] + 2 if j < len(dollars) else -1
        else:
            ends = display if m.group(1) is None else envs.get(m.group(1), [])
            closer = 2 if m.group(1) is None else len(m.group(1)) + 6  # len("\]"), len("\end{..}")
            j = bisect_left(ends, m.end() + closer)
            end = ends[j] if j < len(ends) else -1
        if end < 0:
            pos = m.end()
            continue
        blocks.append((m.start(), end))
        pos = end
    return blocks


def _block_lines(text: str) -> list[tuple[int, int]]:
    """Blocks widened to the whole lines they touch; blocks sharing a line merge."""
    blocks = _blocks(text)
    if not blocks:
        return []
    newlines = [m.start() for m in re.finditer("\n", text)]
    ranges: list[tuple[int, int]] = []
    for s, e in blocks:
        i, j = bisect_left(newlines, s), bisect_left(newlines, e)
        ls, le = (newlines[i - 1] + 1 if i else 0), (newlines[j] if j < len(newlines) else len(text))
        if ranges and ls <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(le, ranges[-1][1]))
        else:
            ranges.append((ls, le))
    return ranges


def _sentence_cuts(text: str, a: int, b: int) -> list[int]:
    cuts = []
    for m in _SENTENCE_END.finditer(text, a, b):
        q = m.end()
        while q < b and text[q].isspace():
            q += 1
        if q >= b:
            break
        if not (text[q].isupper() or text[q].isdigit() or text[q] in "\\$(\"'*[“"):
            continue  # a lowercase next word: "approx. five", "e.g. the"
        if text[m.start()] == "." and not text.startswith("..", m.start()):
            word = _WORD_BEFORE.search(text, max(a, m.start() - 10), m.start())
            if word and word.group().lower().strip(".") in _ABBREVIATIONS:
                continue
            if _ENUMERATOR.search(text, max(a, m.start() - 12), m.start()):
                continue
        cuts.append(m.end())
    return cuts


def _prose(text: str, a: int, b: int, pieces: list[tuple[int, int, bool]]) -> None:
    """Lines; a list item ("1.", "Step 2:", "-") stays whole, other lines split into sentences."""
    pos = a
    while pos < b:
        nl = text.find("\n", pos, b)
        end = b if nl < 0 else nl
        last = pos
        if not _LIST_MARKER.match(text, pos, end):
            for cut in _sentence_cuts(text, pos, end):
                _add_piece(text, last, cut, False, pieces)
                last = cut
        _add_piece(text, last, end, False, pieces)
        pos = end + 1


def segment(text: str) -> list[Step]:
    """Steps in order; everything between consecutive steps (and around them) is whitespace.

    A display-math block is one step with the text on its own lines; it also absorbs the
    previous piece when that ends with ":" ("2. Subtract 641 from 773:" + "\\[ ... \\]").
    """
    if not isinstance(text, str) or not text.strip():
        return []
    pieces: list[tuple[int, int, bool]] = []
    cursor = 0
    for ls, le in _block_lines(text):
        _prose(text, cursor, ls, pieces)
        _add_piece(text, ls, le, True, pieces)
        cursor = le
    _prose(text, cursor, len(text), pieces)
    merged: list[tuple[int, int, bool]] = []
    for s, e, block in pieces:
        if block and merged and not merged[-1][2] and text[merged[-1][0] : merged[-1][1]].rstrip(" \t*_").endswith(":"):
            merged[-1] = (merged[-1][0], e, True)
        else:
            merged.append((s, e, block))
    return [Step(i, s, e, text[s:e]) for i, (s, e, _) in enumerate(merged)]


# --------------------------------------------------------------------------- values

_LINE_MARKER = re.compile("^" + _MARKER, re.I | re.M)
_STEP_REF = re.compile(r"\b(?:step|part)\s*[0-9]{1,3}\b", re.I)
# "to get 7", "which gives 14", "the sum is 9": a number where a match ends is computed here.
_PRODUCE_BEFORE = re.compile(
    r"(?:\b(?:gives?|giving|gave|get|gets|getting|got|obtain(?:s|ed)?|yields?|results?\s+in|equals?"
    r"|equal\s+to|makes?|leaves?|leaving|left\s+with|becomes?|comes?\s+to|totals?|totall?ing)"
    r"|\b(?:which|that|this|it)\s+is|\b(?:which|that|it)['’]s"
    r"|\b(?:result|sum|total|difference|product|quotient|remainder|value)\s+(?:is|was|will\s+be))"
    r"\s+(?:us\s+|now\s+|then\s+|exactly\s+)?(?:a\s+(?:total|result|sum|value)\s+of\s+)?[$€£]?\s*",
    re.I,
)


@lru_cache(maxsize=4096)  # a step's text is masked once per analysis pass, several passes per trace
def _mask(text: str) -> str:
    """Blank list markers and "Step 2" references: their numbers are labels, not values."""
    blank = lambda m: " " * len(m.group())  # noqa: E731 - same length keeps offsets
    return _STEP_REF.sub(blank, _LINE_MARKER.sub(blank, text))


def step_values(steps: Sequence[Step]) -> list[StepValues]:
    """What each step produces (claim results, "gives N" with a new N) and uses (the rest).

    A value produced earlier in the same step is not a use; a "gives N" whose N appeared in
    an earlier step is a restatement, hence a use.
    """
    seen: set[str] = set()
    out = []
    for step in steps:
        masked = _mask(step.text)
        found = find_claims(masked, step.index)
        produced, used = list(found.produced), list(found.operands)
        if found.loose:
            known = seen | {v for _, v in produced} | {v for _, v in used}
            # only a number not known yet can be fresh: most steps need no phrase search
            new = any(v not in known for _, v in found.loose)
            after_phrase = {m.end() for m in _PRODUCE_BEFORE.finditer(masked)} if new else set()
            for pos, v in found.loose:
                fresh = v not in known and pos in after_phrase
                (produced if fresh else used).append((pos, v))
        produced.sort()
        first_made: dict[str, int] = {}  # value -> where the step first makes it; its keys in that order
        for pos, v in produced:
            first_made.setdefault(v, pos)
        produces = list(first_made)
        used.sort()
        uses = list(dict.fromkeys(v for pos, v in used if first_made.get(v, pos) >= pos))
        seen.update(produces, uses)
        out.append(StepValues(produces, uses, found.claims, found.tainted))
    return out


# --------------------------------------------------------------------------- roles

_ANSWER_CUE = re.compile(
    r"\\(?:boxed|fbox)\s*\{|\bfinal\s+answer\b|\banswers?\s+(?:is|are|=)"
    r"|^[ \t#>*_\-]*(?:final\s+)?answer[ \t*_]*[:：]",
    re.I | re.M,
)
# The lookahead names every first character a match can have: most positions fail at once (tested against the
# pattern without it, tests/unit/test_scorer_fast_paths.py).
_CHECK_CUE = re.compile(
    r"(?=[acdehilmnorsvw✓✔])"
    r"(?:\b(?:verif\w*|check\w*|double[- ]?check\w*|re-?check\w*|re-?calculat\w*|re-?comput\w*"
    r"|re-?evaluat\w*|re-?examin\w*|confirm\w*|wait|actually|hmm+|oops|mistake\w*|wrong|incorrect"
    r"|error|correct(?:ion|ing|ed)?|sanity|scratch\s+that|on\s+second\s+thought|not\s+needed"
    r"|no\s+need|let\s+me\s+re\w*)\b|[✓✔])",
    re.I,
)
_PLAN_CUE = re.compile(
    r"\b(?:first(?:ly)?|second(?:ly)?|then|next|finally|lastly|need\s+to|we\s+(?:will|can|should|must)"
    r"|we['’]ll|i\s+will|i['’]ll|to\s+(?:solve|find|compute|calculate|determine|evaluate|simplify|get)"
    r"|let['’]?s|let\s+us|step|start|begin|break|plan|approach|strategy|goal|add|subtract|multiply"
    r"|divide|calculate|compute|evaluate|simplify|find|determine|combine|substitute|sum|total"
    r"|difference|product|quotient|expression|double|halve|square|convert|count|round)\b",
    re.I,
)


def _mentions(step: Step, values: StepValues, answer: str, canon: str | None, plain_number: bool) -> bool:
    if canon is not None and (canon in values.uses or canon in values.produces):
        return True
    return bool(answer) and not plain_number and answer in step.text  # "\frac{1}{2}", "Paris"


def _role(step: Step, values: StepValues, mentions_answer: bool) -> str:
    text = _mask(step.text)
    if mentions_answer and _ANSWER_CUE.search(text):
        return "answer"
    if _CHECK_CUE.search(text):
        return "check"
    if values.produces or any(not c.retracted for c in values.claims):
        return "compute"
    if values.uses or _PLAN_CUE.search(text):
        return "plan"  # sets up a goal, or restates the given numbers
    return "filler"


def label(steps: Sequence[Step], final_answer: str | None, values: Sequence[StepValues] | None = None) -> list[str]:
    """One role per step. Precedence: answer > check > compute > plan > filler.

    answer: an answer cue ("Answer:", \\boxed{}, "the answer is") in a step that mentions the
    final answer; if no step has one, the last step mentioning the final answer.
    """
    values = step_values(steps) if values is None else values
    canon = canonical_answer(final_answer)
    plain = final_answer is not None and final_answer.replace(",", "").replace(".", "").lstrip("-").isdigit()
    mentions = [final_answer is None or _mentions(s, v, final_answer, canon, plain) for s, v in zip(steps, values)]
    roles = [_role(s, v, m) for s, v, m in zip(steps, values, mentions)]
    if final_answer and "answer" not in roles:
        last = max((k for k, m in enumerate(mentions) if m), default=None)
        if last is not None:
            roles[last] = "answer"
    return roles


# --------------------------------------------------------------------------- dependencies


def _answer_uses(values: StepValues, role: str, canon: str | None) -> list[str]:
    """An answer step consumes the final answer's value even when written "\\boxed{\\frac{1}{2}}"."""
    if role != "answer" or canon is None or canon in values.uses or canon in values.produces:
        return values.uses
    return [*values.uses, canon]


def _trace(
    values: Sequence[StepValues], roles: Sequence[str], final_answer: str | None
) -> tuple[list[int], list[tuple[int, str, int]]]:
    """Steps the answer depends on, and the (consumer, value, producer) edges that say why."""
    canon = canonical_answer(final_answer)
    producers: dict[str, list[int]] = {}
    for k, v in enumerate(values):
        for x in v.produces:
            producers.setdefault(x, []).append(k)
    seeds = [k for k, r in enumerate(roles) if r == "answer"]
    on_path, stack, edges = set(seeds), list(seeds), []
    while stack:
        k = stack.pop()
        for x in _answer_uses(values[k], roles[k], canon):
            ks = producers.get(x, [])
            j = bisect_left(ks, k) - 1  # latest earlier producer
            if j < 0:
                continue
            edges.append((k, x, ks[j]))
            if ks[j] not in on_path:
                on_path.add(ks[j])
                stack.append(ks[j])
    return sorted(on_path), edges


def decision_points(
    steps: Sequence[Step], values: Sequence[StepValues], final_answer: str | None, roles: Sequence[str] | None = None
) -> list[int]:
    """Answer steps plus, transitively, the latest earlier producer of every value they use."""
    roles = label(steps, final_answer, values) if roles is None else roles
    return _trace(values, roles, final_answer)[0]


def first_error(steps: Sequence[Any]) -> int | None:
    """Index of the first step with a wrong (not retracted) claim; items are claim lists or have `.claims`."""
    for k, item in enumerate(steps):
        if any(not c.ok and not c.retracted for c in getattr(item, "claims", item)):
            return k
    return None


def _collapsed(
    values: Sequence[StepValues],
    roles: Sequence[str],
    final_answer: str | None,
    edges: list[tuple[int, str, int]],
    err: int | None,
) -> bool:
    if err is None:
        return False
    bad = values[err].tainted
    if roles[err] == "answer" and canonical_answer(final_answer) in bad:
        return True
    return any(producer == err and value in bad for _, value, producer in edges)


def collapsed(
    steps: Sequence[Step], values: Sequence[StepValues], final_answer: str | None, roles: Sequence[str] | None = None
) -> bool:
    """Does the final answer depend on a value produced by the first wrong claim?"""
    roles = label(steps, final_answer, values) if roles is None else roles
    edges = _trace(values, roles, final_answer)[1]
    return _collapsed(values, roles, final_answer, edges, first_error(values))


# --------------------------------------------------------------------------- analyse

_LATEXISH = re.compile(r"[\\^{}]|sqrt|pi")


def _answer_correct(answer: str | None, reference: str | None) -> bool | None:
    if reference is None:
        return None
    if is_correct(verify(answer, reference, "exact", None)):
        return True
    # math-verify (sympy) only where exact comparison cannot decide: LaTeX-ish answers
    return bool(answer and _LATEXISH.search(answer + reference)) and is_correct(verify(answer, reference, "math", None))


def analyse(text: str, reference_answer: str | None = None) -> Anatomy:
    """The whole anatomy of one trace; deterministic, never raises on str input."""
    text = text if isinstance(text, str) else ""
    steps = segment(text)
    final, _ = extract_answer(text)
    values = step_values(steps)
    roles = label(steps, final, values)
    path, edges = _trace(values, roles, final)
    err = first_error(values)
    correct = _answer_correct(final, reference_answer)
    on_path, canon = set(path), canonical_answer(final)
    rows = [
        StepAnatomy(
            s.index,
            s.start,
            s.end,
            s.text,
            roles[k],
            v.produces,
            _answer_uses(v, roles[k], canon),
            v.claims,
            k in on_path,
        )
        for k, (s, v) in enumerate(zip(steps, values))
    ]
    return Anatomy(
        rows, final, correct, err, _collapsed(values, roles, final, edges, err), bool(correct) and err is not None, path
    )


def trace_columns(anatomy: Anatomy, correct: bool) -> dict[str, Any]:
    """The anatomy as trace-store columns (STEP_STRUCT in schema.py); `correct` is the scorer's verdict."""
    steps = []
    for s in anatomy.steps:
        standing = [c.ok for c in s.claims if not c.retracted]
        ok = sum(standing)
        steps.append(
            {
                "start": s.start,
                "end": s.end,
                "role": s.role,
                "on_path": s.on_path,
                "produces": s.produces,
                "uses": s.uses,
                "claims_ok": ok,
                "claims_wrong": len(standing) - ok,
            }
        )
    return {
        "steps": steps,
        "first_error_step": anatomy.first_error_step,
        "answer_collapsed": anatomy.answer_collapsed,
        # judged against the verifier's verdict, not anatomy's own answer comparison
        "wrong_intermediate": bool(correct) and anatomy.first_error_step is not None,
        "decision_points": anatomy.decision_points,
    }
