"""Arithmetic claims inside one reasoning step: find `a op b = c` statements and check them exactly.

Pure Python and no eval: a regex tokenizer, a precedence parser over fractions.Fraction, and
conservative edges. A side that touches a variable ("2x"), an operator word ("25% of 80") or an
unknown symbol ("5!", "\\sqrt") is dropped rather than guessed: a false "wrong claim" would flag
a good trace, a missed claim only loses a signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from distill.trace.arith_tokens import (
    ARITH_KINDS,
    BRACKET_PAIRS,
    NEGATION,
    RETRACT_AFTER,
    Tok,
    arith_runs,
    canonical,
    lex,
    rewrite_words,
)

MAX_SIDE_TOKENS = 256  # one side of an equation; longer sides are not checked
MAX_BITS = 4096  # size bound on every intermediate numerator / denominator
MAX_DEPTH = 24  # parenthesis nesting the parser follows


@dataclass(frozen=True)
class Claim:
    """One equality a step asserts: `expr` evaluates to `actual`, the text says `stated`."""

    step_index: int
    expr: str
    stated: str
    actual: str
    ok: bool
    retracted: bool = False  # quoted only to reject it ("12 + 7 = 18 is wrong")


@dataclass
class StepArith:
    """The numbers of one step by their part in its claims, as (char offset, canonical value)."""

    claims: list[Claim] = field(default_factory=list)
    produced: list[tuple[int, str]] = field(default_factory=list)  # result sides of claims
    operands: list[tuple[int, str]] = field(default_factory=list)  # expression sides of claims
    loose: list[tuple[int, str]] = field(default_factory=list)  # numbers outside any claim
    tainted: set[str] = field(default_factory=set)  # values produced by a wrong claim


class _Bad(Exception):
    """A side that is not plain arithmetic we can check, or too big to: skip it."""


_APPLY = {"+": Fraction.__add__, "-": Fraction.__sub__, "*": Fraction.__mul__, "/": Fraction.__truediv__}


def _bound(v: Fraction) -> Fraction:
    if v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS:
        raise _Bad
    return v


def _power(base: Fraction, exp: Fraction) -> Fraction:
    if exp.denominator != 1 or abs(exp.numerator) > 512 or (base == 0 and exp < 0):
        raise _Bad
    if max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(exp.numerator) > MAX_BITS:
        raise _Bad
    return base**exp.numerator


def _shallow(toks: list[Tok]) -> bool:
    """Bounds the parser's recursion up front: group nesting, sign runs, power towers."""
    depth = run = powers = 0
    for t in toks:
        depth += (t.kind == "lp") - (t.kind == "rp")
        run = run + 1 if t.kind == "op" else 0
        powers += t.kind == "op" and t.sym == "^"
        if depth > MAX_DEPTH or run > 3 or powers > 8:
            return False
    return True


def _evaluate(toks: list[Tok]) -> Fraction | None:
    """The value of one side, or None when it is not plain arithmetic we can check."""
    # Sides of up to three tokens ("= 8", "= -3", "902 - 68") are most of them: valued without the parser's
    # recursion, to the same result (tests/unit/test_scorer_fast_paths.py).
    return _small_side(toks) if len(toks) <= 3 else _parse(toks)


def _small_side(toks: list[Tok]) -> Fraction | None:
    """What _parse makes of at most three tokens: a number, a signed number, `a op b` of two numbers."""
    if len(toks) == 1:
        return toks[0].val if toks[0].kind == "num" else None
    if len(toks) == 2:
        sign, num = toks
        if sign.kind == "op" and sign.sym in ("+", "-") and num.kind == "num":
            return -num.val if sign.sym == "-" else num.val
        return None  # no other two tokens parse
    if len(toks) == 3:
        a, op, b = toks
        if a.kind == "num" and b.kind == "num" and op.kind == "op" and (op.sym in _APPLY or op.sym == "^"):
            try:
                return _power(a.val, b.val) if op.sym == "^" else _bound(_APPLY[op.sym](a.val, b.val))
            except (_Bad, ZeroDivisionError, OverflowError, ValueError):
                return None
        return _parse(toks)
    return None


