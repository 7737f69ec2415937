"""Correction rounds (issue 14): after the SFT epochs, the student learns from its own mistakes.

Each round is one Ray Data stream into one Ray Train fit, in the run's Ray session:

    round problems -> StudentSampler (the run's EvalEngine) -> SampleScorer -> ContinuationTeacher (vLLM)
                   -> CorrectionCommit (store; the supervision, SFT rows mixed in) -> trainer

The round's problems are training-distribution problems (the run's own, never an eval split), a
different slice each round. The round's fit starts from the student the round sampled (the SFT
student, then each round's), one epoch at a constant learning rate, under its own Ray Train name
(`correction-<n>`), so a failed worker group resumes within the round. Every stage reads the store's
ledger when it starts: committed samples and corrections are replayed, not generated again.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from distill.config import RunConfig


@dataclass
class RoundResult:
    round: int
    student_dir: Path
    checkpoint: object | None
    steps: int
    counts: dict = field(default_factory=dict)


def round_problems(problems: list[dict], round_: int, n: int) -> list[dict]:
    """Round `round_`'s problems (1-based): the next `n` of the run's training problems, wrapping."""
    if not problems:
        return []
    start = ((round_ - 1) * n) % len(problems)
    return [problems[(start + i) % len(problems)] for i in range(min(n, len(problems)))]


def round_config(cfg: RunConfig) -> RunConfig:
    """The training config of a round's fit: one epoch of the stream at a constant rate."""
    cc = cfg.train.correction
    train = cfg.train.model_copy(
        update={
            "epochs": 1,
            "lr": cc.lr or cfg.train.lr / 2,
            "lr_schedule": "constant",
            "warmup_ratio": 0.0,
            "torch_threads_later": None,
            "checkpoint_every": 0,
        }
    )
    return cfg.model_copy(update={"train": train})


