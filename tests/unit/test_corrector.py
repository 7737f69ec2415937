"""Correction rounds' stages without Ray (actors/corrector.py, pipelines/correction.py): what the scorer makes
of the student's samples, what is stored with which lineage, what the trainer gets, and that a retried block
writes nothing twice."""

import json

import pyarrow as pa
import pytest

from distill.actors.corrector import CUT_SCHEMA, CorrectionCommit, SampleScorer, correction_id, sample_model
from distill.config import CorrectionConfig, ScorerConfig, load_config
from distill.data.schema import TRACE_SCHEMA, to_table, trace_id
from distill.data.store import TraceStore
from distill.pipelines.correction import round_config, round_counts, round_problems

Q = "State the final answer to the following arithmetic problem: 41 + 7 - 15 + 2 ="
PROBLEM = {
    "problem_id": "p1",
    "source": "reasoning_gym:chain_sum",
    "question": Q,
    "reference_answer": "35",
    "verifier": "exact",
    "metadata": None,
}
RIGHT = "41 + 7 = 48\n48 - 15 = 33\n33 + 2 = 35\nAnswer: 35"
WRONG = "41 + 7 = 48\n48 - 15 = 34\n34 + 2 = 36\nAnswer: 36"
LOST = "I think it is about forty."


def samples_batch(texts: list[str], round_: int = 1) -> pa.Table:
    sampling = {"temperature": 0.7, "max_tokens": 64, "round": round_}
    rows = [
        {
            **PROBLEM,
            "trace_id": trace_id("p1", sample_model(round_), sampling, j),
            "teacher_model": sample_model(round_),
            "sampling": json.dumps(sampling),
            "sample_index": j,
            "text": t,
            "completion_tokens": len(t) // 3,
            "finish_reason": "stop",
            "generated_at": 1.0,
        }
        for j, t in enumerate(texts)
    ]
    return to_table(rows, TRACE_SCHEMA)


def test_the_scorer_sorts_samples_into_self_cut_and_none_and_commits_them_once(tmp_path):
    scorer = SampleScorer(ScorerConfig(), str(tmp_path))
    out = scorer(samples_batch([RIGHT, WRONG, LOST])).to_pylist()
    assert [r["kind"] for r in out] == ["self", "cut", "none"]
    cut = out[1]
    assert cut["prefix"] == "41 + 7 = 48\n" and cut["cut_reason"] == "wrong_claim" and cut["first_error_step"] == 1
    assert out[0]["prefix"] is None and out[2]["cut"] is None
    store = TraceStore(tmp_path)
    assert store.samples().num_rows == 3 and len(store.parts(store.samples_dir)) == 1
    # a retried block (a restarted actor, a resumed round): nothing written again
    SampleScorer(ScorerConfig(), str(tmp_path))(samples_batch([RIGHT, WRONG, LOST]))
    assert len(store.parts(store.samples_dir)) == 1


def _continued(tmp_path, continuation: str) -> pa.Table:
    rows = SampleScorer(ScorerConfig(), str(tmp_path))(samples_batch([RIGHT, WRONG, LOST])).to_pylist()
    for r in rows:
        r["continuation"] = continuation if r["kind"] == "cut" else None
        r["teacher_tokens"] = 11 if r["kind"] == "cut" else 0
    schema = pa.schema([*CUT_SCHEMA, ("continuation", pa.string()), ("teacher_tokens", pa.int32())])
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.mark.parametrize("keep", [["correction"], ["self"], ["correction", "self"]])
def test_accepted_corrections_become_supervision_with_the_students_prefix_as_context(tmp_path, keep):
    cfg = CorrectionConfig(keep=keep, mix=0.0)
    commit = CorrectionCommit(cfg, 1, "teacher-x", str(tmp_path), [], seed=0)
    train = commit(_continued(tmp_path, "48 - 15 = 33\n33 + 2 = 35\nAnswer: 35")).to_pylist()
    assert sorted(r["variant"] for r in train) == sorted(keep)
    for r in train:
        if r["variant"] == "correction":
            assert r["prefix"] == "41 + 7 = 48\n" and r["text"].startswith("48 - 15 = 33")
        else:
            assert r["prefix"] is None and r["text"] == RIGHT
    stored = TraceStore(tmp_path).corrections().to_pylist()
    # both kinds are stored, whatever is trained on; lineage: the student sample each came from
    assert sorted(r["kind"] for r in stored) == ["correction", "self"]
    corr = next(r for r in stored if r["kind"] == "correction")
    assert corr["parent"] == samples_batch([RIGHT, WRONG])["trace_id"][1].as_py()
    assert corr["correction_id"] == correction_id(corr["parent"], "correction", "teacher-x")
    assert corr["teacher_tokens"] == 11 and corr["verdict"] == "accepted" and corr["cut"] == len("41 + 7 = 48\n")


def test_a_wrong_continuation_is_stored_rejected_with_its_reason_and_not_trained(tmp_path):
    commit = CorrectionCommit(CorrectionConfig(keep=["correction"], mix=0.0), 1, "t", str(tmp_path), [], seed=0)
    assert commit(_continued(tmp_path, "48 - 15 = 33\n33 + 2 = 36\nAnswer: 36")).num_rows == 0
    (corr,) = [r for r in TraceStore(tmp_path).corrections().to_pylist() if r["kind"] == "correction"]
    assert corr["verdict"] == "rejected" and corr["reason"] == "wrong answer"
    assert round_counts(str(tmp_path), 1)["rejected_reasons"] == {"wrong answer": 1}


