"""The transfer suite: which problems, asked how, and the `eval` object of summary.json.

Pure Python (no ray / vllm / torch): loading the splits, building every request the evaluator
engines answer, scoring an answer, and folding predictions into metrics per split and model.

Splits (all from config, see EvalConfig):
  in_distribution   held-out problems of the training tasks, asked with the training prompt
  prompt_style      the first `style_problems` of those, asked in each configured style
  related           tasks never trained on (reasoning-gym, BIG-bench task.json)
  difficulty_shift  the training tasks at harder settings
  direct            the in_distribution problems asked for an immediate answer ("does reasoning help")
"""

from __future__ import annotations

import json
from collections import defaultdict

from distill.config import EvalConfig, PromptConfig
from distill.data.sources import load_problems
from distill.eval.compare import compare
from distill.eval.metrics import imitation_fidelity, prompt_style_metrics, reasoning_delta, split_metrics
from distill.prompts import messages_for, style_of
from distill.trace.anatomy import analyse
from distill.trace.answers import extract_answer, is_correct, verify

SOURCE_SPLITS = ("in_distribution", "related", "difficulty_shift")
TRAIN_STYLE = "training prompt"


def load_suite(ev: EvalConfig, train_ids: set[str]) -> dict:
    """{"problems": {split: [problem]}, "checks": {split: {"n", "dropped_overlap", "quarantined"}}}.

    A problem whose problem_id is in `train_ids` (what the student trained on) is dropped and
    counted, so no split can hold a training problem; the result is asserted, not assumed.
    """
    problems, checks = {}, {}
    for split in SOURCE_SPLITS + ("validation",):
        sources = getattr(ev, split)
        if not sources:
            continue
        loaded = load_problems(sources)
        kept = [p for p in loaded.problems if p["problem_id"] not in train_ids]
        checks[split] = {
            "n": len(kept),
            "dropped_overlap": len(loaded.problems) - len(kept),
            "quarantined": len(loaded.quarantined),
        }
        if loaded.problems and not kept:
            raise ValueError(
                f"eval.{split}: all {len(loaded.problems)} problems are training problems (same "
                "problem_id). reasoning-gym draws item i from seed + i: use a seed further away."
            )
        problems[split] = kept
    if "validation" in problems:  # tuning problems never double as test problems
        test_ids = {p["problem_id"] for s, ps in problems.items() if s != "validation" for p in ps}
        kept = [p for p in problems["validation"] if p["problem_id"] not in test_ids]
        checks["validation"]["dropped_test_overlap"] = len(problems["validation"]) - len(kept)
        problems["validation"] = kept
    overlap = {p["problem_id"] for ps in problems.values() for p in ps} & train_ids
    assert not overlap, f"held-out splits hold {len(overlap)} training problem(s)"
    return {"problems": problems, "checks": checks}


def eval_request(
    split: str, style_name: str, style: dict, problem: dict, max_tokens: int, n: int = 1, temperature: float = 0.0
) -> dict:
    """One generation request (what Evaluator.run answers): the problem asked in `style`, n samples."""
    return {
        "split": split,
        "style": style_name,
        "problem": problem,
        "messages": messages_for(problem["question"], style),
        "prefill": style.get("prefill", ""),
        "max_tokens": max_tokens,
        "n": n,
        "temperature": temperature,
    }


def build_requests(
    suite: dict, ev: EvalConfig, train_prompt: PromptConfig, splits: tuple[str, ...] | list[str] | None = None
) -> list[dict]:
    """Every generation request of the suite (or of `splits` only) for one model."""
    probs, train = suite["problems"], style_of(train_prompt)
    want = (
        set(splits)
        if splits is not None
        else {"in_distribution", "prompt_style", "related", "difficulty_shift", "direct"}
    )
    reqs: list[dict] = []
    ind = probs.get("in_distribution", [])
    for split in SOURCE_SPLITS + ("validation",):
        if split in want:
            reqs += [eval_request(split, TRAIN_STYLE, train, p, ev.max_tokens) for p in probs.get(split, [])]
    if "in_distribution" in want and ev.samples > 1:
        reqs += [
            eval_request("in_distribution_sampled", TRAIN_STYLE, train, p, ev.max_tokens, ev.samples, ev.temperature)
            for p in ind
        ]
    if "prompt_style" in want:
        for name, style in ev.prompt_styles.items():
            reqs += [
                eval_request("prompt_style", name, style_of(style), p, ev.max_tokens) for p in ind[: ev.style_problems]
            ]
    if "direct" in want:
        reqs += [eval_request("direct", "direct", style_of(ev.direct), p, ev.direct_max_tokens) for p in ind]
    return reqs


def score_answer(problem: dict, answer: str | None) -> bool:
    """Full credit for `answer` on `problem` (BIG-bench multiple choice scored by the chosen option)."""
    meta = json.loads(problem["metadata"] or "{}")
    if problem["source"].startswith("bigbench:"):
        from distill.data.bigbench import score_bigbench

        return score_bigbench(answer, problem)
    try:
        return is_correct(verify(answer, problem["reference_answer"], problem["verifier"], meta, problem["question"]))
    except Exception:  # a verifier crash scores 0 for this problem, never the whole evaluation
        return False


