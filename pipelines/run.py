"""`distill run`: the whole streaming pipeline, top to bottom.

  problems ─► teacher actors (vLLM) ─► scorer actors ─┬─► trace store (Parquet)
                                                      └─► Ray Train workers (student SFT) ─► HF checkpoint

Generation, scoring and training run at the same time: the trainer pulls accepted traces from the live
stream in epoch 1, and reads the trace store in later epochs. On one page:

  main ─► open_run (run dir, models, metrics mirror)
       ─► prepare (problems, quarantine, the held-out eval suite)       -> Plan
       ─► stream_and_train (one Ray session: stream, train, evaluate)   -> Outcome
       ─► finish (summary.json, eval object, timeline, report)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import ConfigError, RunConfig
from distill.data.sources import load_problems
from distill.data.store import TraceStore
from distill.metrics import RunMetrics, provenance, write_json
from distill.models import resolve_model
from distill.pipelines.evaluate import Evaluated
from distill.pipelines.stages import export_student
from distill.rundir import config_yaml, new_run_dir
from distill.terminal import summary_lines


@dataclass
class Run:
    """Where a run lives and what it runs: fixed before anything is computed."""

    cfg: RunConfig
    run_id: str
    run_dir: Path
    t_start: float
    teacher_path: str
    student_path: str
    resumed: bool
    mirror: Any = None  # distill.mirror.Mirror when storage.uri is set

    @property
    def student_dir(self) -> Path:
        return self.run_dir / "student"

    @property
    def sft_dir(self) -> Path:
        """The student after its SFT epochs, before correction rounds (only when there are rounds)."""
        return self.run_dir / "student-sft"


@dataclass
class Plan:
    """What the run will do, decided before Ray starts: its problems and its evaluation."""

    store: TraceStore
    problems: list[dict]
    source_quarantined: int
    suite: dict | None = None
    requests: list[dict] = field(default_factory=list)  # the student's eval requests (the whole suite)
    in_loop_file: Path | None = None
    baselines: dict[str, str] = field(default_factory=dict)  # baseline name -> model path
    baseline_requests: dict[str, list[dict]] = field(default_factory=dict)
    teacher_mismatch: str | None = None  # why the teacher's generation cannot stand in for its evaluation


@dataclass
class Outcome:
    """What streaming, training and evaluation produced."""

    metrics: RunMetrics
    checkpoint: Any  # ray.train.Checkpoint | None
    final_step: int
    t_trained: float
    evaluated: Evaluated
    nodes: list[dict]
    wall_s: float
    rounds: list = field(default_factory=list)  # correction rounds (pipelines/correction.py RoundResult)
    arms: list = field(default_factory=list)  # their comparison students (pipelines/correction.py run_arms)


def main(cfg: RunConfig, resume_dir: Path | None = None) -> dict:
    """Run a recipe; with `resume_dir`, finish that run instead (the trace store is the ledger:
    committed traces are replayed, not generated again; training resumes from its last checkpoint)."""
    run = open_run(cfg, resume_dir)
    try:
        plan = prepare(run)
        return finish(run, plan, stream_and_train(run, plan))
    finally:
        if run.mirror is not None:  # also after a failure: the metrics so far reach shared storage
            print(f"[distill] metrics mirror: {run.mirror.close()} file(s) in the final pass -> {run.mirror.url}")


def open_run(cfg: RunConfig, resume_dir: Path | None) -> Run:
    """The run directory (new, or the one resumed) with its config.yaml, the models, the metrics mirror."""
    teacher_path = resolve_model(cfg.teacher.model)  # a bad model path fails before any run dir exists
    student_path = resolve_model(cfg.train.student)
    check_output_dir(cfg)
    if resume_dir is None:
        run_id, run_dir = new_run_dir(cfg)
        (run_dir / "config.yaml").write_text(config_yaml(cfg))
    else:
        run_dir = Path(resume_dir).resolve()
        run_id = run_dir.name
    run = Run(cfg, run_id, run_dir, time.time(), teacher_path, student_path, resumed=resume_dir is not None)
    print(f"[distill] {'resuming' if run.resumed else 'run'} {run_id} -> {run_dir}")
    if cfg.storage.uri:
        from distill.mirror import Mirror

        try:
            run.mirror = Mirror(cfg.storage.uri, run_dir, run_id, cfg.storage.sync_every_s).start()
        except ImportError as e:  # e.g. s3:// without s3fs installed
            raise ConfigError(f"storage.uri: {e}") from None
        print(f"[distill] metrics mirrored to {run.mirror.url}")
    return run


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


def prepare(run: Run) -> Plan:
    """Problems (rejects quarantined at the source) and the held-out eval suite with its requests."""
    from distill.eval.suite import build_requests, load_suite
    from distill.pipelines.evaluate import baseline_requests, teacher_generation_mismatch

    cfg = run.cfg
    store = TraceStore(run.run_dir / "store")
    loaded = load_problems(cfg.sources)
    store.append_quarantine(loaded.quarantined)
    print(f"[distill] {len(loaded.problems)} problems, {len(loaded.quarantined)} quarantined at the source")
    if not loaded.problems:
        raise SystemExit("no valid problems: see the quarantine table in " + str(store.quarantine_dir))
    plan = Plan(store, loaded.problems, len(loaded.quarantined), teacher_mismatch=teacher_generation_mismatch(cfg))
    if not cfg.eval.has_suite():
        return plan
    plan.suite = load_suite(cfg.eval, {p["problem_id"] for p in loaded.problems})
    plan.requests = build_requests(plan.suite, cfg.eval, cfg.prompt)
    if cfg.train.correction:  # the students a correction run compares are also scored on the split to tune on
        plan.requests += build_requests(plan.suite, cfg.eval, cfg.prompt, ["validation"])
    checks = ", ".join(
        f"{k} {v['n']} (dropped {v['dropped_overlap']} seen in training)" for k, v in plan.suite["checks"].items()
    )
    print(f"[distill] eval suite: {checks}; {len(plan.requests)} requests per model")
    if cfg.eval.in_loop:
        plan.in_loop_file = run.run_dir / "eval" / "in_loop_requests.json"
        plan.in_loop_file.parent.mkdir(parents=True, exist_ok=True)
        wanted = build_requests(plan.suite, cfg.eval, cfg.prompt, cfg.eval.in_loop_wanted())
        plan.in_loop_file.write_text(json.dumps(wanted))
    plan.baselines = {b: run.teacher_path if b == "teacher" else run.student_path for b in cfg.eval.baselines}
    plan.baseline_requests = baseline_requests(cfg, plan.suite)
    return plan


def check_cluster(ray, cfg: RunConfig, run_dir: Path) -> list[dict]:
    """Every stage runs at once: the cluster must hold them all (now, or grown by its autoscaler), and
    a multi-node cluster must share output_dir. Returns the alive nodes."""
    from distill.cluster.planner import PlanError, ensure_fits, grown_nodes
    from distill.cluster.session import alive_nodes, autoscaler_config, unshared_nodes

    nodes = alive_nodes(ray)
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
    return nodes


class EvalLane:
    """The run's evaluations. One evaluator engine for the student's family (the untrained student,
    in-loop checkpoints, the final student) is started once and swaps weights in place; the baselines
    (teacher, untrained) run as soon as the stream allows, never blocking training."""

    def __init__(self, run: Run, plan: Plan, events, sequential: bool):
        self.run, self.plan, self.events, self.sequential = run, plan, events, sequential
        self.engine = self.runner = None

    def start(self) -> None:
        """The engine actor only: its vLLM engine starts with its first evaluation."""
        from distill.pipelines.evaluate import EvalRunner, eval_engine

        cfg = self.run.cfg
        self.engine = eval_engine(cfg.eval, cfg.seed, cfg.train.trust_remote_code)
        self.runner = EvalRunner(
            cfg.eval, cfg.seed, self.events, cfg.train.trust_remote_code, use_cache=cfg.eval.cache, engine=self.engine
        )

    def untrained(self) -> None:
        reqs = self.plan.baseline_requests.get("untrained")
        if reqs:  # a second call is a no-op (the runner submits a name once)
            self.runner.submit("untrained", str(self.run.student_path), reqs, cacheable=True, on_engine=True)

    def baselines(self, teacher_engine=None, release=None) -> None:
        """The baselines not yet submitted. `teacher_engine`: the teacher's engine, up since the run began,
        answers the teacher baseline instead of an engine started for it; `release`: called once that
        engine is no longer needed (at once when it answers nothing)."""
        cfg = self.run.cfg
        self.untrained()  # no-op when already started
        for name, path in self.plan.baselines.items():
            if name != "untrained" and self.plan.baseline_requests.get(name):
                # streamed, generation is over: the teacher's own cores are free for its evaluation
                # (then it runs beside the student engine's evaluations, not after them)
                bind = None if self.sequential else cfg.teacher.cpu_threads_bind
                trust = cfg.teacher.trust_remote_code if name == "teacher" else None
                on_teacher = name == "teacher" and teacher_engine is not None
                self.runner.submit(
                    name,
                    str(path),
                    self.plan.baseline_requests[name],
                    cacheable=True,
                    bind=bind,
                    trust_remote_code=trust,
                    answered_by=teacher_engine if on_teacher else None,
                    then=release if on_teacher else None,
                )
                release = None if on_teacher else release
        if release is not None:
            release()

    def finish(self, student_dir: Path | None, final_step: int, sft: bool = False, arms=()) -> Evaluated:
        """The final student (when there is one) after the baselines; waits for every evaluation.
        `sft`: the SFT student (before correction rounds) is evaluated too, on the same requests, and so is
        each comparison arm's student (`arms`: pipelines/correction.py run_arms)."""
        from distill.pipelines.evaluate import close_engine, teacher_from_store

        if self.runner is None:  # sequential: evaluation last, its engine starts now
            self.start()
        self.baselines()  # no-op when already started
        if student_dir is not None:
            if sft:
                self.runner.submit("student_sft", str(self.run.sft_dir), self.plan.requests, on_engine=True)
            for a in arms:
                self.runner.submit(f"student_{a['arm']}", a["dir"], self.plan.requests, on_engine=True)
            self.runner.submit("student", str(student_dir), self.plan.requests, step=final_step, on_engine=True)
        out = Evaluated(self.runner.wait(), self.runner.errors, dict(self.runner.cache_status))
        out.engine_log = close_engine(self.engine) + self.runner.reused
        if "teacher" in self.plan.baselines and self.plan.teacher_mismatch is None:
            # its in_distribution accuracy from the traces it generated (greedy) on the training problems
            gen = teacher_from_store(self.plan.store.root, {p["problem_id"] for p in self.plan.problems})
            base = out.results.get("teacher") or {"predictions": [], "wall_s": 0.0, "skipped_too_long": 0}
            out.results["teacher"] = {**base, "predictions": base["predictions"] + gen}
            out.sources["teacher"] = (
                f"in_distribution from its generation ({len(gen)} training problems, "
                f"greedy, its own prompt); other splits: {out.sources.get('teacher', 'none')}"
            )
        return out