def test_a_retried_commit_writes_no_second_part_and_orphans_stay_hidden(tmp_path):
    batch = _continued(tmp_path, "48 - 15 = 33\n33 + 2 = 35\nAnswer: 35")
    CorrectionCommit(CorrectionConfig(mix=0.0), 1, "t", str(tmp_path), [], seed=0)(batch)
    CorrectionCommit(CorrectionConfig(mix=0.0), 1, "t", str(tmp_path), [], seed=0)(batch)
    store = TraceStore(tmp_path)
    assert len(store.parts(store.corrections_dir)) == 1
    # a correction whose student sample never committed (killed between the two writes) is not listed
    orphan = {**store.corrections().to_pylist()[0], "correction_id": "x", "parent": "never-committed"}
    store.append_corrections([orphan])
    assert "x" not in store.corrections().column("correction_id").to_pylist()


def test_sft_rows_are_mixed_in_per_problem_under_ids_of_their_own(tmp_path):
    sft = [
        {"trace_id": f"t{i}", "problem_id": f"q{i}", "question": "q", "variant": "full", "text": "x", "spans": []}
        for i in range(5)
    ]
    commit = CorrectionCommit(CorrectionConfig(keep=["self"], mix=2.0), 3, "t", str(tmp_path), sft, seed=0)
    train = commit(_continued(tmp_path, "")).to_pylist()
    mixed = [r for r in train if r["variant"] == "full"]
    assert len(mixed) == 2  # one problem in the block, 2 per problem
    assert len({r["trace_id"] for r in train}) == len(train)  # every row its own id: resume skips what it trained
    assert all(r["trace_id"] not in {s["trace_id"] for s in sft} for r in mixed)


def test_rounds_take_the_next_slice_of_training_problems_and_train_one_epoch_at_a_constant_rate():
    probs = [{"problem_id": str(i)} for i in range(5)]
    assert [p["problem_id"] for p in round_problems(probs, 1, 3)] == ["0", "1", "2"]
    assert [p["problem_id"] for p in round_problems(probs, 2, 3)] == ["3", "4", "0"]
    assert len(round_problems(probs, 1, 9)) == 5
    cfg = load_config("smoke", ["train.correction.rounds=2"])
    r = round_config(cfg)
    assert r.train.epochs == 1 and r.train.lr_schedule == "constant" and r.train.lr == cfg.train.lr / 2
    assert r.train.warmup_ratio == 0.0 and cfg.train.epochs == 2  # the run's own config is untouched


def test_correction_config_errors_name_the_field():
    with pytest.raises(ValueError, match="train.correction.temperature"):
        CorrectionConfig(samples=2, temperature=0.0)
    with pytest.raises(ValueError, match="keep"):
        CorrectionConfig(keep=[])


def test_a_recipe_extends_another_merging_mappings_and_replacing_lists(tmp_path):
    from distill.config import ConfigError, read_recipe

    (tmp_path / "base.yaml").write_text("name: base\nseed: 3\ntrain: {epochs: 2, lr: 0.1}\nlist: [1, 2]\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\ntrain: {epochs: 1}\nlist: [3]\n")
    assert read_recipe(tmp_path / "child.yaml") == {
        "name": "child",
        "seed": 3,
        "train": {"epochs": 1, "lr": 0.1},
        "list": [3],
    }
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        read_recipe(tmp_path / "loop.yaml")
    # the shipped correction recipe is the quickstart plus its round
    c, q = load_config("correction"), load_config("quickstart")
    assert c.name == "correction" and c.train.correction.arms == ["self", "teacher"]
    assert c.model_dump(exclude={"name", "train"}) == q.model_dump(exclude={"name", "train"})
    assert c.train.model_dump(exclude={"correction"}) == q.train.model_dump(exclude={"correction"})


def test_the_comparison_pairs_each_arm_with_the_sft_student_and_the_final_one():
    from distill.eval.compare import correction_comparison
    from distill.eval.report import correction_table

    def preds(correct):
        return [{"split": "in_distribution", "problem_id": str(i), "correct": c} for i, c in enumerate(correct)]

    p = {
        "student": preds([1, 1, 1, 0]),
        "student_sft": preds([0, 1, 0, 0]),
        "student_self": preds([0, 1, 1, 0]),
        "student_teacher": preds([1, 1, 0, 0]),
    }
    c = correction_comparison(p, ["self", "teacher"])
    assert set(c) == {"student_vs_sft", "self_vs_sft", "student_vs_self", "teacher_vs_sft", "student_vs_teacher"}
    d = c["student_vs_teacher"]["in_distribution"]
    assert d["n"] == 4 and d["diff"] == 0.25 and d["a_only"] == 1 and d["b_only"] == 0
    assert d["student_accuracy"] == 0.75 and d["student_teacher_accuracy"] == 0.5
    head, rows = correction_table({**c, "rounds": [], "arms": []})
    assert len(rows) == 5 and rows[0][:4] == ["after rounds vs SFT", "in_distribution", "0.750", "0.250"]


def test_without_a_continuation_stage_cut_samples_are_neither_stored_nor_trained(tmp_path):
    rows = SampleScorer(ScorerConfig(), str(tmp_path))(samples_batch([RIGHT, WRONG, LOST]))
    commit = CorrectionCommit(CorrectionConfig(keep=["self"], mix=0.0), 1, "t", str(tmp_path), [], 0, continued=False)
    train = commit(rows).to_pylist()
    assert [r["variant"] for r in train] == ["self"]
    assert [r["kind"] for r in TraceStore(tmp_path).corrections().to_pylist()] == ["self"]
