"""The data contract: versioned Arrow schemas for problems, traces and quarantine rows.

Each stage declares the columns it needs (`require_columns`) and fails loudly naming the missing one.
Bump SCHEMA_VERSION when a column changes meaning; readers check it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Set
from json.encoder import encode_basestring
from typing import Iterable, Mapping

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: trace anatomy columns (steps, first_error_step, ...) and the variants table

PROBLEM_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),  # stable: given by the source, or sha of source+question+answer
        ("source", pa.string()),  # e.g. "reasoning_gym:chain_sum", "file:data.jsonl"
        ("question", pa.string()),
        ("reference_answer", pa.string()),
        ("verifier", pa.string()),  # reasoning_gym | math | exact
        ("metadata", pa.string()),  # JSON: what the verifier needs (reasoning-gym entry metadata)
    ]
)

TOPK = pa.list_(pa.list_(pa.struct([("token_id", pa.int32()), ("logprob", pa.float32())])))

# One step of a trace (distill/trace/anatomy.py): char span in `text`, role, value flow, arithmetic checks.
STEP_STRUCT = pa.struct(
    [
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("role", pa.string()),
        ("on_path", pa.bool_()),
        ("produces", pa.list_(pa.string())),
        ("uses", pa.list_(pa.string())),
        ("claims_ok", pa.int32()),
        ("claims_wrong", pa.int32()),
    ]
)

TRACE_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("trace_id", pa.string()),  # sha of (problem_id, teacher_model, sampling, sample_index)
        ("problem_id", pa.string()),
        ("source", pa.string()),
        ("question", pa.string()),
        ("reference_answer", pa.string()),
        ("verifier", pa.string()),
        ("metadata", pa.string()),
        ("prompt", pa.string()),  # the teacher prompt after its chat template
        ("teacher_model", pa.string()),
        ("sampling", pa.string()),  # JSON of the sampling settings that define trace_id
        ("sample_index", pa.int32()),
        ("text", pa.string()),  # the teacher's completion
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("finish_reason", pa.string()),  # stop | length | error
        ("topk_logprobs", TOPK),  # per generated token, top-k (token_id, logprob); null if off
        ("generated_at", pa.float64()),  # unix seconds
        ("answer", pa.string()),  # extracted final answer (null if none)
        ("answer_rule", pa.string()),  # answer_line | boxed | last_number | none
        ("correct", pa.bool_()),
        ("score", pa.float64()),  # verifier score in [0, 1]
        ("flags", pa.list_(pa.string())),  # truncated | empty | repetitive
        ("selected", pa.bool_()),  # kept for training by the selection policy
        ("verdict", pa.string()),  # accepted | rejected
        ("reason", pa.string()),  # why rejected ("" when accepted)
        ("scored_at", pa.float64()),
        ("steps", pa.list_(STEP_STRUCT)),  # trace anatomy, one entry per step
        ("first_error_step", pa.int32()),  # first step with a wrong arithmetic claim (null: none)
        ("answer_collapsed", pa.bool_()),  # the final answer depends on that wrong step's value
        ("wrong_intermediate", pa.bool_()),  # correct final answer, but a wrong step on the way
        ("decision_points", pa.list_(pa.int32())),  # steps the answer depends on, in order
    ]
)

SPAN_STRUCT = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("role", pa.string()), ("on_path", pa.bool_())])

# Supervision variants of accepted traces (distill/trace/variants.py), with lineage to their trace.
VARIANT_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("variant_id", pa.string()),  # sha of (parent_trace_id, variant)
        ("parent_trace_id", pa.string()),
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("variant", pa.string()),  # answer_only | decision_points | plan | full | full_no_filler | place_value
        ("text", pa.string()),  # the supervision text (the student's completion)
        ("student_tokens", pa.int32()),  # length in the student's tokenizer
        ("chars", pa.int32()),
        ("ok", pa.bool_()),  # re-checked: still ends in the verified answer
        ("spans", pa.list_(SPAN_STRUCT)),  # role of each kept step, char spans in `text` (loss weights)
        ("created_at", pa.float64()),
    ]
)

# What the trainer consumes: one supervision text per accepted trace.
TRAIN_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),  # the parent trace (a correction round's rows: the correction's id)
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("variant", pa.string()),  # a correction round's own rows: "correction" / "self"
        ("text", pa.string()),
        ("spans", pa.list_(SPAN_STRUCT)),
        ("prefix", pa.string()),  # a correction: the student's own text before its first wrong step (context,
        # never trained); null elsewhere
    ]
)

# Correction rounds (pipelines/correction.py): one row per student sample that became (or failed to become)
# supervision. Lineage: `parent` is the student sample's trace_id in the store's samples/ table.
CORRECTION_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("correction_id", pa.string()),  # sha of (parent, kind, teacher_model)
        ("kind", pa.string()),  # correction (teacher continuation of a wrong answer) | self (a right answer)
        ("parent", pa.string()),  # the student sample (samples/ trace_id)
        ("round", pa.int32()),
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("reference_answer", pa.string()),
        ("student_text", pa.string()),  # the student's whole answer
        ("cut", pa.int32()),  # characters of it kept (correction); null for self
        ("cut_reason", pa.string()),  # wrong_claim | answer (no wrong claim, wrong answer); null for self
        ("first_error_step", pa.int32()),
        ("prefix", pa.string()),  # student_text[:cut]; "" for self
        ("continuation", pa.string()),  # the teacher's continuation (self: the student's text)
        ("teacher_model", pa.string()),  # null for self
        ("teacher_tokens", pa.int32()),  # tokens the teacher generated for it (self: 0): the round's cost
        ("verdict", pa.string()),  # accepted | rejected
        ("reason", pa.string()),  # why rejected ("" when accepted)
        ("created_at", pa.float64()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("stage", pa.string()),  # source | teacher | scorer
        ("key", pa.string()),  # problem_id / trace_id / row position: what was rejected
        ("reason", pa.string()),
        ("payload", pa.string()),  # the offending row, JSON (bytes shown with errors="replace")
        ("at", pa.float64()),
    ]
)

# Columns each stage needs from its input.
TEACHER_INPUT = ("problem_id", "source", "question", "reference_answer", "verifier", "metadata")
SCORER_INPUT = (
    "trace_id",
    "problem_id",
    "text",
    "finish_reason",
    "reference_answer",
    "verifier",
    "metadata",
    "question",
    "completion_tokens",
    "sample_index",
)
TRAIN_INPUT = ("trace_id", "question", "text", "spans")


class MissingColumnError(KeyError):
    pass


def require_columns(stage: str, columns: Iterable[str], needed: Iterable[str]) -> None:
    have = columns if isinstance(columns, Set) else set(columns)  # a row's keys() are a set already
    for c in needed:
        if c not in have:
            raise MissingColumnError(f"{stage}: input lacks column {c!r} (has {sorted(have)})")


def stable_id(*parts: object, n: int = 16) -> str:
    """Deterministic short id from JSON-encodable parts."""
    if all(type(p) is str for p in parts):
        # The usual id, of strings only (the scorer makes seven a trace): the text json.dumps makes of them, its
        # own string encoder between "[", ", " and "]", at half the cost of a call to it.
        blob = "[" + ", ".join(map(encode_basestring, parts)) + "]"
    else:
        blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", errors="surrogatepass")).hexdigest()[:n]


def trace_id(problem_id: str, teacher_model: str, sampling: Mapping, sample_index: int) -> str:
    return stable_id("trace", problem_id, teacher_model, dict(sampling), int(sample_index), n=24)


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> table with exactly `schema`'s columns (missing ones null, extra ones dropped)."""
    # Arrow's C++ row conversion, all columns at once as one struct array: a third faster on a scorer block than
    # Table.from_pylist, which makes a Python list and then an array per column.
    array = pa.array(rows, pa.struct(schema))
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]  # chunked past 2 GB of strings
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(c) for c in chunks], schema=schema)
