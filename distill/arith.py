"""Arithmetic claims inside one reasoning step: find `a op b = c` statements and check them exactly.

Pure Python and no eval: a regex tokenizer, a precedence parser over fractions.Fraction, and
conservative edges. A side that touches a variable ("2x"), an operator word ("25% of 80") or an
unknown symbol ("5!", "\\sqrt") is dropped rather than guessed: a false "wrong claim" would flag
a good trace, a missed claim only loses a signal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

MAX_LITERAL_DIGITS = 40  # longer digit runs are ids or noise; keeps Fraction() cheap
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


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"(?P<ws>\s+|\*\*|__|\$|&|~)"  # markdown bold, currency/inline-math $ and align & carry nothing
    r"|(?P<text>\\(?:text|mathrm|textrm|mbox|textbf|mathbf|operatorname)\s*\{[^{}]{0,80}\})"
    r"|(?P<env>\\(?:begin|end)\s*\{[^{}]{0,40}\})"  # \begin{align}: a delimiter, not a group
    r"|(?P<cmd>\\[A-Za-z]+)"
    r"|(?P<esc>\\[^A-Za-z])"
    r"|(?P<num>(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?(?: ?\\?%)?)"
    r"|(?P<op>[-+−–*/×·∙⋅÷^])"
    r"|(?P<eq>=)"
    r"|(?P<lp>[(\[{])"
    r"|(?P<rp>[)\]}])"
    r"|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)"
    r"|(?P<clean>\.{1,3}(?![0-9])|[,;:?!<>≤≥≠≈→⇒✓✔\"“”'‘’—])"
    r"|(?P<poison>.)",
    re.DOTALL,
)
_WORD = re.compile(r"[^\W\d_]+")
_OPS = {"-": "-", "−": "-", "–": "-", "+": "+", "*": "*", "×": "*", "·": "*", "∙": "*", "⋅": "*",
        "/": "/", "÷": "/", "^": "^"}
_CMDS: dict[str, tuple[str, str]] = {
    **{c: ("ws", "") for c in ("left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl",
                               "Bigr", "boxed", "fbox", "displaystyle", "textstyle", "nonumber")},
    **{c: ("clean", c) for c in ("quad", "qquad", "approx", "neq", "ne", "le", "ge", "leq", "geq", "lt",
                                 "gt", "to", "rightarrow", "Rightarrow", "implies", "therefore",
                                 "because", "checkmark", "iff", "longrightarrow", "Longrightarrow")},
    "times": ("op", "*"), "cdot": ("op", "*"), "ast": ("op", "*"), "div": ("op", "/"),
    "frac": ("frac", ""), "dfrac": ("frac", ""), "tfrac": ("frac", ""),
}
# \, \; spacing and \$ carry nothing; \[ \( delimit math; \{ \} group.
_ESCAPES = {**dict.fromkeys(",;:! >$", ("ws", "")), **dict.fromkeys("[]()", ("clean", "")),
            "{": ("lp", "{"), "}": ("rp", "}")}
_ALIGN_CONTINUES = re.compile(r"\s*(?:&\s*)?=")  # `\\ &= 914`: the next align row continues the chain
_UNITS = {"kg", "g", "mg", "km", "m", "cm", "mm", "l", "ml", "s", "h", "hr", "hrs", "min", "lb", "lbs",
          "oz", "ft", "in", "mi", "k"}
# Words that make a neighbouring number part of a larger expression we do not model.
_OPERATORISH = {"of", "times", "by", "from", "to", "than", "per", "over", "into", "half", "twice",
                "double", "triple", "thrice", "quarter", "third", "squared", "cubed", "square", "cube",
                "root", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "power", "percent", "remainder",
                "r", "mod", "modulo", "factorial", "plus", "minus", "x", "divided", "multiplied",
                "raised", "more", "less"}
_OP_WORDS = ((("multiplied", "by"), "*"), (("divided", "by"), "/"), (("times",), "*"), (("x",), "*"),
             (("plus",), "+"), (("minus",), "-"))
_EQ_WORDS = (("is", "equal", "to"), ("equals",), ("is",), ("gives",), ("yields",), ("makes",),
             ("results", "in"), ("comes", "to"))
_NOT_UNIT = _OPERATORISH | {w[0] for w in _EQ_WORDS} | {"and", "or", "but", "so", "then", "which",
                                                        "that", "are", "was", "not", "equal"}
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_RETRACT_AFTER = re.compile(
    r"\s*(?:[,;]\s*)?(?:but\s+)?(?:(?:this|that|which|it)\s*)?(?:is|was|['’]s)\s+"
    r"(?:wrong|incorrect|not\s+(?:right|correct)|a\s+mistake|an\s+error|a\s+typo)", re.I)
# "19, not 18" / "≠ 18": what follows is mentioned only to reject it. Ends mark where it starts.
_NEGATION = re.compile(r"(?:\bnot|\binstead\s+of|\brather\s+than|≠|\\neq?)\s*[$€£]?\s*", re.I)


class _Tok:
    """kind: num op eq lp rp frac (arithmetic), word, clean (a neutral break) or poison (unknown)."""

    __slots__ = ("kind", "start", "end", "sym", "val", "places", "canon", "neg", "word")

    def __init__(self, kind: str, start: int, end: int, sym: str = "") -> None:
        self.kind, self.start, self.end, self.sym = kind, start, end, sym
        self.val: Fraction = Fraction(0)
        self.places, self.canon, self.neg, self.word = 0, "", False, False


def canonical(v: Fraction) -> str:
    """'5', '-0.25', '1/3': integers plain, finite decimals as decimals, else a reduced fraction."""
    n, d = v.numerator, v.denominator
    if d == 1:
        return str(n)
    for k in range(1, 31):
        if 10**k % d == 0:
            digits = str(abs(n) * 10**k // d).rjust(k + 1, "0")
            return ("-" if n < 0 else "") + digits[:-k] + "." + digits[-k:]
    return f"{n}/{d}"


@lru_cache(maxsize=4096)
def _literal(raw: str) -> tuple[Fraction, str, int] | None:
    """(value, canonical text, decimal places) of a number literal; "50%" is 0.5 with 4 places."""
    pct = raw.endswith("%")
    digits = raw.rstrip("%").rstrip("\\").rstrip().replace(",", "")
    if len(digits) > MAX_LITERAL_DIGITS:
        return None
    v = Fraction(int(digits)) if digits.isdigit() else Fraction(digits)
    places = len(digits.partition(".")[2]) + (2 if pct else 0)
    return (v / 100 if pct else v), canonical(v) + ("%" if pct else ""), places


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    for m in _TOKEN.finditer(text):
        kind, (s, e), raw = m.lastgroup or "poison", m.span(), m.group()
        sym = raw
        if kind == "text":  # \text{ apples}: its words act as plain words (units)
            toks.extend(_Tok("word", s + w.start(), s + w.end(), w.group().lower()) for w in _WORD.finditer(raw))
            continue
        if kind == "cmd":
            kind, sym = _CMDS.get(raw[1:], ("poison", raw))
        elif kind == "esc" and raw == "\\\\":
            kind = "ws" if _ALIGN_CONTINUES.match(text, e) else "clean"
        elif kind == "esc":
            kind, sym = _ESCAPES.get(raw[1], ("poison", raw))
        elif kind == "op":
            sym = _OPS[raw]
        elif kind == "word":
            sym = raw.lower()
        elif kind == "env":
            kind = "clean"
        if kind == "ws":
            continue
        t = _Tok(kind, s, e, sym)
        literal = _literal(raw) if kind == "num" and len(raw) <= 2 * MAX_LITERAL_DIGITS else None
        if literal:
            t.val, t.canon, t.places = literal
        elif kind == "num":
            t.kind = "poison"
        toks.append(t)
    _fix_glued(toks)
    return toks


def _fix_glued(toks: list[_Tok]) -> None:
    """Letters glued to digits make identifiers ("x2", "2x", "5th"); a glued "!" is a factorial."""
    for i, t in enumerate(toks):
        p = toks[i - 1] if i else None
        if p is None or p.end != t.start:
            continue
        if t.kind == "num" and p.kind == "word":
            t.kind = "poison"
        elif t.kind == "clean" and t.sym == "!" and p.kind in ("num", "rp"):
            t.kind = "poison"
        elif t.kind == "word" and p.kind == "num" and t.sym not in _UNITS:
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if t.sym == "x" and nxt is not None and nxt.kind == "num" and nxt.start == t.end:
                t.kind, t.sym = "op", "*"  # 3x4
            else:
                t.kind = "poison"
        elif t.kind == "num" and p.kind == "op" and p.sym == "-":
            before = toks[i - 2] if i >= 2 else None
            t.neg = before is None or before.kind not in ("num", "rp")


# --------------------------------------------------------------------------- words -> operators


def _phrase(toks: list[_Tok], i: int, words: tuple[str, ...]) -> bool:
    return i + len(words) <= len(toks) and all(
        toks[i + j].kind == "word" and toks[i + j].sym == w for j, w in enumerate(words))


def _starts_operand(toks: list[_Tok], i: int) -> bool:
    if i >= len(toks):
        return False
    t = toks[i]
    if t.kind in ("num", "lp", "frac"):
        return True
    return t.kind == "op" and t.sym == "-" and i + 1 < len(toks) and toks[i + 1].kind in ("num", "lp", "frac")


def _word_operator(toks: list[_Tok], i: int) -> tuple[_Tok, int] | None:
    """`2 times 3`, `5 + 3 is 8`: a word between two operands acting as an operator or '='."""
    for words, sym in _OP_WORDS:
        if _phrase(toks, i, words) and _starts_operand(toks, i + len(words)):
            return _Tok("op", toks[i].start, toks[i + len(words) - 1].end, sym), len(words)
    for words in _EQ_WORDS:
        if _phrase(toks, i, words) and _starts_operand(toks, i + len(words)):
            t = _Tok("eq", toks[i].start, toks[i + len(words) - 1].end, "=")
            t.word = True
            return t, len(words)
    return None


def _unit_end(toks: list[_Tok], i: int) -> int:
    """Index after up to 3 unit words ("3 apples + ...") when an operator follows them, else i."""
    j = i
    while j < len(toks) and j - i < 3 and toks[j].kind == "word" and toks[j].sym not in _NOT_UNIT:
        j += 1
    if j == i or j >= len(toks):
        return i
    nxt = toks[j]
    if (nxt.kind == "op" and nxt.sym != "^") or nxt.kind in ("eq", "rp"):
        return j
    return j if nxt.kind == "word" and _word_operator(toks, j) else i


def _rewrite_words(toks: list[_Tok]) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind == "word" and out and out[-1].kind in ("num", "rp"):
            hit = _word_operator(toks, i)
            if hit:
                out.append(hit[0])
                i += hit[1]
                continue
            j = _unit_end(toks, i)
            if j > i:
                i = j
                continue
        out.append(t)
        i += 1
    return out


# --------------------------------------------------------------------------- runs and sides

_ARITH = {"num", "op", "eq", "lp", "rp", "frac"}


def _bad_edge(toks: list[_Tok], i: int, left: bool) -> bool:
    """Does toks[i], just outside a run, make the run's outer side part of something larger?"""
    t = toks[i] if 0 <= i < len(toks) else None
    if t is None or t.kind == "clean":
        return False
    if t.kind != "word":
        return True
    if left:  # a single letter before a run is a variable: "x - 3 = 5"
        return t.sym in _OPERATORISH or (len(t.sym) == 1 and t.sym not in ("a", "i"))
    return t.sym in _OPERATORISH or (i + 1 < len(toks) and toks[i + 1].sym == "^")  # "10 m^2"


