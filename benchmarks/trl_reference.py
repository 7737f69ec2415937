"""Reference arm: what a user would do without distill -- plain full-trace SFT with TRL's `SFTTrainer`
at its defaults -- on the same traces, compared paired with distill's students on the same problems.

    make bench-extra               # TRL is an optional benchmark extra, not a dependency of distill
                                   # (re-resolving the cpu extra, e.g. `pip install -e ".[cpu,bench]"`,
                                   # brings torchvision back, which breaks transformers' import in every
                                   # worker: the target installs the extra alone and removes it)
    .venv/bin/python benchmarks/trl_reference.py --store runs/<id>/store --recipe quickstart \
        --compare runs/<id>/student [--compare runs/sweep-.../students/<arm> ...] [--split validation]

Trains SmolLM2 (the recipe's student) with `SFTTrainer(SFTConfig(...defaults...))` on every accepted
trace's full text as a conversational prompt/completion pair in the recipe's student prompt (TRL's
defaults: lr 2e-5, linear decay, 3 epochs, batch 8, loss on the completion only). The only settings
changed are the ones a CPU needs (use_cpu, bf16 where the CPU has it) and no checkpointing. Then
every model answers the recipe's `--split` problems (validation by default: the tuning split) on
distill's evaluator, and each compared model is set against TRL's, paired (Newcombe interval,
McNemar). Writes trl_reference.json and each model's answers (<model>.jsonl) in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_trl(store: str, cfg, out_dir: Path) -> tuple[Path, dict]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from distill.actors.train_loop import store_training_rows
    from distill.hardware import native_bf16
    from distill.models import resolve_model
    from distill.prompts import messages_for, style_of

    rows = store_training_rows(store, {"full": 1.0})
    if not rows:
        raise SystemExit(f"{store}: no accepted traces to train on")
    style = style_of(cfg.prompt)
    data = Dataset.from_list(
        [
            {"prompt": messages_for(r["question"], style), "completion": [{"role": "assistant", "content": r["text"]}]}
            for r in rows
        ]
    )
    path = resolve_model(cfg.train.student)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(out_dir / "trl_run"),
        use_cpu=True,
        bf16=native_bf16(False),
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        seed=cfg.seed,
    )
    t0 = time.time()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    result = trainer.train()
    model_dir = out_dir / "trl_student"
    trainer.save_model(str(model_dir))
    tok.save_pretrained(str(model_dir))
    return model_dir, {
        "examples": len(rows),
        "train_s": round(time.time() - t0, 1),
        "steps": result.global_step,
        "final_loss": result.training_loss,
        "lr": args.learning_rate,
        "epochs": args.num_train_epochs,
        "batch": args.per_device_train_batch_size,
        "schedule": str(args.lr_scheduler_type),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="the trace store to train on (runs/<id>/store)")
    ap.add_argument("--recipe", default="quickstart", help="recipe whose student, prompt and suite are used")
    ap.add_argument("--compare", action="append", default=[], help="student directories to compare with TRL's")
    ap.add_argument("--split", default="validation", choices=["validation", "in_distribution"])
    ap.add_argument("--out", default="runs/trl-reference")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()

    from distill.cluster.session import ray_session
    from distill.config import load_config
    from distill.data.store import TraceStore
    from distill.eval.arms import correct_by_problem
    from distill.eval.stats import accuracy_ci, paired_diff
    from distill.eval.suite import load_suite
    from distill.pipelines.evaluate import train_problem_ids
    from distill.pipelines.sweep import evaluate_models, validation_problems

    cfg = load_config(a.recipe, a.set)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    store = Path(a.store).resolve()
    model_dir, train_info = train_trl(str(store), cfg, out)
    # The sweep's own selection and evaluation: the same problems, prompt, decoding and evaluator as its arms.
    if a.split == "validation":
        problems = validation_problems(cfg, TraceStore(store))["problems"]
    else:
        problems = load_suite(cfg.eval, train_problem_ids(cfg, store))["problems"]["in_distribution"]
    models = {
        "trl_sft_defaults": str(model_dir),
        **{
            Path(c).name if Path(c).name != "student" else Path(c).parent.name: str(Path(c).resolve())
            for c in a.compare
        },
    }
    with ray_session(cfg.ray):
        evals = evaluate_models(cfg, models, problems)
    preds = {name: ev["predictions"] for name, ev in evals.items()}
    for name, ps in preds.items():  # per problem, as the sweep's eval/<arm>.jsonl: for pooling seeds and runs
        (out / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in ps))
    result = {
        "train": train_info,
        "split": a.split,
        "n": len(problems),
        "models": models,
        "accuracy": {m: accuracy_ci([p["correct"] for p in ps]) for m, ps in preds.items()},
        "vs_trl": {},
    }
    ref = correct_by_problem(preds["trl_sft_defaults"])
    ids = sorted(ref)
    for m, ps in preds.items():
        if m != "trl_sft_defaults":
            mine = correct_by_problem(ps)
            result["vs_trl"][m] = paired_diff([mine[i] for i in ids], [ref[i] for i in ids])
    (out / "trl_reference.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "models"}, indent=1))


if __name__ == "__main__":
    main()
