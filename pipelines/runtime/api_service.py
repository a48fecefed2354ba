"""A Prefect API that stays up between builds, on request: `spineforge api start|status|stop`.

A build with no API configured starts a temporary server and stops it at the end, which costs it
seconds of start-up (see `prefect_api`). On a host that builds often, one server kept running
removes that cost. It is Prefect's server app (with its UI and services, as `prefect server start`
runs it) in `pipelines.runtime.api_server`, detached into its own session with its output in a log
file, so it outlives the command that started it and nothing else. Its pid, URL and log path are
recorded in PREFECT_HOME/spineforge-api.json; a build that finds no PREFECT_API_URL configured uses
the recorded server while it answers. (Prefect's own `prefect server start --background` leaves the
server's output on pipes nobody reads once the command exits: here the server was gone seconds later.)
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.errors import BuildError
from schemas.layout import tmp_path

STATE_NAME = "spineforge-api.json"
DEFAULT_PORT = 4200  # Prefect's own default, so its UI is where Prefect's documentation says
START_TIMEOUT_S = 180.0  # a first start creates Prefect's database (~18 s on 2 cores)
KILL_WAIT_S = 10.0  # after SIGKILL, how long to wait for the process to be gone
SERVER_MODULE = "pipelines.runtime.api_server"
PORT_IN_USE = 3  # uvicorn's exit status when it cannot bind its port


@dataclass(frozen=True)
class RunningAPI:
    pid: int
    url: str
    log: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:port now (with SO_REUSEADDR, as uvicorn binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def healthy(url: str) -> bool:
    """Whether the Prefect API at `url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, reset or timed out (URLError is an OSError)
        return False


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds the listening socket on 127.0.0.1:port. A health check alone
    cannot tell: when two servers start on one port at once, the one that lost the bind is still
    starting while the winner answers on that port."""
    import psutil

    try:
        sockets = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:  # gone, or not ours to inspect
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in sockets)


def answers_from(process: subprocess.Popen, port: int) -> bool:
    """The server `process` was started to be answers on `port`: the port answers Prefect's health
    check and the socket behind it is that process's."""
    return healthy(f"http://127.0.0.1:{port}/api") and listens_on(process.pid, port)


class PortInUse(BuildError):
    """The server could not bind its port: another process took it."""


def prefect_home() -> Path:
    """PREFECT_HOME as Prefect reads it from the environment (its default otherwise)."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def state_file() -> Path:
    return prefect_home() / STATE_NAME


def _is_our_server(pid: int) -> bool:
    """The process `pid` is alive and is the API server (not an unrelated process that reused the pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): alive is the best we can tell
            return True
        except OSError:
            return False
    return SERVER_MODULE.encode() in cmdline


def recorded_api() -> RunningAPI | None:
    """The server `spineforge api start` recorded, when its process is still the server; else None."""
    try:
        api = RunningAPI(**json.loads(state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return api if _is_our_server(api.pid) else None


def running_api_url() -> str | None:
    """The recorded server's API URL when it answers its health check now, else None."""
    api = recorded_api()
    if api is None or not healthy(api.url):
        return None
    port = int(api.url.rsplit(":", 1)[1].split("/", 1)[0])
    return api.url if listens_on(api.pid, port) else None  # the recorded server answers, not another on its port


def start_api(port: int = DEFAULT_PORT, timeout_s: float = START_TIMEOUT_S) -> tuple[RunningAPI, bool]:
    """Start the long-running server (or find the one already recorded); (it, whether it was started now)."""
    if (api := recorded_api()) is not None:
        return api, False
    port = port or free_port()
    if not port_is_free(port):
        raise BuildError(f"port {port} is in use: choose another with --port (0 picks a free one)")
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "spineforge-api.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT__SERVER_")}
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", SERVER_MODULE, str(port)], env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    api = RunningAPI(process.pid, f"http://127.0.0.1:{port}/api", str(log))
    deadline = time.monotonic() + timeout_s
    while not answers_from(process, port):
        if process.poll() == PORT_IN_USE:
            raise PortInUse(f"port {port} was taken by another process while the Prefect API server started; "
                            "choose another with --port (0 picks a free one)")
        if process.poll() is not None:
            raise BuildError(f"the Prefect API server exited with status {process.returncode} while starting; "
                             f"see {log}")
        if time.monotonic() > deadline:
            process.terminate()
            raise BuildError(f"the Prefect API server did not answer within {timeout_s:.0f} s; see {log}")
        time.sleep(0.1)
    tmp = tmp_path(state_file())
    tmp.write_text(json.dumps(asdict(api)))
    tmp.replace(state_file())
    return api, True


def _wait_gone(process, timeout_s: float) -> bool:
    """Wait until `process` (a psutil.Process) has exited (a zombie counts: it no longer runs); whether it did.
    Its command line is no guide here: it reads empty while a process with threads is still exiting."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def stop_api(timeout_s: float = 30.0) -> RunningAPI | None:
    """Stop the recorded server (SIGTERM, then SIGKILL after `timeout_s`); the one stopped, or None."""
    api = recorded_api()
    state_file().unlink(missing_ok=True)
    if api is None:
        return None
    import psutil

    try:
        process = psutil.Process(api.pid)  # is_running() then also tells a reused pid apart
    except psutil.NoSuchProcess:
        return api
    process.send_signal(signal.SIGTERM)
    if not _wait_gone(process, timeout_s):  # graceful shutdown took too long: kill it, and see it go
        process.send_signal(signal.SIGKILL)
        _wait_gone(process, KILL_WAIT_S)
    return api
