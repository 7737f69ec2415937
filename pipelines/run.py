"""`distill run`: the whole streaming pipeline, top to bottom.

  problems ─► teacher actors (vLLM) ─► scorer actors ─┬─► trace store (Parquet)
                                                      └─► Ray Train workers (student SFT) ─► HF checkpoint

Generation, scoring and training run at the same time: the trainer pulls accepted traces from the live
stream in epoch 1, and reads the trace store in later epochs.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from distill.config import ConfigError, RunConfig
from distill.metrics import RunMetrics, provenance, write_json
from distill.models import resolve_model
from distill.rundir import config_yaml, new_run_dir
from distill.sources import load_problems
from distill.store import TraceStore


def main(cfg: RunConfig, resume_dir: Path | None = None) -> dict:
    """Run a recipe; with `resume_dir`, finish that run instead (the trace store is the ledger:
    committed traces are replayed, not generated again; training resumes from its last checkpoint)."""
    # 1. Set up: run dir, resolved config, models, problems, the held-out eval suite.
    teacher_path = resolve_model(cfg.teacher.model)  # a bad model path fails before any run dir exists
    student_path = resolve_model(cfg.train.student)
    check_output_dir(cfg)
    if resume_dir is None:
        run_id, run_dir = new_run_dir(cfg)
        (run_dir / "config.yaml").write_text(config_yaml(cfg))
    else:
        run_dir = Path(resume_dir).resolve()
        run_id = run_dir.name
    t_start = time.time()
    print(f"[distill] {'resuming' if resume_dir else 'run'} {run_id} -> {run_dir}")
    mirror = None
    if cfg.storage.uri:
        from distill.mirror import Mirror

        try:
            mirror = Mirror(cfg.storage.uri, run_dir, run_id, cfg.storage.sync_every_s).start()
        except ImportError as e:  # e.g. s3:// without s3fs installed
            raise ConfigError(f"storage.uri: {e}") from None
        print(f"[distill] metrics mirrored to {mirror.url}")
    try:
        return _pipeline(cfg, run_id, run_dir, t_start, teacher_path, student_path, resume_dir, mirror)
    finally:
        if mirror is not None:  # also after a failure: the metrics so far reach shared storage
            print(f"[distill] metrics mirror: {mirror.close()} file(s) in the final pass -> {mirror.url}")


def check_output_dir(cfg: RunConfig) -> None:
    """A relative output_dir under `ray job submit` would land in the job's temporary copy of the
    working dir, on whichever node runs the driver: refuse it (exit 2) before anything is written."""
    import os

    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ and not Path(cfg.output_dir).is_absolute():
        raise ConfigError(
            f"output_dir: {cfg.output_dir!r} is relative, and this is a Ray job: its working dir "
            "is a temporary copy. Use an absolute path on storage every node shares "
            "(--set output_dir=/mnt/shared/runs), and storage.uri for metrics."
        )


def _pipeline(
    cfg: RunConfig, run_id: str, run_dir: Path, t_start: float, teacher_path, student_path, resume_dir, mirror
) -> dict:
    from ray.util.queue import Queue

    from cluster.planner import PlanError, ensure_fits, grown_nodes, node_view, observed_placement
    from cluster.session import alive_nodes, autoscaler_config, ray_session, unshared_nodes
    from distill.evalsuite import build_requests, load_suite
    from pipelines.evaluate import (
        EvalRunner,
        baseline_requests,
        close_engine,
        eval_engine,
        eval_summary,
        in_loop_curve,
        teacher_from_store,
        teacher_generation_mismatch,
        write_predictions,
    )
    from pipelines.stages import EventPump, generation_stream, student_trainer

    store = TraceStore(run_dir / "store")
    loaded = load_problems(cfg.sources)
    store.append_quarantine(loaded.quarantined)
    print(f"[distill] {len(loaded.problems)} problems, {len(loaded.quarantined)} quarantined at the source")
    if not loaded.problems:
        raise SystemExit("no valid problems: see the quarantine table in " + str(store.quarantine_dir))
    suite, requests, in_loop_file = None, [], None
    if cfg.eval.has_suite():
        suite = load_suite(cfg.eval, {p["problem_id"] for p in loaded.problems})
        requests = build_requests(suite, cfg.eval, cfg.prompt)
        print(
            "[distill] eval suite: "
            + ", ".join(
                f"{k} {v['n']} (dropped {v['dropped_overlap']} seen in training)" for k, v in suite["checks"].items()
            )
            + f"; {len(requests)} requests per model"
        )
        if cfg.eval.in_loop:
            in_loop_file = run_dir / "eval" / "in_loop_requests.json"
            in_loop_file.parent.mkdir(parents=True, exist_ok=True)
            in_loop_file.write_text(json.dumps(build_requests(suite, cfg.eval, cfg.prompt, cfg.eval.in_loop_wanted())))
    baselines = {b: teacher_path if b == "teacher" else student_path for b in cfg.eval.baselines}
    baseline_reqs = baseline_requests(cfg, suite) if suite else {}
    teacher_mismatch = teacher_generation_mismatch(cfg)

    # 2. Stream: teacher -> scorer -> trainer, all at once on one Ray cluster. Baselines are evaluated
    #    as soon as the teacher is done; checkpoints in-loop by Ray Train; evaluation never blocks training.
    metrics = RunMetrics(run_dir, t_start)
    results, eval_errors, sources, engine_log = {}, {}, {}, []
    student_dir = run_dir / "student"
    with ray_session(cfg.ray, run_dir / "logs") as ray:
        nodes = alive_nodes(ray)
        # every stage runs at once: the cluster must hold them all, now or grown by its autoscaler
        waiting = ensure_fits(cfg, nodes, grown_nodes(autoscaler_config(ray), nodes))
        if waiting:
            print(
                f"[distill] the plan fits only once the autoscaler adds nodes: {', '.join(waiting)} "
                "wait(s) for scale-up (see `ray status`)",
                flush=True,
            )
        if len(nodes) > 1 and (blind := unshared_nodes(ray, run_dir, nodes)):
            raise PlanError(
                f"output_dir {str(run_dir.parent.absolute())!r} must be one shared filesystem: a file "
                "the driver wrote there was checked from every node -- "
                + "; ".join(f"node {nid[:12]}: {why}" for nid, why in blind.items())
                + ". Mount shared storage (EFS, NFS) at the same absolute path on every node and set "
                "output_dir to it"
            )
        events = Queue(actor_options={"num_cpus": 0})
        sequential = cfg.stages == "sequential"
        engine = runner = None

        def start_eval() -> None:
            # one evaluator engine for the student's family (untrained, in-loop checkpoints, final): started once
            nonlocal engine, runner
            engine = eval_engine(cfg.eval, cfg.seed, cfg.train.trust_remote_code)
            runner = EvalRunner(
                cfg.eval, cfg.seed, events, cfg.train.trust_remote_code, use_cache=cfg.eval.cache, engine=engine
            )

        def start_untrained() -> None:
            if baseline_reqs.get("untrained"):
                runner.submit(
                    "untrained", str(student_path), baseline_reqs["untrained"], cacheable=True, on_engine=True
                )

        def start_baselines() -> None:
            start_untrained()  # no-op when already started
            for name, path in baselines.items():
                if name != "untrained" and baseline_reqs.get(name):
                    # streamed, generation is over: the teacher's own cores are free for its evaluation
                    # (then it runs beside the student engine's evaluations, not after them)
                    bind = None if sequential else cfg.teacher.cpu_threads_bind
                    runner.submit(
                        name,
                        str(path),
                        baseline_reqs[name],
                        cacheable=True,
                        bind=bind,
                        trust_remote_code=cfg.teacher.trust_remote_code if name == "teacher" else None,
                    )

        if suite and not sequential:
            start_eval()  # the engine actor only: its vLLM engine starts with its first evaluation
        stream = generation_stream(cfg, loaded.problems, teacher_path, str(store.root), events, student_path)
        # The untrained student is evaluated once the teacher's first batch is out: the trainer has little
        # to do until traces arrive, and the two engines do not start at once (measured on 2 cores: an
        # evaluator engine starting at t=0 put the teacher's first batch at 98 s instead of ~50 s).
        with EventPump(
            events,
            metrics,
            len(loaded.problems),
            cfg.teacher.samples,
            on_teacher_ready=start_untrained if runner else None,
            on_teacher_done=start_baselines if runner else None,
        ):
            if sequential:  # the stages one after another: generation and scoring end here, their actors go
                stream = stream.materialize()
            # sequential: no evaluation during training (in-loop evaluations would overlap it)
            trainer = student_trainer(
                cfg,
                stream,
                student_path,
                str(store.root),
                run_dir,
                events,
                str(in_loop_file) if in_loop_file and not sequential else None,
                expected_traces=len(loaded.problems) * cfg.teacher.samples,
                engine=engine,
            )
            result = trainer.fit()
            t_trained = time.time()
            checkpoint = result.checkpoint
            final_step = int((result.metrics or {}).get("step") or 0)  # the student evaluated is this step's
            if checkpoint is not None:
                # 3. The student as a plain HF directory (transformers and vLLM load it as it is).
                from actors.student import TRAINING_STATE_FILES

                with checkpoint.as_directory() as d:
                    shutil.rmtree(student_dir, ignore_errors=True)  # a resumed run replaces it
                    shutil.copytree(d, student_dir, ignore=shutil.ignore_patterns(*TRAINING_STATE_FILES))
            if suite and sequential:  # evaluation last: its engine starts now
                start_eval()
            if runner:
                start_baselines()  # no-op when already started
                if checkpoint is not None:
                    runner.submit("student", str(student_dir), requests, step=final_step, on_engine=True)
                results = runner.wait()
                engine_log = close_engine(engine)
                eval_errors = runner.errors
                sources = dict(runner.cache_status)
                if "teacher" in baselines and teacher_mismatch is None:
                    # its in_distribution accuracy from the traces it generated (greedy) on the training problems
                    gen = teacher_from_store(store.root, {p["problem_id"] for p in loaded.problems})
                    base = results.get("teacher") or {"predictions": [], "wall_s": 0.0, "skipped_too_long": 0}
                    results["teacher"] = {**base, "predictions": base["predictions"] + gen}
                    sources["teacher"] = (
                        f"in_distribution from its generation ({len(gen)} training problems, "
                        f"greedy, its own prompt); other splits: {sources.get('teacher', 'none')}"
                    )
        nodes = ray.nodes()  # dead ones too: a stage may have run on a node that has gone since
    wall_s = time.time() - t_start

    # 4. Finish: summary, eval object, timeline, TensorBoard hparams, report.
    summary = metrics.summary(
        wall_s,
        cores_of=cores_of(cfg),
        machine_cores=machine_cores(cfg),
        extra={
            "run_id": run_id,
            "run_dir": str(run_dir),
            "problems": len(loaded.problems),
            "quarantined": {
                "source": len(loaded.quarantined),
                "teacher": int(metrics.counters["teacher/quarantined"]),
                "scorer": int(metrics.counters["scorer/quarantined"]),
            },
            "resumed": resume_dir is not None,
            "replayed_traces": int(metrics.counters["teacher/replayed"]),
            "trace_store": str(store.root),
            "stored_traces": store.traces().num_rows,
            "stored_trace_rows": store.physical_trace_rows(),
            "quarantine_rows": store.quarantine().num_rows,
            # rows of scorer blocks killed before their commit and not rewritten since: 0 after a finished run
            "orphan_rows": store.orphans(),
            "student_checkpoint": str(student_dir) if checkpoint is not None else None,
            "eval_after_training_s": round(time.time() - t_trained, 1),
            "placement": observed_placement(metrics.events, nodes),
            "cluster_nodes": [node_view(n) for n in nodes if n.get("Alive")],
            "metrics_uri": mirror.url if mirror else None,
            "provenance": provenance(),
        },
    )
    if suite is not None:
        models = {**baselines, **({"student": student_dir} if checkpoint is not None else {})}
        summary["eval"] = eval_summary(suite, results, models, eval_errors, sources)
        curve = in_loop_curve(run_dir / "eval" / "in_loop")
        if "student" in summary["eval"]["splits"].get("in_distribution", {}):
            final = {
                f"{k}_accuracy": v["student"]["accuracy"]
                for k, v in summary["eval"]["splits"].items()
                if k in cfg.eval.in_loop_splits and "student" in v
            }
            curve.append({"step": final_step, "epoch": cfg.train.epochs, "final": True, **final})
        summary["eval"]["in_loop"] = curve
        # how each student-family evaluation got its engine: one start, then weights swapped in place
        summary["eval"]["engine"] = engine_log
        write_predictions(run_dir, results)
    metrics.plot_timeline(run_dir / "timeline.png", wall_s)
    _hparams(metrics, cfg, summary)
    metrics.close()
    write_json(run_dir / "summary.json", summary)
    if checkpoint is not None:
        from distill.modelcard import write_model_card

        write_model_card(student_dir, cfg, summary)
    if suite is not None:
        from distill.report import write_report

        write_report(run_dir, summary, {m: r["predictions"] for m, r in results.items()}, cfg.eval.samples_in_report)
    _print_summary(summary)
    return summary


def machine_cores(cfg: RunConfig) -> int | None:
    """Cores the run held: this machine's (embedded Ray); None on a cluster (not one machine's)."""
    import os

    return None if (cfg.ray.address or os.environ.get("RAY_ADDRESS")) else len(os.sched_getaffinity(0))


def cores_of(cfg: RunConfig):
    """event -> the cores its actor computed on: the teacher's and evaluator's engine bindings, the
    trainer's torch threads (per epoch), one for a scorer."""
    from distill.hardware import bind_cores

    machine = machine_cores(cfg) or 1
    tr = cfg.train

    def f(e: dict) -> float:
        stage = e.get("stage")
        if e.get("cores"):  # what the actor itself bound (a teacher replica's own binding)
            return min(float(e["cores"]), machine)
        if stage == "teacher":
            return bind_cores(cfg.teacher.cpu_threads_bind, machine)
        if stage == "eval":
            return bind_cores(cfg.eval.cpu_threads_bind, machine)
        if stage == "train":
            later = (e.get("epoch") or 1) > 1 and tr.torch_threads_later
            return min(tr.torch_threads_later if later else tr.torch_threads, machine)
        return 1.0

    return f