def stream_and_train(run: Run, plan: Plan) -> Outcome:
    """One Ray session: teacher -> scorer -> trainer, all at once. Baselines are evaluated as soon as the
    teacher is done, checkpoints in-loop by Ray Train; evaluation never blocks training."""
    from ray.util.queue import Queue

    from distill.cluster.session import ray_session
    from distill.pipelines.stages import EventPump, TeacherEngines, generation_stream

    cfg, metrics = run.cfg, RunMetrics(run.run_dir, run.t_start)
    sequential = cfg.stages == "sequential"
    with ray_session(cfg.ray, run.run_dir / "logs") as ray:
        alive = check_cluster(ray, cfg, run.run_dir)
        # Streamed, the teacher's engines start now, not when Ray Train's worker first asks the stream for a
        # batch. Sequential, the stream starts at once (materialize): nothing to gain (measured on 2 cores,
        # the first batch at 29.0-30.7 s prewarmed vs 27.8 s, n = 3 each), one process more.
        engines = TeacherEngines(cfg, run.teacher_path, str(plan.store.root), 0 if sequential else len(alive))
        events = Queue(actor_options={"num_cpus": 0})
        lane = EvalLane(run, plan, events, sequential) if plan.suite else None
        live = lane if lane and not sequential else None  # sequential: no evaluation until training is over
        if live:
            live.start()
        stream = generation_stream(
            cfg, plan.problems, run.teacher_path, str(plan.store.root), events, run.student_path, engines.prewarmed
        )

        def teacher_done() -> None:
            # The teacher's engine answers the teacher baseline where it can answer as an evaluator's would
            # (pipelines/evaluate.py teacher_engine_mismatch), then it ends; else it ends now. Either way
            # its cores go to evaluation.
            if live:
                live.baselines(engines.for_baseline(cfg), release=engines.close)
            else:
                engines.close()

        # The untrained student is evaluated once the teacher's first batch is out: the trainer has little
        # to do until traces arrive, and the two engines do not start at once (measured on 2 cores: an
        # evaluator engine starting at t=0 put the teacher's first batch at 98 s instead of ~50 s).
        try:
            with EventPump(
                events,
                metrics,
                len(plan.problems),
                cfg.teacher.samples,
                on_teacher_ready=live.untrained if live else None,
                on_teacher_done=teacher_done,
            ):
                if sequential:  # the stages one after another: generation and scoring end here, their actors go
                    stream = stream.materialize()
                result = fit_student(run, plan, stream, events, live)
                final_step = int((result.metrics or {}).get("step") or 0)  # the student evaluated is this step's
                checkpoint, rounds, arms = result.checkpoint, [], []
                if checkpoint is not None and cfg.train.correction:
                    checkpoint, rounds, arms, final_step = correct(run, plan, checkpoint, final_step, events, lane)
                t_trained = time.time()
                if checkpoint is not None:
                    export_student(checkpoint, run.student_dir)
                student = run.student_dir if checkpoint is not None else None
                evaluated = lane.finish(student, final_step, sft=bool(rounds), arms=arms) if lane else Evaluated()
        finally:
            engines.close()
        nodes = ray.nodes()  # dead ones too: a stage may have run on a node that has gone since
    return Outcome(
        metrics, checkpoint, final_step, t_trained, evaluated, nodes, time.time() - run.t_start, rounds, arms
    )


