"""`distill bench`: the pipeline's parts side by side on the same inputs, on the same cores.

Every arm runs in a fresh process (`python -m distill.pipelines.bench --arm NAME`) pinned with `taskset` to the
same core(s), `repeats` times; the driver records the load average as each starts and writes the
median and spread of each measure, the ratios the README's performance section quotes, `lscpu` and
versions to `bench.json`, and a plot. Arms:

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
import tempfile
import time
from pathlib import Path

TEACHER_ARMS = ("teacher_pipeline", "teacher_bare", "teacher_hf")
TRAIN_ARMS = ("train_padded", "train_grouped", "train_packed")
OVERLAP_ARMS = ("overlap_streamed", "overlap_sequential_same", "overlap_sequential_all")
ALL_ARMS = ("roofline", *TEACHER_ARMS, *TRAIN_ARMS, "scorer", "scorer_system", "eval_beside", *OVERLAP_ARMS)


# ---------------------------------------------------------------- inputs shared by the arms


def _cfg():
    from distill.config import load_config

    return load_config("quickstart")


def _problems(n: int) -> list[dict]:
    from distill.data.sources import load_problems

    return load_problems(_cfg().sources).problems[:n]


def _worked(question: str) -> tuple[str, str]:
    """A chain_sum question's teacher-format trace (one operation per line, then the answer)."""
    import re

    expr = question.rsplit(":", 1)[-1].strip().rstrip("=").strip()
    toks = re.findall(r"-?\d+|[+-]", expr)
    acc, lines = int(toks[0]), []
    for op, num in zip(toks[1::2], toks[2::2]):
        new = acc + int(num) if op == "+" else acc - int(num)
        lines.append(f"{acc} {op} {num} = {new}")
        acc = new
    return "\n".join(lines) + f"\nAnswer: {acc}", str(acc)


def _train_rows(n: int) -> list[dict]:
    from distill.data.schema import stable_id

    rows = []
    for p in _problems(n):
        text, _ = _worked(p["question"])
        rows.append(
            {"trace_id": stable_id("bench", p["problem_id"]), "question": p["question"], "text": text, "spans": []}
        )
    return rows


def _params(path: str) -> int:
    from safetensors import safe_open

    n = 0
    for f in Path(path).glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n += _prod(st.get_slice(k).get_shape())
    return n


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


# ---------------------------------------------------------------- arms (each in its own process)


def arm_roofline(a) -> dict:
    import torch

    torch.set_num_threads(1)
    out = {}
    for dt in ("float32", "bfloat16"):
        x = torch.randn(1024, 1024, dtype=getattr(torch, dt))
        y = torch.randn(1024, 1024, dtype=getattr(torch, dt))
        for _ in range(2):
            x @ y
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3:
            x @ y
            n += 1
        out[f"gemm_gflops_{dt}"] = round(2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9, 2)
    src = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB: far past any cache
    dst = torch.empty_like(src)
    dst.copy_(src)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3:
        dst.copy_(src)
        n += 1
    out["copy_gbps"] = round(2 * src.numel() * 4 * n / (time.perf_counter() - t0) / 1e9, 2)  # read + write
    from distill.hardware import engine_dtype, train_bf16
    from distill.models import resolve_model

    cfg = _cfg()
    tp, sp = resolve_model(cfg.teacher.model), resolve_model(cfg.train.student)
    t_dtype = engine_dtype(cfg.teacher.dtype, False)
    t_bytes = _params(tp) * (2 if t_dtype == "bfloat16" else 4)
    s_dtype = "bfloat16" if train_bf16(cfg.train.bf16, False) else "float32"
    out.update(
        teacher_params=_params(tp),
        teacher_dtype=t_dtype,
        student_params=_params(sp),
        student_dtype=s_dtype,
        # one sequence decoding reads every weight once per token: bandwidth-bound
        teacher_decode_bound_tok_s_batch1=round(out["copy_gbps"] * 1e9 / t_bytes, 2),
        # training: ~6 FLOPs per parameter per token (forward 2, backward 4), compute-bound
        student_train_bound_tok_s=round(out[f"gemm_gflops_{s_dtype}"] * 1e9 / (6 * _params(sp)), 1),
    )
    return out


