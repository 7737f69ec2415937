"""Evaluation on the transfer suite: evaluator tasks, in-loop checkpoint validation, `distill eval`.

- EvalEngine: one evaluator engine for the whole run, for every model of the student's
  architecture (untrained, in-loop checkpoints, final): started once, weights swapped in place.
- EvalRunner: evaluates models from background threads, so the driver (and training) go on while
  baselines are scored: the student family on the EvalEngine, others (the teacher) as one-off Ray
  tasks, at the same time when their cores are disjoint.
- validate_checkpoint: Ray Train's asynchronous validation function (ValidationConfig): each
  checkpoint reported during training is scored on the in-loop splits by a Ray task while the
  workers keep training. We use Train's own mechanism rather than a watcher of our own.
- main: `distill eval CHECKPOINT --suite RECIPE`, the standalone form with the same report:
  open_eval (run dir, suite, models) -> run_evaluations (one Ray session) -> finish_eval.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from distill.config import EvalConfig, RunConfig
from distill.eval.suite import build_requests, load_suite, summarize
from distill.events import StageEvent
from distill.metrics import RunMetrics, emit


def evaluator_options(ev: EvalConfig, seed: int, trust_remote_code: bool = False) -> dict:
    return {
        "backend": ev.backend,
        "max_model_len": ev.max_model_len,
        "kv_cache_gib": ev.kv_cache_gib,
        "cpu_threads_bind": ev.cpu_threads_bind,
        "seed": seed,
        "trust_remote_code": trust_remote_code,
        "dtype": ev.dtype,
    }


def remote_options(ev: EvalConfig) -> dict:
    """Ray options of an evaluator task: its CPUs/GPUs and placement (custom resources, node labels)."""
    return {"num_cpus": ev.num_cpus, "num_gpus": ev.num_gpus, **ev.placement_options()}


def _evaluate(model, requests: list[dict], options: dict) -> dict:
    """Score `model` (an HF directory path, or a ray.train.Checkpoint fetched here, on the evaluator's
    own node) on `requests`; the result says which node did it."""
    import ray

    from distill.actors.evaluator import Evaluator

    with nullcontext(model) if isinstance(model, str) else model.as_directory() as d:
        ev = Evaluator(d, **options)
        try:
            res = ev.run(requests)
        finally:
            ev.close()  # the engine process ends before this worker does (no dead-engine tracebacks)
    return {**res, "node": ray.get_runtime_context().get_node_id()}


class EvalEngine:
    """A Ray actor holding one evaluator engine, kept up between evaluations.

    Starting a vLLM engine costs 20-60 s on a CPU; a run evaluates the untrained student, every in-loop
    checkpoint and the final student, all of one architecture. The first `evaluate` starts the engine;
    later ones swap the weights in place (`Evaluator.load`), unless the architecture differs, when the
    engine is replaced. Calls run one at a time (a Ray actor's default), in the order they arrive."""

    def __init__(self, options: dict, yield_cpu: bool = False):
        from distill.hardware import yield_cpu as lowest_priority

        if yield_cpu:  # before the engine starts: its threads inherit it
            lowest_priority()
        self.options, self.evaluator = options, None
        self.log: list[dict] = []  # per call: how the engine got its weights, and in how long

    def evaluate(self, model, requests: list[dict]) -> dict:
        import ray

        if isinstance(model, str):
            res = self.evaluate_dir(model, requests)
        else:  # a ray.train.Checkpoint: fetched here, on the evaluator's node
            with model.as_directory() as d:
                res = self.evaluate_dir(d, requests)
        return {**res, "node": ray.get_runtime_context().get_node_id()}

    def evaluate_dir(self, path: str, requests: list[dict]) -> dict:
        from distill.actors.evaluator import Evaluator

        t0 = time.time()
        if self.evaluator is not None and self.evaluator.can_load(path):
            self.evaluator.load(path)
            how = "reloaded"
        else:
            if self.evaluator is not None:
                self.evaluator.close()
            self.evaluator = Evaluator(path, **self.options)
            how = "started"
        self.log.append({"engine": how, "load_s": round(time.time() - t0, 2), "model": str(path)})
        return {**self.evaluator.run(requests), **self.log[-1]}

    def sample(self, path: str, requests: list[dict]) -> dict:
        """Generations for a correction round (actors/corrector.py StudentSampler): the model at `path`
        answers `requests`, its weights loaded only when it is not the one up (blocks of one round share it)."""
        if self.evaluator is None or self.evaluator.model_path != str(path):
            self.evaluate_dir(path, [])
        return self.evaluator.run(requests)

    def history(self) -> list[dict]:
        return self.log

    def close(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None


def eval_engine(ev: EvalConfig, seed: int, trust_remote_code: bool = False):
    """The run's EvalEngine actor (Ray options from the eval config, like an evaluator task's)."""
    import ray

    return (
        ray.remote(EvalEngine)
        .options(**remote_options(ev))
        .remote(evaluator_options(ev, seed, trust_remote_code), yield_cpu=ev.yield_to_training and not ev.num_gpus)
    )


def close_engine(engine) -> list[dict]:
    """End the engine actor cleanly (its engine process first) -> its history."""
    import ray

    try:
        hist = ray.get(engine.history.remote())
        ray.get(engine.close.remote())
    finally:
        ray.kill(engine)
    return hist


def evaluate_task(resources: dict):
    """`_evaluate` as a Ray task with these Ray options (see remote_options). max_calls=1: the worker
    process exits after one evaluation, so the engine's memory goes with it."""
    import ray

    return ray.remote(max_calls=1)(_evaluate).options(**resources)


def eval_event(model: str, result: dict, t0: float, step: int = 0, epoch: int | None = None) -> StageEvent:
    """A stage event (TensorBoard `eval/<model>/<split>_accuracy`, timeline lane) for one evaluation."""
    s = summarize({model: result["predictions"]})["splits"]
    n = len(result["predictions"])
    return StageEvent(
        "eval",
        f"eval {model}",
        t0,
        time.time(),
        rows_in=n,
        rows_out=n,
        counts={"tokens": result["tokens"]},
        step=step,
        epoch=epoch,
        model=model,
        accuracy={split: by_model[model]["accuracy"] for split, by_model in s.items()},
        node=result.get("node") or None,
    )


@dataclass
class Evaluated:
    """The evaluations of a run: predictions per model, errors, where each model's answers came from."""

    results: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    engine_log: list = field(default_factory=list)


class EvalRunner:
    """Models evaluated from two background threads (lanes), so the driver (and training) go on:

    - the engine lane: models submitted `on_engine`, one after another on the run's EvalEngine;
    - the task lane: the others (the teacher), one after another, each a Ray task with its own engine.

    The lanes run at the same time only when their engines compute on disjoint cores (a task
    submitted with its own `bind`, e.g. the teacher baseline on the teacher's cores once generation
    is done); otherwise a task waits for the engine lane, so no core gets two engines' threads.
    A model submitted as `cacheable` (a baseline) is first looked up in the baseline cache
    (distill/eval/cache.py) when `use_cache`: a hit costs nothing; a miss is evaluated and stored.
    `cache_status[name]` says which: hit, miss or off."""

    def __init__(
        self,
        ev: EvalConfig,
        seed: int,
        events=None,
        trust_remote_code: bool = False,
        use_cache: bool = False,
        engine=None,
    ):
        from distill.hardware import engine_dtype

        self.options = evaluator_options(ev, seed, trust_remote_code)
        self.task = evaluate_task(remote_options(ev))
        self.engine = engine  # an EvalEngine actor: models submitted with `on_engine` are evaluated there
        # what decides the generations besides model and requests (the dtype as the evaluator will pick it)
        self.decoding = {
            "backend": ev.backend,
            "dtype": engine_dtype(ev.dtype, ev.num_gpus > 0),
            "max_model_len": ev.max_model_len,
            "seed": seed,
        }
        self.use_cache = use_cache
        self.events, self.results, self.errors, self.submitted = events, {}, {}, set()
        self.engine_log: dict[str, dict] = {}
        self.reused: list[dict] = []  # models answered by an engine already up for another stage (the teacher's)
        self.cache_status: dict[str, str] = {}
        self._engine_cores = threading.Lock()  # held while an engine computes on the EvalEngine's cores
        self._lanes = {
            lane: (
                queue.Queue(),
                threading.Thread(target=self._loop, args=(lane,), daemon=True, name=f"distill-eval-{lane}"),
            )
            for lane in ("engine", "task")
        }
        for _, thread in self._lanes.values():
            thread.start()

    def submit(
        self,
        name: str,
        model_path: str,
        requests: list[dict],
        cacheable: bool = False,
        step: int = 0,
        on_engine: bool = False,
        bind: str | None = None,
        trust_remote_code: bool | None = None,
        answered_by=None,
        then=None,
    ) -> None:
        """Queue `name` for evaluation (`step`: the training step of that checkpoint, for its curve;
        `on_engine`: on the run's EvalEngine, else a task of its own, bound to `bind` when given, else
        to eval.cpu_threads_bind; `trust_remote_code`: that model's own stage flag for a task -- the
        teacher's for the teacher -- else the runner's, the student's; `answered_by`: instead of a task, an
        actor already up with this model that answers `evaluate(requests, options)` as an evaluator would
        (the teacher's prewarmed engine, on `bind`); `then`: called once this evaluation is over, whatever
        its outcome); a name already submitted is ignored."""
        if name not in self.submitted:
            self.submitted.add(name)
            on_engine = on_engine and self.engine is not None
            opts = {
                k: v for k, v in (("cpu_threads_bind", bind), ("trust_remote_code", trust_remote_code)) if v is not None
            }
            item = (name, model_path, requests, cacheable, step, opts, answered_by, then)
            self._lanes["engine" if on_engine else "task"][0].put(item)
        elif then is not None:
            then()

    def _cached(self, name: str, path: str, reqs: list[dict]) -> tuple[str | None, dict | None]:
        from distill.eval import cache as evalcache
        from distill.eval.suite import predictions

        key = evalcache.cache_key(path, reqs, self.decoding)
        hit = evalcache.load(key)
        if hit is None or len(hit["outputs"]) != len(reqs):
            return key, None
        preds = predictions(reqs, hit["outputs"])
        return key, {**hit, "predictions": preds, "tokens": sum(p["tokens"] for p in preds), "cache": "hit"}

    def _run(self, lane: str, path: str, reqs: list[dict], task_opts: dict, answered_by=None) -> tuple[dict, float]:
        """-> (the result, when it started computing: after any wait for the other lane, so a wait is
        not counted as busy time)."""
        import ray

        from distill.hardware import binds_overlap

        if lane == "engine":
            with self._engine_cores:
                t0 = time.time()
                return ray.get(self.engine.evaluate.remote(path, reqs)), t0
        options = {**self.options, **task_opts}
        shares = self.engine is not None and binds_overlap(
            options["cpu_threads_bind"], self.options["cpu_threads_bind"]
        )
        with self._engine_cores if shares else nullcontext():
            t0 = time.time()
            if answered_by is not None:
                return ray.get(answered_by.evaluate.remote(reqs, options)), t0
            return ray.get(self.task.remote(path, reqs, options)), t0

    def _loop(self, lane: str) -> None:
        q = self._lanes[lane][0]
        while (item := q.get()) is not None:
            *item, then = item
            try:
                self._evaluate(lane, *item)
            finally:
                if then is not None:
                    try:
                        then()
                    except Exception as e:  # keep the lane: the models after this one still get evaluated
                        print(f"[distill] after evaluating {item[0]}: {type(e).__name__}: {e}", flush=True)

    def _evaluate(self, lane, name, path, reqs, cacheable, step, task_opts, answered_by) -> None:
        """One queued model: from the baseline cache, or evaluated (and cached when it is a baseline)."""
        from distill.eval import cache as evalcache

        t0 = time.time()
        key = None
        if cacheable and self.use_cache:
            key, res = self._cached(name, path, reqs)
            if res is not None:
                self.results[name], self.cache_status[name] = res, "hit"
                print(f"[distill] {name}: {len(reqs)} answers from the baseline cache ({key[:12]})", flush=True)
                emit(self.events, eval_event(name, res, t0, step))
                return
        on = " on its engine, up since the run began" if answered_by is not None else ""
        print(f"[distill] evaluating {name} on {len(reqs)} requests ({path}){on}", flush=True)
        try:
            res, t0 = self._run(lane, path, reqs, task_opts, answered_by)
            if lane == "engine":
                self.engine_log[name] = {"engine": res["engine"], "load_s": res["load_s"]}
            if answered_by is not None:
                self.reused.append({"engine": "the teacher's, up since the run began", "load_s": 0.0, "model": path})
        except Exception as e:  # one model failing to evaluate must not lose the others
            self.errors[name] = f"{type(e).__name__}: {e}"
            print(f"[distill] evaluation of {name} failed: {self.errors[name]}", flush=True)
            return
        if key is not None:
            evalcache.store(
                key,
                {
                    "outputs": res["outputs"],
                    "wall_s": res["wall_s"],
                    "skipped_too_long": res["skipped_too_long"],
                    "model": path,
                },
            )
            self.cache_status[name] = "miss"
        else:
            self.cache_status[name] = "off" if cacheable else "not cached (the student)"
        self.results[name] = {**res, "cache": self.cache_status[name]}
        emit(self.events, eval_event(name, res, t0, step))
        print(f"[distill] evaluated {name} in {time.time() - t0:.0f}s", flush=True)

    def wait(self) -> dict:
        for q, _ in self._lanes.values():
            q.put(None)
        for _, thread in self._lanes.values():
            thread.join()
        return self.results


def validate_checkpoint(
    checkpoint,
    requests_file: str,
    out_dir: str,
    options: dict,
    resources: dict,
    step: int = 0,
    epoch: int = 0,
    events=None,
    engine=None,
) -> dict:
    """Ray Train validation fn: score one reported checkpoint on the in-loop requests.

    Runs in Train's validation task (which reserves nothing); the engine is the run's EvalEngine
    (`engine`, weights swapped in place), or without one an evaluator task with `resources` and
    max_calls=1, so its memory is freed as soon as it is done.
    """
    import ray

    t0 = time.time()
    requests = json.loads(Path(requests_file).read_text())
    res = ray.get(
        engine.evaluate.remote(checkpoint, requests)
        if engine is not None
        else evaluate_task(resources).remote(checkpoint, requests, options)
    )
    s = summarize({"student": res["predictions"]})["splits"]
    metrics = {f"eval/{split}/accuracy": m["student"]["accuracy"] for split, m in s.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"step-{step:06d}.json").write_text(
        json.dumps(
            {
                "step": step,
                "epoch": epoch,
                "wall_s": round(time.time() - t0, 1),
                "splits": {k: v["student"] for k, v in s.items()},
            },
            indent=1,
        )
    )
    emit(events, eval_event("student", res, t0, step, epoch))
    return metrics


def in_loop_curve(out_dir: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("step-*.json"))]
    return [
        {"step": r["step"], "epoch": r["epoch"], **{f"{k}_accuracy": v["accuracy"] for k, v in r["splits"].items()}}
        for r in rows
    ]


def eval_summary(
    suite: dict, results: dict, models: dict, errors: dict | None = None, sources: dict | None = None
) -> dict:
    """The summary.json `eval` object from finished evaluations. `sources`: per model, where its
    answers came from (evaluated, baseline cache hit or miss, the teacher's generation)."""
    out = summarize(
        {m: r["predictions"] for m, r in results.items()},
        reference="teacher" if "teacher" in results else next(iter(results), "teacher"),
    )
    out["sources"] = sources or {}
    out["models"] = {m: str(p) for m, p in models.items()}
    out["problems"] = suite["checks"]
    out["wall_s"] = {m: r["wall_s"] for m, r in results.items()}
    out["skipped_too_long"] = {m: r["skipped_too_long"] for m, r in results.items()}
    if errors:
        out["errors"] = errors
    return out


ALL_SPLITS = ("in_distribution", "prompt_style", "related", "difficulty_shift", "direct")


def teacher_generation_mismatch(cfg: RunConfig) -> str | None:
    """Why the teacher's generation cannot stand in for its in_distribution evaluation (None: it can)."""
    t, ev = cfg.teacher, cfg.eval
    if not ev.teacher_from_generation:
        return "eval.teacher_from_generation is off"
    if t.temperature != 0 or t.samples != 1:
        return f"the teacher sampled (temperature {t.temperature}, {t.samples} sample(s)); evaluation is greedy"
    if t.max_tokens != ev.max_tokens:
        return f"teacher.max_tokens {t.max_tokens} != eval.max_tokens {ev.max_tokens}"
    if t.stop:
        return "the teacher used stop strings"
    if ev.samples > 1:
        return "eval.samples > 1 (the generation has one sample per problem)"
    if t.backend != ev.backend:
        return f"teacher backend {t.backend} != eval backend {ev.backend}"
    return None


def teacher_engine_mismatch(cfg: RunConfig) -> str | None:
    """Why the teacher's engine, up since the run began (pipelines/stages.py TeacherEngines), cannot answer
    the teacher baseline as an evaluator's engine would (None: it can)."""
    from distill.hardware import engine_dtype

    t, ev = cfg.teacher, cfg.eval
    if ev.backend != "vllm" or ev.num_gpus:
        return f"the evaluator is {ev.backend} on {'GPU' if ev.num_gpus else 'CPU'}, the teacher's engine vLLM on CPU"
    td, ed = engine_dtype(t.dtype, False), engine_dtype(ev.dtype, False)
    if td != ed:
        return f"teacher dtype {td} != eval dtype {ed}"
    if t.max_model_len < ev.max_model_len:
        return f"teacher.max_model_len {t.max_model_len} < eval.max_model_len {ev.max_model_len}"
    if ev.samples == 1 and ev.temperature > 0:
        # one sampled answer has no seed of its own: it would depend on what the engine generated before
        return "eval samples one answer at temperature > 0"
    return None


def baseline_requests(cfg: RunConfig, suite: dict, generated: bool = True) -> dict[str, list[dict]]:
    """The requests each baseline answers. The untrained student: the student's. The teacher: its splits
    (eval.teacher_splits), in_distribution asked in the teacher's own prompt, and none of it when its
    generation (`generated`: there is one) stands in (teacher_generation_mismatch)."""
    out = {}
    if "untrained" in cfg.eval.baselines:
        out["untrained"] = build_requests(suite, cfg.eval, cfg.prompt)
    if "teacher" in cfg.eval.baselines:
        splits = list(cfg.eval.teacher_splits or ALL_SPLITS)
        if generated and teacher_generation_mismatch(cfg) is None and "in_distribution" in splits:
            splits.remove("in_distribution")
        out["teacher"] = build_requests(suite, cfg.eval, cfg.teacher_prompt(), splits) if splits else []
    return out


def teacher_from_store(store_root: Path, problem_ids: set[str]) -> list[dict]:
    """The teacher's in_distribution predictions, scored from the traces it generated (greedy) on the
    training problems: fresh to it, from the training distribution, scored as the evaluator scores."""
    from distill.data.store import TraceStore
    from distill.eval.suite import TRAIN_STYLE, prediction

    cols = [
        "problem_id",
        "source",
        "question",
        "reference_answer",
        "verifier",
        "metadata",
        "text",
        "completion_tokens",
        "finish_reason",
        "sample_index",
    ]
    rows = TraceStore(store_root).traces().select(cols).to_pylist()
    preds = []
    for r in rows:
        if r["sample_index"] != 0 or r["problem_id"] not in problem_ids:
            continue
        req = {
            "split": "in_distribution",
            "style": TRAIN_STYLE,
            "prefill": "",
            "n": 1,
            "problem": {k: r[k] for k in cols[:6]},
        }
        preds.append(prediction(req, [(r["text"] or "", r["completion_tokens"] or 0, r["finish_reason"] or "stop")]))
    return preds


def write_predictions(run_dir: Path, results: dict) -> None:
    d = Path(run_dir) / "eval"
    d.mkdir(parents=True, exist_ok=True)
    for name, r in results.items():
        (d / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in r["predictions"]))


