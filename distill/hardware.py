"""What the machine a stage runs on computes fast: bf16 or fp32.

bf16 is fast only where the hardware has it: GPUs, and CPUs with AVX-512 BF16 or AMX. Elsewhere (an
AVX2-only CPU) torch and vLLM emulate it, and it is far slower than fp32. Measured on an AMD EPYC with
AVX2 only (2 cores): SmolLM2-135M training step 5.2 tok/s under bf16 autocast vs 148.7 tok/s in fp32;
the Qwen 0.5B teacher in vLLM 15.8 tok/s in bf16 vs 66.7 tok/s in fp32 (oneDNN has no bf16 matmul
there and falls back to torch). So "which dtype" is asked where the model runs, not in the recipe.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that file does not exist."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    return any(f in cpu_flags() for f in BF16_CPU_FLAGS)


def native_bf16(gpu: bool) -> bool:
    """Does this machine compute bf16 natively (on the GPU when `gpu`, else on the CPU)?"""
    if gpu:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cpu_has_bf16()


def engine_dtype(requested: str | None, gpu: bool) -> str:
    """vLLM/transformers dtype name: the requested one, or (None) bfloat16 where native, else float32."""
    if requested:
        return requested
    return "bfloat16" if native_bf16(gpu) else "float32"


def cpu_engine_options(gpu: bool) -> dict:
    """vLLM engine arguments for a CPU engine: its model worker in the engine core's own process (the
    "uni" executor) instead of a spawned worker process. Each process vLLM spawns imports torch and
    vLLM again and, on CPU, its engine core waits on the worker by spinning.

    vLLM's CPU platform replaces "uni" by "mp" unless VLLM_ENABLE_V1_MULTIPROCESSING=0 is in the
    environment of the process that builds the engine's config, so it is set here, before the engine
    starts. For the synchronous `LLM` (the evaluator) that also puts the engine core in-process: one
    process, not three. `AsyncLLM` (the teacher) always spawns its engine core; the variable only keeps
    the model in it: two processes, not three. Measured on Zen 5 (2026-12-05, Qwen2.5-0.5B on one core,
    each twice): the teacher's AsyncLLM started in 13.0-13.2 s instead of 18.3-19.2 s, decoded 16 x 128
    tokens as fast (9.7-10.3 s vs 10.0 s) and shut down in 2.9-3.3 s instead of 4.6-4.7 s; an evaluator
    engine (SmolLM2-135M) started in 9.4 s instead of 21 s. On a GPU, vLLM's defaults (the engine core
    overlapping scheduling with the GPU) stay."""
    if gpu:
        return {}
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return {"distributed_executor_backend": "uni"}


def train_bf16(requested: bool | None, gpu: bool) -> bool:
    """Train under bf16 autocast? The requested setting, or (None) where bf16 is native."""
    return native_bf16(gpu) if requested is None else requested


def core_set(bind: str | None) -> frozenset[int] | None:
    """The cores a VLLM_CPU_OMP_THREADS_BIND-style list names ('0', '0-3', '0,2', ranks joined by '|');
    None when unbound ('auto', 'nobind' or None: vLLM then uses all the machine's cores). The one
    parser of that format (the config validates with it): ValueError on a malformed list ('0-x',
    '0,,1') or an empty range ('3-1')."""
    if not bind or bind in ("auto", "nobind"):
        return None
    cores: set[int] = set()
    for part in bind.replace("|", ",").split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.strip().isdigit() or (hi and not hi.strip().isdigit()):
            raise ValueError(f"{bind!r} is not a core list like '0', '0-3', '0,2' or '0-1|2-3' (or auto / nobind)")
        span = range(int(lo), int(hi or lo) + 1)
        if not span:
            raise ValueError(f"{bind!r}: the range {part.strip()} is empty")
        cores.update(span)
    return frozenset(cores)


def bind_cores(bind: str | None, default: int) -> int:
    """How many cores a binding names (see core_set); `default` when unbound."""
    cores = core_set(bind)
    return len(cores) if cores else default


def bind_engine(bind: str | None) -> frozenset[int] | None:
    """Confine a vLLM CPU engine about to start in this thread to the cores `bind` names: its worker's
    OMP threads (VLLM_CPU_OMP_THREADS_BIND) and, through this thread's CPU affinity, which the engine's
    child processes inherit, its engine-core process too. vLLM binds only the worker's threads; the
    engine core waits on the worker by spinning on shared memory (sched_yield for up to 1 s after each
    step), and unbound it spun on the *other* core -- measured 0.66-0.87 of a core beside the trainer
    (top, Zen 4, showcase run). -> the cores applied; None when unbound ('auto' and 'nobind' still go
    to vLLM as they are), or when this machine lacks one of them (on a cluster the list may name
    another node's cores: then only the OMP variable)."""
    if bind:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
    return confine(bind)


def confine(bind: str | None) -> frozenset[int] | None:
    """Confine this thread -- and the threads and processes it starts from now on -- to the cores `bind`
    names. -> the cores applied; None when unbound, or when this machine lacks one of them (on a cluster
    the list may name another node's cores)."""
    cores = core_set(bind)
    if cores is None or not cores <= os.sched_getaffinity(0):
        return None
    os.sched_setaffinity(0, cores)
    return cores


def binds_overlap(a: str | None, b: str | None) -> bool:
    """Could two engines bound this way compute on a common core? (An unbound one may use any.)"""
    ca, cb = core_set(a), core_set(b)
    return ca is None or cb is None or bool(ca & cb)


_HELD: list[int] = []  # slot lock file descriptors this process holds until it exits


def claim_slot(key: str, n: int, root: str | None = None) -> int:
    """The lowest of slots 0..n-1 of `key` that no live process on this machine holds; held until this
    process exits (an flock on a file dies with its process, so a replacement actor takes a dead one's
    slot). Raises RuntimeError when all n are held. Hand-written: Ray's actor pools number no replicas."""
    import fcntl

    d = Path(root or tempfile.gettempdir()) / "distill-slots" / key
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        fd = os.open(d / f"slot-{i}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _HELD.append(fd)
        return i
    raise RuntimeError(f"all {n} slots of {key!r} are held by live processes on this machine")


# Allocators a process may be started with (LD_PRELOAD); "system" is glibc's malloc.
ALLOCATORS = ("jemalloc", "system")
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


def allocator_env(allocator: str) -> dict[str, str]:
    """Environment variables that start a new process on `allocator`: for "jemalloc", LD_PRELOAD of the
    libjemalloc.so the ray wheel ships (ray/core/, which Ray preloads into its own raylet and GCS) -- no
    other install. {} for "system", where that file is missing, or where LD_PRELOAD already names an
    allocator (the user's choice stands); another LD_PRELOAD is kept after ours.

    Why the scorer gets it: its work is many small Python objects (row dicts of ~40 keys, spans, tokens)
    and small Arrow/Parquet buffers per block, and glibc's malloc spent 18% of a scorer core in its own
    free-list upkeep (perf, Zen 5: _int_malloc, _int_free, unlink_chunk, malloc_consolidate). Measured on
    one core, scorer arm of `distill bench`, same traces: 1,890 -> 2,263 and 2,006 -> 2,224 traces/s
    (medians of 9), and 1,294 -> 2,057 right after a training arm."""
    if allocator == "system":
        return {}
    if allocator != "jemalloc":
        raise ValueError(f"allocator {allocator!r}: one of {ALLOCATORS}")
    import ray

    lib = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    theirs = os.environ.get("LD_PRELOAD", "")
    if not lib.is_file() or any(name in theirs for name in _PRELOADED):
        return {}
    return {"LD_PRELOAD": f"{lib}:{theirs}" if theirs else str(lib)}


def allocator_in_use() -> str:
    """The preloaded allocator this process runs on ("jemalloc", "tcmalloc", "mimalloc"), from the
    libraries mapped into it; "system" when none is (or /proc is not there)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in _PRELOADED if f"lib{name}" in maps), "system")


def yield_cpu() -> bool:
    """Put every thread of this process -- and so the threads and processes they start from now on -- under
    SCHED_IDLE: it computes only when nothing else on its cores wants to (an unprivileged process may
    lower its own priority so). Used for the student's evaluator engine, which on 2 cores shares its core
    with the trainer: at equal priority each ran at about half speed (Ray's worker niceness, 15, leaves
    `nice` only 4 steps: 70/30 at 19). -> whether it was applied (not on a system without SCHED_IDLE)."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # a thread that has ended since the listing
            pass
    return True
