"""The build's Prefect API: which one a build uses, and the temporary server's own process."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pipelines.runtime import prefect_api
from pipelines.runtime.prefect_api import LocalAPI, begin_local_api

PREFECT_VARS = ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")


@pytest.fixture
def clean_env(monkeypatch, tmp_path, fresh_prefect_home):
    """No API configured by the environment; an empty PREFECT_HOME of this test's own."""
    for name in PREFECT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(fresh_prefect_home(tmp_path / "home")))
    return monkeypatch


def test_a_configured_api_means_no_temporary_server(clean_env):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    clean_env.setattr(prefect_api, "_server", None)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4321/api"}):
        begin_local_api()
    assert prefect_api._server is None


def test_the_temporary_server_answers(clean_env):
    server = LocalAPI()
    try:
        url = server.wait(120)
        with urllib.request.urlopen(f"{url}/admin/version", timeout=30) as response:
            assert response.status == 200 and json.loads(response.read())  # Prefect's API, not just a socket
        import psutil

        assert "pipelines.runtime.api_server" in " ".join(psutil.Process(server.process.pid).cmdline())
    finally:
        server.stop()
    assert not server.alive()


@pytest.mark.parametrize("first_signal", ["SIGTERM", "SIGKILL"])
def test_a_child_ends_with_its_parent_killed_with_sigkill(tmp_path, first_signal):
    """The parent starts a child that watches it (with a second thread running, as in a build), and is
    killed with SIGKILL: the child is gone within a few poll periods."""
    import os
    import signal
    import time

    import psutil

    child_code = ("import signal, threading, time; from pipelines.runtime.lifetime import end_with_parent; "
                  f"threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); "
                  f"end_with_parent(first_signal=signal.{first_signal}); time.sleep(60)")
    parent_code = ("import subprocess, sys, time; "
                   f"p = subprocess.Popen([sys.executable, '-c', {child_code!r}]); print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                              cwd=str(Path(__file__).resolve().parents[2]))
    child = psutil.Process(int(parent.stdout.readline()))
    time.sleep(1.0)  # the child is watching
    assert child.is_running() and child.ppid() == parent.pid
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.1)


def spineforge_api(action: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "api", action], capture_output=True, text=True)


def test_a_kept_api_serves_builds_until_stopped(clean_env, tmp_path):
    import psutil
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.builds.run import run_build
    from pipelines.runtime.api_service import recorded_api, running_api_url, start_api, stop_api
    from tests.flows.test_orchestration import ProcessTree, collection, small_config

    assert spineforge_api("status").returncode == 1  # none yet: builds start their own
    api, started = start_api(port=0)
    try:
        assert started and running_api_url() == api.url
        assert start_api(port=0) == (api, False)  # found, not a second server
        status = spineforge_api("status")
        assert status.returncode == 0 and api.url in status.stdout and "answering" in status.stdout
        inputs = collection(tmp_path / "in", n=1)
        earlier = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. an earlier build's server
        # as on a user's machine: no PREFECT_API_URL anywhere
        with temporary_settings(restore_defaults={PREFECT_API_URL}), ProcessTree() as tree:
            summary = run_build(small_config(), [str(inputs)], str(tmp_path / "out"))
        assert summary.published
        started_here = [cmd for pid, (_, cmd, _) in tree.seen.items()
                        if "api_server" in cmd and pid not in earlier and pid != api.pid]
        assert started_here == []  # the build launched no temporary server
        request = urllib.request.Request(f"{api.url}/flow_runs/filter", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.loads(response.read())
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"]  # the build ran against the kept server
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all()  # the build's events and logs reach the kept server before it goes
        APILogWorker.drain_all()
        stopped = stop_api()
    assert stopped == api and recorded_api() is None and running_api_url() is None
    assert not psutil.pid_exists(api.pid) or psutil.Process(api.pid).status() == psutil.STATUS_ZOMBIE
    assert "no Prefect API was running" in spineforge_api("stop").stdout


class _Health:
    """Another Prefect-like server on a port: it answers the health check, in this process."""

    def __enter__(self):
        import http.server
        import threading

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/api/health" else 404)
                self.end_headers()
                self.wfile.write(b"true")

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_server_is_ours_only_when_its_own_process_holds_the_port():
    from pipelines.runtime.api_service import answers_from, healthy, listens_on

    with _Health() as other:
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert healthy(f"http://127.0.0.1:{other.port}/api")  # the port answers ...
            assert not answers_from(bystander, other.port)  # ... but not from the process we started
            assert listens_on(__import__("os").getpid(), other.port)
        finally:
            bystander.kill()
            bystander.wait()


def test_a_kept_api_that_loses_its_port_to_another_server_is_refused_not_shared(clean_env, tmp_path):
    """Two `serve` commands starting the kept API at once both find port 4200 free; the one whose
    server loses the bind must not take the winner's answers for its own (it would register its
    deployment on the other's server); `serve` then starts one on a free port."""
    from pipelines.runtime import api_service

    clean_env.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    clean_env.setattr(api_service, "SERVER_MODULE", "tests.flows.port_loser")
    clean_env.setattr(api_service, "port_is_free", lambda port: True)  # the winner bound it after our check
    with _Health() as other:
        with pytest.raises(api_service.PortInUse, match=f"port {other.port} was taken"):
            api_service.start_api(other.port, timeout_s=30)
    assert not api_service.state_file().exists()  # nothing recorded: no later build uses the other's server
    from pipelines.builds import serve as serving

    tried = []

    def start(port, timeout_s=30):
        tried.append(port)
        if port:
            raise api_service.PortInUse("taken")
        return api_service.RunningAPI(1, "http://127.0.0.1:5555/api", "log"), True

    clean_env.setattr(api_service, "start_api", start)
    clean_env.setattr(api_service, "running_api_url", lambda: None)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert serving.resolve_api(say=lambda s: None) == "http://127.0.0.1:5555/api"
    assert tried[-1] == 0  # then a free port of its own