def _parse(toks: list[Tok]) -> Fraction | None:
    """Precedence climbing: + - < * / < unary sign < ^ (right-assoc) < numbers, groups, \\frac."""
    if not toks or len(toks) > MAX_SIDE_TOKENS or not _shallow(toks):
        return None
    pos = 0

    def take(kind: str, syms: str) -> str:
        nonlocal pos
        if pos < len(toks) and toks[pos].kind == kind and toks[pos].sym in syms:
            pos += 1
            return toks[pos - 1].sym
        return ""

    def binary(level: int) -> Fraction:  # level 0: + -, level 1: * /
        v = binary(1) if level == 0 else unary()
        while sym := take("op", "+-" if level == 0 else "*/"):
            v = _bound(_APPLY[sym](v, binary(1) if level == 0 else unary()))
        return v

    def unary() -> Fraction:
        sign = take("op", "+-")
        if sign:
            v = unary()
            return -v if sign == "-" else v
        base = atom()
        return _power(base, unary()) if take("op", "^") else base

    def group(opener: str) -> Fraction:
        v = binary(0)
        if not take("rp", BRACKET_PAIRS[opener]):
            raise _Bad
        return v

    def atom() -> Fraction:
        nonlocal pos
        if pos >= len(toks):
            raise _Bad
        t = toks[pos]
        pos += 1
        if t.kind == "num":
            return t.val
        if t.kind == "lp":
            return group(t.sym)
        if t.kind == "frac" and take("lp", "{"):  # \frac{a}{b}
            num = group("{")
            if take("lp", "{"):
                return _bound(num / group("{"))
        raise _Bad

    try:
        v = binary(0)
    except (_Bad, ZeroDivisionError, OverflowError, ValueError):
        return None
    return v if pos == len(toks) else None


# --------------------------------------------------------------------------- claims


class _Side:
    """One side of an equation chain; `lit` is set when it is a bare (signed) number."""

    __slots__ = ("toks", "value", "lit", "neg")

    def __init__(self, toks: list[Tok], valid: bool) -> None:
        self.toks = toks
        self.value = _evaluate(toks) if valid else None
        self.neg = len(toks) == 2 and toks[0].kind == "op" and toks[0].sym == "-"
        bare = (len(toks) == 1 or self.neg) and toks[-1].kind == "num"
        self.lit = toks[-1] if bare else None

    def canon(self) -> str:
        c = self.lit.canon if self.lit else ""
        return "-" + c if self.neg and c not in ("0", "0%") else c


def _sides(run: list[Tok], left_bad: bool, right_bad: bool) -> list[_Side]:
    parts: list[list[Tok]] = [[]]
    for t in run:
        if t.kind == "eq":
            parts.append([])
        else:
            parts[-1].append(t)
    sides = []
    last = len(parts) - 1
    for k, part in enumerate(parts):
        a, b = 0, len(part)
        # "(5 + 3 = 8)": the outer sides carry the parenthesis of the whole remark (counted only where one may)
        if part and ((k == 0 and part[0].kind == "lp") or (k == last and part[-1].kind == "rp")):
            opens, closes = sum(t.kind == "lp" for t in part), sum(t.kind == "rp" for t in part)
            if k == 0:
                while a < b and part[a].kind == "lp" and opens > closes:
                    a, opens = a + 1, opens - 1
            if k == last:
                while a < b and part[b - 1].kind == "rp" and closes > opens:
                    b, closes = b - 1, closes - 1
        valid = a < b and not (k == 0 and left_bad) and not (k == last and right_bad)
        sides.append(_Side(part[a:b], valid))
    return sides


def _close(actual: Fraction, stated: Fraction, places: int) -> bool:
    """Exact, or within one unit of the stated decimal's last place ("10 / 3 = 3.33")."""
    if actual == stated:
        return True
    return places > 0 and abs(actual - stated) < Fraction(1, 10 ** min(places, 30))


def _src(text: str, toks: list[Tok]) -> str:
    return " ".join(text[toks[0].start : toks[-1].end].split())


def _occurrence(t: Tok) -> tuple[int, str]:
    if t.neg and t.canon not in ("0", "0%"):
        return t.start - 1, "-" + t.canon
    return t.start, t.canon


