"""Ray wiring shared by the drivers: the generation stream, the trainer, the event pump.

Resources come from config here, at wiring time; the actor classes in actors/ stay plain Python.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from distill.config import RunConfig, TrainConfig
from distill.metrics import RunMetrics


def generation_stream(
    cfg: RunConfig,
    problems: list[dict],
    teacher_path: str,
    store_root: str,
    events,
    student_path: str | None = None,
    prewarmed: bool = False,
):
    """problems -> teacher pool -> scorer pool -> the chosen supervision of accepted traces (lazy).
    `prewarmed`: the teacher actors drive the TeacherEngines started for this store."""
    return scored_stream(
        cfg,
        teacher_stream(cfg, problems, teacher_path, store_root, events, prewarmed),
        store_root,
        events,
        student_path,
    )


class TeacherEngines:
    """The run's teacher engines, started with its Ray session rather than with the stream.

    A streamed run's stream starts only when Ray Train's worker asks for its first batch: after the
    trainer's controller, worker group and split coordinator have started (measured on 2 cores: the teacher
    pool's actor started 14 s into the run, its engine was up 21 s later). These engines (actors of their
    own, one per replica the pool starts with, each on its replica's cores) start at once instead; each
    teacher actor drives the one of the slot it claims (actors/teacher.py VLLMTeacher), and `close` ends
    them when generation is over, before the cores go to evaluation. One machine with a CPU teacher only
    (the embedded default and `ray start` on one node): on a cluster a replica's actor and its engine may
    land on different nodes, and a GPU engine cannot share its reservation with a fallback of its own --
    there the actors start their engines as before."""

    def __init__(self, cfg: RunConfig, teacher_path: str, store_root: str, nodes: int):
        """`nodes`: the cluster's alive nodes (0: start none)."""
        import threading

        self._lock, self.handles = threading.Lock(), []
        t = cfg.teacher
        if t.backend != "vllm" or t.num_gpus or nodes != 1:
            return
        import ray

        from distill.actors.teacher import TeacherEngine, engine_name

        actor = ray.remote(TeacherEngine)
        for slot in range(t.replicas_min):
            bind = t.replica_binds[slot] if t.replica_binds else t.cpu_threads_bind
            self.handles.append(
                actor.options(
                    name=engine_name(store_root, slot),
                    num_cpus=t.num_cpus,
                    runtime_env=_KEEP_CHILDREN,
                    **t.placement_options(),
                ).remote(t, teacher_path, bind)
            )

    @property
    def prewarmed(self) -> bool:
        return bool(self.handles)

    def for_baseline(self, cfg: RunConfig):
        """The engine that answers the teacher baseline (TeacherEngine.evaluate): the first replica's,
        while it is up and can answer as an evaluator's engine would; else None."""
        from distill.pipelines.evaluate import teacher_engine_mismatch

        with self._lock:
            return self.handles[0] if self.handles and teacher_engine_mismatch(cfg) is None else None

    def close(self) -> None:
        """Shut each engine down (its engine core first, quietly), then end its actor. Idempotent; a teacher
        actor asked for more after this (a re-executed stream) starts an engine of its own."""
        import ray

        with self._lock:
            handles, self.handles = self.handles, []
        for h in handles:
            try:
                ray.get(h.close.remote(), timeout=30)
            except Exception:  # already dead, or stuck: killed below either way
                pass
            ray.kill(h)


# When a teacher actor ends, Ray's graceful actor exit kills the worker's child processes first, the vLLM
# engine core among them, before the UDF's __del__ or atexit hook can shut it down: AsyncLLM then logs
# EngineDeadError and an output-handler traceback. Measured with a probe UDF on Ray 2.60 (a spawned child:
# SIGKILL before __del__). Without the kill the teacher's atexit hook (actors/teacher.py) shuts the engine
# down first; an actor that dies without running Python leaves its engine to the watchdog the teacher
# starts (distill/reaper.py).
_KEEP_CHILDREN = {"env_vars": {"RAY_kill_child_processes_on_worker_exit": "0"}}


