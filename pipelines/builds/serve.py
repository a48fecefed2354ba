"""`spineforge serve`: the build flow as a Prefect deployment on a schedule, served by this process.

Prefect creates scheduled runs in its API server's scheduler service, not in the process that serves
a deployment; a temporary API server (what Prefect starts when no API is configured) runs no such
service, so a deployment served against it would wait for runs that never come. Here a deployment is
served against the configured `PREFECT_API_URL`, else the server `spineforge api start` keeps
running, which is started now when none runs (it schedules; it keeps running after `serve` stops).

Each run prints a line when it starts and one when it ends: published, no-op, or failed with the
reason (a failed attempt is retried as the flow's retries say; a run that fails for good leaves the
service serving). A watcher thread prints the next run the server has scheduled and warns when the
server schedules none.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from pipelines.builds.request import DEFAULT_CACHE_KEEP_DAYS, BuildRequest, check_destination
from pipelines.builds.run import build
from pipelines.errors import BuildError, InputError
from pipelines.io.store import is_remote
from schemas.config import BuildConfig, load_config

DEFAULT_CRON = "0 2 * * *"  # nightly at 02:00
FLOW_NAME = "spineforge-scheduled-build"
DEFAULT_RETRIES = 1
DEFAULT_RETRY_DELAY_S = 300  # whole seconds, as Prefect stores a retry delay
# how long the watcher waits for the server's first scheduled run before it warns: Prefect's
# scheduler service visits deployments every PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS (60 s)
SCHEDULED_RUN_GRACE_S = 150.0


@dataclass(frozen=True)
class Schedule:
    """When scheduled builds run: a cron expression, or an interval in seconds."""

    cron: str | None = None
    every_s: float | None = None
    timezone: str | None = None  # IANA name for a cron schedule (e.g. Europe/Berlin); None: UTC

    def __post_init__(self):
        if (self.cron is None) == (self.every_s is None):
            raise InputError("give a schedule as either --cron or --every, not both")
        if self.every_s is not None and self.every_s < 10:
            raise InputError(f"--every must be at least 10 seconds, got {self.every_s:g}")
        if self.cron is not None:
            from prefect.client.schemas.schedules import CronSchedule

            try:
                CronSchedule(cron=self.cron)
            except ValueError as exc:
                raise InputError(f"--cron {self.cron!r} is not a valid cron expression") from exc
            try:
                CronSchedule(cron=self.cron, timezone=self.timezone)
            except ValueError as exc:
                raise InputError(f"--timezone {self.timezone!r} is not a known time zone name") from exc

    def describe(self) -> str:
        return f"cron '{self.cron}' ({self.timezone or 'UTC'})" if self.cron else f"every {self.every_s:g} s"

    def deployment_kwargs(self) -> dict:
        if self.cron:
            from prefect.client.schemas.schedules import CronSchedule

            return {"schedule": CronSchedule(cron=self.cron, timezone=self.timezone)}
        return {"interval": dt.timedelta(seconds=self.every_s)}


def describe_result(summary) -> str:
    """The one-line outcome of a build: published vN, or the version it already is."""
    version = Path(summary.version_dir).name
    if summary.published:
        return f"published {version} ({summary.counts.samples} samples, build_id {summary.build_id})"
    return f"no-op: nothing changed, build_id {summary.build_id} is already published as {version}"


def _log_failure(flow_obj, flow_run, state) -> None:
    """on_failure hook: the run failed for good (every retry spent)."""
    attempts = flow_run.run_count or 1
    get_run_logger().error("scheduled build failed after %d attempt(s): %s; still serving the schedule",
                           attempts, state.message)


@flow(name=FLOW_NAME, retries=DEFAULT_RETRIES, retry_delay_seconds=DEFAULT_RETRY_DELAY_S,
      on_failure=[_log_failure], on_crashed=[_log_failure])
def scheduled_build(config: dict, inputs: list[str], out: str, manifests_dir: str | None = None,
                    workers: int = 1, dask_address: str | None = None,
                    cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS) -> str:
    """One scheduled run: the build exactly as `spineforge build` runs it (its flow is a subflow
    here), local Dask cluster or existing scheduler included. Returns the version folder."""
    from prefect.context import FlowRunContext

    logger = get_run_logger()
    built = BuildConfig.model_validate(config)
    flow_run = FlowRunContext.get().flow_run
    due = flow_run.expected_start_time
    logger.info("scheduled build of %s started (attempt %d, due %s%s)", built.dataset, flow_run.run_count,
                due.astimezone().isoformat(timespec="seconds") if due else "now",
                "" if flow_run.auto_scheduled else ", triggered by hand")
    try:
        request = BuildRequest(built, tuple(inputs), out, workers=workers, dask_address=dask_address,
                               manifests_dir=manifests_dir, cache_keep_days=cache_keep_days)
        summary = build(request, progress=logger.info)
    except Exception as exc:
        logger.warning("scheduled build attempt %d failed: %s: %s", flow_run.run_count, type(exc).__name__,
                       " ".join(str(exc).split()))
        raise
    logger.info("scheduled build %s", describe_result(summary))
    return summary.version_dir


def deployment_spec(config_path: Path, inputs: list[str], out: str, schedule: Schedule | None = None,
                    name: str | None = None, manifests_dir: str | None = None, workers: int = 1,
                    dask_address: str | None = None, cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS,
                    retries: int = DEFAULT_RETRIES, retry_delay_s: int = DEFAULT_RETRY_DELAY_S):
    """(the flow with its retries, the deployment's options) that build `config` from `inputs` into
    `out` on `schedule`: what `Flow.serve` and `Flow.to_deployment` take."""
    from prefect.deployments.runner import EntrypointType

    schedule = schedule or Schedule(cron=DEFAULT_CRON)
    request = BuildRequest(load_config(config_path), tuple(inputs), out, workers=workers, dask_address=dask_address,
                           manifests_dir=manifests_dir, cache_keep_days=cache_keep_days)
    check_destination(request)  # a schedule that cannot write (or reach its store) is refused now
    config = request.config
    if retries < 0 or retry_delay_s < 0:
        raise BuildError(f"--retries and --retry-delay must be 0 or more, got {retries} and {retry_delay_s:g}")
    parameters = {"config": config.model_dump(mode="json"), "inputs": [str(Path(p).resolve()) for p in inputs],
                  "out": out if is_remote(out) else str(Path(out).resolve()), "manifests_dir": manifests_dir, "workers": workers,
                  "dask_address": dask_address, "cache_keep_days": cache_keep_days}
    options = dict(
        # runs import the flow by module path: loading it from its file would put pipelines/ itself on
        # sys.path, where a module named like a standard one shadows it in spawned worker processes
        entrypoint_type=EntrypointType.MODULE_PATH,
        name=name or f"{config.dataset}-scheduled",
        parameters=parameters,
        description=f"Scheduled SpineForge build of {config.dataset} from {', '.join(inputs)}",
        tags=["spineforge"],
        **schedule.deployment_kwargs(),
    )
    return scheduled_build.with_options(retries=retries, retry_delay_seconds=retry_delay_s), options


def next_due(schedule: Schedule, after: dt.datetime | None = None, anchor: dt.datetime | None = None) -> dt.datetime:
    """The schedule's next time after `after` (now), as Prefect's scheduler computes it."""
    import asyncio

    from prefect.server.schemas import schedules

    after = after or dt.datetime.now(dt.timezone.utc)
    if schedule.cron:
        server_schedule = schedules.CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
    else:
        server_schedule = schedules.IntervalSchedule(interval=dt.timedelta(seconds=schedule.every_s),
                                                     anchor_date=anchor or after)
    return asyncio.run(server_schedule.get_dates(n=1, start=after + dt.timedelta(microseconds=1)))[0]


def watch_schedule(api_url: str, deployment_name: str, say, stop: threading.Event,
                   grace_s: float = SCHEDULED_RUN_GRACE_S, poll_s: float = 2.0) -> None:
    """Say the next run the API server at `api_url` has scheduled for the deployment, and say so when
    it has scheduled none within `grace_s` (a server without its scheduler service)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:  # settings are context variables: a thread starts without the caller's
        with temporary_settings({PREFECT_API_URL: api_url}):
            _watch(deployment_name, say, stop, grace_s, poll_s)
    except Exception as exc:  # noqa: BLE001 - the watcher only reports; serving goes on without it
        say(f"warning: stopped watching the schedule: {type(exc).__name__}: {exc}")


def _watch(deployment_name: str, say, stop: threading.Event, grace_s: float, poll_s: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    started, announced, warned = time.monotonic(), None, False
    with get_client(sync_client=True) as client:
        while not stop.wait(poll_s):
            try:
                deployment = client.read_deployment_by_name(deployment_name)
            except ObjectNotFound:
                continue  # not registered yet
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.SCHEDULED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
            if runs and runs[0].id != announced:
                announced = runs[0].id
                when = runs[0].expected_start_time.astimezone().isoformat(timespec="seconds")
                say(f"next scheduled run: {when} ({runs[0].name})")
            elif not announced and not warned and time.monotonic() - started > grace_s:
                warned = True
                say(f"warning: the Prefect API has scheduled no run of {deployment_name} in {grace_s:.0f} s; "
                    "does its server run the scheduler service? (`spineforge api start` runs one)")


def resolve_api(say) -> str:
    """The API URL to serve against: the configured one, else the kept server (started if none runs)."""
    from prefect.settings import PREFECT_API_URL

    from pipelines.runtime.api_service import DEFAULT_PORT, PortInUse, port_is_free, running_api_url, start_api

    if PREFECT_API_URL.value():
        say(f"using the configured Prefect API {PREFECT_API_URL.value()}")
        return PREFECT_API_URL.value()
    if (url := running_api_url()) is not None:
        say(f"using the Prefect API kept by `spineforge api start`: {url}")
        return url
    say("no Prefect API configured or running: starting one with its scheduler (`spineforge api start`) ...")
    try:
        api, _ = start_api(DEFAULT_PORT if port_is_free(DEFAULT_PORT) else 0)
    except PortInUse:  # another server took Prefect's default port meanwhile: never share it, take a free one
        api, _ = start_api(0)
    say(f"started the Prefect API {api.url} (pid {api.pid}, log {api.log}); it keeps running after serve "
        "stops (`spineforge api stop` stops it)")
    return api.url


def serve(config_path: Path, inputs: list[str], out: str, schedule: Schedule | None = None,
          name: str | None = None, manifests_dir: str | None = None, workers: int = 1,
          dask_address: str | None = None, cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS,
          retries: int = DEFAULT_RETRIES, retry_delay_s: int = DEFAULT_RETRY_DELAY_S, say=print) -> None:
    """Register the deployment and run its scheduled builds in this process (one at a time) until
    interrupted, under the API `resolve_api` gives."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    schedule = schedule or Schedule(cron=DEFAULT_CRON)
    build_flow, options = deployment_spec(config_path, inputs, out, schedule, name, manifests_dir, workers,
                                          dask_address, cache_keep_days, retries, retry_delay_s)
    url = resolve_api(say)
    anchor = None
    if schedule.every_s:  # the interval's anchor: what the server counts its runs from
        from prefect.client.schemas.schedules import IntervalSchedule

        anchor = IntervalSchedule(interval=options["interval"]).anchor_date
        options.update(schedule=IntervalSchedule(interval=options.pop("interval"), anchor_date=anchor))
    say(f"schedule: {schedule.describe()}; next run due {next_due(schedule, anchor=anchor).astimezone():%Y-%m-%d %H:%M:%S %Z}; "
        f"failed runs retried {retries} time(s) after {retry_delay_s:g} s; Ctrl-C stops")
    stop = threading.Event()
    with temporary_settings({PREFECT_API_URL: url}):
        watcher = threading.Thread(target=watch_schedule, args=(url, f"{FLOW_NAME}/{options['name']}", say, stop),
                                   name="schedule-watcher", daemon=True)
        watcher.start()
        try:
            # Flow.serve runs this flow object (its retries included) in a subprocess per run
            build_flow.serve(**options, limit=1)
        finally:
            stop.set()
            watcher.join(timeout=10)
