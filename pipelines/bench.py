"""`distill bench`: the pipeline's parts side by side on the same inputs, on the same cores.

Every arm runs in a fresh process (`python -m distill.pipelines.bench_arms --arm NAME`: the arms are in
pipelines/bench_arms.py) pinned with `taskset` to the same core(s), `repeats` times; the driver records
the load average as each starts and writes the median and spread of each measure, the ratios the
README's performance section quotes, `lscpu` and versions to `bench.json`, and a plot. Arms:

  roofline        one-core GEMM GFLOP/s (fp32, bf16) and copy bandwidth; the bounds they imply
  teacher_*       the pipeline's teacher stage (VLLMTeacher) vs a bare vLLM engine vs transformers
                  batched generate: the same prompts, exactly `gen_tokens` each (ignore EOS)
  train_*         the student's step on the same examples: right-padded, length-grouped, packed
  scorer          the scorer stage (verify + anatomy + variants + Parquet) on teacher-format traces, on the
                  allocator the pipeline's scorer actors start on (`scorer.allocator`: jemalloc)
  scorer_system   the same on glibc's malloc
  eval_beside     an evaluator engine on core A: its start vs an in-place weight swap, its tokens/s
                  alone, then again while the student trains on core B (both rates in that window)
  overlap_*       a whole `distill run` of a small recipe on all the cores: streamed (the product), and
                  as sequential stages (`stages: sequential`) with (a) the streamed run's per-stage
                  cores and (b) all cores for each stage in turn; wall and core utilisation of each
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from distill.pipelines.bench_arms import _cfg, arm_parser

TEACHER_ARMS = ("teacher_pipeline", "teacher_bare", "teacher_hf")
TRAIN_ARMS = ("train_padded", "train_grouped", "train_packed")
OVERLAP_ARMS = ("overlap_streamed", "overlap_sequential_same", "overlap_sequential_all")
ALL_ARMS = ("roofline", *TEACHER_ARMS, *TRAIN_ARMS, "scorer", "scorer_system", "eval_beside", *OVERLAP_ARMS)


# ---------------------------------------------------------------- the driver


# The working dir of every arm's process: the directory above pipelines/ (a source tree's root).
ARM_CWD = Path(__file__).resolve().parents[1]


def _pinned(cores: str, module: str, *args: str) -> list[str]:
    """`python -m module args`, pinned with taskset to `cores`."""
    return ["taskset", "-c", cores, sys.executable, "-m", module, *args]


def _spawn(arm: str, cores: str, a, out: Path, *extra: str) -> subprocess.Popen:
    cmd = _pinned(
        cores, "distill.pipelines.bench_arms", "--arm", arm, "--cores", cores, "--out", str(out), *a.passthrough, *extra
    )
    log = open(out.with_suffix(".log"), "w")
    env = None
    if arm.startswith("scorer"):  # in a scorer actor's environment: Ray's workers' (the tokenizer's Rust
        # threads off), and the allocator the pipeline's scorer actors start on (scorer_system: glibc's)
        from distill.cluster.session import WORKER_ENV
        from distill.hardware import allocator_env

        env = {**os.environ, **WORKER_ENV, **(allocator_env(_cfg().scorer.allocator) if arm == "scorer" else {})}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ARM_CWD, env=env)


def overlap_overrides(arm: str, cores: str, a) -> list[str]:
    """`--set` overrides of one overlap arm's `distill run`: the recipe made small, then the arm's
    schedule. (b) gives every stage all the cores: the teacher's and evaluator's engines bind them all,
    the trainer runs that many threads."""
    # in-loop evaluation off in all three: sequential stages have none (it would overlap training)
    base = [f"sources.0.size={a.overlap_problems}", "ray.dashboard=false", "eval.in_loop=false"]
    if arm == "overlap_streamed":
        return base
    seq = [*base, "stages=sequential"]
    if arm == "overlap_sequential_same":
        return seq
    from distill.hardware import bind_cores

    n = bind_cores(cores, 1)
    return [
        *seq,
        f"teacher.cpu_threads_bind={cores}",
        f"eval.cpu_threads_bind={cores}",
        f"train.cpu_threads_bind={cores}",
        f"train.torch_threads={n}",
        f"train.torch_threads_later={n}",
    ]


def _run_overlap(arm: str, cores: str, a, work: Path, rep: int) -> dict:
    """One `distill run` (its own process tree, pinned to `cores`) -> its summary's measures."""
    runs = (work / f"{arm}-{rep}-runs").resolve()
    cmd = _pinned(cores, "distill.cli", "run", a.overlap_recipe, "--no-eval-cache", "--set", f"output_dir={runs}")
    for o in overlap_overrides(arm, cores, a):
        cmd += ["--set", o]
    with open(work / f"{arm}-{rep}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ARM_CWD).returncode
    found = sorted(runs.glob("*/summary.json"))
    if rc != 0 or not found:
        return {"error": f"exit {rc}: see {work / f'{arm}-{rep}.log'}"}
    s = json.loads(found[-1].read_text())
    st = s["stages"]
    # Its checkpoints (~2.3 GB for the smoke student: the epoch-1 one with its optimizer state) are not
    # measures: a dozen overlap runs filled a 100 GB disk. Summary, events, timeline and report stay.
    shutil.rmtree(found[-1].parent / "ray_train", ignore_errors=True)
    return {
        "wall_s": s["wall_s"],
        "core_utilisation": s["core_utilisation"],
        "core_seconds": s["core_seconds"],
        "teacher_end_s": st["teacher"]["end"],
        "train_first_step_s": st["train"]["first_step_at"],
        "train_steps": st["train"]["steps"],
        "accepted": st["scorer"]["accepted"],
        "run_dir": s["run_dir"],
    }


def _eval_beside(cores: str, a, work: Path, rep: int, out: Path) -> int:
    """The evaluator on core A (start, swap, alone) while the student's training process loads and waits
    on core B; then both at once, the training stepping until the evaluation is over. Writes `out`
    with the evaluator's measures and the training's tokens/s in the evaluation's window."""
    a_core, b_core = cores.split(",")[:2] if "," in cores else (cores, cores)
    d = work / f"beside-{rep}"
    d.mkdir(exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    train_out = work / f"beside-train-{rep}.json"
    ev = _spawn("eval_engine", a_core, a, out, "--beside-dir", str(d))
    train = _spawn("train_packed", b_core, a, train_out, "--beside-dir", str(d))
    while not ((d / "eval-alone-done").exists() and (d / "train-ready").exists()):
        if ev.poll() is not None or train.poll() is not None:  # one failed: end the other
            break
        time.sleep(0.1)
    (d / "go").touch()
    rc = ev.wait()
    (d / "stop").touch()
    rc_train = train.wait()
    if rc != 0 or rc_train != 0 or not out.is_file() or not train_out.is_file():
        return rc or rc_train or 1
    res = json.loads(out.read_text())
    lo, hi = res.pop("beside_window")
    # the steps that ran (at least partly) while the evaluator generated beside them
    inside = [s for s in json.loads(train_out.read_text())["steps"] if s[1] > lo and s[0] < hi]
    busy = sum(t1 - t0 for t0, t1, _ in inside)
    res.update(
        train_steps_beside=len(inside),
        train_tok_s_beside=round(sum(n for *_, n in inside) / busy, 1) if busy else None,
        beside_over_alone=round(res["beside_tok_s"] / res["tok_s"], 3),
    )
    out.write_text(json.dumps(res))
    return 0


def _run_arm(arm: str, cores: str, a, work: Path, rep: int) -> dict:
    out = work / f"{arm}-{rep}.json"
    load = os.getloadavg()[0]
    if arm in OVERLAP_ARMS:
        return {**_run_overlap(arm, cores, a, work, rep), "load_avg_at_start": round(load, 2)}
    if arm == "eval_beside":
        rc = _eval_beside(cores, a, work, rep, out)
    else:
        rc = _spawn(arm, cores, a, out).wait()
    if rc != 0 or not out.is_file():
        return {"error": f"exit {rc}: see {out.with_suffix('.log')}", "load_avg_at_start": load}
    return {**json.loads(out.read_text()), "load_avg_at_start": round(load, 2)}


def _stats(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    keys = {k for r in ok for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {}
    for k in sorted(keys):
        xs = [r[k] for r in ok if k in r]
        out[k] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}
    return out


def _ratio(res: dict, a: str, b: str, key: str) -> float | None:
    try:
        return round(res[a]["stats"][key]["median"] / res[b]["stats"][key]["median"], 3)
    except (KeyError, ZeroDivisionError):
        return None


def _key_ratio(arm: dict | None, a: str, b: str) -> float | None:
    try:
        return round(arm["stats"][a]["median"] / arm["stats"][b]["median"], 3)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _machine() -> dict:
    import platform

    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    from distill.metrics import provenance

    return {
        "lscpu": sh(["lscpu"]),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "provenance": provenance(),
    }


def main(arms: list[str], repeats: int, cores: str, out_dir: Path, passthrough: list[str]) -> dict:
    a = argparse.Namespace(passthrough=passthrough, **vars(arm_parser().parse_args(passthrough)))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "arms"
    work.mkdir(exist_ok=True)
    one = cores.split(",")[0]
    res: dict = {}
    t0 = time.time()
    for arm in arms:
        whole = arm == "eval_beside" or arm in OVERLAP_ARMS or (arm.startswith("teacher") and a.teacher_all_cores)
        c = cores if whole else one
        runs = []
        n = a.overlap_repeats if arm in OVERLAP_ARMS else repeats
        for rep in range(n):
            print(f"[distill bench] {arm} (cores {c}) run {rep + 1}/{n}", flush=True)
            runs.append(_run_arm(arm, c, a, work, rep))
        res[arm] = {"cores": c, "runs": runs, "stats": _stats(runs)}
    ratios = {
        "teacher_pipeline_over_bare": _ratio(res, "teacher_pipeline", "teacher_bare", "tok_s"),
        "teacher_pipeline_over_hf_generate": _ratio(res, "teacher_pipeline", "teacher_hf", "tok_s"),
        "train_packed_over_padded": _ratio(res, "train_packed", "train_padded", "tok_s"),
        "train_grouped_over_padded": _ratio(res, "train_grouped", "train_padded", "tok_s"),
        "scorer_over_system_malloc": _ratio(res, "scorer", "scorer_system", "traces_per_s"),
        "eval_reload_s_over_start_s": _key_ratio(res.get("eval_beside"), "reload_s", "start_s"),
        # evaluator tokens/s beside training over alone, each run's pair in one process
        "eval_beside_training_over_alone": _key_ratio(res.get("eval_beside"), "beside_tok_s", "tok_s"),
        # wall of the streamed run over the sequential baselines: (a) same per-stage cores, (b) all cores each
        "overlap_streamed_over_sequential_same": _ratio(res, "overlap_streamed", "overlap_sequential_same", "wall_s"),
        "overlap_streamed_over_sequential_all": _ratio(res, "overlap_streamed", "overlap_sequential_all", "wall_s"),
    }
    bench = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_s": round(time.time() - t0, 1),
        "repeats": repeats,
        "cores": cores,
        "settings": {k: v for k, v in vars(a).items() if k != "passthrough"},
        "machine": _machine(),
        "arms": res,
        "ratios": ratios,
    }
    (out_dir / "bench.json").write_text(json.dumps(bench, indent=1))
    _plot(bench, out_dir / "bench.png")
    print(json.dumps(ratios, indent=1))
    print(f"[distill bench] {out_dir / 'bench.json'}, {out_dir / 'bench.png'} ({bench['wall_s']:.0f}s)")
    return bench


def _plot(bench: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bars(arms, key):  # (label, arm, measure) of each bar
        return [(arm.split("_", 1)[-1].replace("sequential_", "seq_"), arm, key) for arm in arms]

    groups = [
        ("teacher tok/s", bars(TEACHER_ARMS, "tok_s")),
        ("training tok/s", bars(TRAIN_ARMS, "tok_s")),
        ("eval tok/s", [("alone", "eval_beside", "tok_s"), ("beside training", "eval_beside", "beside_tok_s")]),
        ("whole run wall s", bars(OVERLAP_ARMS, "wall_s")),
        ("core utilisation", bars(OVERLAP_ARMS, "core_utilisation")),
    ]
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2))
    for ax, (title, group) in zip(axes, groups):
        names, med, lo, hi = [], [], [], []
        for label, arm, key in group:
            st = bench["arms"].get(arm, {}).get("stats", {}).get(key)
            if st:
                names.append(label)
                med.append(st["median"])
                lo.append(st["median"] - st["min"])
                hi.append(st["max"] - st["median"])
        ax.bar(names, med, yerr=[lo, hi], capsize=4, color="#4c72b0")
        ax.set_title(f"{title} (median, min-max)", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
