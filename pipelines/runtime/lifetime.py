"""Processes a build starts die with it, even when it is killed with SIGKILL (Linux).

The kernel sends a child SIGKILL when its parent dies if the child asked for it with
prctl(PR_SET_PDEATHSIG); nothing in the parent has to run, so it also holds for `kill -9`.
Elsewhere these helpers do nothing and children are stopped the ordinary way (atexit, close()).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to kill this process when its parent dies (and exit now if it already has)."""
    if _prctl is None:
        return
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before we asked
        os._exit(1)


@contextmanager
def children_die_with_this_process():
    """Every subprocess started inside the block is killed by the kernel when this process dies.

    Used around Prefect's temporary API server start, whose Popen we do not control otherwise.
    Start it from the main thread: the kernel ties the signal to the thread that started the child.
    """
    if _prctl is None:
        yield
        return
    real = subprocess.Popen
    parent = os.getpid()

    def popen(*args, **kwargs):
        kwargs.setdefault("preexec_fn", lambda: die_with_parent(parent))
        return real(*args, **kwargs)

    subprocess.Popen = popen
    try:
        yield
    finally:
        subprocess.Popen = real