def train_problem_ids(cfg: RunConfig, store_root: Path | None) -> set[str]:
    """What a student of this recipe could have trained on: the recipe's problems and its store's traces."""
    from distill.data.sources import load_problems
    from distill.data.store import TraceStore

    ids = {p["problem_id"] for p in load_problems(cfg.sources).problems}
    if store_root is not None and Path(store_root).is_dir():
        ids |= set(TraceStore(store_root).traces().column("problem_id").to_pylist())
    return ids


@dataclass
class EvalRun:
    """`distill eval`'s run: where it lives, the suite, and the models with the requests each answers."""

    cfg: RunConfig
    run_id: str
    run_dir: Path
    t_start: float
    checkpoint: Path
    suite: dict
    requests: list[dict]  # the student's (the whole suite)
    models: dict[str, str]  # name -> model path: the baselines asked for, then "student"
    baseline_requests: dict[str, list[dict]]
    metrics: RunMetrics


def main(cfg: RunConfig, checkpoint: str, baselines: list[str] | None = None, train_store: str | None = None) -> dict:
    """`distill eval`: the suite on one checkpoint (and baselines) -> runs/eval-.../report.html."""
    job = open_eval(cfg, checkpoint, baselines, train_store)
    return finish_eval(job, run_evaluations(job))


