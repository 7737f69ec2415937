"""`distill sweep`: which recipe, which supervision? Arms trained on the same traces, compared paired.

1. traces, once: teacher -> scorer (anatomy + variants) into the trace store, or reuse a run's store
2. one student per arm and seed (an arm: a supervision variant, or any set of `train` fields), trained
   in parallel Ray Tune trials from the same store
3. every student (and the untrained one) answers the same validation problems (eval.validation:
   training-distribution problems kept for tuning; the test splits are never used to choose)
4. per arm: accuracy (mean over seeds) with a bootstrap interval over problems, and a paired
   comparison with the best arm; the frontier (accuracy vs supervision tokens) -> frontier.png,
   report.md, summary.json
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from distill.config import PromptConfig, RunConfig, TrainConfig
from distill.data.sources import load_problems
from distill.data.store import TraceStore
from distill.eval.stats import bootstrap, paired_diff
from distill.metrics import RunMetrics, provenance, write_json
from distill.models import resolve_model


def main(cfg: RunConfig, from_store: str | None = None) -> dict:
    from ray.util.queue import Queue

    from distill.cluster.session import ray_session
    from distill.pipelines.stages import EventPump, generation_stream
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

    with ray_session(cfg.ray, run_dir / "logs"):
        # 1. Traces, generated once (or reused).
        if store_root is None:
            loaded = load_problems(cfg.sources)
            store.append_quarantine(loaded.quarantined)
            teacher_path = resolve_model(cfg.teacher.model)
            events = Queue(actor_options={"num_cpus": 0})
            stream = generation_stream(cfg, loaded.problems, teacher_path, str(store.root), events, student_path)
            with EventPump(events, metrics, len(loaded.problems), cfg.teacher.samples):
                for _ in stream.iter_batches(batch_size=None):
                    pass
            held_out = validation_problems(cfg, store)  # re-check against what was generated
        t_gen = time.time() - t_start
        # 2. One student per arm and seed.
        trials = train_students(cfg, arms, str(store.root), student_path, run_dir)
        t_train = time.time() - t_start - t_gen
        # 3. Every student and the untrained one on the same validation problems.
        models = {"untrained": student_path, **{name: t["checkpoint"] for name, t in trials.items()}}
        evals = evaluate_models(cfg, models, held_out["problems"])
        t_eval = time.time() - t_start - t_gen - t_train

    # 4. Arms compared, and the frontier.
    rows = arm_rows(cfg, arms, store, trials, evals)
    wall = time.time() - t_start
    plot_frontier(rows, evals["untrained"]["accuracy"], run_dir / "frontier.png")
    traces, accepted = store.traces(), store.traces(accepted_only=True)
    summary = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "wall_s": round(wall, 1),
        "trace_store": str(store.root),
        "phases_s": {"generate": round(t_gen, 1), "train": round(t_train, 1), "evaluate": round(t_eval, 1)},
        "traces": traces.num_rows,
        "accepted": accepted.num_rows,
        "seeds": cfg.sweep.seeds,
        "wrong_intermediate_share": round(_share(traces.column("wrong_intermediate").to_pylist()), 4),
        "wrong_intermediate_share_accepted": round(_share(accepted.column("wrong_intermediate").to_pylist()), 4),
        "validation": {k: v for k, v in held_out.items() if k != "problems"},
        "baseline_accuracy": evals["untrained"]["accuracy"],
        "arms": rows,
        "best": rows[0]["arm"] if rows else None,
        "provenance": provenance(),
    }
    write_json(run_dir / "summary.json", summary)
    (run_dir / "report.md").write_text(report_md(summary))
    (run_dir / "eval").mkdir(exist_ok=True)
    for name, ev in evals.items():
        (run_dir / "eval" / f"{name}.jsonl").write_text("\n".join(json.dumps(p) for p in ev["predictions"]) + "\n")
    metrics.close()
    print(report_md(summary))
    return summary


def _share(flags: list) -> float:
    return sum(bool(f) for f in flags) / len(flags) if flags else 0.0


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

    from distill.actors.student import StudentStep, store_epoch_batches, store_training_rows
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


def _correct_by_problem(preds: list[dict]) -> dict[str, float]:
    return {p["problem_id"]: float(p["correct"]) for p in preds}


def arm_rows(cfg: RunConfig, arms: dict, store: TraceStore, trials: dict, evals: dict) -> list[dict]:
    """One row per arm, best first: mean accuracy over seeds with a bootstrap interval over problems,
    and the paired difference from the best arm (and from the untrained student)."""
    from distill.actors.student import store_training_rows

    ids = [p["problem_id"] for p in evals["untrained"]["predictions"]]
    per_arm: dict[str, list[float]] = {}
    seed_accs: dict[str, list[float]] = {}
    for name, t in trials.items():
        by = _correct_by_problem(evals[name]["predictions"])
        seed_accs.setdefault(t["arm"], []).append(evals[name]["accuracy"])
        acc = per_arm.setdefault(t["arm"], [0.0] * len(ids))
        for i, pid in enumerate(ids):
            acc[i] += by[pid] / cfg.sweep.seeds  # the arm's per-problem accuracy, averaged over seeds
    untrained = [_correct_by_problem(evals["untrained"]["predictions"])[pid] for pid in ids]
    mean = {a: sum(v) / len(v) for a, v in per_arm.items()}
    best = max(mean, key=mean.get)
    rows = []
    for arm, v in per_arm.items():
        train = {**cfg.train.model_dump(), **arms[arm]}
        sup_rows = store_training_rows(str(store.root), train["supervision"])
        toks = [r["student_tokens"] or 0 for r in sup_rows]
        row = {
            "arm": arm,
            "overrides": arms[arm],
            "accuracy": round(mean[arm], 4),
            "ci": _mean_ci(v),
            "seed_accuracies": [round(x, 4) for x in seed_accs[arm]],
            "vs_best": _paired(v, per_arm[best], cfg.sweep.seeds),
            "vs_untrained": _paired(v, untrained, cfg.sweep.seeds),
            "examples": len(sup_rows),
            "mean_supervision_tokens": round(sum(toks) / len(toks), 1) if toks else 0.0,
            "mean_generated_tokens": round(
                sum(evals[n]["mean_tokens"] for n, t in trials.items() if t["arm"] == arm) / cfg.sweep.seeds, 1
            ),
            "train_steps": next(t["steps"] for t in trials.values() if t["arm"] == arm),
            "final_loss": [t["final_loss"] for t in trials.values() if t["arm"] == arm],
        }
        rows.append(row)
    return sorted(rows, key=lambda r: -r["accuracy"])


def _mean_ci(v: list[float]) -> list[float] | None:
    ci = bootstrap(lambda idx: sum(v[i] for i in idx) / len(idx), len(v))
    return [round(x, 4) for x in ci] if ci else None


def _paired(a: list[float], b: list[float], seeds: int) -> dict:
    """a - b on the same problems: Newcombe + McNemar with one seed (0/1 outcomes), else a bootstrap
    interval of the mean per-problem difference (seed-averaged accuracies)."""
    if seeds == 1:
        d = paired_diff([x > 0.5 for x in a], [x > 0.5 for x in b])
        return {
            "diff": round(d["diff"], 4),
            "ci": [round(x, 4) for x in d["ci"]],
            "p_mcnemar": round(d["p_mcnemar"], 4),
        }
    diffs = [x - y for x, y in zip(a, b)]
    ci = bootstrap(
        lambda idx: sum(diffs[i] for i in idx) / len(idx), len(diffs), seed=random.Random(1).randrange(10**6)
    )
    return {"diff": round(sum(diffs) / len(diffs), 4), "ci": [round(x, 4) for x in ci] if ci else None}


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


def _ci(x) -> str:
    return f"[{x[0]:.3f}, {x[1]:.3f}]" if x else "[–]"


def report_md(s: dict) -> str:
    v = s["validation"]
    lines = [
        f"# Sweep {s['run_id']}",
        "",
        f"Traces: {s['traces']} ({s['accepted']} accepted); wrong intermediate step: "
        f"{s['wrong_intermediate_share']:.1%} of all traces, {s['wrong_intermediate_share_accepted']:.1%} "
        f"of accepted. Validation problems (training tasks, never a test split): {v['n']} "
        f"({v['dropped_overlap']} dropped for overlapping training or test problems). Untrained student: "
        f"{s['baseline_accuracy']:.3f}. {s['seeds']} seed(s) per arm. Wall {s['wall_s']:.0f} s.",
        "",
        "| arm | accuracy [95% CI] | vs best (paired) | vs untrained (paired) | seeds | examples | "
        "mean supervision tokens | mean generated tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["arms"]:
        vb, vu = r["vs_best"], r["vs_untrained"]
        lines.append(
            f"| {r['arm']} | {r['accuracy']:.3f} {_ci(r['ci'])} | {vb['diff']:+.3f} {_ci(vb['ci'])} | "
            f"{vu['diff']:+.3f} {_ci(vu['ci'])} | {', '.join(f'{x:.3f}' for x in r['seed_accuracies'])} | "
            f"{r['examples']} | {r['mean_supervision_tokens']} | {r['mean_generated_tokens']} |"
        )
    lines += ["", "![frontier](frontier.png)", ""]
    return "\n".join(lines)
