"""`distill run smoke` end to end: real Ray, real vLLM teacher, real student training, real files."""

import json
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from distill.data.schema import TRACE_SCHEMA
from distill.models import resolve_model

pytestmark = pytest.mark.e2e


def test_summary_has_every_stage_and_overlap(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["run_id"] == run_dir.name and s["wall_s"] > 0
    for stage in ("teacher", "scorer", "train"):
        st = s["stages"][stage]
        assert {"start", "end", "busy_s", "rows_in", "rows_out"} <= set(st)
        assert 0 <= st["start"] < st["end"] <= s["wall_s"] and st["busy_s"] > 0
    t, sc, tr = s["stages"]["teacher"], s["stages"]["scorer"], s["stages"]["train"]
    assert t["rows_in"] == 24 and t["tokens_out"] > 24 * 20
    # every batch answered by the teacher engine the run started with its Ray session (pipelines/stages.py)
    assert t["prewarmed_batches"] == 24 / 4
    assert sc["accepted"] + sc["rejected"] == 24 and sc["accepted"] >= 4 and "quarantined" in sc
    assert tr["steps"] > 0 and tr["tokens"] > 0 and tr["final_loss"] > 0
    # The first step began (train's start is its t0) while the teacher was still generating. Not the step's
    # end (`first_step_at`): a first step takes ~25 s here (the first forward and backward), and the teacher
    # of 24 problems runs ~55 s, so an end-time check failed on a loaded machine by 5 s (177 vs 172).
    assert tr["start"] < t["end"], "training must start while the teacher is still generating"
    assert tr["first_step_at"] >= tr["start"]
    assert s["student_checkpoint"] == str(run_dir / "student")


def test_trace_store_is_parquet_with_the_schema(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    parts = list((run_dir / "store" / "traces").glob("part-*.parquet"))
    assert parts
    t = pq.read_table(run_dir / "store" / "traces", schema=TRACE_SCHEMA)
    assert t.num_rows == 24 and len(set(t.column("trace_id").to_pylist())) == 24
    verdicts = t.column("verdict").to_pylist()
    assert verdicts.count("accepted") == s["stages"]["scorer"]["accepted"]
    rows = t.to_pylist()
    assert all(r["reason"] == "" for r in rows if r["verdict"] == "accepted")
    assert all(r["reason"] for r in rows if r["verdict"] == "rejected")
    assert all(r["correct"] for r in rows if r["verdict"] == "accepted")


def test_student_checkpoint_loads_in_transformers(run_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run_dir / "student")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "student")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert list((run_dir / "student").glob("*.safetensors"))


def test_student_checkpoint_loads_in_vllm(run_dir):
    script = textwrap.dedent(f"""
        import os
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if __name__ == "__main__":
            from vllm import LLM, SamplingParams
            llm = LLM(model={str(run_dir / "student")!r}, max_model_len=256, enforce_eager=True)
            out = llm.generate(["2 + 3 ="], SamplingParams(max_tokens=4, temperature=0))
            print("GENERATED", len(out[0].outputs[0].token_ids))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "GENERATED" in r.stdout, r.stderr[-3000:]


def test_tensorboard_timeline_and_config(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"teacher/tokens_per_s", "scorer/accept_rate", "train/loss", "train/tokens_per_s"} <= tags
    assert (
        len(acc.Scalars("train/loss")) == json.loads((run_dir / "summary.json").read_text())["stages"]["train"]["steps"]
    )
    assert (run_dir / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "teacher:" in (run_dir / "config.yaml").read_text()


def test_run_ends_with_the_eval_object_and_report(run_dir):
    from distill.eval.report import OPTIONAL_SECTIONS, SECTIONS

    s = json.loads((run_dir / "summary.json").read_text())
    ev = s["eval"]
    models = {"teacher", "untrained", "student"}
    assert set(ev["models"]) == models and not ev.get("errors")
    assert ev["models"]["student"] == str(run_dir / "student")
    expected_n = {"in_distribution": 4, "prompt_style": 10, "related": 6, "difficulty_shift": 2}  # smoke.yaml
    for split, n in expected_n.items():
        assert set(ev["splits"][split]) == models, split
        for m in models:
            x = ev["splits"][split][m]
            assert x["n"] == n and 0 <= x["accuracy"] <= 1 and 0 <= x["no_answer_rate"] <= 1 and x["mean_tokens"] > 0
            assert x["ci"][0] <= x["accuracy"] <= x["ci"][1] and 0 <= x["wrong_steps_rate"] <= 1
        # every split: the student against the untrained student, paired on the same problems
        su = ev["comparisons"]["splits"][split]["student_vs_untrained"]
        assert su["n"] == n and su["ci"][0] <= su["diff"] <= su["ci"][1] and 0 <= su["p_mcnemar"] <= 1
    assert ev["comparisons"]["verdicts"][0].startswith("in_distribution: student vs untrained")
    # the teacher sampled greedily with max_tokens 256, the evaluation uses 96: its generation cannot stand in
    assert ev["sources"]["teacher"] == "miss" and ev["sources"]["untrained"] == "miss"
    # the teacher baseline was answered by the teacher's engine, up since the run began: no engine start for it
    teacher_path = str(resolve_model("qwen2.5-coder-0.5b-instruct"))
    assert {"engine": "the teacher's, up since the run began", "load_s": 0.0, "model": teacher_path} in ev["engine"]
    assert all(
        ev["splits"]["in_distribution"][m]["k"] == 2
        and "pass@k" in ev["splits"]["in_distribution"][m]
        and "maj@k" in ev["splits"]["in_distribution"][m]
        for m in models
    )
    assert set(ev["splits"]["related"]["student"]["by_source"]) == {
        "reasoning_gym:products",
        "bigbench:3_digit_addition",
        "bigbench:simple_arithmetic_json_multiple_choice",
    }
    for m in models:
        st = ev["prompt_style"][m]
        assert set(st["per_style"]) == {"terse", "verbose", "boxed_answer", "system_prompt", "few_shot"}
        assert st["sensitivity"] >= 0 and 0 <= st["agreement"] <= 1 and st["n_shared"] == 2
        rh = ev["reasoning_help"][m]
        assert rh["n"] == 4 and abs(rh["delta"] - (rh["reasoning_accuracy"] - rh["direct_accuracy"])) < 1e-9
        assert rh["direct_mean_tokens"] <= 16 < rh["reasoning_mean_tokens"] + 16
    assert set(ev["imitation_fidelity"]) == {"untrained", "student"}
    assert all(0 <= f["rouge_l"] <= 1 and f["n"] == 4 for f in ev["imitation_fidelity"].values())
    # in-loop: the epoch-1 checkpoint was scored by a Ray Train validation task; the last point is the final student
    steps = [p["step"] for p in ev["in_loop"]]
    assert len(steps) == 2 and steps[-1] == s["stages"]["train"]["steps"] and steps[0] < steps[-1]
    assert ev["in_loop"][-1]["final"]  # the final student, labelled with its real step
    assert (run_dir / "eval" / "in_loop" / f"step-{steps[0]:06d}.json").is_file()
    assert ev["in_loop"][-1]["in_distribution_accuracy"] == ev["splits"]["in_distribution"]["student"]["accuracy"]
    for m in models:
        lines = (run_dir / "eval" / f"{m}.jsonl").read_text().splitlines()
        assert len(lines) == 4 + 4 + 10 + 6 + 2 + 4  # in_dist, sampled, styles, related, shift, direct
    page = (run_dir / "report.html").read_text()
    for sec in (x for x in SECTIONS if x not in OPTIONAL_SECTIONS):  # a run without correction rounds
        assert f">{sec}</h2>" in page, sec
    assert page.count("data:image/png;base64,") == 5  # headline, heat map, accuracy vs tokens, curves, timeline
    assert page.count('class="sample"') >= 1 and "distilled student" in page
    assert "## Sample traces" in (run_dir / "report.md").read_text()


def test_provenance_and_model_card(run_dir):
    from distill.hardware import cpu_has_bf16

    s = json.loads((run_dir / "summary.json").read_text())
    prov = s["provenance"]
    assert len(prov["git_commit"]) == 40 and {"torch", "transformers", "ray"} <= set(prov["packages"])
    card = (run_dir / "student" / "README.md").read_text()
    assert "## Evaluation" in card and "smollm2-135m-instruct" in card and prov["git_commit"] in card
    assert "student vs untrained" in card
    # saved in the dtype it trained in: bf16 only where this CPU computes bf16 natively
    cfg = json.loads((run_dir / "student" / "config.json").read_text())
    assert cfg["dtype"] == ("bfloat16" if cpu_has_bf16() else "float32")


def test_eval_scalars_in_tensorboard(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for m in ("teacher", "untrained", "student"):
        assert f"eval/{m}/in_distribution_accuracy" in tags
    assert len(acc.Scalars("eval/student/in_distribution_accuracy")) == 2  # in-loop checkpoint + final student


def test_standalone_eval_of_the_checkpoint(run_dir, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "eval",
            str(run_dir / "student"),
            "--suite",
            "smoke",
            "--baselines",
            "none",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "eval.samples=1",
            "--set",
            "eval.related=[]",
            "--set",
            "eval.prompt_styles={}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    (d,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    s = json.loads((d / "summary.json").read_text())
    assert set(s["eval"]["models"]) == {"student"} and s["eval"]["problems"]["in_distribution"]["dropped_overlap"] == 0
    assert s["eval"]["splits"]["in_distribution"]["student"]["n"] == 4 and "related" not in s["eval"]["splits"]
    assert (d / "report.html").is_file() and (d / "eval" / "student.jsonl").is_file()


def test_baselines_come_from_the_cache_on_a_second_run(run_dir, tmp_path):
    """The smoke run evaluated the untrained student (a miss, stored); `distill eval` on the same suite asks
    the same requests of the same model files: a hit, with the same answers. --no-eval-cache turns it off."""
    args = [
        sys.executable,
        "-m",
        "distill.cli",
        "eval",
        str(run_dir / "student"),
        "--suite",
        "smoke",
        "--baselines",
        "untrained",
        "--set",
        "eval.samples=2",
    ]
    r = subprocess.run(args + ["--set", f"output_dir={tmp_path / 'a'}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    (d,) = list((tmp_path / "a").iterdir())
    s = json.loads((d / "summary.json").read_text())
    assert s["eval"]["sources"]["untrained"] == "hit"
    again = (d / "eval" / "untrained.jsonl").read_text().splitlines()
    first = (run_dir / "eval" / "untrained.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["text"] for x in again) == sorted(json.loads(x)["text"] for x in first)
    assert "answers from the baseline cache" in r.stdout


def test_standalone_eval_rejects_bad_input(run_dir, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "eval", str(tmp_path), "--suite", "smoke"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "not an HF model directory" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "eval",
            str(run_dir / "student"),
            "--suite",
            "smoke",
            "--baselines",
            "teacher,oracle",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "unknown ['oracle']" in r.stderr


def test_quiet_terminal(run_dir):
    """The terminal gets the plan, progress and the verdict; engine and Ray chatter go to runs/<id>/logs."""
    seen = (run_dir.parent / "terminal.txt").read_text()
    assert "[distill]" in seen  # the plan and the verdict are there
    for noise in (
        "Token authentication is enabled",
        "worker processes have been started",
        "(raylet)",
        "INFO ",
        "Loading safetensors",
    ):
        assert noise not in seen, f"{noise!r} on the terminal:\n{seen[-3000:]}"


def test_engines_end_quietly(run_dir):
    """The teacher's vLLM engine is shut down before Ray ends its actor (Ray's exit would kill the engine
    core first): no dead-engine tracebacks in any worker's log, teacher's included. The run prewarmed it."""
    logs = {p.name: p.read_text(errors="replace") for p in (run_dir / "logs").glob("worker-*")}
    # The teacher engine's own log (other workers' logs name the class too), written through its shutdown: the
    # run's prewarmed engine (an actor of its own), or the pool actor's own engine.
    teacher = [
        t
        for t in logs.values()
        if ":actor_name:TeacherEngine" in t or ":actor_name:MapWorker(MapBatches(VLLMTeacher))" in t
    ]
    assert any("[distill] teacher engine shut down in" in t for t in teacher), sorted(logs)
    for name, text in logs.items():
        for bad in ("EngineDeadError", "engine core exited unexpectedly", "output_handler failed"):
            assert bad not in text, f"{bad!r} in {name}"
