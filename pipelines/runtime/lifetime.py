"""Processes a build starts end with it, even when the build is killed with SIGKILL.

A child watches its parent from a thread of its own: when the parent is gone (the child has been
re-parented, so `os.getppid()` no longer names it) the child signals itself. Nothing in the parent
has to run, so it holds for `kill -9` too, and unlike a kernel death signal set between fork and
exec it is safe in a process with threads and does not depend on which parent thread started it.
"""
from __future__ import annotations

import os
import signal
import threading

POLL_S = 0.5
GRACE_S = 15.0  # after SIGTERM, how long a child may take to shut down before SIGKILL


def _watch(parent_pid: int, first_signal: int) -> None:
    stopped = threading.Event()
    while os.getppid() == parent_pid:
        stopped.wait(POLL_S)
    os.kill(os.getpid(), first_signal)
    if first_signal != signal.SIGKILL:
        stopped.wait(GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)


def end_with_parent(parent_pid: int | None = None, first_signal: int = signal.SIGTERM) -> threading.Thread:
    """End this process when `parent_pid` (this process's parent now, by default) exits: `first_signal`
    (SIGTERM lets a server shut down cleanly), then SIGKILL after a grace period."""
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    watcher = threading.Thread(target=_watch, args=(parent_pid, first_signal), name="end-with-parent", daemon=True)
    watcher.start()
    return watcher
