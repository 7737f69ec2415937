"""What a problem source yields: problems and quarantined rows, and the row checks every source shares.

Below distill/data/sources.py and distill/data/bigbench.py, which both import it (no import circle between them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from distill.data.schema import SCHEMA_VERSION

_NUMERIC_CHARS = set("0123456789.-+/, ")


@dataclass
class LoadedProblems:
    problems: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)


def quarantine_row(key: str, reason: str, payload: Any) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "stage": "source",
        "key": key,
        "reason": reason,
        "payload": json.dumps(payload, default=_json_default, ensure_ascii=False)[:4000],
        "at": time.time(),
    }


def _json_default(o: Any) -> str:
    if isinstance(o, bytes):
        return o.decode("utf-8", errors="replace")
    return str(o)


def guess_verifier(answer: str) -> str:
    a = answer.strip()
    if a and (set(a) <= _NUMERIC_CHARS or "\\frac" in a or a.startswith("$")):
        return "math"
    return "exact"


def as_text(value: Any, what: str) -> str:
    if value is None:
        raise ValueError(f"missing {what}")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{what} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{what} has type {type(value).__name__}, expected text")
    if "\ufffd" in value:
        raise ValueError(f"{what} holds undecodable bytes (U+FFFD replacement characters)")
    if not value.strip():
        raise ValueError(f"empty {what}")
    return value