def open_eval(cfg: RunConfig, checkpoint: str, baselines: list[str] | None, train_store: str | None) -> EvalRun:
    """The run directory with its config.yaml; the suite without what the checkpoint could have trained
    on (its recipe's problems, and the traces of `train_store`, by default the store beside it)."""
    from distill.models import resolve_model
    from distill.rundir import config_yaml, new_run_dir

    ckpt = Path(checkpoint).expanduser().resolve()
    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt} is not an HF model directory (no config.json)")
    run_id, run_dir = new_run_dir(cfg, prefix="eval")
    t_start = time.time()
    (run_dir / "config.yaml").write_text(config_yaml(cfg))
    store = Path(train_store) if train_store else ckpt.parent / "store"
    suite = load_suite(cfg.eval, train_problem_ids(cfg, store))
    requests = build_requests(suite, cfg.eval, cfg.prompt)
    baselines = cfg.eval.baselines if baselines is None else baselines
    models = {b: resolve_model(cfg.teacher.model if b == "teacher" else cfg.train.student) for b in baselines}
    models["student"] = str(ckpt)
    base_reqs = baseline_requests(cfg, suite, generated=False)
    print(f"[distill] eval {run_id}: {len(requests)} requests per model, models: {', '.join(models)}")
    metrics = RunMetrics(run_dir, t_start)
    return EvalRun(cfg, run_id, run_dir, t_start, ckpt, suite, requests, models, base_reqs, metrics)


