"""One Prefect API for every process of a build, started early and tied to the build's process.

With no `PREFECT_API_URL` configured, Prefect starts a temporary API server (its own app, served by
uvicorn in a subprocess) on first use: after its ~10 s start-up, in every process that needs one
(Dask workers included), and as a plain child that outlives a killed build, holding a port and
~235 MB. Here the same server (`pipelines.runtime.api_server`) is launched the moment a build is
known to have work - before the build's modules are imported, so the two overlap - with a kernel
death signal (it dies with this process, SIGKILL included), and its address goes into the settings
Prefect ships to every worker. Launching it needs no Prefect import in this process; only waiting
for it does.
"""
from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

from pipelines.errors import BuildError
from pipelines.runtime.api_service import free_port, healthy, prefect_home, running_api_url
from pipelines.runtime.cluster import on_this_machine
from pipelines.runtime.lifetime import die_with_parent

log = logging.getLogger(__name__)
PORT_IN_USE = 3  # uvicorn's exit status when it cannot bind its port
# A first start in a new PREFECT_HOME (database creation) takes ~17 s on a 2-core machine, and more
# beside local workers starting; Prefect's own default of 20 s failed builds under load.
START_TIMEOUT_S = 120.0
_lock = threading.Lock()
_server: "LocalAPI | None" = None


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
        parent = os.getpid()
        self.process = subprocess.Popen([sys.executable, "-m", "pipelines.runtime.api_server", str(self.port)],
                                        env=env, preexec_fn=lambda: die_with_parent(parent))
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
            elif healthy(self.url):
                self.ready = True
            elif time.monotonic() > deadline:
                self.stop()
                raise BuildError(f"the temporary Prefect API server did not answer within {timeout_s:.0f} s "
                                 "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
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


def configured_api_url() -> str | None:
    """PREFECT_API_URL as the environment or the active Prefect profile sets it, read without importing
    Prefect (~2 s) and resolved as Prefect resolves it: the profiles file is PREFECT_PROFILES_PATH,
    else PREFECT_HOME/profiles.toml, else ~/.prefect/profiles.toml when it exists, else Prefect's own;
    the active profile is PREFECT_PROFILE or the file's `active`, and a missing file or profile means
    Prefect's default profile. Other settings sources (.env, prefect.toml) are seen by `build_api`."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    prefect_defaults = Path(importlib.util.find_spec("prefect").origin).parent / "settings" / "profiles.toml"
    if os.environ.get("PREFECT_PROFILES_PATH"):
        path = Path(os.environ["PREFECT_PROFILES_PATH"])
    elif os.environ.get("PREFECT_HOME") or (prefect_home() / "profiles.toml").exists():
        path = prefect_home() / "profiles.toml"
    else:
        path = prefect_defaults
    data = _read_toml(path)
    profile = data.get("profiles", {}).get(os.environ.get("PREFECT_PROFILE") or data.get("active"))
    if profile is None:  # Prefect's default profile
        defaults = _read_toml(prefect_defaults)
        profile = defaults.get("profiles", {}).get(defaults.get("active", "ephemeral"), {})
    return profile.get("PREFECT_API_URL") or None


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def begin_local_api() -> None:
    """Launch the temporary API now, unless a PREFECT_API_URL is configured or `spineforge api start`
    keeps a server running; `build_api` waits for it. Call it from a thread that lives as long as the
    build: the kernel's death signal follows the thread that started the child."""
    if not (configured_api_url() or running_api_url()):
        _local_server()


def _local_server() -> LocalAPI:
    """This process's temporary server, launched if none is running."""
    global _server
    with _lock:
        if _server is None or not _server.alive():
            _server = LocalAPI()
        return _server


def _stop_unneeded_launch() -> None:
    with _lock:
        if _server is not None and not _server.ready:
            _server.stop()


@contextmanager
def build_api(dask_address: str | None):
    """Every process of the build reports to one Prefect API inside the block: a configured
    `PREFECT_API_URL` as it is, else the server `spineforge api start` keeps running, else this
    process's temporary server (launched here unless `begin_local_api` did already). A cluster on
    another machine needs a configured server, since 127.0.0.1 here is not reachable there."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        _stop_unneeded_launch()  # launched early, before other settings sources could be read
        yield
        return
    if dask_address and not on_this_machine(dask_address):
        raise BuildError(f"the Dask cluster at {dask_address} is on another machine, so its workers cannot "
                         "reach a temporary local Prefect API: run a Prefect server and set PREFECT_API_URL "
                         "to it here and on the workers")
    url = running_api_url()
    if url:
        _stop_unneeded_launch()
    else:
        server = _local_server()
        if not server.ready:  # while it starts: what Prefect's engine imports next (to serialise parameters)
            import fastapi.encoders  # noqa: F401
        url = server.wait(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", START_TIMEOUT_S)))
    with temporary_settings({PREFECT_API_URL: url}):
        yield