def _teacher_inputs(a):
    from transformers import AutoTokenizer

    from distill.models import resolve_model
    from distill.prompts import messages_for, style_of
    from distill.train.tokenize import render_prompt

    cfg = _cfg()
    path = resolve_model(cfg.teacher.model)
    tok = AutoTokenizer.from_pretrained(path)
    probs = _problems(a.prompts)
    style = style_of(cfg.teacher_prompt())
    ids = [
        tok(render_prompt(tok, messages_for(p["question"], style)), add_special_tokens=False)["input_ids"]
        for p in probs
    ]
    return cfg, path, tok, probs, ids


def arm_teacher_pipeline(a) -> dict:
    import asyncio

    import pyarrow as pa

    from distill.actors.teacher import VLLMTeacher
    from distill.data.schema import PROBLEM_SCHEMA

    cfg, path, tok, probs, _ = _teacher_inputs(a)
    t = cfg.teacher.model_copy(
        update={
            "max_tokens": a.gen_tokens,
            "ignore_eos": True,
            "samples": 1,
            "temperature": 0.0,
            "cpu_threads_bind": a.cores,
        }
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as store:
        teacher = VLLMTeacher(t, cfg.teacher_prompt(), path, cfg.teacher.model, store, [])
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        out = asyncio.run(teacher(pa.Table.from_pylist(probs, schema=PROBLEM_SCHEMA)))
        wall = time.perf_counter() - t1
        teacher.engine.shutdown()
    toks = sum(out.column("completion_tokens").to_pylist())
    return {"start_s": round(start, 1), "gen_s": round(wall, 2), "tokens": toks, "tok_s": round(toks / wall, 2)}


def arm_teacher_bare(a) -> dict:
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = a.cores
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    from distill.hardware import engine_dtype

    cfg, path, tok, probs, ids = _teacher_inputs(a)
    t0 = time.perf_counter()
    llm = LLM(
        model=path,
        max_model_len=cfg.teacher.max_model_len,
        enforce_eager=True,
        disable_log_stats=True,
        dtype=engine_dtype(None, False),
        seed=0,
    )
    start = time.perf_counter() - t0
    sp = SamplingParams(temperature=0.0, max_tokens=a.gen_tokens, ignore_eos=True)
    t1 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": x} for x in ids], sp, use_tqdm=False)
    wall = time.perf_counter() - t1
    llm.llm_engine.engine_core.shutdown()
    toks = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"start_s": round(start, 1), "gen_s": round(wall, 2), "tokens": toks, "tok_s": round(toks / wall, 2)}