def correction_stream(
    cfg: RunConfig,
    problems: list[dict],
    round_: int,
    model_dir: str,
    teacher_path: str,
    store_root: str,
    engine,
    sft_rows: list[dict],
):
    """The round's lazy stream of supervision rows (TRAIN_SCHEMA)."""
    import ray.data

    from distill.actors.corrector import CorrectionCommit, SampleScorer, StudentSampler

    cc, t = cfg.train.correction, cfg.teacher
    one = ray.data.ActorPoolStrategy(size=1)
    ds = ray.data.from_items(problems, override_num_blocks=max(1, min(len(problems) // cc.batch_size, 64)))
    ds = ds.map_batches(
        StudentSampler,
        batch_size=cc.batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs=dict(
            engine=engine, model_dir=model_dir, prompt=cfg.prompt, correction=cc, round_=round_, store_root=store_root
        ),
        compute=one,
        num_cpus=0,  # a client: the samples are generated on the EvalEngine actor's cores
    )
    sc = cfg.scorer
    ds = ds.map_batches(
        SampleScorer,
        batch_size=None,
        batch_format="pyarrow",
        fn_constructor_kwargs=dict(scorer=sc, store_root=store_root),
        compute=ray.data.ActorPoolStrategy(min_size=sc.replicas_min, max_size=sc.replicas_max),
        **cfg.scorer.actor_options(),
    )
    continued = "correction" in cc.keep
    if continued:  # self-samples alone (the `self` arm) need no teacher: no engine started for them
        ds = _continued(ds, cfg, teacher_path, store_root)
    return ds.map_batches(
        CorrectionCommit,
        batch_size=None,
        batch_format="pyarrow",
        fn_constructor_kwargs=dict(
            correction=cc,
            round_=round_,
            teacher_model=t.model,
            store_root=store_root,
            sft_rows=sft_rows,
            seed=cfg.seed,
            continued=continued,
        ),
        compute=one,
        num_cpus=0,
    )


def _continued(ds, cfg: RunConfig, teacher_path: str, store_root: str):
    """The teacher's continuation stage of a round's stream."""
    import ray.data

    from distill.actors.corrector import _continuation_class

    cc, t = cfg.train.correction, cfg.teacher
    # the teacher stage's pool and bindings (per replica), unless the rounds name cores of their own
    teacher = (
        t.model_copy(update={"cpu_threads_bind": cc.cpu_threads_bind, "replica_binds": []})
        if cc.cpu_threads_bind
        else t
    )
    return ds.map_batches(
        _continuation_class(),
        batch_size=None,
        batch_format="pyarrow",
        fn_constructor_kwargs=dict(
            teacher=teacher,
            # asked as the SFT traces were (the teacher's own prompt, e.g. its few-shot format): continuations
            # in the form the student already learns; the trainer then asks the student in its own prompt.
            # Measured on smoke (12 samples, 9 cut): under the student's plain prompt Qwen wrote 197 tokens a
            # continuation and 3/9 were accepted; under its own few-shot prompt 51 tokens, 5/9 accepted.
            prompt=cfg.teacher_prompt(),
            correction=cc,
            model_path=teacher_path,
            model_name=t.model,
            store_root=store_root,
        ),
        compute=ray.data.ActorPoolStrategy(
            min_size=t.replicas_min,
            max_size=t.replicas_max,
            max_tasks_in_flight_per_actor=t.concurrent_batches,
            max_concurrent_calls_per_actor=t.concurrent_batches,
        ),
        num_cpus=t.num_cpus,
        num_gpus=t.num_gpus,
        runtime_env={"env_vars": {"RAY_kill_child_processes_on_worker_exit": "0"}},  # as the teacher stage's
        **t.placement_options(),
    )


def run_rounds(
    cfg: RunConfig,
    run_dir: Path,
    problems: list[dict],
    sft_dir: Path,
    teacher_path: str,
    store_root: str,
    events,
    engine,
    sft_rows: list[dict],
    say=print,
) -> list[RoundResult]:
    """Every round of `cfg.train.correction`, each from the student the one before made; a round whose
    student is already exported (a resumed run) is not run again. `sft_rows`: what is mixed in."""
    cc = cfg.train.correction
    rcfg = round_config(cfg)
    results, model_dir = [], sft_dir
    for r in range(1, cc.rounds + 1):
        out_dir = run_dir / f"student-round{r}"
        probs = round_problems(problems, r, cc.problems)
        if (out_dir / "config.json").exists():
            say(f"[distill] correction round {r}: done before (resumed), {out_dir}")
            results.append(RoundResult(r, out_dir, None, 0, round_counts(store_root, r)))
            model_dir = out_dir
            continue
        say(
            f"[distill] correction round {r}/{cc.rounds}: {len(probs)} problems x {cc.samples} samples, "
            f"keep {'+'.join(cc.keep)}, {len(sft_rows) and cc.mix} SFT rows per problem mixed in"
        )
        stream = correction_stream(cfg, probs, r, str(model_dir), teacher_path, store_root, engine, sft_rows)
        steps, checkpoint = fit_and_export(
            rcfg, stream, model_dir, store_root, run_dir, events, f"correction-{r}", out_dir
        )
        if checkpoint is not None:
            model_dir = out_dir
        else:  # nothing to train on: the next round (and the final student) is the one before
            shutil.rmtree(out_dir, ignore_errors=True)
        counts = round_counts(store_root, r)
        (run_dir / "corrections").mkdir(exist_ok=True)
        (run_dir / "corrections" / f"round{r}.json").write_text(json.dumps({**counts, "steps": steps}, indent=1))
        say(f"[distill] correction round {r}: {_describe(counts)}, {steps} steps")
        results.append(RoundResult(r, Path(model_dir), checkpoint, steps, counts))
    return results


def fit_and_export(
    rcfg: RunConfig, stream, from_dir: Path, store_root: str, run_dir: Path, events, name: str, out_dir: Path
):
    """One round's or arm's fit (Ray Train name `name`) from the student in `from_dir`, its student exported
    to `out_dir` and its Ray Train checkpoints then dropped (with the optimizer state, ~1.6 GB each for the
    135M student; a smoke run with a round and two arms otherwise kept 12 GB).
    -> (its steps, the exported student as a Checkpoint; None when there was nothing to train on)."""
    from ray.train import Checkpoint

    from distill.pipelines.stages import export_student, student_trainer

    result = student_trainer(rcfg, stream, str(from_dir), store_root, run_dir, events, name=name).fit()
    steps = int((result.metrics or {}).get("step") or 0)
    if result.checkpoint is None:
        return steps, None
    export_student(result.checkpoint, out_dir)
    shutil.rmtree(run_dir / "ray_train" / name, ignore_errors=True)
    return steps, Checkpoint.from_directory(str(out_dir))


def round_counts(store_root: str, round_: int) -> dict:
    """What a round made, from the store: samples right / cut / not localised, corrections accepted,
    and the teacher tokens they cost."""
    from distill.actors.corrector import sample_model
    from distill.data.store import TraceStore

    store = TraceStore(store_root)
    s = [r for r in store.samples().to_pylist() if r["teacher_model"] == sample_model(round_)]
    c = [r for r in store.corrections().to_pylist() if r["round"] == round_]
    corr = [r for r in c if r["kind"] == "correction"]
    return {
        "samples": len(s),
        "samples_correct": sum(bool(r["correct"]) for r in s),
        "corrections": len(corr),
        "corrections_accepted": sum(r["verdict"] == "accepted" for r in corr),
        "self_accepted": sum(r["kind"] == "self" and r["verdict"] == "accepted" for r in c),
        "teacher_tokens": sum(r["teacher_tokens"] or 0 for r in corr),
        "rejected_reasons": _reasons(corr),
    }


def _reasons(rows: list[dict]) -> dict:
    out: dict[str, int] = {}
    for r in rows:
        if r["verdict"] != "accepted":
            out[r["reason"]] = out.get(r["reason"], 0) + 1
    return out


def _describe(c: dict) -> str:
    return (
        f"{c['samples_correct']}/{c['samples']} samples right, {c['corrections_accepted']}/{c['corrections']} "
        f"corrections accepted ({c['teacher_tokens']} teacher tokens)"
    )


def run_arms(
    cfg: RunConfig,
    run_dir: Path,
    problems: list[dict],
    sft_dir: Path,
    teacher_path: str,
    student_path: str,
    store_root: str,
    events,
    engine,
    sft_rows: list[dict],
    say=print,
) -> list[dict]:
    """The comparison students of `train.correction.arms`, each from the SFT student on round 1 alone (its
    samples and continuations replayed from the store, not generated again), under Ray Train names of
    their own, with the same `sft_rows` mixed in. -> per arm: its name, directory, steps and what it
    trained on."""
    cc = cfg.train.correction
    rcfg = round_config(cfg)
    probs = round_problems(problems, 1, cc.problems)
    spent = round_counts(store_root, 1)["teacher_tokens"] if cc.arms else 0  # round 1's continuations
    out = []
    for arm in cc.arms:
        out_dir = run_dir / f"student-{arm}"
        info_file = run_dir / "corrections" / f"arm-{arm}.json"
        if (out_dir / "config.json").exists() and info_file.exists():  # a resumed run: trained before
            out.append({**json.loads(info_file.read_text()), "dir": str(out_dir)})
            continue
        if arm == "teacher":
            stream, info = teacher_arm_stream(
                cfg, run_dir, problems, probs, teacher_path, student_path, store_root, sft_rows, spent
            )
        else:
            acfg = cfg.model_copy(
                update={"train": cfg.train.model_copy(update={"correction": cc.model_copy(update={"keep": [arm]})})}
            )
            stream = correction_stream(acfg, probs, 1, str(sft_dir), teacher_path, store_root, engine, sft_rows)
            info = {"teacher_tokens": spent if arm == "correction" else 0}
        say(f"[distill] comparison arm {arm}: from the SFT student, round 1's problems")
        steps, checkpoint = fit_and_export(rcfg, stream, sft_dir, store_root, run_dir, events, f"arm-{arm}", out_dir)
        if checkpoint is None:
            say(f"[distill] comparison arm {arm}: nothing to train on")
            continue
        if arm == "teacher":  # what the arm's traces actually cost, now that they are generated
            from distill.data.store import TraceStore

            t = TraceStore(info["store"]).traces()
            info.update(teacher_tokens=sum(t.column("completion_tokens").to_pylist()), traces=t.num_rows)
        info = {"arm": arm, "steps": steps, **info}
        info_file.parent.mkdir(exist_ok=True)
        info_file.write_text(json.dumps(info, indent=1))
        say(f"[distill] comparison arm {arm}: {steps} steps, {info['teacher_tokens']} teacher tokens")
        out.append({**info, "dir": str(out_dir)})
    return out


def teacher_arm_stream(
    cfg: RunConfig,
    run_dir: Path,
    problems: list[dict],
    probs: list[dict],
    teacher_path: str,
    student_path: str,
    store_root: str,
    sft_rows: list[dict],
    budget: int,
):
    """More teacher traces at equal cost: new training-distribution problems (the sources at a far seed),
    as many as the teacher needs to spend `budget` tokens (round 1's continuations') at its mean tokens a
    trace, through the run's own teacher and scorer stages into a store of their own; the same SFT rows
    mixed in as the correction arm gets. -> (the stream, what it is)."""
    import ray.data

    from distill.actors.corrector import mix_rows
    from distill.data.sources import load_problems
    from distill.data.store import TraceStore
    from distill.pipelines.stages import generation_stream

    tokens = TraceStore(store_root).traces().column("completion_tokens").to_pylist()
    per = sum(tokens) / max(len(tokens), 1) or 1.0
    n = max(1, math.ceil(budget / per))
    seen = {p["problem_id"] for p in problems}
    far = [s.model_copy(update={"seed": s.seed + 700_000, "size": n}) for s in cfg.sources[:1]]
    extra = [p for p in load_problems(far).problems if p["problem_id"] not in seen][:n]
    arm_store = run_dir / "store-teacher-arm"
    ds = generation_stream(cfg, extra, teacher_path, str(arm_store), None, student_path)
    mix = mix_rows(sft_rows, cfg.train.correction.mix, cfg.seed, 1, [p["problem_id"] for p in probs])
    if mix:
        from distill.data.schema import TRAIN_SCHEMA, to_table

        ds = ds.union(ray.data.from_arrow(to_table(mix, TRAIN_SCHEMA)))
    return ds, {
        "budget_tokens": budget,
        "tokens_per_trace": round(per, 1),
        "problems": len(extra),
        "store": str(arm_store),
    }
