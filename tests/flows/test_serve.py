"""`spineforge serve`: a cron deployment whose runs really build and publish."""
import os
import signal
import subprocess
import sys
import threading
import time

from tests.flows.test_orchestration import collection
from tests.flows.test_scale_and_crash import ROOT, _config_file


def test_make_deployment_has_the_schedule_and_the_build_parameters(tmp_path):
    from pipelines.serve import DEFAULT_CRON, make_deployment

    inputs = collection(tmp_path / "in", n=1)
    deployment = make_deployment(_config_file(tmp_path), [str(inputs)], str(tmp_path / "out"))
    assert deployment.name == "orch-scheduled"
    assert deployment.schedules[0].schedule.cron == DEFAULT_CRON == "0 2 * * *"
    assert deployment.parameters["inputs"] == [str(inputs.resolve())]
    assert deployment.parameters["config"]["dataset"] == "orch"
    assert deployment.parameters["workers"] == 1 and deployment.parameters["dask_address"] is None
    assert deployment.entrypoint == "pipelines.serve.scheduled_build"  # imported, not loaded from its file


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, what: str, proc, lines, timeout=180):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"{what}: process exited\n" + "".join(lines)[-3000:]
        assert time.monotonic() < deadline, f"{what}: timed out\n" + "".join(lines)[-3000:]
        time.sleep(0.5)


def _start(args, env):
    proc = subprocess.Popen(args, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def _stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_served_deployment_runs_a_build_under_a_prefect_server(tmp_path):
    """The documented setup: `prefect server start`, PREFECT_API_URL, `spineforge serve`, a triggered run
    (on a local cluster of 2 workers, as a scaled-out schedule runs)."""
    import urllib.request

    inputs = collection(tmp_path / "in", n=1)
    out = tmp_path / "out"
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=str(ROOT), PREFECT_API_URL=api)

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"{api}/health", timeout=2).status == 200
        except OSError:
            return False

    server, server_log = _start(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)
    try:
        _wait(healthy, "prefect server", server, server_log)
        serve, serve_log = _start([sys.executable, "-m", "pipelines.cli", "serve", "--config", str(_config_file(tmp_path)),
                                   "--input", str(inputs), "--out", str(out), "--cron", "0 3 * * *",
                                   "--workers", "2"], env)
        try:
            _wait(lambda: any("prefect deployment run" in ln for ln in serve_log), "serve", serve, serve_log)
            run = subprocess.run(["prefect", "deployment", "run", "spineforge-scheduled-build/orch-scheduled"],
                                 env=env, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
            _wait(lambda: (out / "orch" / "v1" / "dataset.json").is_file(), "scheduled build", serve, serve_log)
        finally:
            _stop(serve)
    finally:
        _stop(server)


def test_serve_registers_with_the_kept_api_when_none_is_configured(tmp_path, monkeypatch):
    import prefect
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines import serve as serving
    from pipelines.runtime import api_service

    config = _config_file(tmp_path)
    seen = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: seen.append((PREFECT_API_URL.value(), deployments)))
    monkeypatch.setattr(api_service, "running_api_url", lambda: "http://127.0.0.1:4201/api")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        serving.serve(config, [str(tmp_path)], str(tmp_path / "out"))
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4999/api"}):  # a configured one comes first
        serving.serve(config, [str(tmp_path)], str(tmp_path / "out"))
    assert [url for url, _ in seen] == ["http://127.0.0.1:4201/api", "http://127.0.0.1:4999/api"]
    assert all(len(deployments) == 1 for _, deployments in seen)
