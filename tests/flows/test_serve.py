"""`spineforge serve`: schedules that fire, proven by the runs Prefect's scheduler creates."""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipelines.errors import InputError
from tests.flows.test_orchestration import collection
from tests.flows.test_scale_and_crash import ROOT, _config_file


def make_deployment(*args, **kwargs):
    """The RunnerDeployment that `deployment_spec` describes (what the server registers)."""
    from pipelines.builds.serve import deployment_spec

    build_flow, options = deployment_spec(*args, **kwargs)
    return build_flow.to_deployment(**options)


def test_the_deployment_has_the_schedule_retries_and_the_build_parameters(tmp_path):
    from pipelines.builds.serve import DEFAULT_CRON, Schedule

    inputs = collection(tmp_path / "in", n=1)
    deployment = make_deployment(_config_file(tmp_path), [str(inputs)], str(tmp_path / "out"), retries=3,
                                 retry_delay_s=7)
    assert deployment.name == "orch-scheduled"
    assert deployment.schedules[0].schedule.cron == DEFAULT_CRON == "0 2 * * *"
    assert deployment.parameters["inputs"] == [str(inputs.resolve())]
    assert deployment.parameters["config"]["dataset"] == "orch"
    assert deployment.parameters["workers"] == 1 and deployment.parameters["dask_address"] is None
    assert deployment.entrypoint == "pipelines.builds.serve.scheduled_build"  # imported, not loaded from its file
    from pipelines.builds.serve import deployment_spec

    build_flow, _ = deployment_spec(_config_file(tmp_path), [str(inputs)], str(tmp_path / "out"), retries=3,
                                    retry_delay_s=7)
    assert (build_flow.retries, build_flow.retry_delay_seconds) == (3, 7)
    every = make_deployment(_config_file(tmp_path), [str(inputs)], str(tmp_path / "out"), Schedule(every_s=45))
    assert every.schedules[0].schedule.interval.total_seconds() == 45


@pytest.mark.parametrize("kwargs, message", [
    ({"cron": "0 2 * *"}, "not a valid cron"),
    ({"every_s": 3}, "at least 10 seconds"),
    ({"cron": "* * * * *", "every_s": 60}, "not both"),
    ({}, "not both"),
    ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "not a known time zone"),
])
def test_a_bad_schedule_is_refused_with_a_clear_error(kwargs, message):
    from pipelines.builds.serve import Schedule

    with pytest.raises(InputError, match=message):
        Schedule(**kwargs)


def test_the_next_due_time_is_the_schedules_own():
    import datetime as dt

    from pipelines.builds.serve import Schedule, next_due

    at = dt.datetime(2026, 12, 1, 1, 30, 5, tzinfo=dt.timezone.utc)
    assert next_due(Schedule(cron="0 2 * * *"), after=at) == dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.timezone.utc)
    assert next_due(Schedule(every_s=60), after=at, anchor=at - dt.timedelta(seconds=90)) == at + dt.timedelta(seconds=30)
    berlin = next_due(Schedule(cron="0 2 * * *", timezone="Europe/Berlin"), after=at)  # 02:00 CET is 01:00 UTC
    assert berlin == dt.datetime(2026, 12, 2, 1, 0, tzinfo=dt.timezone.utc)