def _hparams(metrics: RunMetrics, cfg: RunConfig, summary: dict) -> None:
    flat = {
        f"{k}.{kk}": (vv if isinstance(vv, (int, float, str, bool)) else str(vv))
        for k, v in cfg.model_dump(mode="json").items()
        if isinstance(v, dict)
        for kk, vv in v.items()
    }
    st = summary["stages"]
    results = {
        "hparam/accept_rate": st["scorer"]["accept_rate"],
        "hparam/final_loss": st["train"]["final_loss"] or float("nan"),
        "hparam/wall_s": summary["wall_s"],
    }
    for split, by_model in summary.get("eval", {}).get("splits", {}).items():
        if "student" in by_model:
            results[f"hparam/{split}_accuracy"] = by_model["student"]["accuracy"]
    metrics.hparams(flat, results)


def _print_summary(s: dict) -> None:
    st = s["stages"]
    print(f"\n[distill] done in {s['wall_s']:.0f}s  run dir: {s['run_dir']}")
    print(
        f"  teacher: {st['teacher']['problems']} problems, {st['teacher']['tokens_out']} tokens, "
        f"{st['teacher']['tokens_per_s']} tok/s (busy {st['teacher']['busy_s']}s, ended at {st['teacher']['end']}s)"
    )
    print(
        f"  scorer : {st['scorer']['accepted']} accepted / {st['scorer']['rejected']} rejected "
        f"(accept rate {st['scorer']['accept_rate']}), {st['scorer']['quarantined']} quarantined"
    )
    print(
        f"  train  : {st['train']['steps']} steps, {st['train']['tokens']} tokens, "
        f"{st['train']['tokens_per_s']} tok/s, first step at {st['train']['first_step_at']}s, "
        f"final loss {st['train']['final_loss']}"
    )
    print(
        f"  overlap ratio wall/(sum of busy) = {s['overlap_ratio']}   core utilisation = "
        f"{s.get('core_utilisation')} (core-seconds computed / wall x {s.get('machine_cores')} cores)   "
        f"student: {s['student_checkpoint']}"
    )
    if len(s.get("cluster_nodes", [])) > 1:  # on a cluster: where each stage ran
        for stage, where in s["placement"].items():
            print(
                f"  {stage:<8}ran on "
                + "; ".join(
                    " ".join(
                        [
                            p["node_id"][:8],
                            *(str(d) for d in (p["labels"], p["custom_resources"]) if d),
                            f"({p['events']} events)",
                        ]
                    )
                    for p in where
                )
            )
    ev = s.get("eval")
    if ev:
        models = [m for m in ("teacher", "untrained", "student") if m in ev["models"]]
        print("  eval accuracy [95% CI] n   " + "".join(f"{m:>30}" for m in models))
        for split, by_model in ev["splits"].items():
            # each cell carries its own n: the teacher's in_distribution may come from its generation (other problems)
            cells = [
                f"{by_model[m]['accuracy']:.3f} [{by_model[m]['ci'][0]:.2f},{by_model[m]['ci'][1]:.2f}] n={by_model[m]['n']}"
                if m in by_model
                else "-"
                for m in models
            ]
            print(f"    {split:<25}" + "".join(f"{c:>30}" for c in cells))
        for v in ev.get("comparisons", {}).get("verdicts", []):
            print(f"  {v}")
        for m, src in ev.get("sources", {}).items():
            print(f"  {m} answers: {src}")
        print(f"  report: {s['run_dir']}/report.html")
