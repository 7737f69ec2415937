"""How a problem is asked: prompt styles as chat messages, and the training prompt pool.

A style is {system, instruction, examples, prefill} (PromptConfig / PromptStyle in distill/config/sources.py):
the teacher's prompt, the student's prompt, the eval prompt styles and the training pool all share
this shape and this one renderer, so "the same style" means the same messages everywhere.
Pure Python (no ray / torch).
"""

from __future__ import annotations

from typing import Any, Mapping

from distill.data.schema import stable_id

Style = dict[str, Any]  # {"system": str | None, "instruction": str, "examples": [{question, answer}], "prefill": str}


def style_of(prompt: Any) -> Style:
    """A config model (PromptConfig / PromptStyle) or a dict -> the plain style dict."""
    d = prompt if isinstance(prompt, Mapping) else prompt.model_dump()
    return {
        "system": d.get("system"),
        "instruction": d.get("instruction", "") or "",
        "examples": [dict(e) for e in d.get("examples") or []],
        "prefill": d.get("prefill", "") or "",
    }


def messages_for(question: str, style: Style) -> list[dict]:
    """Chat messages of one problem in one style: system, few-shot turns, then the question."""

    def user(q: str) -> dict:
        q = q.strip()
        return {"role": "user", "content": f"{q}\n\n{style['instruction']}" if style.get("instruction") else q}

    msgs = [{"role": "system", "content": style["system"]}] if style.get("system") else []
    for ex in style.get("examples") or []:
        msgs += [user(ex["question"]), {"role": "assistant", "content": ex["answer"]}]
    return msgs + [user(question)]


def _canonical(style: Style) -> tuple:
    """What makes two styles the same request: whitespace-normalised text of every part."""

    def norm(s: str | None) -> str:
        return " ".join((s or "").split())

    return (
        norm(style.get("system")),
        norm(style.get("instruction")),
        norm(style.get("prefill")),
        tuple((norm(e["question"]), norm(e["answer"])) for e in style.get("examples") or []),
    )


def same_style(a: Any, b: Any) -> bool:
    return _canonical(style_of(a)) == _canonical(style_of(b))


def pool_clashes(pool: Mapping[str, Any], eval_styles: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(pool name, eval style name) of every training-pool style identical to an eval prompt style:
    training on one would leave the prompt_style split no longer unseen."""
    return [(p, e) for p, ps in pool.items() for e, es in eval_styles.items() if same_style(ps, es)]


def pick_style(key: str, base: Style, pool: Mapping[str, Style], pool_share: float) -> tuple[str, Style]:
    """The style one training example is asked in: a pool style for a `pool_share` of examples, else
    `base` (the student prompt). Deterministic in `key` (the trace_id): every epoch and every rank
    ask the same example the same way, and a resumed run repeats it."""
    if not pool or pool_share <= 0:
        return "student prompt", base
    u = int(stable_id("prompt-pool", key), 16) / 16**16  # uniform in [0, 1)
    if u >= pool_share:
        return "student prompt", base
    names = sorted(pool)
    name = names[min(int(u / pool_share * len(names)), len(names) - 1)]
    return name, style_of(pool[name])
