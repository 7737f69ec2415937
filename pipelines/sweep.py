"""`distill sweep`: which recipe, which supervision? Arms trained on the same traces, compared paired.

1. traces, once: teacher -> scorer (anatomy + variants) into the trace store, or reuse a run's store
2. one student per arm and seed (an arm: a supervision variant, or any set of `train` fields), trained
   in parallel Ray Tune trials from the same store
3. every student (and the untrained one) answers the same validation problems (eval.validation:
   training-distribution problems kept for tuning; the test splits are never used to choose)
4. per arm: accuracy (mean over seeds) with a bootstrap interval over problems, and a paired
   comparison with the best arm; the frontier (accuracy vs supervision tokens) -> frontier.png,
   report.md, summary.json

On one page:

  main ─► open_sweep (run dir, arms, the store generated or reused, validation problems)   -> Sweep
       ─► generate_train_evaluate (one Ray session: steps 1-3)                            -> Trained
       ─► finish (arm rows, frontier.png, summary.json, report.md, predictions)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from distill.config import PromptConfig, RunConfig, TrainConfig
from distill.data.sources import load_problems
from distill.data.store import TraceStore
from distill.eval.arms import arm_accuracy, arm_training, report_md, share
from distill.metrics import RunMetrics, provenance, write_json
from distill.models import resolve_model


@dataclass
class Sweep:
    """Where a sweep lives and what it compares: fixed before anything is computed."""

    cfg: RunConfig
    run_id: str
    run_dir: Path
    t_start: float
    arms: dict  # arm name -> its `train` overrides
    student_path: str
    store: TraceStore
    generate: bool  # False: the traces come from --from-store
    held_out: dict  # validation_problems() before generation (re-checked after it)
    metrics: RunMetrics


@dataclass
class Trained:
    """What the Ray session produced: the validation problems used, every trial, every evaluation."""

    held_out: dict
    trials: dict
    evals: dict
    phases_s: dict


def main(cfg: RunConfig, from_store: str | None = None) -> dict:
    sweep = open_sweep(cfg, from_store)
    return finish(sweep, generate_train_evaluate(sweep))


def open_sweep(cfg: RunConfig, from_store: str | None) -> Sweep:
    """The run directory with its config.yaml, the arms, the trace store (checked when reused) and the
    validation problems: a sweep with nothing to train on or nothing to compare on fails here."""
    from distill.rundir import config_yaml, new_run_dir

    arms = cfg.sweep.arm_overrides()
    # Trials run in Ray Tune's own working directory: every path they get must be absolute.
    store_root = Path(from_store).expanduser().resolve() if from_store else None
    if store_root is not None and not TraceStore(store_root).trace_ids():
        raise SystemExit(f"--from-store {from_store}: no traces in {store_root} (expected runs/<run_id>/store)")
    held_out = validation_problems(cfg, TraceStore(store_root) if store_root else None)
    run_id, run_dir = new_run_dir(cfg, prefix="sweep")
    t_start = time.time()
    (run_dir / "config.yaml").write_text(config_yaml(cfg))
    print(f"[distill] sweep {run_id} -> {run_dir}  arms: {', '.join(arms)}  x {cfg.sweep.seeds} seed(s)")
    student_path = resolve_model(cfg.train.student)
    store = TraceStore(store_root or run_dir / "store")
    metrics = RunMetrics(run_dir, t_start)
    return Sweep(cfg, run_id, run_dir, t_start, arms, student_path, store, store_root is None, held_out, metrics)


def generate_train_evaluate(sw: Sweep) -> Trained:
    """One Ray session: traces (unless reused), one student per arm and seed, every student and the
    untrained one on the same validation problems."""
    from distill.cluster.session import ray_session

    cfg, held_out = sw.cfg, sw.held_out
    with ray_session(cfg.ray, sw.run_dir / "logs"):
        if sw.generate:
            generate_traces(sw)
            held_out = validation_problems(cfg, sw.store)  # re-check against what was generated
        t_gen = time.time() - sw.t_start
        trials = train_students(cfg, sw.arms, str(sw.store.root), sw.student_path, sw.run_dir)
        t_train = time.time() - sw.t_start - t_gen
        models = {"untrained": sw.student_path, **{name: t["checkpoint"] for name, t in trials.items()}}
        evals = evaluate_models(cfg, models, held_out["problems"])
        t_eval = time.time() - sw.t_start - t_gen - t_train
    phases = {"generate": round(t_gen, 1), "train": round(t_train, 1), "evaluate": round(t_eval, 1)}
    return Trained(held_out, trials, evals, phases)


def generate_traces(sw: Sweep) -> None:
    """Teacher -> scorer into the sweep's own store, the recipe's rejects quarantined at the source."""
    from ray.util.queue import Queue

    from distill.pipelines.stages import EventPump, generation_stream

    cfg = sw.cfg
    loaded = load_problems(cfg.sources)
    sw.store.append_quarantine(loaded.quarantined)
    teacher_path = resolve_model(cfg.teacher.model)
    events = Queue(actor_options={"num_cpus": 0})
    stream = generation_stream(cfg, loaded.problems, teacher_path, str(sw.store.root), events, sw.student_path)
    with EventPump(events, sw.metrics, len(loaded.problems), cfg.teacher.samples):
        for _ in stream.iter_batches(batch_size=None):
            pass


def finish(sw: Sweep, out: Trained) -> dict:
    """Arms compared, the frontier plotted; summary.json, report.md and every model's predictions."""
    rows = arm_rows(sw.cfg, sw.arms, sw.store, out.trials, out.evals)
    wall = time.time() - sw.t_start
    plot_frontier(rows, out.evals["untrained"]["accuracy"], sw.run_dir / "frontier.png")
    summary = sweep_summary(sw, out, rows, wall)
    write_json(sw.run_dir / "summary.json", summary)
    (sw.run_dir / "report.md").write_text(report_md(summary))
    (sw.run_dir / "eval").mkdir(exist_ok=True)
    for name, ev in out.evals.items():
        (sw.run_dir / "eval" / f"{name}.jsonl").write_text("\n".join(json.dumps(p) for p in ev["predictions"]) + "\n")
    sw.metrics.close()
    print(report_md(summary))
    return summary


