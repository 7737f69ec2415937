"""`distill bench`'s arms: each runs in a fresh process pinned to its cores by the driver
(pipelines/bench.py), as `python -m distill.pipelines.bench_arms --arm NAME --cores C --out F`, and writes its
measures to F as JSON. The inputs every arm shares (the quickstart recipe's problems, worked traces,
training rows) are built here, so the arms compared side by side see the same ones.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

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
        teacher.own.close()
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
