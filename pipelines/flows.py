"""The build flow, in DESIGN order:

1. discover & normalise names, hash inputs, assign splits (ingest)
2-7. one coarse task per case: translate labels, QC, resample, crop, sample, render -> staged file
     (cached by case content + relevant config + code version: unchanged cases are not recomputed)
8. gather: shards -> manifest -> cases -> report -> dataset.json -> atomic rename

The whole build holds a per-dataset lock, so concurrent builds of one dataset run one after the
other; leftovers of a build that died are removed under that lock. The task runner is chosen by the
caller (`run_build`), not hard-wired in the decorator.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.filesystems import LocalFileSystem

import pipelines
from pipelines.case import CaseResult, case_key
from pipelines.ingest.cases import CaseJob, ingest_inputs
from pipelines.ingest.discover import InputError
from pipelines.io.publish import (CACHE_DIR, dataset_lock, plan_version, prune_cache, record_lineage,
                                  remove_stale_files)
from pipelines.tasks import process_case_task, publish_task, thread_share
from schemas.config import BuildConfig
from schemas.manifest import QC_ACCEPTED, QC_QUARANTINED

log = logging.getLogger("spineforge")


class BuildError(Exception):
    pass


@dataclass
class BuildSummary:
    version_dir: str
    version: str
    build_id: str
    published: bool  # False when this build_id was already published (no-op)
    counts: dict
    quarantined: list[dict]
    seconds: float  # wall time: of the flow run, replaced by run_build with its whole call
    cases_cached: int = 0  # cases taken from the cache instead of recomputed


def compute_build_id(input_hashes: dict[str, str], config: BuildConfig, code_version: str) -> str:
    payload = json.dumps({"inputs": sorted(input_hashes.values()), "config": config.canonical_json(),
                          "code": code_version, "seed": config.seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def result_storage(folder: Path) -> str:
    """A saved LocalFileSystem block for the cache folder (Prefect needs storage saved server-side)."""
    folder = folder.resolve()
    name = "spineforge-cache-" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    LocalFileSystem(basepath=str(folder)).save(name, overwrite=True)
    return f"local-file-system/{name}"


def _run_cases(task, jobs: list[CaseJob], config: BuildConfig, staging: str, torch_threads: int | None,
               host_threads: dict[str, int] | None):
    futures = task.map(jobs, config=unmapped(config), staging_dir=unmapped(staging),
                       torch_threads=unmapped(torch_threads), host_threads=unmapped(host_threads))
    return list(zip(jobs, futures))


def _gather(pairs, rows: dict[str, dict], seed: int, rerun) -> tuple[list[dict], dict[str, str], int]:
    """Wait for case tasks; a failed one becomes a quarantine row, never a crashed build."""
    manifest, staged, cached = [], {}, 0
    for job, future in pairs:
        row = rows[job.case.case_id]
        try:
            result: CaseResult = future.result()
            if future.state.name == "Cached":
                cached += 1
            if result.staging_file and not Path(result.staging_file).is_file():
                result = rerun(job)  # the cache record outlived its staged file: recompute once
        except Exception as exc:  # noqa: BLE001 - any failure of one case (after retries) quarantines it
            row.update(qc_status=QC_QUARANTINED, qc_reason="processing_error",
                       qc_message=f"{type(exc).__name__}: {exc}"[:500])
            continue
        row.update(result.info, qc_status=result.qc_status, qc_reason=result.qc_reason,
                   qc_message=result.qc_message)
        if result.qc_status == QC_ACCEPTED:
            staged[job.case.case_id] = result.staging_file
            manifest += [dict(sample, case_id=job.case.case_id, split=job.split,
                              input_sha256=job.input_sha256, seed=seed) for sample in result.samples]
    return manifest, staged, cached


def _artifacts(counts: dict, quarantined: list[dict], version_dir: str, build_id: str) -> None:
    table = [{"product": p, "split": s, "samples": n}
             for p, splits in sorted(counts["by_product_split"].items()) for s, n in sorted(splits.items())]
    create_table_artifact(table, key="spineforge-samples", description=f"samples in {version_dir}")
    reasons: dict[str, int] = {}
    for q in quarantined:
        reasons[q["qc_reason"]] = reasons.get(q["qc_reason"], 0) + 1
    lines = [f"# SpineForge build `{build_id}`", f"Published `{version_dir}`: {counts['samples']} samples.", "",
             "| product | split | samples |", "|---|---|---|"]
    lines += [f"| {r['product']} | {r['split']} | {r['samples']} |" for r in table]
    lines += ["", f"Quarantined cases: {len(quarantined)}"]
    lines += [f"- `{reason}`: {n}" for reason, n in sorted(reasons.items())]
    create_markdown_artifact("\n".join(lines), key="spineforge-build-report")


DEFAULT_CACHE_KEEP_DAYS = 30.0


def _prune(cache: Path, jobs: list[CaseJob], config: BuildConfig, keep_days: float, logger) -> None:
    """Drop cached cases no build has used for `keep_days` (this build's are marked used)."""
    used = {case_key(j.case.case_id, j.input_sha256, j.split, config) for j in jobs}
    removed = prune_cache(cache, used, keep_days * 86400)
    if removed:
        logger.info("cache: removed %d entries unused for %g days", len(removed), keep_days)


@flow(name="spineforge-build")
def build_dataset(config: BuildConfig, inputs: list[str], out: str, version: str | None = None,
                  manifests_dir: str | None = None, torch_threads: int | None = None,
                  cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS,
                  host_threads: dict[str, int] | None = None) -> BuildSummary:
    started = time.perf_counter()
    logger = get_run_logger()
    ingest = ingest_inputs([Path(p) for p in inputs], config)
    logger.info("discovered %d cases (%d to process), %d unmatched files, %d problems",
                len(ingest.rows), len(ingest.jobs), len(ingest.discovery.unmatched), len(ingest.problems))
    code_version = pipelines.__version__
    build_id = compute_build_id(ingest.input_hashes, config, code_version)
    dataset_dir = Path(out) / config.dataset
    cache = dataset_dir / CACHE_DIR
    with dataset_lock(dataset_dir, on_wait=logger.info):
        for name in remove_stale_files(dataset_dir, cache):
            logger.info("removed leftover of an interrupted build: %s", name)
        plan = plan_version(Path(out), config.dataset, build_id, version)
        if plan.existing:
            _prune(cache, ingest.jobs, config, cache_keep_days, logger)
            logger.info("build %s is already published as %s; nothing to do", build_id, plan.version)
            card = json.loads((plan.dataset_dir / plan.version / "dataset.json").read_text())
            return BuildSummary(str(plan.dataset_dir / plan.version), plan.version, build_id, False,
                                card["counts"], [], time.perf_counter() - started)

        task = process_case_task.with_options(result_storage=result_storage(cache / "results"))
        staging = str(cache / "cases")

        def rerun(job: CaseJob) -> CaseResult:
            return task.with_options(refresh_cache=True).submit(
                job, config=config, staging_dir=staging, torch_threads=torch_threads,
                host_threads=host_threads).result()

        pairs = _run_cases(task, ingest.jobs, config, staging, torch_threads, host_threads)
        manifest, staged, cached = _gather(pairs, ingest.rows, config.seed, rerun)
        logger.info("cases: %d processed, %d from cache", len(ingest.jobs) - cached, cached)
        case_rows = list(ingest.rows.values())
        quarantined = [r for r in case_rows if r["qc_status"] == QC_QUARANTINED]
        if not manifest:
            reasons = "; ".join(f"{r['case_id']}: {r['qc_reason']} ({r['qc_message']})" for r in quarantined)
            raise BuildError(f"no samples to publish: {reasons or 'no cases found in ' + ', '.join(inputs)}")

        card = {"name": config.dataset, "build_id": build_id, "code_version": code_version,
                "config": config.model_dump(mode="json"), "seed": config.seed,
                "input_hash": hashlib.sha256("".join(sorted(ingest.input_hashes.values())).encode()).hexdigest(),
                "inputs": [str(Path(p).resolve()) for p in inputs],
                "unmatched_files": ingest.discovery.unmatched, "ingest_problems": ingest.problems}
        version_dir = publish_task(plan, manifest, case_rows, staged, card, config.shards.target_bytes)
        _prune(cache, ingest.jobs, config, cache_keep_days, logger)
    published = json.loads((Path(version_dir) / "dataset.json").read_text())
    logger.info("published %s", version_dir)
    if manifests_dir:
        logger.info("recorded lineage in %s", record_lineage(Path(version_dir), Path(manifests_dir)))
    short = [{k: r[k] for k in ("case_id", "qc_reason", "qc_message")} for r in quarantined]
    _artifacts(published["counts"], short, version_dir, build_id)
    return BuildSummary(version_dir, plan.version, build_id, True, published["counts"], short,
                        time.perf_counter() - started, cached)


def local_memory_limit(inputs: list[str], config: BuildConfig, workers: int) -> int:
    """Per-worker memory limit for a local cluster, from the largest case of the inputs."""
    import psutil

    from pipelines.resources import MemoryPlanError, inputs_need_bytes, worker_memory_limit

    need = inputs_need_bytes([Path(p) for p in inputs], config)
    try:
        return worker_memory_limit(need, workers, psutil.virtual_memory().total)
    except MemoryPlanError as exc:
        raise BuildError(str(exc)) from exc


def check_cluster(address: str, inputs: list[str], config: BuildConfig) -> dict[str, int]:
    """Reach an existing Dask scheduler before any work; warn about workers too small for the largest case.

    Returns the Dask task threads per worker host, from which each task takes its share of cores.
    """
    from distributed import Client

    from pipelines.resources import inputs_need_bytes

    try:
        with Client(address, timeout="10s", set_as_default=False) as client:
            workers = client.scheduler_info()["workers"]
    except (OSError, TimeoutError) as exc:
        raise BuildError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    need = inputs_need_bytes([Path(p) for p in inputs], config)
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


def task_runner_for(workers: int, dask_address: str | None):
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

    The workers spawn and import the pipeline (`pipelines.worker`, a Dask preload) while this
    process starts the Prefect API and ingests the inputs; tasks queue at the scheduler until
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
                               memory_limit=memory_limit, preload=["pipelines.worker"])
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
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def _check_output(out: Path, dataset: str) -> None:
    """Fail before any work when the output folder cannot be written."""
    target = Path(out) / dataset
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BuildError(f"output folder is not writable: {target} ({exc.strerror})") from exc


