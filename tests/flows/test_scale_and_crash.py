"""Real processes: a remote Dask cluster on 127.0.0.1, a build killed with SIGKILL, concurrent builds."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.builds.run import run_build
from schemas.config import load_config
from tests.conftest import write_ctspine_case
from tests.flows.test_orchestration import assert_same_content, collection, small_config

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.1)


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and two `dask worker` processes on the loopback interface."""
    scheduler_file = tmp_path / "scheduler.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for(scheduler_file)
        for _ in range(2):
            procs.append(subprocess.Popen(["dask", "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                           "--no-dashboard", "--host", "127.0.0.1"], env=env, cwd=str(ROOT),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_an_unreachable_dask_scheduler_fails_before_any_work(tmp_path):
    from pipelines.errors import BuildError

    inputs = collection(tmp_path / "in", n=1)
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BuildError, match="cannot reach the Dask scheduler"):
        run_build(small_config(), [str(inputs)], str(tmp_path / "out"), dask_address=f"tcp://127.0.0.1:{port}")
    assert not (tmp_path / "out" / "orch" / "v1").exists()


def test_build_through_a_remote_dask_cluster_matches_a_local_build(tmp_path, dask_cluster):
    inputs = collection(tmp_path / "in")
    local = run_build(small_config(), [str(inputs)], str(tmp_path / "local"))
    remote = run_build(small_config(), [str(inputs)], str(tmp_path / "remote"), dask_address=dask_cluster)
    # each case task takes its host's share of cores: here 2 single-threaded workers on one host
    from distributed import Client

    from pipelines.runtime.threads import dask_worker_share, thread_share

    with Client(dask_cluster, timeout=30) as client:
        cores = os.cpu_count() or 1
        assert client.submit(dask_worker_share, {"127.0.0.1": 2}, pure=False).result() == thread_share(cores, 2)
        assert client.submit(dask_worker_share, {}, pure=False).result() == cores  # unknown host: its own 1 thread
    assert dask_worker_share({"127.0.0.1": 2}) is None  # not in a Dask worker
    assert remote.build_id == local.build_id and remote.published and remote.cases_cached == 0
    assert_same_content(tmp_path / "local" / "orch" / "v1", tmp_path / "remote" / "orch" / "v1")


def _cli(args, home, **kwargs):
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _config_file(tmp_path, **update) -> Path:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config(**update).model_dump(mode="json")))
    return path


def test_a_build_killed_with_sigkill_resumes_and_publishes_what_an_uninterrupted_build_would(tmp_path,
                                                                                              fresh_prefect_home):
    inputs = tmp_path / "in"
    for i in range(6):
        write_ctspine_case(inputs, f"k{i}", noise_seed=i)
    config = _config_file(tmp_path, drr={"pairs_per_case": 3, "poses_per_pair": 2},
                          detector={"height": 48, "width": 48, "pixel_spacing_mm": 4.0})
    out = tmp_path / "out"
    args = ["build", "--config", str(config), "--input", str(inputs), "--out", str(out)]
    victim = _cli(args, fresh_prefect_home(tmp_path / "home1"), start_new_session=True)
    cases = out / "orch" / ".cache" / "cases"
    deadline = time.monotonic() + 240
    results = out / "orch" / ".cache" / "results"
    while not (results.is_dir() and len(list(results.iterdir())) >= 2):  # two cases done: their records persisted
        assert victim.poll() is None, "the build finished before it could be killed: make it longer"
        assert time.monotonic() < deadline, "no case finished in time"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # the build and its Prefect server, mid-flight
    victim.wait()
    assert not (out / "orch" / "v1").exists(), "a killed build must not leave a published version"
    (out / "orch" / ".publishing-v1-dead-1").mkdir()  # as if it had died while publishing
    (cases / "k5-partial.h5.tmp").write_bytes(b"half a file")

    resumed = _cli(args, fresh_prefect_home(tmp_path / "home2"))
    log, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log[-3000:]
    assert "from cache" in log and "removed leftover of an interrupted build" in log
    cached = int(log.split(" from cache")[0].rsplit(", ", 1)[1].split()[0])
    assert cached >= 2
    assert not list((out / "orch").glob(".publishing-*")) and not list(cases.rglob("*.tmp"))

    # the same build, never interrupted (in this process: the build code is the CLI's)
    run_build(load_config(config), [str(inputs)], str(tmp_path / "clean"))
    assert_same_content(out / "orch" / "v1", tmp_path / "clean" / "orch" / "v1")


def test_two_builds_of_one_version_at_once_publish_it_once(tmp_path, fresh_prefect_home):
    inputs = collection(tmp_path / "in", n=1)
    config = _config_file(tmp_path)
    args = ["build", "--config", str(config), "--input", str(inputs), "--out", str(tmp_path / "out"), "--version", "v1"]
    first, second = _cli(args, fresh_prefect_home(tmp_path / "h1")), _cli(args, fresh_prefect_home(tmp_path / "h2"))
    logs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], logs
    assert sum("published: " in log for log in logs) == 1
    assert sum("already published (no-op)" in log for log in logs) == 1
    assert [p.name for p in (tmp_path / "out" / "orch").iterdir() if not p.name.startswith(".")] == ["v1"]


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "local-dask"])
def test_a_build_killed_with_sigkill_leaves_no_process_behind(tmp_path, workers, fresh_prefect_home):
    """Only the build's own process is killed (not its group): its API server and Dask scheduler and
    workers must go with it."""
    import psutil

    inputs = collection(tmp_path / "in", n=4)
    config = _config_file(tmp_path, drr={"pairs_per_case": 6, "poses_per_pair": 3},
                          detector={"height": 64, "width": 64, "pixel_spacing_mm": 3.0})
    args = ["build", "--config", str(config), "--input", str(inputs), "--out", str(tmp_path / "out"),
            "--workers", str(workers)]
    victim = _cli(args, fresh_prefect_home(tmp_path / "home"), start_new_session=True)
    build = psutil.Process(victim.pid)
    cases = tmp_path / "out" / "orch" / ".cache" / "cases"
    descendants: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 240
    while not (cases.is_dir() and any(cases.rglob("*.h5"))):  # mid-build: a case has been staged
        assert victim.poll() is None, "the build finished before it could be killed"
        assert time.monotonic() < deadline, "no case finished in time"
        descendants.update({p.pid: p for p in build.children(recursive=True)})
        time.sleep(0.05)
    descendants.update({p.pid: p for p in build.children(recursive=True)})
    kinds = " ".join(" ".join(p.cmdline()[:3]) for p in descendants.values() if p.is_running())
    assert "pipelines.runtime.api_server" in kinds  # the temporary Prefect API server was running
    if workers > 1:
        assert sum(p.is_running() for p in descendants.values()) >= 1 + workers  # server and workers
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    gone, alive = psutil.wait_procs(list(descendants.values()), timeout=15)
    survivors = [" ".join(p.cmdline()[:4]) for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert survivors == []
