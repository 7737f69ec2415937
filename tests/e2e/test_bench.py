"""`distill bench`: arms in fresh pinned processes, repeated, with their spread and the machine named."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_bench_runs_arms_in_pinned_processes_and_writes_bench_json(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "bench",
            "--arms",
            "roofline,scorer,scorer_system",
            "--repeats",
            "2",
            "--scorer-traces",
            "120",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    b = json.loads((tmp_path / "bench.json").read_text())
    assert "Model name" in b["machine"]["lscpu"] and b["machine"]["provenance"]
    for arm in ("roofline", "scorer"):
        runs = b["arms"][arm]["runs"]
        assert len(runs) == 2 and all("error" not in x and "load_avg_at_start" in x for x in runs)
    st = b["arms"]["roofline"]["stats"]
    assert st["gemm_gflops_float32"]["min"] <= st["gemm_gflops_float32"]["median"] <= st["gemm_gflops_float32"]["max"]
    assert st["gemm_gflops_float32"]["median"] > 1 and st["copy_gbps"]["median"] > 0.5
    assert st["student_train_bound_tok_s"]["median"] > 0 and st["teacher_decode_bound_tok_s_batch1"]["median"] > 0
    assert b["arms"]["scorer"]["stats"]["traces_per_s"]["median"] > 10
    # the scorer arm on the allocator the pipeline's scorer actors get (jemalloc), its twin on glibc's
    assert {x["allocator"] for x in b["arms"]["scorer"]["runs"]} == {"jemalloc"}
    assert {x["allocator"] for x in b["arms"]["scorer_system"]["runs"]} == {"system"}
    assert b["ratios"]["scorer_over_system_malloc"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_rejects_an_unknown_arm(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "bench", "--arms", "roofline,warp_drive", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "warp_drive" in r.stderr
    assert not (tmp_path / "bench.json").exists()
