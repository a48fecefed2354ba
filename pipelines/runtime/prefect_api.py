"""One Prefect API for every process of a build, tied to the build's process.

With no `PREFECT_API_URL` configured and no server kept by `spineforge api start`, a build starts a
temporary API server (Prefect's own app under uvicorn, `pipelines.runtime.api_server`) on a free
port and stops it at the end. Unlike the temporary server Prefect would start by itself, it ends
with the build when the build is killed (SIGKILL included), and it is one server for the whole
build: its address goes into the settings Prefect ships to every Dask worker.
"""
from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from pipelines.errors import BuildError
from pipelines.runtime.api_service import PORT_IN_USE, START_TIMEOUT_S, answers_from, free_port, running_api_url
from pipelines.runtime.cluster import on_this_machine

log = logging.getLogger(__name__)
_lock = threading.Lock()
_server: LocalAPI | None = None


class LocalAPI:
    """Prefect's server app in a uvicorn subprocess on a free local port."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.ready = False
        self._launch()
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> None:
        self.port = free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "pipelines.runtime.api_server", str(self.port),
                                         str(os.getpid())], env=env)
        log.info("starting a temporary Prefect API on %s", self.url)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout_s: float) -> str:
        """Block until the server answers its health check; its URL."""
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            code = self.process.poll()
            if code == PORT_IN_USE:  # another process took the port between our check and its bind
                self._launch()
            elif code is not None:
                raise BuildError(f"the temporary Prefect API server exited with status {code} while starting; "
                                 "run `prefect server start` to see why, or set PREFECT_API_URL to a running server")
            elif answers_from(self.process, self.port):  # not another server that took the port
                self.ready = True
            elif time.monotonic() > deadline:
                self.stop()
                raise BuildError(f"the temporary Prefect API server did not answer within {timeout_s:.0f} s; "
                                 "run `prefect server start` to see why, or `spineforge api start`")
            else:
                time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self.alive():
            log.info("stopping the temporary Prefect API on %s", self.url)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def begin_local_api() -> None:
    """Launch the temporary server now, when the build will need one (no PREFECT_API_URL configured,
    no server kept by `spineforge api start`), so that it starts while other set-up runs (local Dask
    workers); `build_api` waits for it."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value() and not running_api_url():
        _local_server()


def temporary_api_url() -> str | None:
    """The API of this process's temporary server while it runs (what its builds reported to), else None."""
    server = _server
    return server.url if server is not None and server.alive() and server.ready else None


def _local_server() -> LocalAPI:
    """This process's temporary server, launched if none is running."""
    global _server
    with _lock:
        if _server is None or not _server.alive():
            _server = LocalAPI()
        return _server


@contextmanager
def build_api(dask_address: str | None):
    """Every process of the build reports to one Prefect API inside the block: a configured
    `PREFECT_API_URL` as it is, else the server `spineforge api start` keeps running, else this
    process's temporary server, launched here. A cluster on
    another machine needs a configured server, since 127.0.0.1 here is not reachable there."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    if dask_address and not on_this_machine(dask_address):
        raise BuildError(f"the Dask cluster at {dask_address} is on another machine, so its workers cannot "
                         "reach a temporary local Prefect API: run a Prefect server and set PREFECT_API_URL "
                         "to it here and on the workers")
    url = running_api_url() or _local_server().wait(START_TIMEOUT_S)
    with temporary_settings({PREFECT_API_URL: url}):
        yield