def _runs(toks: list[_Tok]) -> list[tuple[list[_Tok], bool, bool]]:
    """Maximal arithmetic token runs with (bad left edge, bad right edge)."""
    runs: list[tuple[list[_Tok], bool, bool]] = []
    cur: list[_Tok] = []
    left_bad, side_has_op = False, False
    forced_left: bool | None = None  # edge decided by a split inside a run
    for i, t in enumerate(toks):
        if t.kind not in _ARITH:
            if cur:
                runs.append((cur, left_bad, _bad_edge(toks, i, left=False)))
            cur, forced_left = [], None
            continue
        if t.kind == "eq" and t.word and not side_has_op:
            # "Step 2 is 5 + 3": a word '=' needs an expression on its left; otherwise a plain break
            if cur:
                runs.append((cur, left_bad, False))
            cur, forced_left = [], False
            continue
        if not cur:
            left_bad = forced_left if forced_left is not None else _bad_edge(toks, i - 1, left=True)
            forced_left, side_has_op = None, False
        elif cur[-1].kind in ("num", "rp") and t.kind in ("num", "lp", "frac") and not (
                cur[-1].sym == "}" and t.sym == "{"):  # \frac{a}{b}: adjacent groups are fine
            if t.kind == "lp" and t.sym == "(" and cur[-1].end == t.start:
                cur.append(_Tok("op", t.start, t.start, "*"))  # 2(3 + 4): implicit product
            else:
                # "1 000", "2 (3+4)": juxtaposed operands; a "(" opening words is a remark
                remark = t.kind == "lp" and i + 1 < len(toks) and toks[i + 1].kind == "word"
                runs.append((cur, left_bad, not remark))
                cur, left_bad, side_has_op = [], not remark, False
        cur.append(t)
        if t.kind == "eq":
            side_has_op = False
        elif t.kind in ("op", "frac"):
            side_has_op = True
    if cur:
        runs.append((cur, left_bad, False))
    return runs


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


