"""The distilled student's model card (student/README.md): what it is, what made it, how well it does.

Written from the run's config and summary.json, so the card says only what the run measured: every
accuracy with its n and 95% interval, the comparison with the untrained student paired on the same
problems, and the provenance (commit, package versions) that produced it.
"""

from __future__ import annotations

from pathlib import Path


def _acc(m: dict) -> str:
    lo, hi = m.get("ci") or (None, None)
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    return f"{m['accuracy']:.3f}{ci} (n = {m['n']})"


def model_card(cfg, summary: dict) -> str:
    t, tr = cfg.teacher, cfg.train
    st = summary.get("stages", {})
    ev = summary.get("eval", {})
    lines = [
        "---",
        "library_name: transformers",
        "tags: [distill, reasoning-distillation]",
        "---",
        "",
        f"# Distilled student — run `{summary.get('run_id', '')}`",
        "",
        f"Base model **{tr.student}**, fine-tuned by distill on chain-of-thought traces "
        f"written by **{t.model}** and verified by the scorer (answers checked, arithmetic checked step by step).",
        "",
        "## Data",
        "",
        f"- problems: {', '.join(f'{s.kind}:{s.task or s.path} x {s.size} (seed {s.seed})' for s in cfg.sources)}",
        f"- teacher: temperature {t.temperature}, {t.samples} sample(s) per problem, max {t.max_tokens} tokens; "
        f"prompt: {(cfg.teacher_prompt().instruction or '(bare question)')!r}"
        + (f" with {len(cfg.teacher_prompt().examples)} few-shot example(s)" if cfg.teacher_prompt().examples else ""),
        f"- accepted traces: {st.get('scorer', {}).get('accepted', '?')} of "
        f"{st.get('scorer', {}).get('accepted', 0) + st.get('scorer', {}).get('rejected', 0)} "
        f"(policy {cfg.scorer.policy}; rejects {', '.join(cfg.scorer.reject_flags)})",
        f"- supervision: {tr.supervision}; the student's prompt: {cfg.prompt.instruction!r}"
        + (
            f"; prompt pool {sorted(tr.prompt_pool)} for {tr.prompt_pool_share:.0%} of examples"
            if tr.prompt_pool
            else ""
        ),
        "",
        "## Recipe",
        "",
        f"- {st.get('train', {}).get('steps', '?')} optimizer steps, {tr.epochs} epochs, micro-batch {tr.batch_size} "
        f"x accumulation {tr.grad_accum} x {tr.workers} worker(s)",
        f"- AdamW lr {tr.lr:g}, {tr.lr_schedule} schedule, warm-up {tr.warmup_ratio:.0%}, floor {tr.min_lr_ratio:g} x lr, "
        f"weight decay {tr.weight_decay:g}; loss on the completion only, end-of-turn included",
        f"- final training loss {st.get('train', {}).get('final_loss')}",
        "",
    ]
    splits = ev.get("splits", {})
    if splits:
        lines += [
            "## Evaluation (held-out problems, greedy)",
            "",
            "| split | distilled student | untrained student | teacher |",
            "|---|---|---|---|",
        ]
        for split, by_model in splits.items():
            cells = [_acc(by_model[m]) if m in by_model else "–" for m in ("student", "untrained", "teacher")]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
        lines.append("")
        for v in ev.get("comparisons", {}).get("verdicts", []):
            lines.append(f"- {v}")
        lines.append("")
    prov = summary.get("provenance", {})
    if prov:
        pk = ", ".join(f"{k} {v}" for k, v in prov.get("packages", {}).items())
        lines += [
            "## Provenance",
            "",
            f"- distill commit {prov.get('git_commit')}"
            + (" (with uncommitted changes)" if prov.get("git_dirty") else ""),
            f"- {pk}",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(PATH); model = AutoModelForCausalLM.from_pretrained(PATH)",
        "```",
        "or `vllm.LLM(model=PATH)`. Ask it as it trained: "
        f"the question, a blank line, then {cfg.prompt.instruction!r}.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(student_dir: Path, cfg, summary: dict) -> Path:
    path = Path(student_dir) / "README.md"
    path.write_text(model_card(cfg, summary))
    return path
