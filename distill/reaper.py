"""Engine processes never outlive the actor that started them.

A Ray worker's child processes (a vLLM engine core and its workers) are killed by Ray when the worker
exits -- before the actor's own shutdown code runs, so on a graceful exit vLLM logs a dead engine and a
traceback (issue 11). The teacher's actors therefore run with Ray's child killing off
(`RAY_kill_child_processes_on_worker_exit=0`, pipelines/stages.py) and shut their engine down
themselves (atexit). What that leaves uncovered is an actor that dies without running Python (SIGKILL,
its driver killed): its engine would be orphaned, holding its memory. `reap_orphans` starts a small
watchdog for that: a detached process that waits for the actor's process to go and then kills the
engine's processes it was given, if they are still the same processes (pid and start time: a pid may
be reused). Hand-written because Ray offers only all-or-nothing child killing, and vLLM's engine core
has no parent-death check of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

# Run with `python -c`, so it needs only psutil (a vLLM dependency), not this package on the path.
_WATCHDOG = """
import os, sys, time, psutil
parent = int(sys.argv[1])
procs = [tuple(a.split(":")) for a in sys.argv[2:]]
while os.getppid() == parent:
    time.sleep(0.5)
for pid, started in procs:
    try:
        p = psutil.Process(int(pid))
        if abs(p.create_time() - float(started)) < 0.01:
            p.kill()
    except psutil.Error:
        pass
"""


def descendants() -> list[tuple[int, float]]:
    """(pid, start time) of every process below this one."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            out.append((p.pid, p.create_time()))
        except psutil.Error:  # ended meanwhile
            pass
    return out


def reap_orphans(procs: list[tuple[int, float]]) -> subprocess.Popen | None:
    """Start the watchdog for `procs` (from `descendants()`); None when there is nothing to watch."""
    if not procs:
        return None
    args = [f"{pid}:{started!r}" for pid, started in procs]
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the actor's process group: it must outlive it
        close_fds=True,
    )