def run_build(config: BuildConfig, inputs: list[str], out: str, version: str | None = None,
              workers: int = 1, dask_address: str | None = None, manifests_dir: str | None = None,
              threads_per_worker: int | None = None,
              cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS) -> BuildSummary:
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    if cache_keep_days < 0:
        raise BuildError(f"--cache-keep-days must be 0 or more, got {cache_keep_days}")
    for path in inputs:  # fail before any flow machinery starts
        if not Path(path).is_dir():
            raise InputError(f"input folder not found: {path}")
    _check_output(Path(out), config.dataset)
    started = time.perf_counter()
    # local workers split this machine's cores; on an existing cluster each task takes its host's share
    local = workers > 1 and not dask_address
    threads = threads_per_worker or (thread_share(os.cpu_count() or 1, workers) if local else None)
    host_threads = None
    with ExitStack() as stack:
        if local:
            memory_limit = local_memory_limit(inputs, config, workers)
            log.info("starting %d local Dask workers (%d thread(s) each, memory limit %.1f GiB each)",
                     workers, threads, memory_limit / 2**30)
            dask_address = stack.enter_context(local_cluster(workers, memory_limit))
            stack.enter_context(shared_prefect_api(dask_address))
        elif dask_address:
            stack.enter_context(shared_prefect_api(dask_address))
            host_threads = check_cluster(dask_address, inputs, config)
        runner = task_runner_for(workers, dask_address)
        summary = build_dataset.with_options(task_runner=runner)(
            config=config, inputs=[str(p) for p in inputs], out=str(out), version=version,
            manifests_dir=str(manifests_dir) if manifests_dir else None, torch_threads=threads,
            cache_keep_days=cache_keep_days, host_threads=host_threads)
    # wall time of the whole call: cluster and API start-up included, not just the flow run
    return replace(summary, seconds=time.perf_counter() - started)