def correct(run: Run, plan: Plan, checkpoint, step: int, events, lane: EvalLane | None):
    """Correction rounds after the SFT epochs (pipelines/correction.py), the SFT student exported to
    <run>/student-sft first (the report compares them), then the comparison arms.
    -> (final checkpoint, rounds, arms, final step)."""
    from distill.actors.train_loop import store_training_rows
    from distill.pipelines.correction import run_arms, run_rounds
    from distill.pipelines.evaluate import close_engine, eval_engine

    cfg = run.cfg
    sft_dir = run.sft_dir
    export_student(checkpoint, sft_dir)
    own = lane is None or lane.engine is None  # sequential, or no suite: an engine for the rounds alone
    engine = eval_engine(cfg.eval, cfg.seed, cfg.train.trust_remote_code) if own else lane.engine
    try:
        store = str(plan.store.root)
        # the SFT rows mixed into every round and arm: read from the store once
        sft = store_training_rows(store, cfg.train.supervision) if cfg.train.correction.mix > 0 else []
        rounds = run_rounds(cfg, run.run_dir, plan.problems, sft_dir, run.teacher_path, store, events, engine, sft)
        arms = run_arms(
            cfg, run.run_dir, plan.problems, sft_dir, run.teacher_path, run.student_path, store, events, engine, sft
        )
    finally:
        if own:
            close_engine(engine)
    for r in reversed(rounds):  # the latest round that trained (a resumed round has no checkpoint object)
        if r.checkpoint is not None:
            return r.checkpoint, rounds, arms, step + sum(x.steps for x in rounds)
    return checkpoint, rounds, arms, step


