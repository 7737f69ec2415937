"""Tokens of arithmetic text for distill/trace/arith.py: a linear regex lexer over numbers, operators,
LaTeX commands and words, operator words rewritten to symbols ("multiplied by" -> *), and the runs
of arithmetic tokens that may hold a claim. Split from arith.py to keep each file readable.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

MAX_LITERAL_DIGITS = 40  # longer digit runs are ids or noise; keeps Fraction() cheap

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
_OPS = {
    "-": "-",
    "−": "-",
    "–": "-",
    "+": "+",
    "*": "*",
    "×": "*",
    "·": "*",
    "∙": "*",
    "⋅": "*",
    "/": "/",
    "÷": "/",
    "^": "^",
}
_CMDS: dict[str, tuple[str, str]] = {
    **{
        c: ("ws", "")
        for c in (
            "left",
            "right",
            "big",
            "Big",
            "bigg",
            "Bigg",
            "bigl",
            "bigr",
            "Bigl",
            "Bigr",
            "boxed",
            "fbox",
            "displaystyle",
            "textstyle",
            "nonumber",
        )
    },
    **{
        c: ("clean", c)
        for c in (
            "quad",
            "qquad",
            "approx",
            "neq",
            "ne",
            "le",
            "ge",
            "leq",
            "geq",
            "lt",
            "gt",
            "to",
            "rightarrow",
            "Rightarrow",
            "implies",
            "therefore",
            "because",
            "checkmark",
            "iff",
            "longrightarrow",
            "Longrightarrow",
        )
    },
    "times": ("op", "*"),
    "cdot": ("op", "*"),
    "ast": ("op", "*"),
    "div": ("op", "/"),
    "frac": ("frac", ""),
    "dfrac": ("frac", ""),
    "tfrac": ("frac", ""),
}
# \, \; spacing and \$ carry nothing; \[ \( delimit math; \{ \} group.
_ESCAPES = {
    **dict.fromkeys(",;:! >$", ("ws", "")),
    **dict.fromkeys("[]()", ("clean", "")),
    "{": ("lp", "{"),
    "}": ("rp", "}"),
}
_ALIGN_CONTINUES = re.compile(r"\s*(?:&\s*)?=")  # `\\ &= 914`: the next align row continues the chain
_UNITS = {
    "kg",
    "g",
    "mg",
    "km",
    "m",
    "cm",
    "mm",
    "l",
    "ml",
    "s",
    "h",
    "hr",
    "hrs",
    "min",
    "lb",
    "lbs",
    "oz",
    "ft",
    "in",
    "mi",
    "k",
}
# Words that make a neighbouring number part of a larger expression we do not model.
_OPERATORISH = {
    "of",
    "times",
    "by",
    "from",
    "to",
    "than",
    "per",
    "over",
    "into",
    "half",
    "twice",
    "double",
    "triple",
    "thrice",
    "quarter",
    "third",
    "squared",
    "cubed",
    "square",
    "cube",
    "root",
    "sqrt",
    "log",
    "ln",
    "sin",
    "cos",
    "tan",
    "exp",
    "power",
    "percent",
    "remainder",
    "r",
    "mod",
    "modulo",
    "factorial",
    "plus",
    "minus",
    "x",
    "divided",
    "multiplied",
    "raised",
    "more",
    "less",
}
_OP_WORDS = (
    (("multiplied", "by"), "*"),
    (("divided", "by"), "/"),
    (("times",), "*"),
    (("x",), "*"),
    (("plus",), "+"),
    (("minus",), "-"),
)
_EQ_WORDS = (
    ("is", "equal", "to"),
    ("equals",),
    ("is",),
    ("gives",),
    ("yields",),
    ("makes",),
    ("results", "in"),
    ("comes", "to"),
)
_NOT_UNIT = (
    _OPERATORISH
    | {w[0] for w in _EQ_WORDS}
    | {"and", "or", "but", "so", "then", "which", "that", "are", "was", "not", "equal"}
)
BRACKET_PAIRS = {"(": ")", "[": "]", "{": "}"}
RETRACT_AFTER = re.compile(
    r"\s*(?:[,;]\s*)?(?:but\s+)?(?:(?:this|that|which|it)\s*)?(?:is|was|['’]s)\s+"
    r"(?:wrong|incorrect|not\s+(?:right|correct)|a\s+mistake|an\s+error|a\s+typo)",
    re.I,
)
# "19, not 18" / "≠ 18": what follows is mentioned only to reject it. Ends mark where it starts. The lookahead
# names every first character a match can have: most positions fail at once (half the search time on a step).
NEGATION = re.compile(r"(?=[nir≠\\])(?:\bnot|\binstead\s+of|\brather\s+than|≠|\\neq?)\s*[$€£]?\s*", re.I)


_ZERO = Fraction(0)


class Tok:
    """kind: num op eq lp rp frac (arithmetic), word, clean (a neutral break) or poison (unknown)."""

    __slots__ = ("kind", "start", "end", "sym", "val", "places", "canon", "neg", "word")

    def __init__(self, kind: str, start: int, end: int, sym: str = "") -> None:
        self.kind, self.start, self.end, self.sym = kind, start, end, sym
        self.val: Fraction = _ZERO  # shared: Fractions are immutable, and a new one per token costs
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
    if raw.isdigit() and len(raw) <= MAX_LITERAL_DIGITS:  # the usual literal: what the lines below make of it
        n = int(raw)
        return Fraction(n), str(n), 0
    pct = raw.endswith("%")
    digits = raw.rstrip("%").rstrip("\\").rstrip().replace(",", "")
    if len(digits) > MAX_LITERAL_DIGITS:
        return None
    v = Fraction(int(digits)) if digits.isdigit() else Fraction(digits)
    places = len(digits.partition(".")[2]) + (2 if pct else 0)
    return (v / 100 if pct else v), canonical(v) + ("%" if pct else ""), places


def lex(text: str) -> list[Tok]:
    toks: list[Tok] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "poison"
        if kind == "ws":  # every other match: skipped before anything else is looked at
            continue
        (s, e), raw = m.span(), m.group()
        if kind == "num":
            literal = _literal(raw) if len(raw) <= 2 * MAX_LITERAL_DIGITS else None
            t = Tok(kind if literal else "poison", s, e, raw)
            if literal:
                t.val, t.canon, t.places = literal
            toks.append(t)
            continue
        sym = raw
        if kind == "text":  # \text{ apples}: its words act as plain words (units)
            toks.extend(Tok("word", s + w.start(), s + w.end(), w.group().lower()) for w in _WORD.finditer(raw))
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
        if kind != "ws":
            toks.append(Tok(kind, s, e, sym))
    _fix_glued(toks)
    return toks


def _fix_glued(toks: list[Tok]) -> None:
    """Letters glued to digits make identifiers ("x2", "2x", "5th"); a glued "!" is a factorial."""
    for i in range(1, len(toks)):
        p, t = toks[i - 1], toks[i]
        if p.end != t.start:
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


def _phrase(toks: list[Tok], i: int, words: tuple[str, ...]) -> bool:
    return i + len(words) <= len(toks) and all(
        toks[i + j].kind == "word" and toks[i + j].sym == w for j, w in enumerate(words)
    )


def _starts_operand(toks: list[Tok], i: int) -> bool:
    if i >= len(toks):
        return False
    t = toks[i]
    if t.kind in ("num", "lp", "frac"):
        return True
    return t.kind == "op" and t.sym == "-" and i + 1 < len(toks) and toks[i + 1].kind in ("num", "lp", "frac")


def _word_operator(toks: list[Tok], i: int) -> tuple[Tok, int] | None:
    """`2 times 3`, `5 + 3 is 8`: a word between two operands acting as an operator or '='."""
    for words, sym in _OP_WORDS:
        if _phrase(toks, i, words) and _starts_operand(toks, i + len(words)):
            return Tok("op", toks[i].start, toks[i + len(words) - 1].end, sym), len(words)
    for words in _EQ_WORDS:
        if _phrase(toks, i, words) and _starts_operand(toks, i + len(words)):
            t = Tok("eq", toks[i].start, toks[i + len(words) - 1].end, "=")
            t.word = True
            return t, len(words)
    return None


def _unit_end(toks: list[Tok], i: int) -> int:
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


def rewrite_words(toks: list[Tok]) -> list[Tok]:
    out: list[Tok] = []
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

ARITH_KINDS = {"num", "op", "eq", "lp", "rp", "frac"}


def _bad_edge(toks: list[Tok], i: int, left: bool) -> bool:
    """Does toks[i], just outside a run, make the run's outer side part of something larger?"""
    t = toks[i] if 0 <= i < len(toks) else None
    if t is None or t.kind == "clean":
        return False
    if t.kind != "word":
        return True
    if left:  # a single letter before a run is a variable: "x - 3 = 5"
        return t.sym in _OPERATORISH or (len(t.sym) == 1 and t.sym not in ("a", "i"))
    return t.sym in _OPERATORISH or (i + 1 < len(toks) and toks[i + 1].sym == "^")  # "10 m^2"


def arith_runs(toks: list[Tok]) -> list[tuple[list[Tok], bool, bool]]:
    """Maximal arithmetic token runs with (bad left edge, bad right edge)."""
    runs: list[tuple[list[Tok], bool, bool]] = []
    cur: list[Tok] = []
    left_bad, side_has_op = False, False
    forced_left: bool | None = None  # edge decided by a split inside a run
    for i, t in enumerate(toks):
        if t.kind not in ARITH_KINDS:
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
        elif (
            cur[-1].kind in ("num", "rp")
            and t.kind in ("num", "lp", "frac")
            and not (cur[-1].sym == "}" and t.sym == "{")
        ):  # \frac{a}{b}: adjacent groups are fine
            if t.kind == "lp" and t.sym == "(" and cur[-1].end == t.start:
                cur.append(Tok("op", t.start, t.start, "*"))  # 2(3 + 4): implicit product
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
