import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.trace.quality import FLAGS, MIN_PERIODIC_CHARS, flag_output, select

FLAG_CASES = [
    ("", "stop", ["empty"]),
    ("   \n\t", "length", ["empty", "truncated"]),
    ("The answer is 4.", "stop", []),
    ("The answer is 4.", "length", ["truncated"]),
    ("!" * 500, "stop", ["repetitive"]),
    ("abc" * 200, "stop", ["repetitive"]),
    ("Answer: 5" + "\\quad" * 100, "stop", ["repetitive"]),
    ("the cat sat on the mat. " * 30, "length", ["truncated", "repetitive"]),
    ("ab " * 300, "stop", ["repetitive"]),
    ("-" * 100, "stop", []),  # a markdown rule stays below MIN_PERIODIC_CHARS
    ("0.3333333333333333", "stop", []),
    ("a a a a a", "stop", []),  # fewer than 2 * ngram words: n-grams not computed
    (" ".join(str(i) for i in range(1000)), "stop", []),
    ("Let me think about this problem carefully and then compute. " * 2, "stop", []),
]


@pytest.mark.parametrize("text,finish,expected", FLAG_CASES, ids=lambda v: repr(v)[:20])
def test_flag_output_cases(text, finish, expected):
    assert flag_output(text, finish) == expected


def test_periodic_threshold_is_exact():
    assert flag_output("!" * (MIN_PERIODIC_CHARS - 1), "stop") == []
    assert flag_output("!" * MIN_PERIODIC_CHARS, "stop") == ["repetitive"]


def test_ngram_threshold_and_size():
    # 16 distinct words then the same 16 again: 29 4-grams, 13 repeat earlier ones (0.448).
    words = [f"w{i}" for i in range(16)] * 2
    text = " ".join(words)
    assert flag_output(text, "stop", ngram=4, threshold=0.44) == ["repetitive"]
    assert flag_output(text, "stop", ngram=4, threshold=0.45) == []
    # ngram larger than half the words: not computed at all.
    assert flag_output(text, "stop", ngram=17, threshold=0.0) == []


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200000,
        "ab" * 100000,
        ("ab" * 60 + "x ") * 1500,
        "word " * 40000,
        "".join(chr(33 + (i * 7919) % 90) for i in range(200000)),
        " ".join(map(str, range(40000))),
    ],
    ids=lambda t: repr(t[:8]),
)
def test_flag_output_large_inputs_complete(text):
    # Linear scans finish instantly; a quadratic one would hang on 200k chars.
    assert set(flag_output(text, "stop")) <= set(FLAGS)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    st.sampled_from(["stop", "length", "abort", ""]),
    st.integers(min_value=1, max_value=10),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_flag_output_fuzz(text, finish, ngram, threshold):
    flags = flag_output(text, finish, ngram=ngram, threshold=threshold)
    assert isinstance(flags, list) and all(f in FLAGS for f in flags)
    assert flags == [f for f in FLAGS if f in flags]  # canonical order, no duplicates
    assert ("empty" in flags) == (not text.strip())
    assert ("truncated" in flags) == (finish == "length")
    assert flags == flag_output(text, finish, ngram=ngram, threshold=threshold)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["ab", "!", " ", "\n", "x", "the cat", "é"]), max_size=400).map("".join))
def test_flag_output_fuzz_structured(text):
    assert set(flag_output(text, "stop")) <= set(FLAGS)


# --------------------------------------------------------------------------- select


def _row(pid, idx, ok, tokens):
    return {"problem_id": pid, "sample_index": idx, "ok": ok, "completion_tokens": tokens}


ROWS = [
    _row("p1", 2, True, 50),
    _row("p1", 0, False, 10),
    _row("p1", 1, True, 80),
    _row("p1", 3, True, 50),
    _row("p2", 0, False, 5),
    _row("p2", 1, False, 6),
    _row("p3", 1, True, 30),
    _row("p3", 0, True, 40),
]


def test_select_all_correct():
    assert select(ROWS, "all_correct") == [True, False, True, True, False, False, True, True]


def test_select_first_correct():
    assert select(ROWS, "first_correct") == [False, False, True, False, False, False, False, True]


def test_select_shortest_correct():
    # p1: 50 tokens at sample 2 and 3 -> tie broken by the lower sample_index.
    assert select(ROWS, "shortest_correct") == [True, False, False, False, False, False, True, False]


def test_select_edge_cases():
    assert select([], "first_correct") == []
    rows = [_row(1, 0, True, None), _row(1, 1, True, 7)]
    assert select(rows, "shortest_correct") == [False, True]  # unknown length sorts last
    with pytest.raises(ValueError):
        select(ROWS, "best")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 5), st.booleans(), st.integers(0, 100)),
        max_size=40,
    )
)
def test_select_properties(specs):
    rows = [_row(*s) for s in specs]
    assert select(rows, "all_correct") == [r["ok"] for r in rows]
    for policy, key in (
        ("first_correct", lambda r: r["sample_index"]),
        ("shortest_correct", lambda r: (r["completion_tokens"], r["sample_index"])),
    ):
        keep = select(rows, policy)
        assert len(keep) == len(rows)
        for pid in {r["problem_id"] for r in rows}:
            ok = [r for r in rows if r["problem_id"] == pid and r["ok"]]
            kept = [r for r, k in zip(rows, keep) if k and r["problem_id"] == pid]
            assert len(kept) == (1 if ok else 0)
            if ok:
                assert kept[0]["ok"] and key(kept[0]) == min(map(key, ok))