def score_text(problem: dict, text: str, finish_reason: str = "stop") -> dict:
    """Extract and score. A cut-off output (finish_reason "length") counts as no answer unless it
    already stated one (answer line or \\boxed{}): its last number is wherever the cut fell.
    `wrong_steps`: a right answer reached through a wrong arithmetic step (the scorer's own check)."""
    answer, rule = extract_answer(text)
    if finish_reason == "length" and rule == "last_number":
        answer, rule = None, "truncated"
    correct = bool(answer is not None and score_answer(problem, answer))
    return {
        "answer": answer,
        "answer_rule": rule,
        "correct": correct,
        "wrong_steps": correct and analyse(text).first_error_step is not None,
    }


def prediction(request: dict, outputs: list[tuple[str, int, str]]) -> dict:
    """A scored prediction: the first output is the answer; with n > 1 all outputs are `samples`."""
    p = request["problem"]
    text, tokens, finish = outputs[0]
    text = request["prefill"] + text if request["prefill"] else text
    out = {
        "split": request["split"],
        "style": request["style"],
        "problem_id": p["problem_id"],
        "source": p["source"],
        "question": p["question"],
        "reference": p["reference_answer"],
        "text": text,
        "tokens": tokens,
        "finish_reason": finish,
        **score_text(p, text, finish),
    }
    if request["n"] > 1:
        out["samples"] = [dict(score_text(p, request["prefill"] + t, f), tokens=n) for t, n, f in outputs]
    return out


def predictions(requests: list[dict], outputs: list[list]) -> list[dict]:
    """Scored predictions of raw generations (per request: [(text, tokens, finish_reason), ...])."""
    return [prediction(r, [tuple(o) for o in outs]) for r, outs in zip(requests, outputs)]


def _r(x):
    return round(x, 4) if isinstance(x, float) else x


def summarize(preds: dict[str, list[dict]], reference: str = "teacher") -> dict:
    """The `eval` object: metrics by split and model, plus prompt-style robustness, the reasoning
    delta and imitation fidelity (student text vs the `reference` model's, in_distribution)."""
    splits: dict[str, dict] = defaultdict(dict)
    styles, reasoning, fidelity = {}, {}, {}
    for model, ps in preds.items():
        by_split: dict[str, list[dict]] = defaultdict(list)
        for p in ps:
            by_split[p["split"]].append(p)
        sampled = {p["problem_id"]: p["samples"] for p in by_split.pop("in_distribution_sampled", [])}
        for split in SOURCE_SPLITS + ("validation",):
            if split not in by_split:
                continue
            rows = [
                dict(p, samples=sampled[p["problem_id"]])
                if split == "in_distribution" and p["problem_id"] in sampled
                else p
                for p in by_split[split]
            ]
            m = split_metrics(rows)
            if split not in ("in_distribution", "validation"):
                by_source: dict[str, list[dict]] = defaultdict(list)
                for p in rows:
                    by_source[p["source"]].append(p)
                m["by_source"] = {s: split_metrics(r) for s, r in sorted(by_source.items())}
            splits[split][model] = _rounded_any(m)
        if by_split.get("prompt_style"):
            by_style: dict[str, list[dict]] = defaultdict(list)
            for p in by_split["prompt_style"]:
                by_style[p["style"]].append(p)
            st = prompt_style_metrics(by_style)
            st["mean_tokens"] = {s: split_metrics(r)["mean_tokens"] for s, r in by_style.items()}
            styles[model] = _rounded_any(st)
            splits["prompt_style"][model] = _rounded_any(split_metrics(by_split["prompt_style"]))
        if by_split.get("direct") and by_split.get("in_distribution"):
            reasoning[model] = _rounded_any(reasoning_delta(by_split["direct"], by_split["in_distribution"]))
    ref = {p["problem_id"]: p["text"] for p in preds.get(reference, []) if p["split"] == "in_distribution"}
    if ref:
        for model, ps in preds.items():
            if model != reference:
                mine = {p["problem_id"]: p["text"] for p in ps if p["split"] == "in_distribution"}
                fidelity[model] = _rounded_any(imitation_fidelity(mine, ref))
    return {
        "splits": dict(splits),
        "prompt_style": styles,
        "reasoning_help": reasoning,
        "imitation_fidelity": fidelity,
        "fidelity_reference": reference,
        "comparisons": _rounded_any(compare(preds)),
    }


def _rounded_any(x):
    if isinstance(x, dict):
        return {k: _rounded_any(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded_any(v) for v in x]
    return _r(x)


def side_by_side(preds: dict[str, list[dict]], student: str, reference: str, per_outcome: int) -> list[dict]:
    """Sample in_distribution problems with the reference's and the student's text, `per_outcome`
    where the student is right and as many where it is wrong (first ones by problem order)."""
    ref = {p["problem_id"]: p for p in preds.get(reference, []) if p["split"] == "in_distribution"}
    out, taken = [], {True: 0, False: 0}
    for p in preds.get(student, []):
        if p["split"] != "in_distribution" or p["problem_id"] not in ref or taken[p["correct"]] >= per_outcome:
            continue
        taken[p["correct"]] += 1
        r = ref[p["problem_id"]]
        out.append(
            {
                "problem_id": p["problem_id"],
                "reference_answer": p["reference"],
                "student_correct": p["correct"],
                "reference_correct": r["correct"],
                "question": p["question"],
                "teacher_text": r["text"],
                "student_text": p["text"],
                "teacher_answer": r["answer"],
                "student_answer": p["answer"],
            }
        )
    return sorted(out, key=lambda x: not x["student_correct"])
