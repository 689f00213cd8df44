"""Crash points for tests: `point(name)` kills this process with SIGKILL when $NEWSINDEX_FAULT names it.

`NEWSINDEX_FAULT=write` dies at the first hit of the point `write`, `write:3` at the third. The
crash tests use these to stop a real ingest at exact places (mid-parse, between embedding batches,
inside the write transaction, right after commit). Unset, a point costs one dictionary lookup.

$NEWSINDEX_FAULT_SIGNAL=STOP stops the process there instead (SIGSTOP; the test resumes it with
SIGCONT): a run held mid-flight at a known place, so an overlapping run is sure to meet it.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def point(name: str) -> None:
    wanted = os.environ.get("NEWSINDEX_FAULT")
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1) and _first_across_processes():
        stop = os.environ.get("NEWSINDEX_FAULT_SIGNAL", "").upper() == "STOP"
        os.kill(os.getpid(), signal.SIGSTOP if stop else signal.SIGKILL)


def _first_across_processes() -> bool:
    """With $NEWSINDEX_FAULT_ONCE=FILE only the first process to reach the point dies (it creates
    FILE); the others, and the one started in its place, go on: a worker killed once, not forever."""
    marker = os.environ.get("NEWSINDEX_FAULT_ONCE")
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False