def teacher_stream(
    cfg: RunConfig, problems: list[dict], teacher_path: str, store_root: str, events, prewarmed: bool = False
):
    """problems -> teacher pool -> k trace rows per problem (lazy). `prewarmed`: see TeacherEngines."""
    import ray.data

    from distill.actors.teacher import BACKENDS

    t = cfg.teacher
    # a prewarmed engine holds the replica's CPUs: its actor only drives it (and starts its own engine on
    # the same cores if that one is gone)
    resources = {"num_cpus": 0} if prewarmed else {"num_cpus": t.num_cpus, "num_gpus": t.num_gpus}
    # Several blocks, or the stream degenerates into one batch that finishes all at once.
    ds = ray.data.from_items(problems, override_num_blocks=min(cfg.source_blocks, max(len(problems), 1)))
    ds = ds.map_batches(
        BACKENDS[t.backend],
        batch_size=t.batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs=dict(
            teacher=t,
            prompt=cfg.teacher_prompt(),
            model_path=teacher_path,
            model_name=t.model,
            store_root=store_root,
            events=events,
            **({"prewarmed": True} if prewarmed else {}),
        ),
        # Several small batches run at once per actor and share its engine: requests in flight are
        # bounded (batch_size x concurrent_batches), and each finished batch streams on at once.
        compute=ray.data.ActorPoolStrategy(
            min_size=t.replicas_min,
            max_size=t.replicas_max,
            max_tasks_in_flight_per_actor=t.concurrent_batches,
            max_concurrent_calls_per_actor=t.concurrent_batches if t.backend == "vllm" else None,
        ),
        **resources,
        runtime_env=_KEEP_CHILDREN,
        **({} if prewarmed else t.placement_options()),
    )
    return ds


def scored_stream(cfg: RunConfig, ds, store_root: str, events, student_path: str | None = None):
    """teacher rows -> scorer pool (verify, dissect, store) -> the supervision of accepted traces (lazy)."""
    import ray.data

    from distill.actors.scorer import TraceScorer

    s = cfg.scorer
    return ds.map_batches(
        TraceScorer,
        batch_size=None,  # whole teacher blocks: all k samples of a problem together
        batch_format="pyarrow",
        fn_constructor_kwargs=dict(
            scorer=s,
            store_root=store_root,
            events=events,
            supervision=cfg.train.supervision,
            student_path=student_path,
        ),
        compute=ray.data.ActorPoolStrategy(min_size=s.replicas_min, max_size=s.replicas_max),
        **s.actor_options(),
    )


def in_loop_validation(cfg: RunConfig, run_dir: Path, events, in_loop_requests: str | None, engine=None):
    """Ray Train's validation of each checkpoint but the last: the eval requests in `in_loop_requests`
    (a JSON file), scored by a task that starts an evaluator (or uses `engine`, the run's EvalEngine).
    None without requests: no in-loop evaluation."""
    if in_loop_requests is None:
        return None
    from functools import partial

    from ray.train import ValidationConfig, ValidationTaskConfig

    from distill.pipelines.evaluate import evaluator_options, remote_options, validate_checkpoint

    return ValidationConfig(
        fn=partial(validate_checkpoint, events=events, engine=engine),
        task_config=ValidationTaskConfig(
            fn_kwargs={
                "requests_file": in_loop_requests,
                "out_dir": str(run_dir / "eval" / "in_loop"),
                "options": evaluator_options(cfg.eval, cfg.seed, cfg.train.trust_remote_code),
                "resources": remote_options(cfg.eval),
            }
        ),
        ray_remote_kwargs={"num_cpus": 0},
    )  # it only waits on the evaluator task it starts


def worker_group(tr: TrainConfig):
    """The training workers: how many, on what, and where (custom resources, node labels)."""
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=tr.workers,
        use_gpu=tr.use_gpu,
        resources_per_worker={"CPU": tr.num_cpus_per_worker, **tr.resources},
        label_selector=dict(tr.labels) or None,
    )