def _shallow(toks: list[_Tok]) -> bool:
    """Bounds the parser's recursion up front: group nesting, sign runs, power towers."""
    depth = run = powers = 0
    for t in toks:
        depth += (t.kind == "lp") - (t.kind == "rp")
        run = run + 1 if t.kind == "op" else 0
        powers += t.kind == "op" and t.sym == "^"
        if depth > MAX_DEPTH or run > 3 or powers > 8:
            return False
    return True


def _evaluate(toks: list[_Tok]) -> Fraction | None:
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
        if not take("rp", _PAIRS[opener]):
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

    def __init__(self, toks: list[_Tok], valid: bool) -> None:
        self.toks = toks
        self.value = _evaluate(toks) if valid else None
        self.neg = len(toks) == 2 and toks[0].kind == "op" and toks[0].sym == "-"
        bare = (len(toks) == 1 or self.neg) and toks[-1].kind == "num"
        self.lit = toks[-1] if bare else None

    def canon(self) -> str:
        c = self.lit.canon if self.lit else ""
        return "-" + c if self.neg and c not in ("0", "0%") else c


def _sides(run: list[_Tok], left_bad: bool, right_bad: bool) -> list[_Side]:
    parts: list[list[_Tok]] = [[]]
    for t in run:
        if t.kind == "eq":
            parts.append([])
        else:
            parts[-1].append(t)
    sides = []
    for k, part in enumerate(parts):
        a, b = 0, len(part)
        opens, closes = sum(t.kind == "lp" for t in part), sum(t.kind == "rp" for t in part)
        if k == 0:  # "(5 + 3 = 8)": the outer sides carry the parenthesis of the whole remark
            while a < b and part[a].kind == "lp" and opens > closes:
                a, opens = a + 1, opens - 1
        if k == len(parts) - 1:
            while a < b and part[b - 1].kind == "rp" and closes > opens:
                b, closes = b - 1, closes - 1
        valid = a < b and not (k == 0 and left_bad) and not (k == len(parts) - 1 and right_bad)
        sides.append(_Side(part[a:b], valid))
    return sides


