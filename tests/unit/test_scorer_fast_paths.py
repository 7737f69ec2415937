"""The scorer's shortcuts give what the general code gives: small equation sides without the parser, regex
lookaheads, string-only ids without json.dumps, plain-digit literals, tables as one struct conversion, one
verification per distinct answer of a trace's variants, Parquet parts written from memory."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import sys
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.data.schema import SCHEMA_VERSION, TRACE_SCHEMA, TRAIN_SCHEMA, VARIANT_SCHEMA, stable_id, to_table
from distill.data.store import TraceStore
from distill.trace import anatomy, arith_tokens, quality
from distill.trace.anatomy import analyse
from distill.trace.arith import _evaluate, _parse, _small_side
from distill.trace.arith_tokens import Tok, lex
from distill.trace.variants import VARIANTS, check_variant, variant_rows

sys.path.insert(0, str(Path(__file__).parent))
from test_anatomy import TRACES, _expressions, _traces  # noqa: E402 - the anatomy tests' traces and generators

# --------------------------------------------------------------------------- sides without the parser


def _tok(kind: str, sym: str = "", val: Fraction | None = None) -> Tok:
    t = Tok(kind, 0, 1, sym)
    if val is not None:
        t.val = val
    return t


_ALPHABET = [
    *(_tok("num", str(v), Fraction(v)) for v in (0, 1, 2, 7, -3)),
    _tok("num", "0.5", Fraction(1, 2)),
    _tok("num", "huge", Fraction(2**4000 + 1)),
    _tok("num", "tiny", Fraction(1, 2**4000 + 1)),
    *(_tok("op", s) for s in "+-*/^"),
    _tok("eq", "="),
    *(_tok("lp", s) for s in "([{"),
    *(_tok("rp", s) for s in ")]}"),
    _tok("frac"),
]


def test_small_sides_value_as_the_parser_does():
    n = 0
    for size in range(4):
        for toks in itertools.product(_ALPHABET, repeat=size):
            assert _small_side(list(toks)) == _parse(list(toks)), [(t.kind, t.sym) for t in toks]
            n += 1
    assert n == sum(len(_ALPHABET) ** k for k in range(4))


@settings(max_examples=300, deadline=None)
@given(_expressions, st.sampled_from(["", "-", "+", "- -"]))
def test_every_side_values_as_the_parser_does(expr, sign):
    toks = [t for t in lex(f"{sign} {expr[0]}") if t.kind in arith_tokens.ARITH_KINDS]
    for k in range(len(toks) + 1):
        assert _evaluate(toks[:k]) == _parse(toks[:k])


# --------------------------------------------------------------------------- regex lookaheads


def _without_lookahead(rx: re.Pattern) -> re.Pattern:
    hint = re.match(r"\(\?=\[[^\]]*\]\)", rx.pattern)
    assert hint, rx.pattern
    return re.compile(rx.pattern[hint.end() :], rx.flags)


def _case_variants() -> str:
    """Every character that matches an ASCII letter case-insensitively (İ, ı, ſ, K ...)."""
    letters = re.compile("[a-z]", re.I)
    return "".join(chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF and letters.match(chr(c)))


def test_lookaheads_only_skip_positions_where_no_match_starts():
    words = (
        "not|instead of|rather than|≠|\\ne|\\neq|verify|check|double-check|recheck|re-calculate|recompute|"
        "re-evaluate|reexamine|confirm|wait|actually|hmm|oops|mistake|wrong|incorrect|error|correction|sanity|"
        "scratch that|on second thought|not needed|no need|let me redo|✓|✔|nothing|Nope|INSTEAD  OF|Rather Than"
    ).split("|")
    odd = _case_variants()
    texts = [c.text for c in map(lambda t: anatomy.segment(t["text"]), TRACES) for c in c]
    rnd = random.Random(7)
    for _ in range(3000):  # words with a letter swapped for a case variant, glued or spaced, with digits around
        w = rnd.choice(words)
        k = rnd.randrange(len(w))
        texts.append(f"{rnd.randint(0, 99)}{rnd.choice(['', ' ', ', '])}{w[:k]}{rnd.choice(odd)}{w[k + 1 :]} 5")
        texts.append(" ".join(rnd.choice(words) for _ in range(4)) + rnd.choice(["", " 18", ": 7"]))
    for rx in (arith_tokens.NEGATION, anatomy._CHECK_CUE):
        plain = _without_lookahead(rx)
        for text in texts:
            assert [m.span() for m in rx.finditer(text)] == [m.span() for m in plain.finditer(text)], text


# --------------------------------------------------------------------------- ids, literals


def _json_id(*parts: object, n: int = 16) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", errors="surrogatepass")).hexdigest()[:n]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(), max_size=4))
def test_string_ids_are_the_json_ids(parts):
    assert stable_id(*parts) == _json_id(*parts)


def test_ids_of_awkward_strings_and_other_parts_are_the_json_ids():
    awkward = ['"', "\\", "\n\t\x00\x1f\x7f", "\u2028\u2029", "ü€😀", "\ud800", "/", ""]
    for parts in [(), *itertools.permutations(awkward, 3), ("x", 1), ("x", None), ("y", {"b": 1, "a": 2}), (1.5,)]:
        assert stable_id(*parts) == _json_id(*parts)
        assert stable_id(*parts, n=24) == _json_id(*parts, n=24)


def test_plain_digit_literals_are_what_the_general_rule_makes_of_them():
    for raw in ["0", "7", "007", "1234", "9" * 40, "1" + "0" * 39, "9" * 41]:
        expected = None if len(raw) > 40 else (Fraction(int(raw)), arith_tokens.canonical(Fraction(int(raw))), 0)
        assert arith_tokens._literal.__wrapped__(raw) == expected
    assert [t.canon for t in lex("12 007 1,234 2.50 50%")] == ["12", "7", "1234", "2.5", "50%"]


# --------------------------------------------------------------------------- tables


def _scored_rows() -> tuple[list[dict], list[dict]]:
    from distill.trace.scoring import accepted_variants, score_rows

    class Cfg:
        policy, reject_flags, repetition_ngram, repetition_threshold = "all_correct", ["truncated"], 8, 0.5

    rows = [
        {
            "trace_id": f"t{i}",
            "problem_id": f"p{i}",
            "question": "q",
            "reference_answer": c.get("reference") or "7",
            "verifier": "exact",
            "metadata": None,
            "text": c["text"],
            "finish_reason": "stop",
            "completion_tokens": 9,
            "sample_index": 0,
        }
        for i, c in enumerate(TRACES)
    ]
    scored = score_rows(rows, Cfg)
    return scored, accepted_variants(scored, 1.0)


def test_tables_are_those_of_arrow_row_conversion():
    traces, variants = _scored_rows()
    assert variants
    train = [{**v, "trace_id": v["parent_trace_id"]} for v in variants]
    for rows, schema in ((traces, TRACE_SCHEMA), (variants, VARIANT_SCHEMA), (train, TRAIN_SCHEMA)):
        rows = [{**r, "schema_version": SCHEMA_VERSION, "not_a_column": object()} for r in rows]
        for part in (rows, rows[:1], [], [{}], [{"problem_id": "only"}]):
            table = to_table(part, schema)
            assert table.schema == schema
            assert table.equals(
                pa.Table.from_pylist([{k: v for k, v in r.items() if k in schema.names} for r in part], schema=schema)
            )


def test_store_parts_are_what_pyarrow_writes_to_a_file(tmp_path):
    traces, variants = _scored_rows()
    store = TraceStore(tmp_path / "store")
    part = store.append_traces(traces)
    direct = tmp_path / "direct.parquet"
    table = to_table([{**r, "schema_version": SCHEMA_VERSION} for r in traces], TRACE_SCHEMA)
    pq.write_table(table, direct, use_dictionary=False, write_statistics=False, store_schema=False)
    assert part.read_bytes() == direct.read_bytes()
    assert [p.name for p in part.parent.iterdir()] == [part.name]  # no temp file left
    # a table's directory is made with its first part, and again if it went away since
    for p in part.parent.iterdir():
        p.unlink()
    part.parent.rmdir()
    assert store.append_traces(traces) == part and store.append_variants(variants).exists()
    assert store.traces().num_rows == len(traces)


# --------------------------------------------------------------------------- variants: one verification per answer


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_traces, st.sampled_from(["exact", "math"]))
def test_variant_rechecks_are_check_variant(text, verifier):
    a = analyse(text)
    if a.final_answer is None:
        return
    for reference in (a.final_answer, "7"):
        row = {
            "trace_id": "t",
            "text": text,
            "answer": a.final_answer,
            "reference_answer": reference,
            "verifier": verifier,
            "metadata": None,
            "question": "q",
        }
        out = variant_rows(row, a)
        assert [r["variant"] for r in out] == list(VARIANTS)
        for r in out:
            assert r["ok"] == check_variant(r["text"], reference, verifier, None, "q"), r["variant"]


def test_variants_extracting_different_answers_are_verified_apart(monkeypatch):
    # plan keeps the \\boxed{5} statement, the others end in "Answer: 5.0": equal answers to every built-in
    # verifier, but a verifier may tell them apart (here one that only takes the reference's own spelling)
    import distill.trace.variants as variants

    builtin = variants.verify

    def spelling(found, reference, verifier, *rest):
        return float(found == reference) if verifier == "spelling" else builtin(found, reference, verifier, *rest)

    monkeypatch.setattr(variants, "verify", spelling)
    text = "2 + 3 = 5\nAnswer: 5.0\n\\boxed{5}"
    a = analyse(text)
    for reference in ("5", "5.0"):
        row = {"trace_id": "t", "text": text, "answer": a.final_answer, "reference_answer": reference}
        out = variant_rows({**row, "verifier": "spelling", "metadata": None, "question": "q"}, a)
        assert {r["ok"] for r in out} == {True, False}
        for r in out:
            assert r["ok"] == check_variant(r["text"], reference, "spelling", None, "q"), r["variant"]


# --------------------------------------------------------------------------- quality flags


def _repetitive_without_the_word_length_guard(text: str, n: int = 8, threshold: float = 0.5) -> bool:
    words = text.split()
    return bool(text.strip()) and (
        (len(words) >= 2 * n and quality._repeated_ngram_share(words, n) >= threshold)
        or quality._has_periodic_run(text)
    )


_unit = st.lists(st.sampled_from(["a", "b", "!", "x", ".", "\\quad", "7"]), min_size=1, max_size=4).map("".join)
_spaces = st.sampled_from([" ", "\n", "\u00a0", "\u2028", "\u3000", "\x1c", "\u200b", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_unit, st.integers(1, 80), _spaces), max_size=6))
def test_the_periodic_run_check_skips_only_texts_without_a_long_enough_word(pieces):
    text = "".join(unit * k + space for unit, k, space in pieces)
    assert ("repetitive" in quality.flag_output(text, "stop")) == _repetitive_without_the_word_length_guard(text)
