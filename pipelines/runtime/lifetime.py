"""Processes a build starts die with it, even when it is killed with SIGKILL (Linux).

The kernel sends a child SIGKILL when its parent dies if the child asked for it with
prctl(PR_SET_PDEATHSIG); nothing in the parent has to run, so it also holds for `kill -9`.
Elsewhere these helpers do nothing and children are stopped the ordinary way (atexit, close()).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to kill this process when its parent dies (and exit now if it already has)."""
    if _prctl is None:
        return
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before we asked
        os._exit(1)
