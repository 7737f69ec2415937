"""Actor classes used directly, without Ray: they are plain classes that delegate to distill/."""

import json

import pyarrow as pa
import pytest

from distill.actors.scorer import TraceScorer
from distill.actors.student import StudentStep
from distill.actors.teacher import HFTeacher
from distill.config import load_config
from distill.data.schema import PROBLEM_SCHEMA, TRACE_SCHEMA, to_table
from distill.data.sources import load_problems
from distill.data.store import TraceStore
from distill.trace.scoring import score_rows
from distill.trace.variants import VARIANTS

SCORER = load_config("smoke").scorer


def _trace(pid, j, text, ref="5", finish="stop", tokens=10):
    return {
        "trace_id": f"{pid}-{j}",
        "problem_id": pid,
        "sample_index": j,
        "text": text,
        "finish_reason": finish,
        "reference_answer": ref,
        "verifier": "math",
        "metadata": "{}",
        "question": "2+3?",
        "completion_tokens": tokens,
    }


def test_score_rows_verdicts_and_reasons():
    rows = score_rows(
        [
            _trace("p", 0, "2 + 3 = 5\nAnswer: 5", tokens=30),
            _trace("p", 1, "so \\boxed{5}", tokens=8),
            _trace("q", 0, "Answer: 6"),
            _trace("r", 0, "no idea"),
            _trace("s", 0, "2 + 3 = 5 and then", finish="length"),
        ],
        SCORER.model_copy(update={"policy": "shortest_correct"}),
    )
    got = [(r["verdict"], r["reason"], r["answer_rule"]) for r in rows]
    assert got == [
        ("rejected", "not selected (shortest_correct)", "answer_line"),
        ("accepted", "", "boxed"),
        ("rejected", "wrong_answer", "answer_line"),
        ("rejected", "no_answer", "none"),
        ("rejected", "truncated", "last_number"),
    ]
    assert rows[4]["correct"] and rows[4]["flags"] == ["truncated"]


def test_scorer_writes_every_row_and_quarantines_unparseable(tmp_path):
    events = []
    scorer = TraceScorer(SCORER, str(tmp_path), events)
    out = scorer(to_table([_trace("p", 0, "2 + 3 = 5\nAnswer: 5"), _trace("q", 0, "")], TRACE_SCHEMA))
    store = TraceStore(tmp_path)
    assert store.traces().num_rows == 2 and store.quarantine().column("key").to_pylist() == ["q-0"]
    assert events[0]["count/accepted"] == 1 and events[0]["count/quarantined"] == 1
    # the accepted trace's variants are stored with lineage; the default supervision (full) is passed on
    v = store.variants().to_pylist()
    assert sorted(x["variant"] for x in v) == sorted(VARIANTS) and {x["parent_trace_id"] for x in v} == {"p-0"}
    assert out.column("trace_id").to_pylist() == ["p-0"] and out.column("variant").to_pylist() == ["full"]
    assert out.column("text").to_pylist() == ["2 + 3 = 5\nAnswer: 5"]


def test_hf_teacher_generates_k_samples_and_quarantines_long_prompts(tiny_model, tmp_path):
    cfg = load_config(
        "smoke",
        [
            "teacher.backend=transformers",
            "teacher.samples=2",
            "teacher.max_tokens=8",
            "teacher.temperature=1.0",
            "teacher.max_model_len=96",
            "teacher.logprobs=3",
        ],
    )
    problems = load_problems(cfg.sources).problems[:2]
    problems.append({**problems[0], "problem_id": "long", "question": "1 + 1 " * 200})
    events = []
    teacher = HFTeacher(cfg.teacher, cfg.prompt, tiny_model, "tiny", str(tmp_path), events)
    out = teacher(pa.Table.from_pylist(problems, schema=PROBLEM_SCHEMA)).to_pylist()
    assert [(r["problem_id"], r["sample_index"]) for r in out] == [
        (problems[0]["problem_id"], 0),
        (problems[0]["problem_id"], 1),
        (problems[1]["problem_id"], 0),
        (problems[1]["problem_id"], 1),
    ]
    assert len({r["trace_id"] for r in out}) == 4
    assert all(0 < r["completion_tokens"] <= 8 and r["finish_reason"] in ("stop", "length") for r in out)
    assert all(len(r["topk_logprobs"]) == r["completion_tokens"] and len(r["topk_logprobs"][0]) == 3 for r in out)
    assert json.loads(out[0]["sampling"])["temperature"] == 1.0
    q = TraceStore(tmp_path).quarantine().to_pylist()
    assert [x["key"] for x in q] == ["long"] and q[0]["reason"].startswith("prompt too long")
    assert events[0]["rows_in"] == 3 and events[0]["rows_out"] == 4 and events[0]["count/quarantined"] == 1