def arm_teacher_hf(a) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from distill.hardware import engine_dtype

    torch.set_num_threads(len(a.cores.split(",")))
    cfg, path, tok, probs, ids = _teacher_inputs(a)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, engine_dtype(None, False))).eval()
    start = time.perf_counter() - t0
    T = max(len(x) for x in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    inp = torch.tensor([[pad] * (T - len(x)) + x for x in ids])  # left-padded: one batched generate
    mask = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids])
    t1 = time.perf_counter()
    with torch.no_grad():
        g = model.generate(
            inp,
            attention_mask=mask,
            max_new_tokens=a.gen_tokens,
            min_new_tokens=a.gen_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    wall = time.perf_counter() - t1
    toks = int((g.shape[1] - T) * g.shape[0])
    return {"start_s": round(start, 1), "gen_s": round(wall, 2), "tokens": toks, "tok_s": round(toks / wall, 2)}


def _train(a, packing: bool, grouped: bool) -> dict:
    import torch

    from distill.actors.student import StudentStep
    from distill.models import resolve_model
    from distill.train.schedule import micro_batches

    torch.set_num_threads(len(a.cores.split(",")))
    cfg = _cfg()
    tr = cfg.train.model_copy(update={"packing": packing, "group_by_length": grouped})
    student = StudentStep(tr, cfg.prompt, resolve_model(cfg.train.student))
    rows = _train_rows(a.train_rows)
    length = (lambda r: len(student.tokenizer(r["question"] + r["text"])["input_ids"])) if grouped else None
    batches = micro_batches(rows, tr.batch_size, length, seed=0)
    student.total_steps = len(batches)
    student.step(batches[0])  # warm-up (allocator, first-call overheads), not measured
    if getattr(a, "beside_dir", None):
        return _train_beside(student, batches, Path(a.beside_dir))
    tokens = padded = 0
    t0 = time.perf_counter()
    for b in batches[1:]:
        m = student.step(b)
        tokens, padded = tokens + m["tokens"], padded + m["padded_tokens"]
    wall = time.perf_counter() - t0
    return {
        "steps": len(batches) - 1,
        "tokens": tokens,
        "padded_tokens": padded,
        "wall_s": round(wall, 2),
        "tok_s": round(tokens / wall, 1),
        "padding_fraction": round(1 - tokens / padded, 4),
        "bf16": student.bf16,
    }


def _wait_for(path: Path, timeout: float = 900) -> None:
    end = time.time() + timeout
    while not path.exists():
        if time.time() > end:
            raise TimeoutError(f"{path} did not appear in {timeout:.0f}s")
        time.sleep(0.05)


def _train_beside(student, batches: list, d: Path) -> dict:
    """eval_beside's training: loaded and warmed up, it waits for `go` (the evaluator's alone measure
    done), then steps through the batches round and round until `stop`; each step's times and tokens."""
    (d / "train-ready").touch()
    _wait_for(d / "go")
    measured = batches[1:] or batches  # batches[0] was the warm-up
    log, i = [], 0
    while not (d / "stop").exists():
        t0 = time.time()
        m = student.step(measured[i % len(measured)])
        log.append([t0, time.time(), m["tokens"]])
        i += 1
    return {"steps": log}


def arm_train_padded(a) -> dict:
    return _train(a, packing=False, grouped=False)


def arm_train_grouped(a) -> dict:
    return _train(a, packing=False, grouped=True)


def arm_train_packed(a) -> dict:
    return _train(a, packing=True, grouped=False)


def arm_scorer(a) -> dict:
    import pyarrow as pa

    from distill.actors.scorer import TraceScorer
    from distill.data.schema import stable_id
    from distill.hardware import allocator_in_use
    from distill.models import resolve_model

    cfg = _cfg()
    rows = []
    for p in _problems(a.scorer_traces):
        text, _ = _worked(p["question"])
        rows.append(
            {
                **p,
                "trace_id": stable_id("bench-trace", p["problem_id"]),
                "text": text,
                "finish_reason": "stop",
                "completion_tokens": len(text) // 3,
                "sample_index": 0,
            }
        )
    with tempfile.TemporaryDirectory() as store:
        scorer = TraceScorer(cfg.scorer, store, None, cfg.train.supervision, resolve_model(cfg.train.student))
        batches = [pa.Table.from_pylist(rows[i : i + 8]) for i in range(0, len(rows), 8)]
        scorer(batches[0])  # warm-up
        t0 = time.perf_counter()
        n = 0
        for b in batches[1:]:
            scorer(b)
            n += b.num_rows
        wall = time.perf_counter() - t0
    return {"traces": n, "wall_s": round(wall, 2), "traces_per_s": round(n / wall, 1), "allocator": allocator_in_use()}


def _eval_requests(a):
    from distill.eval.suite import build_requests

    cfg = _cfg()
    probs = _problems(a.eval_requests)
    return cfg, build_requests({"problems": {"in_distribution": probs}}, cfg.eval, cfg.prompt, ["in_distribution"])


def arm_eval_engine(a) -> dict:
    from distill.models import resolve_model
    from distill.pipelines.evaluate import EvalEngine, evaluator_options

    cfg, reqs = _eval_requests(a)
    opts = {**evaluator_options(cfg.eval, cfg.seed), "cpu_threads_bind": a.cores}
    path = resolve_model(cfg.train.student)
    eng = EvalEngine(opts)
    beside = None
    try:
        eng.evaluate_dir(path, reqs)  # the engine start (history()[0])
        again = eng.evaluate_dir(path, reqs)  # an in-place swap (the same weights: the cost is the swap's)
        if getattr(a, "beside_dir", None):  # eval_beside: the same again once the student trains on the other core
            d = Path(a.beside_dir)
            (d / "eval-alone-done").touch()
            _wait_for(d / "go")
            t0 = time.time()
            beside = [eng.evaluate_dir(path, reqs) for _ in range(2)]  # twice: a window of several steps
            beside = {
                "wall_s": sum(b["wall_s"] for b in beside),
                "tokens": sum(b["tokens"] for b in beside),
                "window": [t0, time.time()],
            }
    finally:
        eng.close()
    h = eng.history()
    out = {
        "start_s": h[0]["load_s"],
        "reload_s": h[1]["load_s"],
        "tokens": again["tokens"],
        "gen_s": again["wall_s"],
        "tok_s": round(again["tokens"] / max(again["wall_s"], 1e-9), 2),
    }
    if beside is not None:
        out.update(
            beside_gen_s=beside["wall_s"],
            beside_tok_s=round(beside["tokens"] / max(beside["wall_s"], 1e-9), 2),
            beside_window=beside["window"],
        )
    return out


ARM_FNS = {
    "roofline": arm_roofline,
    "teacher_pipeline": arm_teacher_pipeline,
    "teacher_bare": arm_teacher_bare,
    "teacher_hf": arm_teacher_hf,
    "train_padded": arm_train_padded,
    "train_grouped": arm_train_grouped,
    "train_packed": arm_train_packed,
    "scorer": arm_scorer,
    "scorer_system": arm_scorer,  # started without the allocator's LD_PRELOAD (_spawn)
    "eval_engine": arm_eval_engine,
}


# ---------------------------------------------------------------- the driver


# The working dir of every arm's process: the directory above pipelines/ (a source tree's root).
ARM_CWD = Path(__file__).resolve().parents[1]


def _pinned(cores: str, module: str, *args: str) -> list[str]:
    """`python -m module args`, pinned with taskset to `cores`."""
    return ["taskset", "-c", cores, sys.executable, "-m", module, *args]


def _spawn(arm: str, cores: str, a, out: Path, *extra: str) -> subprocess.Popen:
    cmd = _pinned(
        cores, "distill.pipelines.bench", "--arm", arm, "--cores", cores, "--out", str(out), *a.passthrough, *extra
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


def arm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--prompts", type=int, default=16, help="teacher arms: prompts (quickstart problems)")
    p.add_argument("--gen-tokens", type=int, default=48, help="teacher arms: tokens generated per prompt")
    p.add_argument(
        "--train-rows", type=int, default=48, help="training arms: examples (6 steps of 8, the first unmeasured)"
    )
    p.add_argument("--scorer-traces", type=int, default=400, help="scorer arm: traces")
    p.add_argument("--eval-requests", type=int, default=24, help="eval arms: requests")
    p.add_argument("--teacher-all-cores", action="store_true", help="teacher arms on all --cores, not one")
    p.add_argument("--overlap-recipe", default="smoke", help="overlap arms: the recipe run (name or YAML path)")
    p.add_argument("--overlap-problems", type=int, default=12, help="overlap arms: its sources.0.size")
    p.add_argument("--overlap-repeats", type=int, default=1, help="overlap arms: runs of each (whole pipeline runs)")
    return p


def arm_args(ns: argparse.Namespace) -> list[str]:
    """The arm options of a parsed namespace (from a parser with `arm_parser` as parent), as argv for
    every arm's process."""
    out = []
    for act in arm_parser()._actions:
        v = getattr(ns, act.dest)
        if isinstance(act, argparse._StoreTrueAction):
            out += [act.option_strings[0]] if v else []
        else:
            out += [act.option_strings[0], str(v)]
    return out


if __name__ == "__main__":  # one arm, in this (fresh, pinned) process
    p = argparse.ArgumentParser(parents=[arm_parser()])
    p.add_argument("--arm", required=True, choices=sorted(ARM_FNS))
    p.add_argument("--cores", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--beside-dir", default=None, help="eval_beside's marker files (set by the driver)")
    args = p.parse_args()
    Path(args.out).write_text(json.dumps(ARM_FNS[args.arm](args)))
