"""The teacher's pure rules on hand-made inputs: prompt-length quarantine and decode post-processing."""

import json
from types import SimpleNamespace

from distill.data.schema import SCHEMA_VERSION, trace_id
from distill.generate.decode import cut_at_eos, cut_at_stop, engine_samples, trace_rows
from distill.generate.room import MIN_NEW_TOKENS, room_to_answer, too_long


def test_room_to_answer_caps_at_max_tokens_and_quarantines_short_room():
    assert room_to_answer(100, 1024, 320) == 320
    assert room_to_answer(1000, 1024, 320) == 24  # what the context leaves
    assert room_to_answer(1024 - MIN_NEW_TOKENS, 1024, 320) == MIN_NEW_TOKENS
    assert room_to_answer(1024 - MIN_NEW_TOKENS + 1, 1024, 320) is None
    assert room_to_answer(2000, 1024, 320) is None


def test_too_long_is_a_teacher_quarantine_row_with_its_reason():
    q = too_long({"problem_id": "p", "question": "x" * 3000}, 130, 96, 5.0)
    assert (q["stage"], q["key"], q["at"], q["schema_version"]) == ("teacher", "p", 5.0, SCHEMA_VERSION)
    assert q["reason"] == "prompt too long: 130 tokens, context 96"
    assert json.loads(q["payload"]) == {"question": "x" * 2000}


def _out(index, text, token_ids, finish, logprobs=None):
    return SimpleNamespace(index=index, text=text, token_ids=token_ids, finish_reason=finish, logprobs=logprobs)


def test_engine_samples_orders_samples_and_keeps_top_k_by_rank():
    lp = lambda v, rank: SimpleNamespace(logprob=v, rank=rank)  # noqa: E731
    steps = [{7: lp(-0.1, 1), 9: lp(-3.0, 3), 8: lp(-1.0, 2)}]
    outs = [_out(1, "b", (5,), None, steps), _out(0, "a", (4, 6), "length", steps)]
    s = engine_samples(outs, 2)
    assert [x["text"] for x in s] == ["a", "b"] and s[0]["token_ids"] == [4, 6]
    assert [x["finish_reason"] for x in s] == ["length", "stop"]  # no reason given: it stopped
    assert s[0]["topk"] == [[{"token_id": 7, "logprob": -0.1}, {"token_id": 8, "logprob": -1.0}]]
    assert engine_samples(outs, None)[0]["topk"] is None
    assert engine_samples([_out(0, "a", (4,), "stop", None)], 2)[0]["topk"] is None


def test_cut_at_eos_and_stop_strings():
    assert cut_at_eos([5, 6, 2, 0, 0], {2}, 5) == ([5, 6, 2], "stop")
    assert cut_at_eos([5, 6, 7, 8, 0], {2}, 3) == ([5, 6, 7], "length")
    assert cut_at_stop("2 + 3 = 5\nAnswer: 5<end>more", ["<end>", "Answer"], "length") == ("2 + 3 = 5\n", "stop")
    assert cut_at_stop("no stop here", ["<end>"], "length") == ("no stop here", "length")
    assert cut_at_stop("text", [], "stop") == ("text", "stop")


def test_trace_rows_one_per_sample_with_its_trace_id():
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "stop": [], "seed": 0, "logprobs": None}
    problems = [{"problem_id": "p", "question": "2+3?"}, {"problem_id": "q", "question": "1+1?"}]
    samples = [
        [
            {"text": "5", "token_ids": [1, 2], "finish_reason": "stop"},
            {"text": "6", "token_ids": [3], "finish_reason": "length"},
        ],
        [{"text": "2", "token_ids": [4], "finish_reason": "stop", "topk": [[{"token_id": 4, "logprob": 0.0}]]}],
    ]
    rows = trace_rows(problems, ["P", "Q"], [[1, 1, 1], [1]], samples, "m", sampling, 9.0)
    assert [(r["problem_id"], r["sample_index"]) for r in rows] == [("p", 0), ("p", 1), ("q", 0)]
    assert [r["trace_id"] for r in rows] == [
        trace_id("p", "m", sampling, 0),
        trace_id("p", "m", sampling, 1),
        trace_id("q", "m", sampling, 0),
    ]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(3, 2), (3, 1), (1, 1)]
    assert rows[1]["finish_reason"] == "length" and rows[0]["topk_logprobs"] is None and rows[2]["topk_logprobs"]
    assert rows[0]["question"] == "2+3?" and rows[0]["prompt"] == "P" and rows[0]["generated_at"] == 9.0
    assert json.loads(rows[0]["sampling"]) == sampling and rows[0]["teacher_model"] == "m"