def sweep_summary(sw: Sweep, out: Trained, rows: list[dict], wall: float) -> dict:
    traces, accepted = sw.store.traces(), sw.store.traces(accepted_only=True)
    return {
        "run_id": sw.run_id,
        "run_dir": str(sw.run_dir),
        "wall_s": round(wall, 1),
        "trace_store": str(sw.store.root),
        "phases_s": out.phases_s,
        "traces": traces.num_rows,
        "accepted": accepted.num_rows,
        "seeds": sw.cfg.sweep.seeds,
        "wrong_intermediate_share": round(share(traces.column("wrong_intermediate").to_pylist()), 4),
        "wrong_intermediate_share_accepted": round(share(accepted.column("wrong_intermediate").to_pylist()), 4),
        "validation": {k: v for k, v in out.held_out.items() if k != "problems"},
        "baseline_accuracy": out.evals["untrained"]["accuracy"],
        "arms": rows,
        "best": rows[0]["arm"] if rows else None,
        "provenance": provenance(),
    }


def validation_problems(cfg: RunConfig, store: TraceStore | None) -> dict:
    """eval.validation minus the recipe's training problems, the store's, and every test split's."""
    if not cfg.eval.validation:
        raise SystemExit(
            "distill sweep compares arms on eval.validation (problems of the training tasks kept for "
            "tuning): add it to the recipe. The test splits (in_distribution, ...) are never used to choose."
        )
    problems = load_problems(cfg.eval.validation).problems
    seen = {p["problem_id"] for p in load_problems(cfg.sources).problems}
    if store is not None:
        seen |= set(store.traces().column("problem_id").to_pylist())
    tests = [s for split in ("in_distribution", "related", "difficulty_shift") for s in getattr(cfg.eval, split)]
    test_ids = {p["problem_id"] for p in load_problems(tests).problems} if tests else set()
    kept = [p for p in problems if p["problem_id"] not in seen | test_ids]
    if not kept:
        raise SystemExit(
            f"all {len(problems)} validation problems are training or test problems (same problem_id). "
            "reasoning-gym draws item i from seed + i: pick a validation seed far from the others."
        )
    return {"problems": kept, "n": len(kept), "dropped_overlap": len(problems) - len(kept)}


