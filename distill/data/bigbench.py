"""BIG-bench `task.json` loader and scorer: related held-out tasks for transfer evaluation.

Generative examples ({"input", "target": str | [str, ...]}) become exact/math problems with every
acceptable target kept; multiple-choice examples ({"input", "target_scores": {option: score}}) list
their options in the question as "(A) ..." and are scored by the chosen option's score. A bad example
is quarantined with its reason (same rows as distill/data/sources.py); a bad file raises.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import string
import tempfile
import urllib.request
from pathlib import Path

from distill.data.problems import LoadedProblems, as_text, guess_verifier, quarantine_row
from distill.data.schema import stable_id
from distill.trace.answers import is_correct, norm_text, verify

LETTERS = string.ascii_uppercase  # more options than letters is quarantined, not guessed at
_LETTER_ONLY = re.compile(r"\(?([a-z])\)?[.:]?")
_LETTER_AND_TEXT = re.compile(r"\(([a-z])\)[.:]?\s*(.+)|([a-z])[.):]\s+(.+)", re.DOTALL)


def _targets(raw: object) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ValueError("empty target list")
    out: list[str] = []
    for t in items:
        text = as_text(t, "target").strip()
        if text not in out:  # BIG-bench lists repeat targets; a repeat is one answer
            out.append(text)
    return out


def _target_scores(raw: object) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ValueError(f"target_scores has type {type(raw).__name__}, expected an object")
    if not raw:
        raise ValueError("empty target_scores")
    if len(raw) > len(LETTERS):
        raise ValueError(f"{len(raw)} options, more than the {len(LETTERS)} option letters")
    scores: dict[str, float] = {}
    for option, score in raw.items():
        text = as_text(option, "option").strip()
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"score of option {text!r} is not a number")
        if text in scores:
            raise ValueError(f"duplicate option {text!r}")
        scores[text] = float(score)
    if len(set(scores.values())) < 2:
        raise ValueError("target_scores do not single out a best option (all scores equal)")
    return scores


def _question(prefix: str, text: str, choices: list[str] | None) -> str:
    q = f"{prefix.strip()}\n\n{text.strip()}" if prefix.strip() else text.strip()
    if choices:
        # Always listed (even with append_choices_to_input: false): we score a generated answer,
        # not option log-likelihoods, so the student must see the options.
        q += "\n\nOptions:\n" + "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return q


def _to_problem(name: str, prefix: str, example: object, prefer_mc: bool = True) -> dict:
    if not isinstance(example, dict):
        raise ValueError(f"expected a JSON object, got {type(example).__name__}")
    text = as_text(example.get("input"), "field 'input'")
    pid = stable_id("bigbench", name, text)
    source = f"bigbench:{name}"
    # Some tasks (e.g. arithmetic) give both; the task's preferred_score decides which one it is.
    if "target_scores" in example and (prefer_mc or "target" not in example):
        scores = _target_scores(example["target_scores"])
        choices = list(scores)
        best = max(scores.values())
        reference = next(c for c in choices if scores[c] == best)  # first best option
        meta = {"choices": choices, "target_scores": scores, "mc": True}
        return {
            "problem_id": pid,
            "source": source,
            "question": _question(prefix, text, choices),
            "reference_answer": reference,
            "verifier": "exact",
            "metadata": json.dumps(meta),
        }
    if "target" not in example:
        raise ValueError("missing field 'target' (and no 'target_scores')")
    targets = _targets(example["target"])
    verifier = "math" if all(guess_verifier(t) == "math" for t in targets) else "exact"
    meta = {"targets": targets, "mc": False}
    return {
        "problem_id": pid,
        "source": source,
        "question": _question(prefix, text, None),
        "reference_answer": targets[0],
        "verifier": verifier,
        "metadata": json.dumps(meta),
    }


def load_task(path: str | Path, size: int | None = None, seed: int = 0) -> LoadedProblems:
    """Problems of one BIG-bench task.json; bad examples and repeated inputs go to `quarantined`.

    The question is the optional `task_prefix` plus the example input (plus options for multiple
    choice); example_input_prefix/example_output_prefix are few-shot completion scaffolding and are
    left to the prompt styles. problem_id = stable_id("bigbench", task name, input). An example with
    both `target` and `target_scores` is generative unless the task's preferred_score is
    multiple_choice_grade. With `size`, a sample of that many usable examples is drawn in an order
    fixed by `seed` (tasks list their examples in a structured order, so the first N would be biased).
    Raises FileNotFoundError / ValueError when the file itself is unusable.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"BIG-bench task file not found: {path}")
    try:
        task = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON task file ({e})") from None
    if not isinstance(task, dict):
        raise ValueError(f"{path}: expected a JSON object at top level, got {type(task).__name__}")
    examples = task.get("examples")
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{path}: no 'examples' list (a task with subtasks? load each subtask's task.json)")
    name = str(task.get("name") or path.parent.name)
    prefix = task.get("task_prefix") if isinstance(task.get("task_prefix"), str) else ""
    prefer_mc = task.get("preferred_score") in (None, "multiple_choice_grade")
    order = list(range(len(examples)))
    if size is not None:
        random.Random(seed).shuffle(order)
    out = LoadedProblems()
    seen: set[str] = set()
    for i in order:
        if size is not None and len(out.problems) >= size:
            break
        example = examples[i]
        key = f"bigbench:{name}#example{i}"
        try:
            p = _to_problem(name, prefix, example, prefer_mc)
        except ValueError as e:
            out.quarantined.append(quarantine_row(key, str(e), example))
            continue
        if p["problem_id"] in seen:
            out.quarantined.append(quarantine_row(key, f"duplicate problem_id {p['problem_id']}", example))
            continue
        seen.add(p["problem_id"])
        out.problems.append(p)
    return out


def _chosen_option(answer: str, choices: list[str]) -> int | None:
    """Index of the option an answer picks: its text, its letter ("B", "(b)", "B."), or both
    ("(B) text", accepted only when the text is that option's). None when nothing matches."""
    a = norm_text(answer).strip("*$ ")
    texts = [norm_text(c) for c in choices]
    if a in texts:  # text first: an option whose text is itself a letter keeps its own meaning
        return texts.index(a)
    m = _LETTER_ONLY.fullmatch(a)
    if m:
        i = ord(m.group(1)) - ord("a")
        return i if i < len(choices) else None
    m = _LETTER_AND_TEXT.fullmatch(a)
    if m:
        letter, rest = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        i = ord(letter) - ord("a")
        if i < len(choices) and norm_text(rest) == texts[i]:
            return i
    return None


def score_bigbench(answer: str | None, problem: dict) -> bool:
    """Is an extracted answer right for a problem from `load_task`?

    Generative: any kept target verifies at full credit with `distill.trace.answers.verify` (the problem's
    exact/math verifier). Multiple choice: the chosen option (see `_chosen_option`, case-insensitive)
    has the maximum target score, so tied best options all count.
    """
    if answer is None or not str(answer).strip():
        return False
    meta = json.loads(problem["metadata"]) if isinstance(problem["metadata"], str) else problem["metadata"]
    if meta.get("mc"):
        choices, scores = meta["choices"], meta["target_scores"]
        i = _chosen_option(str(answer), choices)
        return i is not None and scores[choices[i]] == max(scores.values())
    targets = meta.get("targets") or [problem["reference_answer"]]
    return any(is_correct(verify(answer, t, problem["verifier"], None, problem.get("question", ""))) for t in targets)


# -- the BIG-bench release: fetched once, verified, one task.json extracted per task -------------------
# The PyPI sdist of bigbench 1.0.0 carries every task.json. We do not pip-install it (it pulls
# TensorFlow, and its metadata cannot even be prepared by pip); we download the archive itself, check
# its sha256 and extract the task files we are asked for.
SDIST_URL = (
    "https://files.pythonhosted.org/packages/95/f8/c019b3579df548a04cac12342cfcb878e50ddf6cfcd7fddba8cf"
    "c721c157/bigbench-1.0.0.tar.gz"
)
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
TASKS_PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks/"


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_DATA_CACHE", "~/.cache/distill/data")).expanduser() / "bigbench"


def fetch_task(task: str, progress: bool = True) -> Path:
    """Local path of BIG-bench task `task` (a dir under benchmark_tasks, e.g. arithmetic/3_digit_addition).

    First use downloads the 358 MB release archive (sha256-verified; kept in the cache so more tasks
    need no new download) and extracts that task's task.json. Raises FileNotFoundError for a task
    the release does not have.
    """
    from distill.models import file_lock, verify_sha256

    task = task.strip("/")
    if ".." in task.split("/"):
        raise ValueError(f"bad BIG-bench task name {task!r}")
    root = cache_dir()
    dest = root / "tasks" / task / "task.json"
    if dest.is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "bigbench-1.0.0.tar.gz"
    with file_lock(root / ".fetch.lock"):
        if dest.is_file():
            return dest
        if not archive.is_file():
            if progress:
                print(f"[distill.data.bigbench] downloading the BIG-bench release (358 MB) -> {archive}", flush=True)
            tmp = archive.with_suffix(".part")
            with urllib.request.urlopen(SDIST_URL, timeout=120) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f, 8 << 20)
            verify_sha256(tmp, SDIST_SHA256)  # deletes it on mismatch
            os.replace(tmp, archive)
        import tarfile

        member = f"{TASKS_PREFIX}{task}/task.json"
        with tarfile.open(archive) as t:
            try:
                info = t.getmember(member)
            except KeyError:
                raise FileNotFoundError(f"BIG-bench has no task {task!r} (no {member} in the release)") from None
            src = t.extractfile(info)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_path = tempfile.mkstemp(dir=dest.parent, prefix=".task.json.")
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(src, f)
            os.replace(tmp_path, dest)
    return dest


def load_source(src) -> LoadedProblems:
    """A `kind: bigbench` source: `path` to a task.json, or `task` fetched from the release."""
    path = Path(src.path).expanduser() if src.path else fetch_task(src.task)
    return load_task(path, size=src.size, seed=src.seed)