def _pairs(sides: list[_Side], text: str, step_index: int) -> tuple[list[Claim], list[int], set[int]]:
    """Claims between neighbouring sides; indices of wrong claims' stated sides and of running totals."""
    claims, wrong, running = [], [], set()
    for k in range(len(sides) - 1):
        left, right = sides[k], sides[k + 1]
        if left.value is None or right.value is None or (left.lit and right.lit):
            continue
        reverse = left.lit is not None  # "8 = 5 + 3"
        expr, stated = (right, left) if reverse else (left, right)
        ok = _close(expr.value, stated.value, stated.lit.places if stated.lit else 0)
        pct = stated.lit is not None and stated.lit.canon.endswith("%")
        actual = canonical(expr.value * 100) + "%" if pct else canonical(expr.value)
        said = stated.canon() if stated.lit else _src(text, stated.toks)
        lead = stated.toks[0] if not stated.lit and stated.toks[0].kind == "num" else None
        if not ok and not reverse and lead and stated.toks[1].kind == "op" and lead.canon == actual:
            said, ok = lead.canon, True  # "5 + 3 = 8 + 2 = 10": a running total, not 5 + 3 == 8 + 2
            running.add(k + 1)
        claims.append(Claim(step_index, _src(text, expr.toks), said, actual, ok))
        if not ok:
            wrong.append(k if reverse else k + 1)
    return claims, wrong, running


def _classify(sides: list[_Side], wrong: list[int], running: set[int], out: StepArith) -> None:
    """Numbers on the first expression side are operands; new numbers after it are produced,
    except the fresh operands of a running total ("8 + 2" after "5 + 3 =": 8 is made, 2 used)."""
    first = next(k for k, s in enumerate(sides) if s.value is not None and s.lit is None)
    operand_values: set[str] = set()
    taint_from = min((w for w in wrong if w > first), default=len(sides))
    for k, side in enumerate(sides):
        for t in side.toks:
            if t.kind != "num":
                continue
            occ = _occurrence(t)
            if (
                k == first
                or (k < first and side.lit is None)
                or (k in running and t is not side.toks[0])
                or (k > first and side.lit is None and occ[1] in operand_values)
            ):
                out.operands.append(occ)
                operand_values.add(occ[1])
                continue
            out.produced.append(occ)
            if k >= taint_from or k in wrong:
                out.tainted.add(occ[1])


def find_claims(text: str, step_index: int = 0) -> StepArith:
    """Every arithmetic claim in `text` (one step), checked, plus the step's numbers by role."""
    out = StepArith()
    negated = {m.end() for m in NEGATION.finditer(text)}
    for run, left_bad, right_bad in arith_runs(rewrite_words(lex(text))):
        claims: list[Claim] = []
        if any(t.kind == "eq" for t in run):
            sides = _sides(run, left_bad, right_bad)
            claims, wrong, running = _pairs(sides, text, step_index)
        if not claims:
            out.loose.extend(o for o in map(_occurrence, run) if o[1] and o[0] not in negated)
            continue
        if RETRACT_AFTER.match(text, run[-1].end) or run[0].start in negated:
            # quoted to reject it: not an error of this step, and its numbers feed nothing
            out.claims.extend(Claim(c.step_index, c.expr, c.stated, c.actual, c.ok, True) for c in claims)
            continue
        out.claims.extend(claims)
        _classify(sides, wrong, running, out)
    return out


@lru_cache(maxsize=4096)  # the same answer string is canonicalised by every variant re-check of a trace
def canonical_answer(answer: str | None) -> str | None:
    """Canonical value of an extracted final answer ("1,234" -> "1234", "\\frac{1}{2}" -> "0.5")."""
    if not answer:
        return None
    answer = answer.rsplit("=", 1)[-1]  # "x = 5", "6 + 7 = 13": the value is the last side
    toks = [t for t in lex(answer) if t.kind != "clean"]
    nums = [t for t in toks if t.kind == "num"]
    if len(nums) == 1 and len(toks) <= 2 and toks[-1] is nums[0]:
        return _occurrence(nums[0])[1]  # keeps "50%" as written in steps
    value = _evaluate(toks) if all(t.kind in ARITH_KINDS for t in toks) else None
    if value is not None:
        return canonical(value)
    return _occurrence(nums[0])[1] if len(nums) == 1 else None