def _close(actual: Fraction, stated: Fraction, places: int) -> bool:
    """Exact, or within one unit of the stated decimal's last place ("10 / 3 = 3.33")."""
    if actual == stated:
        return True
    return places > 0 and abs(actual - stated) < Fraction(1, 10 ** min(places, 30))


def _src(text: str, toks: list[_Tok]) -> str:
    return " ".join(text[toks[0].start:toks[-1].end].split())


def _occurrence(t: _Tok) -> tuple[int, str]:
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
            if k == first or (k < first and side.lit is None) or (k in running and t is not side.toks[0]) or (
                    k > first and side.lit is None and occ[1] in operand_values):
                out.operands.append(occ)
                operand_values.add(occ[1])
                continue
            out.produced.append(occ)
            if k >= taint_from or k in wrong:
                out.tainted.add(occ[1])


def find_claims(text: str, step_index: int = 0) -> StepArith:
    """Every arithmetic claim in `text` (one step), checked, plus the step's numbers by role."""
    out = StepArith()
    negated = {m.end() for m in _NEGATION.finditer(text)}
    for run, left_bad, right_bad in _runs(_rewrite_words(_tokenize(text))):
        has_eq = any(t.kind == "eq" for t in run)
        sides = _sides(run, left_bad, right_bad) if has_eq else []
        claims, wrong, running = _pairs(sides, text, step_index)
        if not claims:
            out.loose.extend(o for o in map(_occurrence, run) if o[1] and o[0] not in negated)
            continue
        if _RETRACT_AFTER.match(text, run[-1].end) or run[0].start in negated:
            # quoted to reject it: not an error of this step, and its numbers feed nothing
            out.claims.extend(Claim(c.step_index, c.expr, c.stated, c.actual, c.ok, True) for c in claims)
            continue
        out.claims.extend(claims)
        _classify(sides, wrong, running, out)
    return out


def canonical_answer(answer: str | None) -> str | None:
    """Canonical value of an extracted final answer ("1,234" -> "1234", "\\frac{1}{2}" -> "0.5")."""
    if not answer:
        return None
    answer = answer.rsplit("=", 1)[-1]  # "x = 5", "6 + 7 = 13": the value is the last side
    toks = [t for t in _tokenize(answer) if t.kind != "clean"]
    nums = [t for t in toks if t.kind == "num"]
    if len(nums) == 1 and len(toks) <= 2 and toks[-1] is nums[0]:
        return _occurrence(nums[0])[1]  # keeps "50%" as written in steps
    value = _evaluate(toks) if all(t.kind in _ARITH for t in toks) else None
    if value is not None:
        return canonical(value)
    return _occurrence(nums[0])[1] if len(nums) == 1 else None