def trial_name(arm: str, seed: int, seeds: int) -> str:
    return arm if seeds == 1 else f"{arm}#seed{seed}"


def train_arm(config: dict) -> None:
    """A Ray Tune trial: train one student (one arm, one seed), all epochs from the store."""
    import torch
    from ray import tune

    from distill.actors.student import StudentStep
    from distill.actors.train_loop import store_epoch_batches, store_training_rows
    from distill.train.schedule import optimizer_steps, steps_per_epoch

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    t = {**config["train"], **config["arms"][config["arm"]]}
    rows = store_training_rows(config["store_root"], t["supervision"])
    if not rows:
        raise ValueError(
            f"arm {config['arm']}: the trace store {config['store_root']} holds no training rows for "
            f"supervision {t['supervision']}: nothing to train on"
        )
    train = TrainConfig.model_validate(t)  # the arm's overrides on the run's train config (validated with it)
    student = StudentStep(train, PromptConfig.model_validate(config["prompt"]), config["student_path"])
    student.total_steps = t["epochs"] * steps_per_epoch(len(rows), 1, t["batch_size"], t["grad_accum"])
    tokens, last = 0, {}
    for epoch in range(1, t["epochs"] + 1):
        for group in optimizer_steps(store_epoch_batches(rows, epoch, train, config["seed"], 0, 1), t["grad_accum"]):
            last = student.step(group)
            tokens += last["tokens"]
            tune.report({"loss": last["loss"], "epoch": epoch, "step": student.steps, "tokens": tokens})
    out = Path(config["out_dir"]) / trial_name(config["arm"], config["seed"], config["seeds"])
    student.save(str(out))
    tune.report(
        {
            "loss": last.get("loss", float("nan")),
            "epoch": t["epochs"],
            "step": student.steps,
            "tokens": tokens,
            "examples": len(rows),
            "checkpoint_dir": str(out),
            "done": True,
        }
    )


def train_students(cfg: RunConfig, arms: dict, store_root: str, student_path: str, run_dir: Path) -> dict:
    from ray import tune

    sw = cfg.sweep
    seeds = [cfg.seed + i for i in range(sw.seeds)]
    param_space = {
        "arm": tune.grid_search(list(arms)),
        "seed": tune.grid_search(seeds),
        "arms": arms,
        "seeds": sw.seeds,
        "train": cfg.train.model_dump(),
        "prompt": cfg.prompt.model_dump(),
        "threads": sw.threads_per_trial,
        "store_root": str(Path(store_root).resolve()),
        "student_path": str(Path(student_path).resolve()),
        "out_dir": str((run_dir / "students").resolve()),
    }
    tuner = tune.Tuner(
        # Trials honour train.resources (custom resources); Tune has no node-label selector per trial.
        tune.with_resources(train_arm, {"cpu": cfg.train.num_cpus_per_worker, **cfg.train.resources}),
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=sw.parallel),
        run_config=tune.RunConfig(name="sweep", storage_path=str((run_dir / "ray_tune").resolve()), verbose=1),
    )
    results = tuner.fit()
    trials = {}
    for r in results:
        name = trial_name(r.config["arm"], r.config["seed"], sw.seeds)
        if r.error:
            raise RuntimeError(f"training {name} failed: {r.error}")
        m = r.metrics
        trials[name] = {
            "arm": r.config["arm"],
            "seed": r.config["seed"],
            "checkpoint": m["checkpoint_dir"],
            "steps": m["step"],
            "tokens": m["tokens"],
            "final_loss": m["loss"],
            "examples": m["examples"],
        }
    return trials


