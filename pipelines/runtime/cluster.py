"""Dask clusters for a build: a local one sized from the largest case, or an existing scheduler."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from urllib.parse import urlsplit

from pipelines.errors import BuildError, MemoryPlanError
from pipelines.runtime.resources import cases_need_bytes, worker_memory_limit
from schemas.config import BuildConfig

log = logging.getLogger("spineforge")


def local_memory_limit(cases: list, config: BuildConfig, workers: int) -> int:
    """Per-worker memory limit for a local cluster, from the largest of the build's cases (`CaseFiles`)."""
    import psutil

    need = cases_need_bytes(cases, config)
    try:
        return worker_memory_limit(need, workers, psutil.virtual_memory().total)
    except MemoryPlanError as exc:
        raise BuildError(str(exc)) from exc


def check_cluster(address: str, cases: list, config: BuildConfig) -> dict[str, int]:
    """Reach an existing Dask scheduler before any work; warn about workers too small for the largest case.

    Returns the Dask task threads per worker host, from which each task takes its share of cores.
    """
    from distributed import Client

    try:
        with Client(address, timeout="10s", set_as_default=False) as client:
            workers = client.scheduler_info()["workers"]
    except (OSError, TimeoutError) as exc:
        raise BuildError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    need = cases_need_bytes(cases, config)
    if not workers:
        log.warning("the Dask cluster at %s has no workers yet; case tasks wait for one", address)
    small = sorted(w for w, info in workers.items() if 0 < (info.get("memory_limit") or 0) < need)
    if small:
        log.warning("%d of %d Dask workers have a memory limit below the ~%.1f GiB the largest case needs "
                    "(%s): Dask may stop them mid-case", len(small), len(workers), need / 2**30, ", ".join(small[:3]))
    by_host: dict[str, int] = {}
    for info in workers.values():
        host = info.get("host") or urlsplit(info.get("address", "")).hostname or ""
        by_host[host] = by_host.get(host, 0) + int(info.get("nthreads") or 1)
    return by_host


def task_runner_for(dask_address: str | None):
    """Threads in this process for one worker; Dask for a cluster address (local or remote)."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=1)


@contextmanager
def _quieter(loggers: list[logging.Logger]):
    """Raise these loggers to WARNING inside the block."""
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextmanager
def local_cluster(workers: int, memory_limit: int):
    """A Dask LocalCluster of `workers` single-threaded processes, started in the background.

    The workers spawn and import the pipeline (`pipelines.runtime.worker`, a Dask preload) while
    this process starts the Prefect API and ingests the inputs; tasks queue at the scheduler until
    the first worker is ready. Yields the scheduler address.
    """
    import dask
    from distributed import LocalCluster

    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ for its workers, which turns off glibc's adaptive
    # mmap threshold: every large numpy/torch temporary is then mapped and unmapped afresh, and a
    # case runs ~15% slower (measured: 12.1 s -> 14.1 s single-threaded). Unset for this cluster.
    trim = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    # the scheduler runs here: keep its routine INFO lines (and prefect-dask's link to a dashboard
    # this cluster does not serve) out of the build's output
    quiet = [logging.getLogger(name) for name in ("distributed", "prefect.task_runner.dask")]
    with dask.config.set({trim: None}), _quieter(quiet):
        cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None,
                               memory_limit=memory_limit, preload=["pipelines.runtime.worker"])
        try:
            cluster.scale(workers)  # returns at once; workers come up on the cluster's own event loop
            yield cluster.scheduler_address
        finally:
            cluster.close()


def on_this_machine(address: str) -> bool:
    """Whether a Dask address (tcp://host:port) names this machine."""
    import ipaddress
    import socket

    import psutil

    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname or ""
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    mine = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    return ip.is_loopback or str(ip) in mine
