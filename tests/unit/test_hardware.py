import json
import os
import subprocess
import sys

import pytest

# bind_engine changes the calling thread's CPU affinity, so each case runs in a fresh interpreter.
PROBE = """
import json, os, subprocess, sys
from distill.hardware import bind_engine
got = bind_engine(sys.argv[1])
child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                       capture_output=True, text=True, check=True).stdout
print(json.dumps({"got": sorted(got) if got is not None else None, "child": json.loads(child),
                  "env": os.environ.get("VLLM_CPU_OMP_THREADS_BIND")}))
"""


def _probe(bind: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, bind],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell a binding from none")
def test_bind_engine_confines_the_processes_an_engine_starts_to_its_cores():
    core = min(os.sched_getaffinity(0))
    r = _probe(str(core))
    # the engine's child processes (engine core, worker) inherit the binding; the OMP list is set too
    assert r == {"got": [core], "child": [core], "env": str(core)}


def test_bind_engine_leaves_affinity_alone_for_cores_this_machine_lacks():
    r = _probe("9999")  # a list written for another node of a cluster
    assert r["got"] is None and r["env"] == "9999"
    assert r["child"] == sorted(os.sched_getaffinity(0))


def test_bind_engine_passes_nobind_to_vllm_and_leaves_affinity_alone():
    r = _probe("nobind")  # vLLM's own "do not bind": it must still reach the engine
    assert r == {"got": None, "child": sorted(os.sched_getaffinity(0)), "env": "nobind"}


# The training worker's binding (train.cpu_threads_bind): confine() binds the thread that trains, and
# the torch threads it starts later inherit it; the worker's other threads (Ray's) keep their cores.
CONFINE = """
import json, os, sys, threading
from distill.hardware import confine
out = {}
def train():
    out["got"] = sorted(confine(sys.argv[1]) or [])
    seen = []
    t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))  # a thread it starts
    t.start(); t.join()
    out["thread"], out["started"] = sorted(os.sched_getaffinity(0)), seen[0]
t = threading.Thread(target=train); t.start(); t.join()
out["main"] = sorted(os.sched_getaffinity(0))
print(json.dumps(out))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell a binding from none")
def test_confine_binds_the_calling_thread_and_what_it_starts_not_the_process():
    cores = sorted(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", CONFINE, str(cores[-1])], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r == {"got": [cores[-1]], "thread": [cores[-1]], "started": [cores[-1]], "main": cores}


def test_cpu_engines_run_their_worker_in_process_and_gpu_engines_keep_vllm_defaults(monkeypatch):
    from distill.hardware import cpu_engine_options

    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    assert cpu_engine_options(gpu=True) == {}
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    assert cpu_engine_options(gpu=False) == {"distributed_executor_backend": "uni"}
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # else vLLM's CPU platform makes it "mp"


# The teacher's engine config as AsyncLLM builds it (actors/teacher.py): which executor vLLM settles on.
ENGINE_EXECUTOR = """
import sys
from vllm import AsyncEngineArgs
from distill.hardware import cpu_engine_options
from distill.models import resolve_model
opts = cpu_engine_options(False) if sys.argv[1] == "ours" else {"distributed_executor_backend": "uni"}
args = AsyncEngineArgs(model=resolve_model("qwen2.5-coder-0.5b-instruct"), max_model_len=768, enforce_eager=True, **opts)
print(args.create_engine_config().parallel_config.distributed_executor_backend)
"""


def test_the_teachers_cpu_engine_keeps_its_model_in_the_engine_core_process():
    """vLLM's CPU platform turns "uni" into "mp" (a third process, importing vLLM again, its engine core
    spinning while it waits on it) unless VLLM_ENABLE_V1_MULTIPROCESSING=0: the teacher's AsyncLLM got
    "mp" while cpu_engine_options asked for "uni", until the options set the variable too."""
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}

    def executor(which: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", ENGINE_EXECUTOR, which], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip().splitlines()[-1]

    assert executor("ours") == "uni"
    assert executor("asked only") == "mp"  # what the setting alone got: vLLM overrides it


def _allocator_of_new_process(env: dict) -> str:
    code = "from distill.hardware import allocator_in_use; print(allocator_in_use())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_jemalloc_env_starts_a_new_process_on_the_jemalloc_the_ray_wheel_ships(monkeypatch):
    from distill.hardware import allocator_env

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    env = allocator_env("jemalloc")
    assert env["LD_PRELOAD"].endswith("ray/core/libjemalloc.so")
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert _allocator_of_new_process({**plain, **env}) == "jemalloc"
    assert _allocator_of_new_process(plain) == "system"
    assert allocator_env("system") == {}


def test_jemalloc_env_keeps_the_users_preload_and_their_own_allocator(monkeypatch):
    from distill.hardware import allocator_env

    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libfoo.so")
    assert allocator_env("jemalloc")["LD_PRELOAD"].endswith("libjemalloc.so:/opt/lib/libfoo.so")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4")
    assert allocator_env("jemalloc") == {}  # an allocator they chose stands
    with pytest.raises(ValueError, match="allocator 'hoard'"):
        allocator_env("hoard")


YIELD_PROBE = """
import json, os, threading
from distill.hardware import yield_cpu
before = threading.Event(); done = threading.Event(); seen = {}
def old_thread():
    before.set(); done.wait(); seen["old"] = os.sched_getscheduler(0)
t = threading.Thread(target=old_thread); t.start(); before.wait()
applied = yield_cpu()
seen["main"] = os.sched_getscheduler(0)
def new_thread():
    seen["new"] = os.sched_getscheduler(0)
n = threading.Thread(target=new_thread); n.start(); n.join()
done.set(); t.join()
print(json.dumps({"applied": applied, **seen, "idle": os.SCHED_IDLE}))
"""


def test_yield_cpu_puts_every_thread_and_the_ones_started_after_under_sched_idle():
    out = subprocess.run([sys.executable, "-c", YIELD_PROBE], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["applied"] and r["main"] == r["old"] == r["new"] == r["idle"]