def evaluate_models(cfg: RunConfig, models: dict[str, str], problems: list[dict]) -> dict:
    """Every model on the same validation problems (the student prompt, greedy), one after another."""
    from distill.eval.metrics import split_metrics
    from distill.eval.suite import build_requests
    from distill.pipelines.evaluate import EvalRunner, close_engine, eval_engine

    greedy = cfg.eval.model_copy(update={"samples": 1})
    requests = build_requests({"problems": {"validation": problems}}, greedy, cfg.prompt, ["validation"])
    # every arm is a checkpoint of the same student: one engine, weights swapped in place for each
    engine = eval_engine(cfg.eval, cfg.seed, cfg.train.trust_remote_code)
    runner = EvalRunner(
        cfg.eval, cfg.seed, trust_remote_code=cfg.train.trust_remote_code, use_cache=cfg.eval.cache, engine=engine
    )
    for name, path in models.items():
        runner.submit(name, str(path), requests, cacheable=name == "untrained", on_engine=True)
    try:
        results = runner.wait()
    finally:
        hist = close_engine(engine)
    print("[distill] evaluation engine: " + ", ".join(f"{h['engine']} {h['load_s']:.1f}s" for h in hist))
    if runner.errors:
        raise RuntimeError(f"evaluation failed: {runner.errors}")
    out = {}
    for name, r in results.items():
        out[name] = {**split_metrics(r["predictions"]), "predictions": r["predictions"]}
        print(f"[distill] eval {name}: accuracy {out[name]['accuracy']:.3f} on {out[name]['n']} problems")
    return out


def arm_rows(cfg: RunConfig, arms: dict, store: TraceStore, trials: dict, evals: dict) -> list[dict]:
    """One row per arm, best first: mean accuracy over seeds with a bootstrap interval over problems,
    and the paired difference from the best arm (and from the untrained student); the supervision it
    trained on, and what its trials did."""
    from distill.actors.train_loop import store_training_rows

    rows = []
    for arm, acc in arm_accuracy(trials, evals, cfg.sweep.seeds).items():
        train = {**cfg.train.model_dump(), **arms[arm]}
        sup_rows = store_training_rows(str(store.root), train["supervision"])
        toks = [r["student_tokens"] or 0 for r in sup_rows]
        row = {
            "arm": arm,
            "overrides": arms[arm],
            **acc,
            "examples": len(sup_rows),
            "mean_supervision_tokens": round(sum(toks) / len(toks), 1) if toks else 0.0,
            **arm_training(trials, evals, arm, cfg.sweep.seeds),
        }
        rows.append(row)
    return sorted(rows, key=lambda r: -r["accuracy"])


def plot_frontier(rows: list[dict], baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in sorted(rows, key=lambda r: r["mean_supervision_tokens"]):
        lo, hi = r["ci"] or (r["accuracy"], r["accuracy"])
        ax.errorbar(
            r["mean_supervision_tokens"],
            r["accuracy"],
            yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]],
            fmt="o",
            capsize=4,
            color="tab:blue",
        )
        ax.annotate(r["arm"], (r["mean_supervision_tokens"], r["accuracy"]), textcoords="offset points", xytext=(5, 5))
    ax.axhline(baseline, color="gray", ls="--", label=f"untrained student ({baseline:.3f})")
    ax.set_xlabel("mean supervision tokens per example (student tokenizer)")
    ax.set_ylabel("validation accuracy (greedy, 95% interval)")
    ax.set_title("Arms on the same traces")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
