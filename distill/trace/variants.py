"""Supervision granularity variants of one accepted trace: which parts of the teacher's text we train on.

answer_only      `Answer: {answer}` and nothing else.
decision_points  the steps on the decision path (the answer and, transitively, the steps producing the
                 values it uses), joined with "\\n". No decision path -> the answer_only text.
plan             the plan steps, then the teacher's last answer statement.
full             the teacher's trace verbatim (the baseline of the sweep; never edited).
full_no_filler   every step but role=filler, original separators between steps that were adjacent.
place_value      full_no_filler with each verified integer step `a ± b = c` whose b has two or more
                 non-zero digits split by place value, one line per digit of b, highest first:
                 `902 - 68 = 834` -> `902 - 60 = 842` / `842 - 8 = 834`. Finer than the teacher's own
                 step: each line changes one digit of a running total (plus its carry), an operation a
                 135M student can learn from a few hundred traces where a whole multi-digit sum is not.

`choose_variant` picks one variant per trace for a supervision mixture.

Every variant but `full` ends in a final-answer statement that extracts to the verified answer: when
the kept steps do not, a line `Answer: {answer}` is appended. `full` is already known to extract to it,
since the verified answer was extracted from that very text. Pure functions, no torch / ray.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from distill.data.schema import require_columns, stable_id
from distill.trace.anatomy import Anatomy, StepAnatomy
from distill.trace.answers import extract_answer, is_correct, verify

VARIANTS = ("answer_only", "decision_points", "plan", "full", "full_no_filler", "place_value")
VARIANT_INPUT = ("trace_id", "text", "answer", "reference_answer", "verifier", "metadata", "question")

Span = dict[str, Any]  # {start, end, role, on_path}: char span of one kept step in the variant text


def answer_line(answer: str) -> str:
    # A multi-line answer (a grid) goes on the lines after "Answer:", where extraction reads a block.
    return f"Answer:\n{answer}" if "\n" in answer else f"Answer: {answer}"


def _same_answer(text: str, answer: str) -> bool:
    found, _ = extract_answer(text)
    return found is not None and is_correct(verify(found, answer, "exact", None))


def _assemble(
    text: str, steps: list[StepAnatomy], adjacent_gaps: bool, split: Callable[[str], list[str] | None] | None = None
) -> tuple[str, list[Span]]:
    """Kept steps -> (variant text, spans). Original gap between steps adjacent in the trace, else "\\n".
    `split(step text)` may rewrite a step as several lines; those go on lines of their own."""
    parts: list[str] = []
    spans: list[Span] = []
    pos, prev, prev_split = 0, None, False
    for s in steps:
        lines = split(s.text) if split else None
        for k, line in enumerate(lines or [s.text]):
            if prev is not None:
                keep = adjacent_gaps and k == 0 and not lines and not prev_split and s.index == prev.index + 1
                gap = text[prev.end : s.start] if keep else "\n"
                parts.append(gap)
                pos += len(gap)
            parts.append(line)
            spans.append({"start": pos, "end": pos + len(line), "role": s.role, "on_path": s.on_path})
            pos += len(line)
            prev = s
        prev_split = bool(lines)
    return "".join(parts), spans


def _ensure_answer(body: str, spans: list[Span], answer: str) -> tuple[str, list[Span]]:
    """Append `Answer: {answer}` unless the last kept step is an answer statement of the verified answer."""
    if spans and spans[-1]["role"] == "answer" and _same_answer(body, answer):
        return body, spans
    line = answer_line(answer)
    start = len(body) + 1 if body else 0
    text = f"{body}\n{line}" if body else line
    return text, [*spans, {"start": start, "end": start + len(line), "role": "answer", "on_path": True}]


# One integer addition or subtraction as the whole step ("Step 2: " labels and a closing "." allowed).
# ASCII digits without leading zeros, at most 30 of them ("007" or a 5,000-digit number is left alone).
_INT = r"(?:0|[1-9][0-9]{0,29})"
_ADD_STEP = re.compile(
    rf"(?P<label>(?:Step\s*[0-9]+\s*[:.]\s*)?)(?P<a>-?{_INT})\s*(?P<op>[+-])\s*(?P<b>{_INT})"
    rf"\s*=\s*(?P<c>-?{_INT})\s*\.?"
)


def split_place_value(step: str) -> list[str] | None:
    """`a ± b = c` -> one line per non-zero digit of b, highest place first; None when the step is not a
    single correct integer addition/subtraction or b has fewer than two non-zero digits."""
    m = _ADD_STEP.fullmatch(step.strip())
    if m is None:
        return None
    a, b, c, sign = int(m["a"]), int(m["b"]), int(m["c"]), 1 if m["op"] == "+" else -1
    if a + sign * b != c:
        return None  # never split (and so re-state) a wrong claim
    digits = str(b)
    parts = [int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits) if d != "0"]
    if len(parts) < 2:
        return None
    lines, cur = [], a
    for part in parts:
        lines.append(f"{cur} {m['op']} {part} = {cur + sign * part}")
        cur += sign * part
    lines[0] = m["label"] + lines[0]
    return lines


def _build(text: str, anatomy: Anatomy, answer: str) -> dict[str, tuple[str, list[Span]]]:
    steps = anatomy.steps
    out = {"answer_only": _ensure_answer("", [], answer)}
    path = [s for s in steps if s.on_path]
    out["decision_points"] = _ensure_answer(*_assemble(text, path, False), answer) if path else out["answer_only"]
    # The teacher's own last answer statement closes the plan; _ensure_answer covers its absence.
    last_answer = [s for s in steps if s.role == "answer"][-1:]
    plan = [s for s in steps if s.role == "plan"]
    out["plan"] = _ensure_answer(*_assemble(text, plan + last_answer, False), answer)
    out["full"] = (text, [{"start": s.start, "end": s.end, "role": s.role, "on_path": s.on_path} for s in steps])
    kept = [s for s in steps if s.role != "filler"]
    out["full_no_filler"] = _ensure_answer(*_assemble(text, kept, True), answer)
    # Nothing to split: the same text as full_no_filler.
    out["place_value"] = _ensure_answer(*_assemble(text, kept, True, split_place_value), answer)
    return {name: out[name] for name in VARIANTS}


def build_variants(text: str, anatomy: Anatomy, answer: str) -> dict[str, str]:
    """Variant name -> text, for every name in VARIANTS; `answer` is the verified (extracted) answer."""
    return {name: variant for name, (variant, _) in _build(text, anatomy, answer).items()}


def check_variant(
    variant_text: str, reference_answer: str, verifier: str, metadata: dict | None, question: str = ""
) -> bool:
    """Does the variant, read on its own, still extract to a correct answer?"""
    found, _ = extract_answer(variant_text)
    return is_correct(verify(found, reference_answer, verifier, metadata, question))


def choose_variant(trace_id: str, supervision: dict[str, float]) -> str:
    """The one variant a trace contributes under a mixture {variant: share}; deterministic in trace_id.

    Shares are normalised and laid out in VARIANTS order (not dict order), so the choice survives a
    re-ordered config; a trace's uniform draw comes from the sha of its id, so every epoch and every
    rank agree without coordination.
    """
    unknown = [v for v in supervision if v not in VARIANTS]
    total = sum(max(0.0, float(w)) for w in supervision.values())
    if unknown or total <= 0:
        raise ValueError(f"supervision {supervision!r}: unknown variant(s) {unknown} or no positive share")
    u = int(stable_id("choose", trace_id), 16) / 16**16 * total  # uniform in [0, total)
    chosen = None
    for name in VARIANTS:
        share = max(0.0, float(supervision.get(name, 0.0)))
        if share > 0:
            chosen = name
            if u < share:
                break
            u -= share
    return chosen  # the last positive share absorbs float rounding at the top


def picked_variants(rows: list[dict], supervision: dict[str, float]) -> list[dict]:
    """The rows a student trains on: per trace, the variant the mixture picks, if its re-check passed
    (`ok`). One draw per trace (choose_variant hashes the id), not one per variant row. The one rule for
    the live stream (actors/scorer.py), the later epochs and the run's length (actors/train_loop.py)."""
    chosen: dict[str, str] = {}
    for r in rows:
        if r["parent_trace_id"] not in chosen:
            chosen[r["parent_trace_id"]] = choose_variant(r["parent_trace_id"], supervision)
    return [r for r in rows if r["ok"] and r["variant"] == chosen[r["parent_trace_id"]]]


