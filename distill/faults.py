"""Deterministic fault points for the fault tests: a process dies at a named moment, once.

`DISTILL_FAULT=<point>:<marker path>` in a worker's environment makes the first process that reaches
`fault_point(<point>)` create the marker and exit at once (no cleanup, like a SIGKILL); later arrivals,
the retry included, pass. Several points: `<point>:<marker>,<point>:<marker>`, each fires once.
Unset -- always outside the tests -- a fault point is one dict lookup.
Signals from the test (tests/ray/test_actor_faults.py) cannot aim between two writes of one call;
this can.
"""

from __future__ import annotations

import os


def fault_point(name: str) -> None:
    spec = os.environ.get("DISTILL_FAULT")
    if not spec:
        return
    marker = next((m for p, _, m in (s.partition(":") for s in spec.split(",")) if p == name and m), None)
    if marker is None:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: exactly one process dies
    except FileExistsError:
        return
    os.write(fd, f"{name} pid {os.getpid()}\n".encode())
    os.close(fd)
    os._exit(137)
