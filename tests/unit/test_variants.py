"""Granularity variants: exact texts on hand-written traces, lineage rows, and a property over generated
chain-sum traces: every variant still extracts to the verified answer, `full` is the input verbatim,
and the role spans tile the variant text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.data.schema import MissingColumnError, stable_id
from distill.trace.anatomy import analyse
from distill.trace.answers import extract_answer
from distill.trace.variants import VARIANTS, build_variants, check_variant, variant_rows

CLEAN = "1. First, add 5 and 3: 5 + 3 = 8\n2. Then subtract 2: 8 - 2 = 6\n3. Finally add 7: 6 + 7 = 13\nAnswer: 13"
DEAD_END_FILLER = (
    "Sure! Great question.\nWe need to compute (4 + 6) * 3.\n"
    "Let's try 4 * 5 = 20. Hmm, that's not needed.\nFirst, 4 + 6 = 10.\nThen 10 * 3 = 30.\n"
    "Answer: 30\nI hope this helps!"
)
QWEN_LATEX = (
    "To solve the expression 773 - 641 + 782, we will follow these steps:\n\n"
    "1. Start with the expression:\n   \\[\n   773 - 641 + 782\n   \\]\n"
    "2. Subtract 641 from 773:\n   \\[\n   773 - 641 = 132\n   \\]\n"
    "3. Add 782 to the result:\n   \\[\n   132 + 782 = 914\n   \\]\n\n"
    "So, the final answer is \\(\\boxed{914}\\)."
)
PROSE = "First we add 3 and 4 to get 7. Then we multiply 7 by 2, which gives 14. So the answer is 14."

EXPECTED = {
    CLEAN: dict(
        answer_only="Answer: 13",
        decision_points=CLEAN,  # every step feeds the answer
        plan="Answer: 13",  # no plan step: the answer statement alone
        full=CLEAN,
        full_no_filler=CLEAN,
    ),
    DEAD_END_FILLER: dict(
        answer_only="Answer: 30",
        decision_points="First, 4 + 6 = 10.\nThen 10 * 3 = 30.\nAnswer: 30",  # the 4 * 5 dead end is gone
        plan="We need to compute (4 + 6) * 3.\nAnswer: 30",
        full=DEAD_END_FILLER,
        full_no_filler="We need to compute (4 + 6) * 3.\nLet's try 4 * 5 = 20. Hmm, that's not needed.\n"
        "First, 4 + 6 = 10.\nThen 10 * 3 = 30.\nAnswer: 30",
    ),
    QWEN_LATEX: dict(
        answer_only="Answer: 914",
        decision_points="2. Subtract 641 from 773:\n   \\[\n   773 - 641 = 132\n   \\]\n"
        "3. Add 782 to the result:\n   \\[\n   132 + 782 = 914\n   \\]\n"
        "So, the final answer is \\(\\boxed{914}\\).",
        plan="To solve the expression 773 - 641 + 782, we will follow these steps:\n"
        "1. Start with the expression:\n   \\[\n   773 - 641 + 782\n   \\]\n"
        "So, the final answer is \\(\\boxed{914}\\).",
        full=QWEN_LATEX,
        full_no_filler=QWEN_LATEX,  # no filler: original separators, "\n\n" included
    ),
    PROSE: dict(
        answer_only="Answer: 14",
        decision_points="First we add 3 and 4 to get 7.\nThen we multiply 7 by 2, which gives 14.\n"
        "So the answer is 14.",
        plan="So the answer is 14.",
        full=PROSE,
        full_no_filler=PROSE,  # adjacent steps keep their original " " separators
    ),
}


# None of these has a step that is a bare `a ± b = c` with a multi-digit b: place_value is full_no_filler.
for _expected in EXPECTED.values():
    _expected["place_value"] = _expected["full_no_filler"]


@pytest.mark.parametrize("text", list(EXPECTED), ids=["clean", "dead-end-filler", "qwen-latex", "prose"])
def test_exact_variant_texts(text):
    answer, _ = extract_answer(text)
    variants = build_variants(text, analyse(text, answer), answer)
    assert list(variants) == list(VARIANTS)
    assert variants == EXPECTED[text]
    for v in variants.values():
        assert check_variant(v, answer, "math", None)


def test_answer_line_appended_when_the_kept_steps_end_elsewhere():
    # The check after the answer is kept in full_no_filler, so the answer must be restated after it.
    text = "2 + 3 = 5\nAnswer: 5\nLet me double-check: 5 - 3 = 2 \u2713"
    v = build_variants(text, analyse(text), "5")
    assert v["full_no_filler"] == text + "\nAnswer: 5"
    assert v["decision_points"] == "2 + 3 = 5\nAnswer: 5"
    assert v["full"] == text


def test_non_adjacent_steps_join_with_newline():
    text = "Sure!\n\nStep 1: 12 + 7 = 19\n\nGreat. Step 2: 19 - 4 = 15\nAnswer: 15"
    v = build_variants(text, analyse(text), "15")
    assert v["full_no_filler"] == "Step 1: 12 + 7 = 19\nStep 2: 19 - 4 = 15\nAnswer: 15"


def test_no_decision_path_degenerates_to_answer_only():
    text = "Okay. Let me think."
    anatomy = analyse(text)
    assert anatomy.decision_points == []
    v = build_variants(text, anatomy, "7")
    assert v["decision_points"] == v["answer_only"] == "Answer: 7"
    assert v["full"] == text  # never edited, even when it would not re-check


FEW_SHOT = "902 - 68 = 834\n834 + 5 = 839\n839 - 310 = 529\nAnswer: 529"


def test_place_value_splits_each_multi_digit_step_by_digit():
    v = build_variants(FEW_SHOT, analyse(FEW_SHOT, "529"), "529")
    assert v["place_value"] == (
        "902 - 60 = 842\n842 - 8 = 834\n834 + 5 = 839\n839 - 300 = 539\n539 - 10 = 529\nAnswer: 529"
    )
    assert check_variant(v["place_value"], "529", "exact", None)
    rows = variant_rows(_row(FEW_SHOT, reference_answer="529"), analyse(FEW_SHOT, "529"))
    pv = next(r for r in rows if r["variant"] == "place_value")
    assert pv["ok"] and [(pv["text"][s["start"] : s["end"]], s["role"]) for s in pv["spans"]] == [
        ("902 - 60 = 842", "compute"),
        ("842 - 8 = 834", "compute"),
        ("834 + 5 = 839", "compute"),
        ("839 - 300 = 539", "compute"),
        ("539 - 10 = 529", "compute"),
        ("Answer: 529", "answer"),
    ]


def test_place_value_keeps_the_gaps_between_steps_it_does_not_split():
    text = "3 + 4 = 7\n\n7 + 2 = 9.\n9 + 15 = 24\nAnswer: 24"
    v = build_variants(text, analyse(text, "24"), "24")
    assert v["place_value"] == "3 + 4 = 7\n\n7 + 2 = 9.\n9 + 10 = 19\n19 + 5 = 24\nAnswer: 24"
    assert v["full_no_filler"] == text


@pytest.mark.parametrize(
    "step, lines",
    [
        ("7 + 345 = 352", ["7 + 300 = 307", "307 + 40 = 347", "347 + 5 = 352"]),
        ("Step 2: 5 - 310 = -305.", ["Step 2: 5 - 300 = -295", "-295 - 10 = -305"]),  # label kept, sign carried
        ("-40 + 1005 = 965", ["-40 + 1000 = 960", "960 + 5 = 965"]),  # zero digits give no line
        ("41 + 7 = 48", None),  # one digit: nothing finer to say
        ("120 - 300 = -180", None),  # one non-zero digit
        ("41 + 70 = 112", None),  # a wrong claim is never split (the lines would re-state it as right)
        ("So 41 + 75 = 116 here", None),  # prose around the claim: left as the teacher wrote it
        ("007 + 012 = 19", None),  # leading zeros: not a plain integer, left as written
        (
            "\u0669\u0660\u0662 - \u0666\u0668 = \u0668\u0663\u0664",
            None,
        ),  # Arabic-Indic digits are not rewritten in ASCII
        ("1" * 5000 + " + 12 = 1", None),  # no int() of a 5,000-digit number
    ],
)
def test_split_place_value(step, lines):
    from distill.trace.variants import split_place_value

    assert split_place_value(step) == lines


def test_multiline_answer_goes_in_a_block_extraction_reads():
    v = build_variants("The grid is done.", analyse("The grid is done."), "1 2\n3 4")
    assert v["answer_only"] == "Answer:\n1 2\n3 4"
    assert extract_answer(v["answer_only"])[0] == "1 2\n3 4"


def test_check_variant_rejects_a_wrong_or_missing_answer():
    assert check_variant("2 + 3 = 5\nAnswer: 5", "5", "exact", None)
    assert not check_variant("2 + 3 = 6\nAnswer: 6", "5", "exact", None)
    assert not check_variant("", "5", "exact", None)
    assert check_variant("So, \\(\\boxed{\\frac{1}{2}}\\).", "0.5", "math", None)


def _row(text, **over):
    row = dict(
        trace_id="t-1",
        text=text,
        answer=extract_answer(text)[0],
        reference_answer="30",
        verifier="exact",
        metadata="{}",
        question="Compute (4 + 6) * 3.",
    )
    return {**row, **over}


class WordTokenizer:
    def __call__(self, texts, add_special_tokens=False):  # batched, like a transformers tokenizer
        return {"input_ids": [t.split() for t in texts]}


def test_variant_rows_lineage_sizes_and_spans():
    row = _row(DEAD_END_FILLER)
    rows = variant_rows(row, analyse(DEAD_END_FILLER, "30"), tokenizer=WordTokenizer())
    assert [r["variant"] for r in rows] == list(VARIANTS)
    assert [r["variant_id"] for r in rows] == [stable_id("variant", "t-1", n) for n in VARIANTS]
    assert len({r["variant_id"] for r in rows}) == len(VARIANTS)
    by = {r["variant"]: r for r in rows}
    assert all(r["parent_trace_id"] == "t-1" and r["ok"] for r in rows)
    assert by["full"]["text"] == DEAD_END_FILLER
    assert by["answer_only"]["student_tokens"] == 2 and by["answer_only"]["chars"] == len("Answer: 30")
    assert by["answer_only"]["spans"] == [{"start": 0, "end": 10, "role": "answer", "on_path": True}]
    dp = by["decision_points"]
    assert [(dp["text"][s["start"] : s["end"]], s["role"], s["on_path"]) for s in dp["spans"]] == [
        ("First, 4 + 6 = 10.", "compute", True),
        ("Then 10 * 3 = 30.", "compute", True),
        ("Answer: 30", "answer", True),
    ]
    full = by["full"]["spans"]
    assert [s["role"] for s in full] == [
        "filler",
        "filler",
        "plan",
        "compute",
        "check",
        "compute",
        "compute",
        "answer",
        "filler",
    ]
    assert "filler" not in {s["role"] for s in by["full_no_filler"]["spans"]}
    # Rebuilding gives the same ids and texts: rows are idempotent by variant_id.
    assert variant_rows(row, analyse(DEAD_END_FILLER, "30")) == [{**r, "student_tokens": None} for r in rows]


def test_appended_answer_line_gets_an_answer_span():
    text = "2 + 3 = 5\nAnswer: 5\nLet me double-check: 5 - 3 = 2 \u2713"
    rows = variant_rows(_row(text, reference_answer="5"), analyse(text))
    nf = next(r for r in rows if r["variant"] == "full_no_filler")
    last = nf["spans"][-1]
    assert nf["text"][last["start"] : last["end"]] == "Answer: 5" and last["end"] == len(nf["text"])
    assert (last["role"], last["on_path"]) == ("answer", True) and nf["ok"]


def test_variant_rows_recheck_uses_the_reference_and_needs_columns():
    rows = variant_rows(_row(CLEAN, reference_answer="14"), analyse(CLEAN))
    assert not any(r["ok"] for r in rows)  # a wrong reference fails every variant
    bad = _row(CLEAN)
    del bad["verifier"]
    with pytest.raises(MissingColumnError, match="verifier"):
        variant_rows(bad, analyse(CLEAN))
    with pytest.raises(ValueError, match="no extracted answer"):
        variant_rows(_row("no answer here", answer=None), analyse("no answer here"))


# --------------------------------------------------------------------------- property

FILLER = ["Sure!", "Great question.", "Okay.", "I hope this helps!", "Let me know if you have any questions."]
MARKERS = ["", "{k}. ", "Step {k}: ", "- ", "**Step {k}:** "]
STEP_FORMS = ["{a} {op} {b} = {c}", "Now {a} {op} {b} = {c}.", "Next, {a} {op} {b} equals {c}."]
ANSWER_FORMS = [
    "Answer: {x}",
    "**Answer:** {x}",
    "Final answer: {x}",
    "So the answer is {x}.",
    "The final answer is $\\boxed{{{x}}}$.",
]


@st.composite
def chain_sum_traces(draw):
    """A chain-sum problem and a teacher-like trace solving it, in a random style."""
    terms = draw(st.lists(st.integers(-999, 999), min_size=2, max_size=6))
    ops = draw(st.lists(st.sampled_from("+-"), min_size=len(terms) - 1, max_size=len(terms) - 1))
    marker, form = draw(st.sampled_from(MARKERS)), draw(st.sampled_from(STEP_FORMS))
    lines = []
    if draw(st.booleans()):
        expr = " ".join([str(terms[0])] + [f"{o} {t}" for o, t in zip(ops, terms[1:])])
        lines.append(f"We need to compute {expr}.")
    acc = terms[0]
    for k, (op, b) in enumerate(zip(ops, terms[1:]), 1):
        c = acc + b if op == "+" else acc - b
        lines.append(marker.format(k=k) + form.format(a=acc, op=op, b=f"({b})" if b < 0 else b, c=c))
        acc = c
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(FILLER)))
    sep = draw(st.sampled_from(["\n", "\n\n", " "]))
    # The answer has a line of its own ("the answer is 5. Sure!" would extract "5. Sure!"); filler may follow.
    tail = [draw(st.sampled_from(ANSWER_FORMS)).format(x=acc)] + draw(st.lists(st.sampled_from(FILLER), max_size=2))
    lead, trail = draw(st.sampled_from(["", "\n", "  "])), draw(st.sampled_from(["", "\n"]))
    return lead + sep.join(lines) + "\n" + "\n".join(tail) + trail, str(acc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_sum_traces())
def test_every_variant_ends_in_the_verified_answer(case):
    text, reference = case
    answer, _ = extract_answer(text)
    assert check_variant(text, reference, "exact", None)  # the generator writes correct traces
    rows = variant_rows(_row(text, answer=answer, reference_answer=reference), analyse(text, reference))
    by = {r["variant"]: r for r in rows}
    assert by["full"]["text"] == text
    for r in rows:
        v, spans = r["text"], r["spans"]
        assert r["ok"] and check_variant(v, reference, "exact", None), (r["variant"], v)
        pos = 0  # spans are ordered, non-empty, stripped; only whitespace between them
        for s in spans:
            assert pos <= s["start"] < s["end"] <= len(v) and not v[pos : s["start"]].strip()
            assert v[s["start"] : s["end"]] == v[s["start"] : s["end"]].strip()
            pos = s["end"]
        assert not v[pos:].strip()
        if r["variant"] != "full":
            assert spans[-1]["role"] == "answer" and spans[-1]["end"] == len(v)
    assert "filler" not in {s["role"] for s in by["full_no_filler"]["spans"]}
    assert all(s["on_path"] for s in by["decision_points"]["spans"])
    # place_value: every bare sum line is right and adds or subtracts one non-zero digit of b.
    import re

    for a, op, b, c in re.findall(r"^(-?\d+) ([+-]) (\d+) = (-?\d+)$", by["place_value"]["text"], re.M):
        assert int(a) + (1 if op == "+" else -1) * int(b) == int(c)
        assert sum(d != "0" for d in b) <= 1, (b, by["place_value"]["text"])


def test_choose_variant_is_deterministic_and_follows_the_shares():
    from collections import Counter

    from distill.trace.variants import choose_variant

    assert {choose_variant(f"t{i}", {"full": 1.0}) for i in range(50)} == {"full"}
    mix = {"full": 3.0, "answer_only": 1.0, "plan": 0.0}
    picks = Counter(choose_variant(f"t{i}", mix) for i in range(4000))
    assert set(picks) == {"full", "answer_only"} and abs(picks["full"] / 4000 - 0.75) < 0.03
    # Same trace, same pick, whatever the order of the mixture.
    assert all(choose_variant(f"t{i}", mix) == choose_variant(f"t{i}", dict(reversed(mix.items()))) for i in range(200))
    with pytest.raises(ValueError, match="unknown"):
        choose_variant("t", {"fulll": 1.0})
    with pytest.raises(ValueError):
        choose_variant("t", {"full": 0.0})
