import threading

import pytest
import reasoning_gym
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.trace import answers
from distill.trace.answers import MAX_ANSWER_CHARS, RULES, extract_answer, is_correct, verify

EXTRACTION_CASES = [
    # answer_line
    ("Answer: 42.", "42", "answer_line"),
    ("**Answer:** -3", "-3", "answer_line"),
    ("answer: $\\frac{3}{4}$", "\\frac{3}{4}", "answer_line"),
    ("Final answer: 7", "7", "answer_line"),
    ("**Final Answer**: \\boxed{12}", "12", "answer_line"),
    ("ANSWER: Paris", "Paris", "answer_line"),
    ("The final answer is 17", "17", "answer_line"),
    ("So the answer is 9.", "9", "answer_line"),
    ("The answer is $\\boxed{5}$.", "5", "answer_line"),
    ("**The answer is 42.**", "42", "answer_line"),
    ("Answer: 5\nthen we also saw 7 and 8", "5", "answer_line"),
    ("Answer: 1\nmore work\nAnswer: 2\nchecked 99", "2", "answer_line"),
    ("Answer: 3\n\\boxed{4}", "3", "answer_line"),  # answer line outranks boxed
    ("Final Answer:\n\n\\boxed{7}\n", "7", "answer_line"),
    ("Answer:\n1 2\n3 4\n\nCheck done", "1 2\n3 4", "answer_line"),
    ("Answer: \\(x^2\\)", "x^2", "answer_line"),
    ("> Answer: yes", "yes", "answer_line"),
    ("Final Answer: The final answer is $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}", "answer_line"),
    # boxed
    ("\\boxed{1,234}", "1,234", "boxed"),
    ("so x = \\boxed{\\frac{1}{2}} done 3", "\\frac{1}{2}", "boxed"),
    ("\\boxed{a} and then \\boxed{b}", "b", "boxed"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}", "boxed"),
    ("\\boxed{ 3 }", "3", "boxed"),
    ("$\\boxed{\\sqrt{\\frac{a}{b}}}$ and 5", "\\sqrt{\\frac{a}{b}}", "boxed"),
    ("\\fbox{8}", "8", "boxed"),
    # last_number
    ("5 - 3 = 2", "2", "last_number"),
    ("result = -3", "-3", "last_number"),
    ("5-3", "3", "last_number"),
    ("pi is about 3.14", "3.14", "last_number"),
    ("Total 1,234,567 apples.", "1,234,567", "last_number"),
    ("I got 3/4 in the end", "3/4", "last_number"),
    ("\\boxed{5", "5", "last_number"),  # unclosed box is not a box
    ("\\boxed{} then 6", "6", "last_number"),  # empty box is skipped
    ("答案是42", "42", "last_number"),
    # none
    ("no numbers here", None, "none"),
    ("", None, "none"),
    ("Answer:", None, "none"),
    ("\\boxed{}", None, "none"),
]


@pytest.mark.parametrize("text,answer,rule", EXTRACTION_CASES)
def test_extract_answer_cases(text, answer, rule):
    assert extract_answer(text) == (answer, rule)


def test_extract_non_str_and_surrogates():
    assert extract_answer(None) == (None, "none")  # type: ignore[arg-type]
    assert extract_answer("Answer: \ud800 7") == ("\ud800 7", "answer_line")


def _check_extraction(text):
    answer, rule = extract_answer(text)
    assert rule in RULES
    if answer is None:
        assert rule == "none"
    else:
        assert isinstance(answer, str) and rule != "none"
        assert answer and answer == answer.strip() and len(answer) <= MAX_ANSWER_CHARS
        # Every rule returns (a cleaned slice of) the input, boxed content included.
        assert answer in text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_extract_fuzz_unicode(text):
    _check_extraction(text)


_FRAGMENTS = [
    "Answer:",
    "**Answer:**",
    "Final answer:",
    "The answer is",
    "answer is",
    "\\boxed{",
    "\\boxed",
    "{",
    "}",
    "\\{",
    "\\}",
    "$",
    "**",
    ".",
    "-",
    ",",
    "/",
    "1",
    "23",
    "1,234",
    "3.5",
    " ",
    "\n",
    "\n\n",
    "\\frac{1}{2}",
    "\\(",
    "\\)",
    "x",
    "é",
    "答",
    "\t",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=60).map("".join))
def test_extract_fuzz_structured(text):
    _check_extraction(text)


ADVERSARIAL = [
    "\\boxed{" * 30000,
    "\\boxed{" * 28000 + "}" * 28000,
    "{" * 200000,
    "1" * 200000,
    "1," * 100000,
    "1." * 100000,
    "Answer:" * 30000,
    "Answer:\n" * 30000,
    "Answer:\n\n" * 30000,
    "the answer is " * 15000,
    "answer " + " " * 200000 + "x",
    "$." * 100000,
    "-" * 200000,
    "a\n" * 100000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: repr(t[:10]))
def test_extract_adversarial_completes(text):
    # A quadratic scan would take minutes on each of these 200k-char inputs.
    _check_extraction(text)