def _metadata(value: Any) -> dict | None:
    # The trace store keeps metadata as a JSON string; verifiers want the dict.
    if value is None or isinstance(value, dict):
        return value
    return json.loads(value) if value else None


def variant_rows(trace_row: dict, anatomy: Anatomy, tokenizer=None) -> list[dict]:
    """One row per variant, with lineage, size (chars, student tokens), re-check and role spans."""
    require_columns("variants", trace_row.keys(), VARIANT_INPUT)
    answer = trace_row["answer"]
    if answer is None:
        raise ValueError(
            f"variants: trace {trace_row['trace_id']!r} has no extracted answer; "
            "variants are built from accepted traces only"
        )
    metadata = _metadata(trace_row["metadata"])
    rows = []
    checked: dict[str, bool] = {}  # variants often share a text (decision_points == full on a clean trace)
    verdicts: dict[str | None, bool] = {}  # and their texts an answer: each is verified once (check_variant's rule)
    for name, (text, spans) in _build(trace_row["text"], anatomy, str(answer)).items():
        if text not in checked:
            found, _ = extract_answer(text)
            if found not in verdicts:
                score = verify(
                    found, trace_row["reference_answer"], trace_row["verifier"], metadata, trace_row["question"] or ""
                )
                verdicts[found] = is_correct(score)
            checked[text] = verdicts[found]
        rows.append(
            {
                "variant_id": stable_id("variant", trace_row["trace_id"], name),
                "parent_trace_id": trace_row["trace_id"],
                "variant": name,
                "text": text,
                "student_tokens": None,
                "chars": len(text),
                "ok": checked[text],
                "spans": spans,
            }
        )
    return count_tokens(rows, tokenizer)


def count_tokens(rows: list[dict], tokenizer=None) -> list[dict]:
    """Fill `student_tokens` of variant rows with one batched tokenizer call (a call per text costs the
    scorer a fifth of its time); rows stay as they are without a tokenizer."""
    if tokenizer is not None and rows:
        texts = list(dict.fromkeys(r["text"] for r in rows))  # variants often share a text
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and backend.truncation is None and backend.padding is None:
            # The fast tokenizer's Rust batch encoder, without the Python BatchEncoding around it and (the
            # _fast variant, tokenizers >= 0.20) without character offsets: the same ids
            # (add_special_tokens=False) at a fifth of the cost per block in the scorer.
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            counts = [len(e.ids) for e in encode(texts, add_special_tokens=False)]
        else:
            counts = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        n = dict(zip(texts, counts))
        for r in rows:
            r["student_tokens"] = n[r["text"]]
    return rows
