"""How many threads one case task may use when several share a machine."""
from __future__ import annotations

import os
from contextlib import contextmanager
from urllib.parse import urlsplit

import numba
import SimpleITK as sitk
import torch


@contextmanager
def thread_limit(threads: int | None):
    """Hold torch, SimpleITK and numba (the DRR kernel; its setting is per calling thread) to `threads`
    threads inside the block (None: leave them as they are)."""
    if not threads:
        yield
        return
    before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before[1])
        numba.set_num_threads(before[2])


def thread_share(cores: int, busy_threads: int) -> int:
    """Threads for one task when `busy_threads` task slots share `cores` cores."""
    return max(1, cores // max(1, busy_threads))


def dask_worker_share(host_threads: dict[str, int] | None) -> int | None:
    """Inside a Dask worker: this host's cores over all Dask task threads on the host (None elsewhere)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    host = urlsplit(worker.address).hostname
    busy = (host_threads or {}).get(host) or worker.state.nthreads  # a worker that joined later: itself
    return thread_share(os.cpu_count() or 1, busy)
