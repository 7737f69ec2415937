"""`distill run smoke` end to end: real Ray, real vLLM teacher, real student training, real files."""
import json
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from distill.schema import TRACE_SCHEMA

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
    assert sc["accepted"] + sc["rejected"] == 24 and sc["accepted"] >= 4 and "quarantined" in sc
    assert tr["steps"] > 0 and tr["tokens"] > 0 and tr["final_loss"] > 0
    assert tr["first_step_at"] < t["end"], "training must start while the teacher is still generating"
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
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert list((run_dir / "student").glob("*.safetensors"))


def test_student_checkpoint_loads_in_vllm(run_dir):
    script = textwrap.dedent(f"""
        import os
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if __name__ == "__main__":
            from vllm import LLM, SamplingParams
            llm = LLM(model={str(run_dir / 'student')!r}, max_model_len=256, enforce_eager=True)
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
    assert len(acc.Scalars("train/loss")) == json.loads((run_dir / "summary.json").read_text())["stages"]["train"]["steps"]
    assert (run_dir / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "teacher:" in (run_dir / "config.yaml").read_text()