def student_trainer(
    cfg: RunConfig,
    train_ds,
    student_path: str,
    store_root: str,
    run_dir: Path,
    events,
    in_loop_requests: str | None = None,
    expected_traces: int = 0,
    engine=None,
    name: str = "train",
):
    """Ray Train TorchTrainer of the student; with `in_loop_requests` (a JSON file of eval requests),
    every checkpoint but the last is evaluated asynchronously by Ray Train's validation tasks.
    `expected_traces` (problems x samples) lets the trainer estimate the schedule's horizon in epoch 1.
    `engine`: the run's EvalEngine actor, which the in-loop evaluations then share (no engine start each).
    `name`: the Ray Train run's name under <run>/ray_train (a correction round's fit is one of its own)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from distill.actors.train_loop import train_loop_per_worker

    tr = cfg.train
    loop_config = {
        "train": tr,  # the config models themselves: pydantic models pickle across Ray
        "prompt": cfg.prompt,
        "seed": cfg.seed,
        "student_path": student_path,
        "store_root": store_root,
        "events": events,
        "in_loop_eval": in_loop_requests is not None,
        # what the stream will carry, to estimate the run's length while epoch 1 streams
        "expected_traces": expected_traces,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=worker_group(tr),
        torch_config=TorchConfig(backend="nccl" if tr.use_gpu else "gloo"),
        datasets={"train": train_ds},
        # Equal streaming splits per rank, without shard locality: with it, Ray Data's OutputSplitter holds a block
        # back until one stored on the worker's node arrives or 2 x workers are buffered, and a trace block is small
        # enough to be inlined, so it has no node: one trainer got each block only when the next one came (the last
        # only at the stream's end; seen in the split's "0/1 objects local" in ray-data logs, 2.60). The blocks are
        # a few KB: moving them costs nothing next to a teacher batch of latency. (Several workers still wait for
        # the rows that keep their splits equal.)
        dataset_config=DataConfig(datasets_to_split=["train"], enable_shard_locality=False),
        run_config=TrainRunConfig(
            name=name,
            storage_path=str((run_dir / "ray_train").resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # a failed worker group restarts from the latest checkpoint
            failure_config=FailureConfig(max_failures=tr.max_failures),
        ),
        validation_config=in_loop_validation(cfg, run_dir, events, in_loop_requests, engine),
    )


class EventPump:
    """Drains stage events from the Ray queue into RunMetrics (TensorBoard) and progress bars."""

    def __init__(
        self,
        queue,
        metrics: RunMetrics,
        n_problems: int,
        samples: int,
        interval: float = 0.5,
        on_teacher_ready=None,
        on_teacher_done=None,
    ):
        from tqdm import tqdm

        self.queue, self.metrics, self.interval = queue, metrics, interval
        self.n_problems, self.on_teacher_ready, self.on_teacher_done = n_problems, on_teacher_ready, on_teacher_done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distill-events", daemon=True)
        self.bars = {
            "teacher": tqdm(total=n_problems, desc="teacher problems", unit="prob", position=0),
            "scorer": tqdm(total=n_problems * samples, desc="scored traces  ", unit="trace", position=1),
            "train": tqdm(desc="train steps    ", unit="step", position=2),
        }

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._drain()
        for b in self.bars.values():
            b.close()

    def _drain(self) -> None:
        n = self.queue.size()
        if not n:
            return
        for event in self.queue.get_nowait_batch(n):
            self.metrics.add(event)
            ev = event.record()
            c = self.metrics.counters
            if ev["stage"] == "eval":
                accs = ", ".join(f"{k[4:]} {v:.3f}" for k, v in ev.items() if k.startswith("acc/"))
                self.bars["train"].write(f"[distill] eval {ev['model']} (step {ev['step']}): {accs}")
                continue
            bar = self.bars[ev["stage"]]
            if ev["stage"] == "teacher":
                bar.update(ev["rows_in"])
                if self.on_teacher_ready:  # its first batch is out: its engine is up, its start no longer contended
                    callback, self.on_teacher_ready = self.on_teacher_ready, None
                    callback()
                if self.on_teacher_done and c["teacher/problems"] >= self.n_problems:  # quarantined included
                    callback, self.on_teacher_done = self.on_teacher_done, None
                    callback()  # once: e.g. start the baseline evaluations on the freed cores
            elif ev["stage"] == "scorer":
                bar.update(ev["rows_in"])
                seen = c["scorer/accepted"] + c["scorer/rejected"]
                bar.set_postfix(accepted=int(c["scorer/accepted"]), rate=f"{c['scorer/accepted'] / max(seen, 1):.2f}")
            else:
                bar.update(1)
                bar.set_postfix(loss=f"{ev['loss']:.3f}", epoch=ev["epoch"])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain()
            except Exception as e:  # keep pumping; a lost update is better than a dead driver thread
                print(f"[distill] event pump: {type(e).__name__}: {e}")
            time.sleep(self.interval)


def export_student(checkpoint, student_dir: Path) -> None:
    """The student as a plain HF directory (transformers and vLLM load it as it is): the checkpoint
    without its training state; a resumed run replaces the one before."""
    from distill.actors.student import TRAINING_STATE_FILES

    with checkpoint.as_directory() as d:
        shutil.rmtree(student_dir, ignore_errors=True)
        shutil.copytree(d, student_dir, ignore=shutil.ignore_patterns(*TRAINING_STATE_FILES))