def test_student_step_lowers_loss_and_saves_hf_dir(tiny_model, tmp_path):
    import torch

    cfg = load_config("smoke", ["train.lr=1e-2", "train.bf16=false", "train.lr_schedule=constant"])
    student = StudentStep(cfg.train, cfg.prompt, tiny_model)
    rows = [{"trace_id": "a", "question": "2+3?", "text": "2 + 3 = 5.\nAnswer: 5"}] * 2
    losses = [student.step(rows)["loss"] for _ in range(8)]
    assert losses[-1] < losses[0] * 0.7
    # A step with nothing to train (the only example is too long) moves nothing: no AdamW update (its
    # momentum and weight decay would), no schedule step.
    before = {k: v.clone() for k, v in student.base.state_dict().items()}
    opt_before = student.opt.state_dict()["state"][0]["exp_avg"].clone()
    steps = student.steps
    empty = student.step([{"trace_id": "b", "question": "x", "text": "y " * 2000}])
    assert empty["skipped"] == 1 and empty["trained_tokens"] == 0 and not empty["stepped"]
    assert student.steps == steps and all(torch.equal(v, before[k]) for k, v in student.base.state_dict().items())
    assert torch.equal(student.opt.state_dict()["state"][0]["exp_avg"], opt_before)
    student.save(str(tmp_path / "ckpt"))
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt") is not None
    assert (tmp_path / "ckpt" / "model.safetensors").exists()


