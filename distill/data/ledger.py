"""The trace store as a ledger: what is already committed is replayed or passed on, never made twice.

A resumed run, a restarted actor or a re-executed stream meets traces it already committed. The
teacher replays them from the ledger instead of generating them again (a trace_id is deterministic:
problem, teacher model, sampling settings, sample index); the scorer passes them on to the trainer
but writes nothing of them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import pyarrow as pa

from distill.data.schema import TEACHER_INPUT, trace_id

# What the teacher stage adds to a problem row (the rest of TRACE_SCHEMA is the scorer's).
TEACHER_OUTPUT = TEACHER_INPUT + (
    "schema_version",
    "trace_id",
    "prompt",
    "teacher_model",
    "sampling",
    "sample_index",
    "text",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "topk_logprobs",
    "generated_at",
)


def teacher_ledger(committed: pa.Table) -> dict[str, dict]:
    """The store's traces -> {trace_id: the teacher's columns of that trace}, the rows a replay returns."""
    return {
        r["trace_id"]: {k: r[k] for k in TEACHER_OUTPUT} for r in committed.select(list(TEACHER_OUTPUT)).to_pylist()
    }


def sample_ids(problem_id: str, model_name: str, sampling: Mapping, samples: int) -> list[str]:
    """The trace_ids of a problem's `samples` traces."""
    return [trace_id(problem_id, model_name, sampling, j) for j in range(samples)]


def split_replayed(
    problem_ids: list[str], ledger: Mapping[str, dict], model_name: str, sampling: Mapping, samples: int
) -> tuple[list[int], list[dict]]:
    """-> (positions of the problems still to generate, the committed trace rows of the others, in order).
    A problem is replayed only when all its samples are committed; else it is generated whole."""
    if not ledger:
        return list(range(len(problem_ids))), []
    todo, replayed = [], []
    for i, pid in enumerate(problem_ids):
        ids = sample_ids(pid, model_name, sampling, samples)
        if all(t in ledger for t in ids):
            replayed += [ledger[t] for t in ids]
        else:
            todo.append(i)
    return todo, replayed


class Writes(NamedTuple):
    """What a scored block appends to the store."""

    traces: list[dict]
    variants: list[dict]
    quarantine: list[dict]


def exactly_once(rows: list[dict], variants: list[dict], quarantine: list[dict], committed: set[str]) -> Writes:
    """Of a scored block, what the store does not hold yet: rows already committed (replayed by the
    teacher from the ledger) still go on to the trainer, but neither they nor their variants or
    quarantine rows are written again."""
    fresh = {r["trace_id"] for r in rows if r["trace_id"] not in committed}
    return Writes(
        traces=[r for r in rows if r["trace_id"] in fresh],
        variants=[v for v in variants if v["parent_trace_id"] in fresh],
        quarantine=[q for q in quarantine if q["key"] in fresh],
    )
