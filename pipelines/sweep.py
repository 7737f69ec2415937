"""`distill sweep`: which supervision granularity transfers? One student per variant, same traces.

  1. traces, once: teacher -> scorer (anatomy + variants) into the trace store, or reuse a run's store
  2. one student per variant, trained in parallel Ray Tune trials from the same store
  3. every student (and the untrained one) evaluated on held-out problems by evaluator actors
  4. the frontier: accuracy vs supervision tokens per example -> frontier.png, report.md, summary.json
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from distill.config import RunConfig
from distill.metrics import RunMetrics, write_json
from distill.models import resolve_model
from distill.sources import load_problems
from distill.store import TraceStore


def main(cfg: RunConfig, from_store: str | None = None) -> dict:
    from ray.util.queue import Queue

    from cluster.session import ray_session
    from pipelines.run import _yaml, new_run_dir
    from pipelines.stages import EventPump, generation_stream

    run_id, run_dir = new_run_dir(cfg, prefix="sweep")
    t_start = time.time()
    (run_dir / "config.yaml").write_text(_yaml(cfg))
    print(f"[distill] sweep {run_id} -> {run_dir}  variants: {', '.join(cfg.sweep.variants)}")
    student_path = resolve_model(cfg.train.student)
    store = TraceStore(from_store or run_dir / "store")
    held_out = held_out_problems(cfg, store)
    metrics = RunMetrics(run_dir, t_start)

    with ray_session(cfg.ray):
        # 1. Traces, generated once (or reused).
        if from_store is None:
            loaded = load_problems(cfg.sources)
            store.append_quarantine(loaded.quarantined)
            teacher_path = resolve_model(cfg.teacher.model)
            events = Queue(actor_options={"num_cpus": 0})
            stream = generation_stream(cfg, loaded.problems, teacher_path, str(store.root), events, student_path)
            with EventPump(events, metrics, len(loaded.problems), cfg.teacher.samples):
                for _ in stream.iter_batches(batch_size=None):
                    pass
            held_out = held_out_problems(cfg, store)  # re-check against what was generated
        t_gen = time.time() - t_start
        # 2. One student per variant.
        trials = train_students(cfg, str(store.root), student_path, run_dir)
        t_train = time.time() - t_start - t_gen
        # 3. Evaluate every student and the untrained baseline on the same held-out problems.
        models = {"untrained": student_path, **{v: t["checkpoint"] for v, t in trials.items()}}
        evals = evaluate_models(cfg, models, held_out["problems"])
        t_eval = time.time() - t_start - t_gen - t_train

    # 4. Frontier.
    rows = frontier_rows(store, trials, evals)
    wall = time.time() - t_start
    plot_frontier(rows, evals["untrained"]["accuracy"], run_dir / "frontier.png")
    traces = store.traces()
    accepted = store.traces(accepted_only=True)
    summary = {"run_id": run_id, "run_dir": str(run_dir), "wall_s": round(wall, 1),
               "phases_s": {"generate": round(t_gen, 1), "train": round(t_train, 1), "evaluate": round(t_eval, 1)},
               "traces": traces.num_rows, "accepted": accepted.num_rows,
               "wrong_intermediate_share": round(_share(traces.column("wrong_intermediate").to_pylist()), 4),
               "wrong_intermediate_share_accepted": round(_share(accepted.column("wrong_intermediate").to_pylist()), 4),
               "held_out": {k: v for k, v in held_out.items() if k != "problems"},
               "baseline_accuracy": evals["untrained"]["accuracy"], "frontier": rows}
    write_json(run_dir / "summary.json", summary)
    (run_dir / "report.md").write_text(report_md(summary))
    for name, ev in evals.items():
        (run_dir / "eval").mkdir(exist_ok=True)
        (run_dir / "eval" / f"{name}.jsonl").write_text("\n".join(json.dumps(p) for p in ev["predictions"]) + "\n")
    metrics.close()
    print(report_md(summary))
    return summary


def _share(flags: list) -> float:
    return sum(bool(f) for f in flags) / len(flags) if flags else 0.0


def held_out_problems(cfg: RunConfig, store: TraceStore) -> dict:
    """Eval problems minus any problem the student could have trained on (checked by problem_id)."""
    if not cfg.eval.in_distribution:
        raise SystemExit("distill sweep needs eval.in_distribution (held-out problems) in the recipe")
    problems = load_problems(cfg.eval.in_distribution).problems
    trained = set(store.traces().column("problem_id").to_pylist())
    kept = [p for p in problems if p["problem_id"] not in trained]
    if trained and not kept:
        raise SystemExit(f"all {len(problems)} held-out problems were also training problems (same problem_id). "
                         "reasoning-gym draws item i from seed + i: pick an eval seed further from the training seed.")
    return {"problems": kept, "n": len(kept), "dropped_overlap": len(problems) - len(kept)}


def train_variant(config: dict) -> None:
    """A Ray Tune trial: train one student on one variant, all epochs from the store."""
    import torch
    from ray import tune

    from actors.student import StudentStep, store_epoch_batches, store_training_rows
    from distill.training import optimizer_steps, steps_per_epoch

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    variant, t = config["variant"], {**config["train"], "supervision": {config["variant"]: 1.0}}
    rows = store_training_rows(config["store_root"], t["supervision"])
    if not rows:
        raise ValueError(f"variant {variant}: the trace store {config['store_root']} holds no training rows "
                         "(no accepted trace with this variant): nothing to train on")
    student = StudentStep({"train": t, "prompt": config["prompt"]}, config["student_path"])
    student.total_steps = t["epochs"] * steps_per_epoch(len(rows), 1, t["batch_size"], t["grad_accum"])
    tokens, last = 0, {}
    for epoch in range(1, t["epochs"] + 1):
        for group in optimizer_steps(store_epoch_batches(rows, epoch, t, config["seed"], 0, 1), t["grad_accum"]):
            last = student.step(group)
            tokens += last["tokens"]
            tune.report({"loss": last["loss"], "epoch": epoch, "step": student.steps, "tokens": tokens})
    out = Path(config["out_dir"]) / variant
    student.save(str(out))
    tune.report({"loss": last.get("loss", float("nan")), "epoch": t["epochs"], "step": student.steps,
                 "tokens": tokens, "examples": len(rows), "checkpoint_dir": str(out), "done": True})


def train_students(cfg: RunConfig, store_root: str, student_path: str, run_dir: Path) -> dict:
    from ray import tune

    sw = cfg.sweep
    param_space = {"variant": tune.grid_search(sw.variants), "train": cfg.train.model_dump(),
                   "prompt": cfg.prompt.model_dump(), "seed": cfg.seed, "threads": sw.threads_per_trial,
                   "store_root": store_root, "student_path": student_path, "out_dir": str(run_dir / "students")}
    tuner = tune.Tuner(
        # Trials honour train.resources (custom resources); Tune has no node-label selector per trial.
        tune.with_resources(train_variant, {"cpu": cfg.train.num_cpus_per_worker, **cfg.train.resources}),
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=sw.parallel),
        run_config=tune.RunConfig(name="sweep", storage_path=str((run_dir / "ray_tune").resolve()), verbose=1))
    results = tuner.fit()
    trials = {}
    for r in results:
        if r.error:
            raise RuntimeError(f"training variant {r.config['variant']} failed: {r.error}")
        m = r.metrics
        trials[r.config["variant"]] = {"checkpoint": m["checkpoint_dir"], "steps": m["step"], "tokens": m["tokens"],
                                       "final_loss": m["loss"], "examples": m["examples"]}
    return trials


def evaluate_models(cfg: RunConfig, models: dict[str, str], problems: list[dict]) -> dict:
    """Every model on the same held-out problems (training prompt, greedy), one after another."""
    from distill.evalmetrics import split_metrics
    from distill.evalsuite import build_requests
    from pipelines.evaluate import EvalRunner

    greedy = cfg.eval.model_copy(update={"samples": 1})  # the frontier is greedy accuracy
    requests = build_requests({"problems": {"in_distribution": problems}}, greedy, cfg.prompt, ["in_distribution"])
    runner = EvalRunner(cfg.eval, cfg.seed, trust_remote_code=cfg.train.trust_remote_code)
    for name, path in models.items():
        runner.submit(name, str(path), requests)
    results = runner.wait()
    if runner.errors:
        raise RuntimeError(f"evaluation failed: {runner.errors}")
    out = {}
    for name, r in results.items():
        out[name] = {**split_metrics([p for p in r["predictions"] if p["split"] == "in_distribution"]),
                     "predictions": r["predictions"]}
        print(f"[distill] eval {name}: accuracy {out[name]['accuracy']:.3f} on {out[name]['n']} problems")
    return out


def frontier_rows(store: TraceStore, trials: dict, evals: dict) -> list[dict]:
    import pyarrow.compute as pc

    rows = []
    for variant, t in trials.items():
        v = store.variants(variant)
        tok = v.column("student_tokens")
        ev = evals[variant]
        rows.append({"variant": variant, "examples": v.num_rows,
                     "mean_supervision_tokens": round(pc.mean(tok).as_py() or 0.0, 1),
                     "accuracy": round(ev["accuracy"], 4), "no_answer_rate": round(ev["no_answer_rate"], 4),
                     "mean_generated_tokens": round(ev["mean_tokens"], 1), "final_loss": t["final_loss"],
                     "train_steps": t["steps"]})
    return sorted(rows, key=lambda r: r["mean_supervision_tokens"])


def plot_frontier(rows: list[dict], baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs, ys = [r["mean_supervision_tokens"] for r in rows], [r["accuracy"] for r in rows]
    ax.plot(xs, ys, "o-", color="tab:blue")
    for r in rows:
        ax.annotate(r["variant"], (r["mean_supervision_tokens"], r["accuracy"]), textcoords="offset points",
                    xytext=(5, 5))
    ax.axhline(baseline, color="gray", ls="--", label=f"untrained student ({baseline:.3f})")
    ax.set_xlabel("mean supervision tokens per example (student tokenizer)")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title("Supervision granularity frontier")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_md(s: dict) -> str:
    lines = [f"# Granularity sweep {s['run_id']}", "",
             f"Traces: {s['traces']} ({s['accepted']} accepted); wrong intermediate step: "
             f"{s['wrong_intermediate_share']:.1%} of all traces, {s['wrong_intermediate_share_accepted']:.1%} "
             f"of accepted. Held-out problems: {s['held_out']['n']} "
             f"({s['held_out']['dropped_overlap']} dropped for overlapping training). "
             f"Untrained student accuracy: {s['baseline_accuracy']:.3f}. Wall {s['wall_s']:.0f} s.", "",
             "| variant | examples | mean supervision tokens | accuracy | no-answer rate | mean generated tokens |",
             "|---|---|---|---|---|---|"]
    for r in s["frontier"]:
        lines.append(f"| {r['variant']} | {r['examples']} | {r['mean_supervision_tokens']} | {r['accuracy']:.3f} "
                     f"| {r['no_answer_rate']:.3f} | {r['mean_generated_tokens']} |")
    lines += ["", "![frontier](frontier.png)", ""]
    return "\n".join(lines)