# --------------------------------------------------------------------------- verify


def _rg_entries(name):
    return list(reasoning_gym.create_dataset(name, size=3, seed=1))


@pytest.mark.parametrize("name", ["chain_sum", "basic_arithmetic"])
def test_verify_reasoning_gym(name):
    for e in _rg_entries(name):
        meta, ref, q = e["metadata"], e["answer"], e["question"]
        assert verify(ref, ref, "reasoning_gym", meta, q) == 1.0
        assert verify(ref, ref, "auto", meta, q) == 1.0
        wrong = str(int(ref) + 1)
        assert verify(wrong, ref, "reasoning_gym", meta, q) < 1.0
        assert verify(None, ref, "reasoning_gym", meta, q) == 0.0
        # End to end through extraction.
        answer, rule = extract_answer(f"Let me compute {e['question']}\nAnswer: {ref}.")
        assert (answer, rule) == (ref, "answer_line")
        assert is_correct(verify(answer, ref, "auto", meta, q))


def test_reasoning_gym_partial_credit_is_not_correct():
    e = _rg_entries("basic_arithmetic")[0]
    score = verify(e["answer"] + ".0", e["answer"], "reasoning_gym", e["metadata"], e["question"])
    assert 0.0 < score < 1.0 and not is_correct(score)


def test_reasoning_gym_config_errors_and_scorer_failure(monkeypatch):
    with pytest.raises(ValueError):
        verify("1", "1", "reasoning_gym", {}, "")
    with pytest.raises(ValueError):
        verify("1", "1", "reasoning_gym", {"source_dataset": "no_such_dataset_xyz"}, "")

    def boom(answer, entry):
        raise RuntimeError("scorer bug")

    monkeypatch.setattr(answers, "_rg_score_fn", lambda name: boom)
    assert verify("1", "1", "reasoning_gym", {"source_dataset": "chain_sum"}) == 0.0


@pytest.mark.parametrize(
    "answer,reference,expected",
    [
        ("0.5", "\\frac{1}{2}", 1.0),
        ("\\frac{1}{2}", "0.5", 1.0),
        ("$\\frac{3}{4}$", "0.75", 1.0),
        ("2\\sqrt{2}", "\\sqrt{8}", 1.0),
        ("x^2+1", "1+x^2", 1.0),
        ("1,234", "1234", 1.0),
        ("2", "3", 0.0),
        ("2\\sqrt{2}", "2", 0.0),  # math-verify's free-text mode would read "2"
        ("(1, 2)", "2", 0.0),
        ("$9^{9^{9^{9}}}$", "1", 0.0),  # power tower: rejected before sympy
        ("10^{10^{10}}", "1", 0.0),
        ("1000000!", "1", 0.0),
        ("1" * 2000, "1", 0.0),
    ],
)
def test_verify_math(answer, reference, expected):
    assert verify(answer, reference, "math", None) == expected


def test_verify_math_in_non_main_thread():
    # math-verify's signal.alarm timeout raises off the main thread unless disabled.
    results, errors = [], []

    def work():
        try:
            results.append(verify("0.5", "\\frac{1}{2}", "math", None))
            results.append(verify("2", "3", "math", None))
            results.append(verify("$9^{9^{9^{9}}}$", "1", "math", None))
        except BaseException as exc:  # pragma: no cover - surfaced by the assert
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive() and not errors
    assert results == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "answer,reference,expected",
    [
        ("1,000", "1000", 1.0),
        ("1000", "1000.0", 1.0),
        ("1,000", "1000.0", 1.0),
        ("3/4", "0.75", 1.0),
        ("-0", "0", 1.0),
        (" Paris. ", "paris", 1.0),
        ("New   York", "new york", 1.0),
        ("STRASSE", "straße", 1.0),  # casefold, not lower
        ("abc", "abd", 0.0),
        ("1,2", "12", 0.0),  # not a thousands separator
        ("1_000", "1000", 0.0),
        ("1" * 100, "1" * 100, 1.0),
    ],
)
def test_verify_exact(answer, reference, expected):
    assert verify(answer, reference, "exact", None) == expected


def test_verify_auto_routing():
    assert verify("0.5", "\\frac{1}{2}", "auto", None) == 1.0  # LaTeX reference -> math
    assert verify("0.50", "1/2", "auto", {}) == 1.0  # numeric reference
    assert verify("paris", "Paris", "auto", {}) == 1.0  # plain text -> exact
    assert verify("Lyon", "Paris", "auto", None) == 0.0


@pytest.mark.parametrize("verifier", ["math", "exact", "auto", "reasoning_gym"])
@pytest.mark.parametrize("answer", [None, "", "   "])
def test_verify_missing_answer(verifier, answer):
    assert verify(answer, "1", verifier, {"source_dataset": "chain_sum"}) == 0.0


def test_verify_unknown_verifier():
    with pytest.raises(ValueError):
        verify("1", "1", "nope", None)


def test_is_correct():
    assert is_correct(1.0) and is_correct(1.0 - 1e-12)
    assert not is_correct(0.999999) and not is_correct(0.0)