def test_gradient_accumulation_equals_one_big_batch(tiny_model):
    """Two micro-batches accumulated = the same rows in one batch: the loss is a token mean over the
    whole effective batch, not a mean of micro-batch means."""
    import torch

    cfg = load_config("smoke", ["train.lr=1e-2", "train.bf16=false", "train.lr_schedule=constant"])
    rows = [
        {"trace_id": "a", "question": "2+3?", "text": "2 + 3 = 5.\nAnswer: 5"},
        {"trace_id": "b", "question": "12+30?", "text": "12 + 30 = 42, so the sum is 42.\nAnswer: 42"},
    ]
    grads = []
    for student, batches in (
        (StudentStep(cfg.train, cfg.prompt, tiny_model), [rows]),
        (StudentStep(cfg.train, cfg.prompt, tiny_model), [rows[:1], rows[1:]]),
    ):
        # the gradient the optimizer is handed (AdamW's sign-like first update would hide small differences)
        student.opt.step = lambda s=student: grads.append([p.grad.clone() for p in s.base.parameters()])
        loss = student.step(batches)["loss"]
        grads[-1].append(loss)
    assert grads[0][-1] == pytest.approx(grads[1][-1], rel=1e-5)
    for a, b in zip(grads[0][:-1], grads[1][:-1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_student_saves_in_training_dtype_and_resumes_from_fp32_master(tiny_model, tmp_path):
    import torch
    from safetensors import safe_open

    cfg = load_config("smoke", ["train.bf16=true", "train.lr=1e-3"])
    rows = [{"trace_id": "a", "question": "2+3?", "text": "2 + 3 = 5.\nAnswer: 5"}]
    a = StudentStep(cfg.train, cfg.prompt, tiny_model)
    a.total_steps = 10
    for _ in range(3):
        a.step(rows)
    a.save(str(tmp_path))
    a.save_state(str(tmp_path), {"epoch": 1, "epoch_done": False, "batches": 3, "trained_ids": ["a"]})
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    b = StudentStep(cfg.train, cfg.prompt, str(tmp_path))
    b.load_state(str(tmp_path))
    assert all(torch.equal(x, y) for x, y in zip(a.base.state_dict().values(), b.base.state_dict().values()))
    assert (b.steps, b.total_steps, b.lr()) == (3, 10, a.lr())
    assert a.step(rows)["loss"] == b.step(rows)["loss"]


def test_scorer_dissects_traces_and_can_reject_wrong_intermediate_steps():
    wrong_mid = "12 + 7 = 18\n19 + 5 = 24\nAnswer: 24"  # right answer, wrong step 0 (unused downstream)
    clean = "12 + 7 = 19\n19 + 5 = 24\nAnswer: 24"
    rows = score_rows([_trace("p", 0, wrong_mid, ref="24"), _trace("q", 0, clean, ref="24")], SCORER)
    assert rows[0]["wrong_intermediate"] and rows[0]["first_error_step"] == 0 and not rows[0]["answer_collapsed"]
    assert "wrong_intermediate" in rows[0]["flags"] and rows[0]["verdict"] == "accepted"  # not rejected by default
    assert not rows[1]["wrong_intermediate"] and rows[1]["first_error_step"] is None
    assert rows[1]["decision_points"] == [0, 1, 2]
    assert [s["role"] for s in rows[1]["steps"]] == ["compute", "compute", "answer"]
    strict = SCORER.model_copy(update={"reject_flags": SCORER.reject_flags + ["wrong_intermediate"]})
    rows = score_rows([_trace("p", 0, wrong_mid, ref="24")], strict)
    assert rows[0]["verdict"] == "rejected" and rows[0]["reason"] == "wrong_intermediate"
    to_table(rows, TRACE_SCHEMA)  # the anatomy columns fit the schema


def test_evaluator_transformers_fallback_answers_every_request(tiny_model):
    from distill.actors.evaluator import Evaluator
    from distill.config import EvalConfig, PromptConfig
    from distill.eval.suite import build_requests

    probs = [
        {
            "problem_id": f"p{i}",
            "source": "reasoning_gym:chain_sum",
            "question": f"{i} + 1 =" + " x" * (400 * i),
            "reference_answer": str(i + 1),
            "verifier": "math",
            "metadata": "{}",
        }
        for i in range(3)
    ]
    ev = EvalConfig.model_validate(
        {
            "in_distribution": [{"kind": "reasoning_gym", "task": "chain_sum"}],
            "samples": 2,
            "max_tokens": 6,
            "direct_max_tokens": 3,
        }
    )
    reqs = build_requests({"problems": {"in_distribution": probs}}, ev, PromptConfig())
    out = Evaluator(tiny_model, backend="transformers", max_model_len=512).run(reqs)
    preds = out["predictions"]
    assert [(p["split"], p["problem_id"]) for p in preds] == [(r["split"], r["problem"]["problem_id"]) for r in reqs]
    # p1 (about 420 tokens) fits in 512, p2 (about 820) does not: skipped in every split, and counted
    assert out["skipped_too_long"] == 3
    assert all(
        p["finish_reason"] == "prompt_too_long" and p["tokens"] == 0 and not p["correct"]
        for p in preds
        if p["problem_id"] == "p2"
    )
    fit = [p for p in preds if p["problem_id"] != "p2"]
    assert all(0 < p["tokens"] <= (3 if p["split"] == "direct" else 6) for p in fit)
    assert all(p["text"].startswith("The answer is") for p in fit if p["split"] == "direct")
    assert all(len(p["samples"]) == 2 for p in preds if p["split"] == "in_distribution_sampled")


def test_teacher_replays_committed_traces_and_scorer_writes_them_once(tiny_model, tmp_path):
    from distill.actors.scorer import TraceScorer

    cfg = load_config(
        "smoke",
        [
            "teacher.backend=transformers",
            "teacher.samples=2",
            "teacher.max_tokens=6",
            "teacher.temperature=1.0",
            "teacher.max_model_len=256",
        ],
    )
    problems = load_problems(cfg.sources).problems[:3]
    batch = pa.Table.from_pylist(problems, schema=PROBLEM_SCHEMA)
    first = HFTeacher(cfg.teacher, cfg.prompt, tiny_model, "tiny", str(tmp_path))
    out = first(batch.slice(0, 2))  # problems 0 and 1 generated and committed
    scorer = TraceScorer(cfg.scorer, str(tmp_path))
    scorer(out)
    store = TraceStore(tmp_path)
    assert len(store.trace_ids()) == 4 and store.physical_trace_rows() == 4
    events = []  # a restarted teacher (new actor) sees the ledger
    again = HFTeacher(cfg.teacher, cfg.prompt, tiny_model, "tiny", str(tmp_path), events)
    out2 = again(batch).to_pylist()
    assert [r["problem_id"] for r in out2] == [p["problem_id"] for p in problems for _ in range(2)]
    committed = {r["trace_id"]: r["text"] for r in out.to_pylist()}
    assert all(r["text"] == committed[r["trace_id"]] for r in out2[:4])  # replayed, not regenerated
    assert events[0]["count/replayed"] == 4 and events[0]["rows_in"] == 3
    assert events[0]["count/tokens_out"] == sum(r["completion_tokens"] for r in out2[4:])
    TraceScorer(cfg.scorer, str(tmp_path))(pa.Table.from_pylist(out2, schema=out.schema))
    assert len(store.trace_ids()) == 6 and store.physical_trace_rows() == 6  # only the new problem was written


def test_student_state_round_trip(tiny_model, tmp_path):
    cfg = load_config("smoke", ["train.bf16=false"])
    rows = [{"trace_id": "a", "question": "2+3?", "text": "2 + 3 = 5.\nAnswer: 5"}]
    a = StudentStep(cfg.train, cfg.prompt, tiny_model)
    for _ in range(3):
        a.step(rows)
    a.save(str(tmp_path))
    a.save_state(str(tmp_path), {"epoch": 1, "epoch_done": False, "batches": 3, "trained_ids": ["a"]})
    b = StudentStep(cfg.train, cfg.prompt, str(tmp_path))
    pos = b.load_state(str(tmp_path))
    assert (
        pos
        == {
            "epoch": 1,
            "epoch_done": False,
            "batches": 3,
            "trained_ids": ["a"],
            "steps": 3,
            "total_steps": 1,
            "optimizer_saved": True,
        }
        and b.steps == 3
    )
    assert b.lr() == a.lr()
    sa, sb = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    assert sa.keys() == sb.keys() and all((sa[k]["exp_avg"] == sb[k]["exp_avg"]).all() for k in sa)
    assert a.step(rows)["loss"] == b.step(rows)["loss"]  # the same next step: exact resume


def test_last_checkpoint_has_no_optimizer_state(tiny_model, tmp_path):
    """The last epoch's checkpoint writes weights and position only; it loads, and nothing trains on from it."""
    from distill.actors.student import POSITION_FILE, STATE_FILE
    from distill.train.resume import epochs_to_run

    cfg = load_config("smoke", ["train.bf16=false"])
    rows = [{"trace_id": "a", "question": "2+3?", "text": "2 + 3 = 5.\nAnswer: 5"}]
    a = StudentStep(cfg.train, cfg.prompt, tiny_model)
    a.step(rows)
    a.save(str(tmp_path))
    a.save_state(str(tmp_path), {"epoch": 2, "epoch_done": True, "batches": 1, "trained_ids": []}, optimizer=False)
    assert not (tmp_path / STATE_FILE).exists() and (tmp_path / POSITION_FILE).exists()
    b = StudentStep(cfg.train, cfg.prompt, str(tmp_path))
    pos = b.load_state(str(tmp_path))
    assert pos["optimizer_saved"] is False and b.steps == 1 and not epochs_to_run(pos, 2)


def test_teacher_replays_a_batch_with_nothing_left_to_generate(tiny_model, tmp_path):
    cfg = load_config("smoke", ["teacher.backend=transformers", "teacher.max_tokens=4", "teacher.max_model_len=256"])
    batch = pa.Table.from_pylist(load_problems(cfg.sources).problems[:2], schema=PROBLEM_SCHEMA)
    first = HFTeacher(cfg.teacher, cfg.prompt, tiny_model, "tiny", str(tmp_path))
    from distill.actors.scorer import TraceScorer

    TraceScorer(cfg.scorer, str(tmp_path))(first(batch))
    events = []
    again = HFTeacher(cfg.teacher, cfg.prompt, tiny_model, "tiny", str(tmp_path), events)
    assert again(batch).num_rows == 2 and events[0]["count/replayed"] == 2 and events[0]["count/tokens_out"] == 0


@pytest.mark.parametrize("packing", [True, False])
def test_a_rank_with_an_empty_micro_batch_joins_the_step_with_zero_gradients(tiny_model, packing):
    """After an epoch-1 restart with several workers (resume.in_step) a rank whose share ran out gets an
    empty micro-batch while another rank trains: it must still run forward and backward (DDP's gradient
    all-reduce needs every rank), contributing exactly zero. `reduce` stands in for the other rank."""

    cfg = load_config("smoke", [f"train.packing={str(packing).lower()}", "train.bf16=false"])
    other_rank = lambda xs: [xs[0] + 5.0, xs[1], xs[2] + 2, xs[3]]  # noqa: E731  the other rank: 5 tokens, 2 rows
    student = StudentStep(cfg.train, cfg.prompt, tiny_model, reduce=other_rank, world=2)
    student._update = lambda: student.opt.param_groups[0]["lr"]  # keep the gradients to look at them
    m = student.step([[]])
    assert m["stepped"] and m["examples"] == 2  # the step's rows are counted over both ranks
    grads = [p.grad for p in student.model.parameters()]
    assert all(g is not None and not g.any() for g in grads)  # in the graph, and zero