def _start(args, env):
    proc = subprocess.Popen(args, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait(predicate, what: str, proc, lines, timeout=300):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert proc.poll() is None, f"{what}: serve exited\n" + "".join(lines)[-4000:]
        assert time.monotonic() < deadline, f"{what}: timed out\n" + "".join(lines)[-4000:]
        time.sleep(0.5)
    return found


def _outcomes(lines):
    return [m.group(1) for ln in lines if (m := re.search(r"scheduled build (published v\d+|no-op)", ln))]


def _scheduled_runs(api: str, deployment: str):
    """Every flow run of the deployment, oldest first, as the API server holds them."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            found = await client.read_deployment_by_name(deployment)
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
                                               sort=FlowRunSort.EXPECTED_START_TIME_ASC)

    with temporary_settings({PREFECT_API_URL: api}):
        return asyncio.run(read())


@pytest.mark.slow
def test_scheduled_runs_fire_publish_then_noop_and_a_failed_run_leaves_the_service_serving(tmp_path,
                                                                                           fresh_prefect_home):
    """No API configured: `serve` starts the kept API (with Prefect's scheduler service), and the runs
    that scheduler creates on an interval build v1, then find nothing changed; a run that fails is
    retried, reported, and the service goes on serving."""
    inputs = collection(tmp_path / "in", n=1)
    out = tmp_path / "out"
    home = fresh_prefect_home(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # Prefect's own settings: the server's scheduler visits deployments every 2 s rather than 60 s, and the
    # serving process asks for due runs every second rather than every 10 s, so the test need not wait
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT),
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2", PREFECT_RUNNER_POLL_FREQUENCY="1")
    args = [sys.executable, "-m", "pipelines.cli", "serve", "--config", str(_config_file(tmp_path)), "--input",
            str(inputs), "--out", str(out), "--every", "20", "--retries", "1", "--retry-delay", "1"]
    serve, lines = _start(args, env)
    api_url = None
    try:
        _wait(lambda: any("next run due" in ln for ln in lines), "serve start", serve, lines, timeout=240)
        started = next(ln for ln in lines if "started the Prefect API" in ln)
        api_url = re.search(r"(http://\S+/api)", started).group(1)
        _wait(lambda: len(_outcomes(lines)) >= 2, "two scheduled runs", serve, lines)
        said = "".join(lines)[-6000:]  # what serve printed, for a failure's message
        assert _outcomes(lines)[:2] == ["published v1", "no-op"], said
        assert sorted(p.name for p in (out / "orch").iterdir() if not p.name.startswith(".")) == ["v1"], (
            sorted(p.name for p in (out / "orch").iterdir()), said)
        assert any("next scheduled run:" in ln for ln in lines)

        shutil.rmtree(inputs)  # a later run fails: retried once, reported, and the service keeps serving
        _wait(lambda: any("scheduled build failed after 2 attempt(s)" in ln for ln in lines), "failed run",
              serve, lines)
        assert any("attempt 1 failed: InputError: input folder not found" in ln for ln in lines)
        time.sleep(3)
        assert serve.poll() is None
    finally:
        _stop(serve)
        log = home / "spineforge-api.log"
        server_log = log.read_text() if log.exists() else ""
        if api_url:
            runs = _scheduled_runs(api_url, "spineforge-scheduled-build/orch-scheduled")
        subprocess.run([sys.executable, "-m", "pipelines.cli", "api", "stop"], env=env, cwd=str(ROOT), timeout=60)
    text = "".join(lines)
    assert "polling for scheduled runs" in text or "being served" in text
    ran = [r for r in runs if r.state.type.value in ("COMPLETED", "FAILED")]
    assert len(ran) >= 3 and all(r.auto_scheduled for r in runs), [(r.name, r.auto_scheduled, r.state.type.value,
                                                                    r.expected_start_time) for r in runs]
    assert [r.state.type.value for r in ran[:2]] == ["COMPLETED", "COMPLETED"]
    assert ran[-1].state.type.value == "FAILED" and ran[-1].run_count == 2
    # Prefect's scheduler service logged no error while it created those runs
    assert not re.search(r"Traceback|ERROR|InvalidRequestError", server_log), server_log[-4000:]


def test_serve_uses_the_configured_api_else_the_kept_one(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.builds import serve as serving
    from pipelines.runtime import api_service

    config = _config_file(tmp_path)
    seen, said = [], []
    monkeypatch.setattr(type(serving.scheduled_build), "serve",
                        lambda flow, limit, **options: seen.append((PREFECT_API_URL.value(), limit)))
    monkeypatch.setattr(serving, "watch_schedule", lambda *args, **kwargs: None)
    monkeypatch.setattr(api_service, "running_api_url", lambda: "http://127.0.0.1:4201/api")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        serving.serve(config, [str(tmp_path)], str(tmp_path / "out"), say=said.append)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4999/api"}):  # a configured one comes first
        serving.serve(config, [str(tmp_path)], str(tmp_path / "out"), say=said.append)
    assert seen == [("http://127.0.0.1:4201/api", 1), ("http://127.0.0.1:4999/api", 1)]  # one run at a time
    assert any("kept by `spineforge api start`" in s for s in said)
    assert any("next run due" in s for s in said)


@pytest.mark.slow
def test_a_scheduled_run_publishes_to_an_object_store(tmp_path, s3_server, fresh_prefect_home):
    """`serve --out s3://...`: the run the schedule fires builds in the work folder under the user's cache
    and publishes to the bucket."""
    from pipelines.io.publish_store import read_store_card
    from pipelines.io.store import S3Url, StoreOptions

    inputs = collection(tmp_path / "in", n=1)
    home = fresh_prefect_home(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT),
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2", PREFECT_RUNNER_POLL_FREQUENCY="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    args = [sys.executable, "-m", "pipelines.cli", "serve", "--config", str(_config_file(tmp_path)), "--input",
            str(inputs), "--out", "s3://spineforge/scheduled", "--every", "10", "--retries", "0"]
    serve, lines = _start(args, env)
    try:
        _wait(lambda: len(_outcomes(lines)) >= 1, "a scheduled run", serve, lines)
        assert _outcomes(lines)[0] == "published v1"
    finally:
        _stop(serve)
        subprocess.run([sys.executable, "-m", "pipelines.cli", "api", "stop"], env=env, cwd=str(ROOT), timeout=60)
    card = read_store_card(StoreOptions().client(), S3Url.parse("s3://spineforge/scheduled/orch/v1"))
    assert card is not None and card.objects
    work = tmp_path / "cache" / "spineforge" / "spineforge-work" / "spineforge" / "scheduled" / "orch" / "v1"
    assert (work / "dataset.json").is_file() and read_card_id(work) == card.build_id


def read_card_id(version_dir):
    from pipelines.io.shards import read_card

    return read_card(version_dir).build_id
