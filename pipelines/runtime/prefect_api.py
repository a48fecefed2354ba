"""One Prefect API for every process of a build."""
from __future__ import annotations

import threading
from concurrent.futures import Future
from contextlib import contextmanager

from pipelines.errors import BuildError
from pipelines.runtime.cluster import on_this_machine
from pipelines.runtime.lifetime import children_die_with_this_process

_starting: Future | None = None
_lock = threading.Lock()


def begin_local_api() -> None:
    """Start Prefect's temporary API server in the background, so that its ~10 s start-up overlaps
    the build's imports and set-up; `start_local_api` then waits for it.

    The starting thread never ends: the kernel ties a child's death signal to the thread that
    started it, so the server still dies with this process (SIGKILL included), not with the thread.
    """
    global _starting
    with _lock:
        if _starting is not None:
            return
        _starting = Future()
    threading.Thread(target=_start_and_stay, args=(_starting,), name="prefect-api-start", daemon=True).start()


def _start_and_stay(future: Future) -> None:
    try:
        future.set_result(_start_now())
    except BaseException as exc:  # handed to whoever waits for the API
        future.set_exception(exc)
    threading.Event().wait()  # keep this thread, and with it the server's death signal, alive


def start_local_api() -> str | None:
    """Prefect's temporary API server, tied to this process and running when this returns; its URL,
    or None when a server is configured (PREFECT_API_URL).

    Prefect would start the same server (a process-wide singleton) on first use, but as a plain
    child that outlives a killed build holding a port and ~235 MB; started here, the kernel kills
    it with the build. Prefect stops it at exit as usual. Waits for a `begin_local_api` start.
    """
    global _starting
    with _lock:
        starting = _starting
    if starting is not None:
        try:
            url = starting.result()
        except BaseException:
            with _lock:  # a later build in this process tries again
                _starting = None
            raise
        if url is not None:
            return url
    return _start_now()  # also when a configured API went away since the background start


def _start_now() -> str | None:
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    with children_die_with_this_process():
        server.start()
    return server.api_url


@contextmanager
def shared_prefect_api(dask_address: str):
    """Make sure every process of a build reports to one Prefect API.

    With no `PREFECT_API_URL` configured, Prefect starts a temporary local API server on first
    use — in every process that needs one, Dask workers included, each then writing to the same
    SQLite file. Starting it here and putting its address in the settings (which Prefect ships
    with each task to the workers) gives the whole build one server. A configured server is left
    as it is; a cluster on another machine needs one, since 127.0.0.1 here is not reachable there.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    if not on_this_machine(dask_address):
        raise BuildError(f"the Dask cluster at {dask_address} is on another machine, so its workers cannot "
                         "reach a temporary local Prefect API: run a Prefect server and set PREFECT_API_URL "
                         "to it here and on the workers")
    with temporary_settings({PREFECT_API_URL: start_local_api()}):
        yield
