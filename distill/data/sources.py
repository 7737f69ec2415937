"""Problem sources: reasoning-gym tasks, local JSONL/Parquet files, local HF `datasets`.

Every source yields rows of PROBLEM_SCHEMA. A row that cannot become a problem (missing field, empty
question, bad bytes, duplicate id) is quarantined with its reason; it never stops the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from distill.config import SourceConfig
from distill.data.bigbench import load_source as load_bigbench
from distill.data.problems import LoadedProblems, as_text, guess_verifier, quarantine_row
from distill.data.schema import stable_id


def _reasoning_gym_rows(src: SourceConfig) -> Iterator[tuple[str, dict]]:
    import reasoning_gym

    ds = reasoning_gym.create_dataset(src.task, size=src.size, seed=src.seed, **src.task_kwargs)
    for i, entry in enumerate(ds):
        yield f"{src.task}/{src.seed}/{i}", entry


def _file_rows(src: SourceConfig) -> Iterator[tuple[str, dict]]:
    path = Path(src.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"problem file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"row{i}", row
        return
    # JSONL, read as bytes so one bad line (bad UTF-8, bad JSON) is quarantined, not fatal.
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield (
                    f"line{i + 1}",
                    {"__error__": f"line is not valid UTF-8 ({e.reason} at byte {e.start})", "__raw__": raw[:500]},
                )
                continue
            except json.JSONDecodeError as e:
                yield f"line{i + 1}", {"__error__": f"not valid JSON: {e.msg}", "__raw__": raw[:500]}
                continue
            if not isinstance(row, dict):
                row = {"__error__": f"expected a JSON object, got {type(row).__name__}", "__raw__": raw[:500]}
            yield f"line{i + 1}", row


def _hf_rows(src: SourceConfig) -> Iterator[tuple[str, dict]]:
    import datasets

    path = Path(src.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        ds = datasets.load_dataset(str(path))  # a local data dir (json/parquet/csv files)
    if isinstance(ds, (datasets.DatasetDict, dict)):
        split = src.split or ("train" if "train" in ds else next(iter(ds)))
        if split not in ds:
            raise ValueError(f"split {split!r} not in dataset {path} (has {list(ds)})")
        ds = ds[split]
    for i, row in enumerate(ds):
        yield f"row{i}", row


_READERS = {"reasoning_gym": _reasoning_gym_rows, "file": _file_rows, "hf_dataset": _hf_rows}


def source_name(src: SourceConfig) -> str:
    if src.kind == "reasoning_gym":
        return f"reasoning_gym:{src.task}"
    if src.kind == "bigbench":
        return f"bigbench:{src.task or Path(src.path).parent.name}"
    return f"{src.kind}:{Path(src.path).name}"


def _to_problem(src: SourceConfig, name: str, key: str, row: dict) -> dict:
    if "__error__" in row:
        raise ValueError(row["__error__"])
    question = as_text(row.get(src.question_field), f"field {src.question_field!r}")
    answer = as_text(row.get(src.answer_field), f"field {src.answer_field!r}")
    metadata = row.get("metadata") if src.kind == "reasoning_gym" else None
    if src.id_field:
        pid = as_text(row.get(src.id_field), f"field {src.id_field!r}")
    else:
        pid = stable_id(name, question, answer)
    verifier = src.verifier
    if verifier == "auto":
        verifier = "reasoning_gym" if src.kind == "reasoning_gym" else guess_verifier(answer)
    meta = dict(metadata or {})
    if verifier == "reasoning_gym" and "source_dataset" not in meta:
        meta["source_dataset"] = src.task
    return {
        "problem_id": pid,
        "source": name,
        "question": question,
        "reference_answer": answer,
        "verifier": verifier,
        "metadata": json.dumps(meta, default=str),
    }


def load_problems(sources: list[SourceConfig]) -> LoadedProblems:
    """All problems of all sources, validated; rejects go to `quarantined` with their reason."""
    out = LoadedProblems()
    seen: set[str] = set()
    for src in sources:
        name = source_name(src)
        if src.kind == "bigbench":
            got = load_bigbench(src)
            out.quarantined.extend(got.quarantined)
            for p in got.problems:
                if p["problem_id"] in seen:
                    out.quarantined.append(
                        quarantine_row(f"{name}#{p['problem_id']}", f"duplicate problem_id {p['problem_id']}", p)
                    )
                    continue
                seen.add(p["problem_id"])
                out.problems.append(p)
            continue
        taken = 0
        for key, row in _READERS[src.kind](src):
            if taken >= src.size:
                break
            try:
                p = _to_problem(src, name, key, row)
            except ValueError as e:
                out.quarantined.append(quarantine_row(f"{name}#{key}", str(e), row))
                continue
            if p["problem_id"] in seen:
                out.quarantined.append(quarantine_row(f"{name}#{key}", f"duplicate problem_id {p['problem_id']}", row))
                continue
            seen.add(p["problem_id"])
            out.problems.append(p)
            taken += 1
    return out