def run_evaluations(job: EvalRun) -> Evaluated:
    """One Ray session: the student (and the untrained student) on one engine, weights swapped in
    place; the teacher as a task of its own."""
    from distill.cluster.session import ray_session

    cfg = job.cfg
    with ray_session(cfg.ray, job.run_dir / "logs"):
        engine = eval_engine(cfg.eval, cfg.seed, cfg.train.trust_remote_code)
        runner = EvalRunner(
            cfg.eval, cfg.seed, trust_remote_code=cfg.train.trust_remote_code, use_cache=cfg.eval.cache, engine=engine
        )
        for name, path in job.models.items():
            if name == "student":
                runner.submit(name, str(path), job.requests, on_engine=True)
            elif job.baseline_requests.get(name):
                runner.submit(
                    name,
                    str(path),
                    job.baseline_requests[name],
                    cacheable=True,
                    on_engine=name == "untrained",
                    trust_remote_code=cfg.teacher.trust_remote_code if name == "teacher" else None,
                )
        try:
            results = runner.wait()
        finally:
            engine_log = close_engine(engine)
    return Evaluated(results, runner.errors, runner.cache_status, engine_log)


def finish_eval(job: EvalRun, ev: Evaluated) -> dict:
    """summary.json with the eval object, predictions, timeline, report."""
    from distill.eval.report import write_report
    from distill.metrics import provenance, write_json

    for name, res in ev.results.items():
        job.metrics.add(eval_event(name, res, job.t_start))
    wall = time.time() - job.t_start
    summary = {
        "run_id": job.run_id,
        "run_dir": str(job.run_dir),
        "wall_s": round(wall, 1),
        "checkpoint": str(job.checkpoint),
        "eval": {**eval_summary(job.suite, ev.results, job.models, ev.errors, ev.sources), "engine": ev.engine_log},
        "provenance": provenance(),
    }
    write_predictions(job.run_dir, ev.results)
    job.metrics.plot_timeline(job.run_dir / "timeline.png", wall)
    job.metrics.close()
    write_json(job.run_dir / "summary.json", summary)
    predictions = {m: r["predictions"] for m, r in ev.results.items()}
    write_report(job.run_dir, summary, predictions, job.cfg.eval.samples_in_report)
    print(f"[distill] report: {job.run_dir / 'report.html'}")
    return summary