def fit_student(run: Run, plan: Plan, stream, events, live: EvalLane | None):
    """Ray Train's fit of the student: the stream in epoch 1, the trace store after; checkpoints scored
    in-loop on the live evaluation lane's engine (when there is one). Returns its ray.train.Result."""
    from distill.pipelines.stages import student_trainer

    cfg = run.cfg
    trainer = student_trainer(
        cfg,
        stream,
        run.student_path,
        str(plan.store.root),
        run.run_dir,
        events,
        str(plan.in_loop_file) if live and plan.in_loop_file else None,
        expected_traces=len(plan.problems) * cfg.teacher.samples,
        engine=live.engine if live else None,
    )
    return trainer.fit()


def finish(run: Run, plan: Plan, out: Outcome) -> dict:
    """summary.json, the eval object and predictions, timeline, TensorBoard hparams, model card, report."""
    from distill.pipelines.evaluate import write_predictions

    cfg, run_dir = run.cfg, run.run_dir
    summary = run_summary(run, plan, out)
    if plan.suite is not None:
        summary["eval"] = eval_section(run, plan, out)
        write_predictions(run_dir, out.evaluated.results)
    out.metrics.plot_timeline(run_dir / "timeline.png", out.wall_s)
    _hparams(out.metrics, cfg, summary)
    out.metrics.close()
    write_json(run_dir / "summary.json", summary)
    if out.checkpoint is not None:
        from distill.modelcard import write_model_card

        write_model_card(run.student_dir, cfg, summary)
    if plan.suite is not None:
        from distill.eval.report import write_report

        predictions = {m: r["predictions"] for m, r in out.evaluated.results.items()}
        write_report(run_dir, summary, predictions, cfg.eval.samples_in_report)
    print("\n".join(summary_lines(summary)))
    return summary


