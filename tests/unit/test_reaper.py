"""The watchdog that ends an engine's processes when the actor that started them is SIGKILLed."""

import os
import signal
import subprocess
import sys
import time

import psutil

# A stand-in for the teacher actor: starts a long-lived child (the "engine core"), arms the watchdog
# over its descendants, prints the child's pid, then waits to be killed.
PARENT = """
import subprocess, sys, time
from distill.reaper import descendants, reap_orphans
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(0.3)
reap_orphans(descendants())
print(child.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int, within: float) -> bool:
    end = time.time() + within
    while time.time() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_the_child_of_a_sigkilled_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert not _gone(child, 1.0)  # the watchdog leaves it alone while its parent lives
    os.kill(parent.pid, signal.SIGKILL)  # no Python runs in the parent: only the watchdog can act
    parent.wait()
    assert _gone(child, 5.0), "the orphaned child outlived its parent"


def test_nothing_to_watch_starts_nothing():
    from distill.reaper import reap_orphans

    assert reap_orphans([]) is None
