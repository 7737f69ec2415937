"""`distill run`: the whole streaming pipeline, top to bottom.

  problems ─► teacher actors (vLLM) ─► scorer actors ─┬─► trace store (Parquet)
                                                      └─► Ray Train workers (student SFT) ─► HF checkpoint

Generation, scoring and training run at the same time: the trainer pulls accepted traces from the live
stream in epoch 1, and reads the trace store in later epochs.
"""
from __future__ import annotations

import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path

from distill.config import RunConfig
from distill.metrics import RunMetrics, write_json
from distill.models import resolve_model
from distill.sources import load_problems
from distill.store import TraceStore


def new_run_dir(cfg: RunConfig, prefix: str | None = None) -> tuple[str, Path]:
    name = f"{prefix}-{cfg.name}" if prefix else cfg.name
    run_id = f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(cfg.output_dir).resolve() / run_id
    run_dir.mkdir(parents=True)
    return run_id, run_dir


def main(cfg: RunConfig) -> dict:
    from ray.util.queue import Queue

    from cluster.session import ray_session
    from pipelines.stages import EventPump, generation_stream, student_trainer

    # 1. Set up: run dir, resolved config, models, problems.
    run_id, run_dir = new_run_dir(cfg)
    t_start = time.time()
    (run_dir / "config.yaml").write_text(_yaml(cfg))
    print(f"[distill] run {run_id} -> {run_dir}")
    teacher_path = resolve_model(cfg.teacher.model)
    student_path = resolve_model(cfg.train.student)
    store = TraceStore(run_dir / "store")
    loaded = load_problems(cfg.sources)
    store.append_quarantine(loaded.quarantined)
    print(f"[distill] {len(loaded.problems)} problems, {len(loaded.quarantined)} quarantined at the source")
    if not loaded.problems:
        raise SystemExit("no valid problems: see the quarantine table in " + str(store.quarantine_dir))

    # 2. Stream: teacher -> scorer -> trainer, all at once on one Ray cluster.
    metrics = RunMetrics(run_dir, t_start)
    with ray_session(cfg.ray):
        events = Queue(actor_options={"num_cpus": 0})
        stream = generation_stream(cfg, loaded.problems, teacher_path, str(store.root), events, student_path)
        trainer = student_trainer(cfg, stream, student_path, str(store.root), run_dir, events)
        with EventPump(events, metrics, len(loaded.problems), cfg.teacher.samples):
            result = trainer.fit()
        checkpoint = result.checkpoint
    wall_s = time.time() - t_start

    # 3. Finish: the student as a plain HF directory, summary, timeline, TensorBoard hparams.
    student_dir = run_dir / "student"
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            shutil.copytree(d, student_dir)
    summary = metrics.summary(wall_s, extra={
        "run_id": run_id, "run_dir": str(run_dir),
        "problems": len(loaded.problems),
        "quarantined": {"source": len(loaded.quarantined), "teacher": int(metrics.counters["teacher/quarantined"]),
                        "scorer": int(metrics.counters["scorer/quarantined"])},
        "trace_store": str(store.root), "stored_traces": store.traces().num_rows,
        "quarantine_rows": store.quarantine().num_rows,
        "student_checkpoint": str(student_dir) if checkpoint is not None else None})
    metrics.plot_timeline(run_dir / "timeline.png", wall_s)
    _hparams(metrics, cfg, summary)
    metrics.close()
    write_json(run_dir / "summary.json", summary)
    _print_summary(summary)
    return summary


def _yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _hparams(metrics: RunMetrics, cfg: RunConfig, summary: dict) -> None:
    flat = {f"{k}.{kk}": (vv if isinstance(vv, (int, float, str, bool)) else str(vv))
            for k, v in cfg.model_dump(mode="json").items() if isinstance(v, dict) for kk, vv in v.items()}
    st = summary["stages"]
    metrics.hparams(flat, {"hparam/accept_rate": st["scorer"]["accept_rate"],
                           "hparam/final_loss": st["train"]["final_loss"] or float("nan"),
                           "hparam/wall_s": summary["wall_s"]})


def _print_summary(s: dict) -> None:
    st = s["stages"]
    print(f"\n[distill] done in {s['wall_s']:.0f}s  run dir: {s['run_dir']}")
    print(f"  teacher: {st['teacher']['problems']} problems, {st['teacher']['tokens_out']} tokens, "
          f"{st['teacher']['tokens_per_s']} tok/s (busy {st['teacher']['busy_s']}s, ended at {st['teacher']['end']}s)")
    print(f"  scorer : {st['scorer']['accepted']} accepted / {st['scorer']['rejected']} rejected "
          f"(accept rate {st['scorer']['accept_rate']}), {st['scorer']['quarantined']} quarantined")
    print(f"  train  : {st['train']['steps']} steps, {st['train']['tokens']} tokens, "
          f"{st['train']['tokens_per_s']} tok/s, first step at {st['train']['first_step_at']}s, "
          f"final loss {st['train']['final_loss']}")
    print(f"  overlap ratio wall/(sum of busy) = {s['overlap_ratio']}   student: {s['student_checkpoint']}")