def run_summary(run: Run, plan: Plan, out: Outcome) -> dict:
    from distill.cluster.planner import node_view, observed_placement

    cfg, store, counters = run.cfg, plan.store, out.metrics.counters
    return out.metrics.summary(
        out.wall_s,
        cores_of=cores_of(cfg),
        machine_cores=machine_cores(cfg),
        extra={
            "run_id": run.run_id,
            "run_dir": str(run.run_dir),
            "problems": len(plan.problems),
            "quarantined": {
                "source": plan.source_quarantined,
                "teacher": int(counters["teacher/quarantined"]),
                "scorer": int(counters["scorer/quarantined"]),
            },
            "resumed": run.resumed,
            "replayed_traces": int(counters["teacher/replayed"]),
            "trace_store": str(store.root),
            "stored_traces": store.traces().num_rows,
            "stored_trace_rows": store.physical_trace_rows(),
            "quarantine_rows": store.quarantine().num_rows,
            # rows of scorer blocks killed before their commit and not rewritten since: 0 after a finished run
            "orphan_rows": store.orphans(),
            "student_checkpoint": str(run.student_dir) if out.checkpoint is not None else None,
            "eval_after_training_s": round(time.time() - out.t_trained, 1),
            "placement": observed_placement(out.metrics.events, out.nodes),
            "cluster_nodes": [node_view(n) for n in out.nodes if n.get("Alive")],
            "metrics_uri": run.mirror.url if run.mirror else None,
            "provenance": provenance(),
        },
    )


def eval_section(run: Run, plan: Plan, out: Outcome) -> dict:
    """summary.json's eval object: per split and model, with the in-loop curve and the engine's log."""
    from distill.pipelines.evaluate import eval_summary, in_loop_curve

    ev = out.evaluated
    models = {**plan.baselines, **({"student": run.student_dir} if out.checkpoint is not None else {})}
    if "student_sft" in ev.results:
        models["student_sft"] = run.sft_dir
    models.update({f"student_{a['arm']}": a["dir"] for a in out.arms if f"student_{a['arm']}" in ev.results})
    section = eval_summary(plan.suite, ev.results, models, ev.errors, ev.sources)
    if out.rounds:
        from distill.eval.compare import correction_comparison

        arms = [a["arm"] for a in out.arms]
        section["correction"] = correction_comparison({m: r["predictions"] for m, r in ev.results.items()}, arms)
        section["correction"]["rounds"] = [{"round": r.round, "steps": r.steps, **r.counts} for r in out.rounds]
        section["correction"]["arms"] = out.arms
    curve = in_loop_curve(run.run_dir / "eval" / "in_loop")
    if "student" in section["splits"].get("in_distribution", {}):
        final = {
            f"{k}_accuracy": v["student"]["accuracy"]
            for k, v in section["splits"].items()
            if k in run.cfg.eval.in_loop_splits and "student" in v
        }
        curve.append({"step": out.final_step, "epoch": run.cfg.train.epochs, "final": True, **final})
    section["in_loop"] = curve
    # how each student-family evaluation got its engine: one start, then weights swapped in place
    section["engine"] = ev.engine_log
    return section


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
