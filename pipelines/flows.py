"""The build flow, in DESIGN order:

1. discover & normalise names, hash inputs (unchanged files by their remembered hash), assign splits
2-7. one coarse task per case: read each file once, QC, translate labels, resample, crop, sample,
     render -> a staged file (cached by case content + relevant config + code version)
8. gather: shards -> manifest -> cases -> report -> dataset.json -> atomic rename

The whole build holds a per-dataset lock, so concurrent builds of one dataset run one after the
other; leftovers of a build that died are removed under that lock. Where the tasks run (threads
here, a local Dask cluster, an existing scheduler) is chosen by `run_build`, not by the flow.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

import pipelines
from pipelines.case.process import CaseResult
from pipelines.errors import BuildError, InputError
from pipelines.ingest.cases import (
    CaseJob,
    IngestResult,
    describe_unmatched,
    hash_files,
    ingest_inputs,
    quarantine_content_duplicates,
    set_hashes,
)
from pipelines.io.input_hashes import InputHashes
from pipelines.io.publish import (
    CardFields,
    dataset_lock,
    plan_version,
    prune_cache,
    record_lineage,
    remove_stale_files,
)
from pipelines.io.shards import read_card
from pipelines.runtime.published import BuildSummary, already_published
from pipelines.runtime.threads import thread_share
from pipelines.case.keys import job_key
from pipelines.tasks import process_case_task, publish_task
from schemas.card import Counts, compute_build_id
from schemas.config import BuildConfig
from schemas.layout import CACHE_RESULTS, cache_dir, staged_case_dir
from schemas.manifest import (
    QC_ACCEPTED,
    CaseRow,
    Col,
    SampleRow,
    describe_quarantine,
    quarantine_entry,
)
from schemas.rules import Role

log = logging.getLogger("spineforge")
DEFAULT_CACHE_KEEP_DAYS = 30.0


def result_storage(folder: Path) -> str:
    """A saved LocalFileSystem block for the cache folder (Prefect needs storage saved server-side)."""
    folder = folder.resolve()
    name = "spineforge-cache-" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    LocalFileSystem(basepath=str(folder)).save(name, overwrite=True)
    return f"local-file-system/{name}"


# --- step 1 ----------------------------------------------------------------------------------

def discover_and_hash(inputs: list[str], config: BuildConfig, hashes: InputHashes) -> IngestResult:
    """Discovery and splits; files unchanged since an earlier build get their remembered hash, and new
    or changed ones are left unhashed, to be hashed by their case task in its one read of them."""
    return ingest_inputs([Path(p) for p in inputs], config, hasher=lambda cases: hash_files(cases, hashes.lookup))


# --- steps 2-7 -------------------------------------------------------------------------------

def staged_in_place(result: CaseResult, job: CaseJob, config: BuildConfig, cache: Path) -> bool:
    """A case result's staged files exist and lie under its own key in this dataset's cache. A cached
    record can point elsewhere: at files since removed, or -- when one process builds two datasets from
    the same inputs, so the same cache key -- at the other dataset's cache (seen once under load)."""
    own = staged_case_dir(cache, job_key(job, config)).resolve()
    return all(Path(f).is_file() and Path(f).resolve().parent == own for f in result.staging_files.values())


def run_cases(task, jobs: list[CaseJob], config: BuildConfig, run_options: dict,
              rerun) -> tuple[dict[str, CaseResult | Exception], int]:
    """One task per case; returns (result or the exception it failed with, per case; cases from cache)."""
    futures = task.map(jobs, config=unmapped(config), **{k: unmapped(v) for k, v in run_options.items()})
    results, cached = {}, 0
    for job, future in zip(jobs, futures):
        try:
            result: CaseResult = future.result()
            if not staged_in_place(result, job, config, Path(run_options["cache_dir"])):
                result = rerun(job)  # the cache record outlived its staged files: recompute once
            elif future.state.name == "Cached":
                cached += 1
        except Exception as exc:  # noqa: BLE001 - any failure of one case (after retries) quarantines it
            result = exc
        results[job.case.case_id] = result
    return results, cached


def _refile(result: CaseResult, unhashed: CaseJob, hashed: CaseJob, config: BuildConfig, cache: Path,
            store: ResultStore) -> None:
    """Move a result computed under an unhashed case's signature key to its content key, so that the
    next build, which knows the hashes, finds it in Prefect's cache. (Until this runs, a killed build
    still finds it under the signature key.)"""
    key = job_key(hashed, config)
    if result.staging_files:
        target = staged_case_dir(cache, key)
        if target.exists():  # the same content was staged before (e.g. the file was only touched)
            shutil.rmtree(target)
        os.replace(staged_case_dir(cache, job_key(unhashed, config)), target)
        result.staging_files = {p: str(target / Path(f).name) for p, f in result.staging_files.items()}
    store.write(result, key=key)
    (cache / CACHE_RESULTS / job_key(unhashed, config)).unlink(missing_ok=True)


def settle_hashes(jobs: list[CaseJob], results: dict, rows: dict[str, CaseRow], hashes: InputHashes,
                  config: BuildConfig, cache: Path, store: ResultStore) -> list[CaseJob]:
    """Every job with its content hashes: those its task computed while reading, or (for a task that
    failed before reading) hashed here. Remembered for the next build."""
    settled = []
    for job in jobs:
        if job.hashed:
            settled.append(job)
            continue
        result = results[job.case.case_id]
        read = result.file_sha256 if isinstance(result, CaseResult) else {}
        file_hashes = {k: read.get(k) or hashes.sha256(p) for k, p in sorted(job.case.files.items())}
        for key, path in job.case.files.items():
            hashes.remember(path, file_hashes[key])
        row = rows[job.case.case_id]
        set_hashes(row, file_hashes)
        new = replace(job, input_sha256=row.input_sha256, file_sha256=file_hashes)
        if isinstance(result, CaseResult):
            _refile(result, job, new, config, cache, store)
        settled.append(new)
    return settled


def drop_duplicates(jobs: list[CaseJob], rows: dict[str, CaseRow]) -> list[CaseJob]:
    """Cases whose CT content another case already has (found once their hashes are known) are
    quarantined as duplicates: the first case id keeps the scan."""
    kept, seen = [], {}
    for job in jobs:
        ct = job.file_sha256[Role.CT]
        if ct in seen:
            rows[job.case.case_id].quarantine("duplicate", f"same CT content as case {seen[ct]}; processed once there")
            continue
        seen[ct] = job.case.case_id
        kept.append(job)
    return kept


def drop_content_duplicates(jobs: list[CaseJob], results: dict, rows: dict[str, CaseRow],
                            config: BuildConfig) -> list[CaseJob]:
    """Cases holding the same scan as another by content (another format, orientation, dtype, or a crop)
    are quarantined as duplicates, by the verdict `spineforge ingest` gives too."""
    fingerprints = {j.case.case_id: results[j.case.case_id].fingerprint for j in jobs
                    if isinstance(results.get(j.case.case_id), CaseResult)
                    and results[j.case.case_id].qc_status == QC_ACCEPTED}
    dropped = quarantine_content_duplicates(fingerprints, rows, config)
    return [j for j in jobs if j.case.case_id not in dropped]


def _apply(row: CaseRow, result: CaseResult | Exception) -> None:
    if isinstance(result, Exception):
        row.quarantine("processing_error", f"{type(result).__name__}: {result}"[:500])
        return
    if result.stored is not None:
        row.shape, row.spacing, row.orientation = result.stored.shape, result.stored.spacing, result.stored.orientation
        row.levels, row.cut_levels = ",".join(result.levels), ",".join(result.cut_levels)
        row.skipped_samples = json.dumps(result.skipped)
        row.notes = json.dumps(result.notes) if result.notes else None
    if result.qc_status == QC_ACCEPTED:
        row.accept()
    else:
        row.quarantine(result.qc_reason, result.qc_message)


def accepted_samples(jobs: list[CaseJob], results: dict, rows: dict[str, CaseRow],
                     config: BuildConfig) -> tuple[list[SampleRow], dict[str, str]]:
    """(manifest rows, staged shard files per accepted case) of the jobs kept."""
    samples, staged = [], {}
    for job in jobs:
        result, row = results[job.case.case_id], rows[job.case.case_id]
        _apply(row, result)
        if not row.quarantined:
            staged[job.case.case_id] = result.staging_files
            samples += [replace(s, case_id=job.case.case_id, split=job.split, input_sha256=job.input_sha256,
                                seed=config.seed) for s in result.samples]
    return samples, staged


# --- step 8 ----------------------------------------------------------------------------------

def card_fields(config: BuildConfig, build_id: str, input_hashes: dict[str, str], ingest: IngestResult,
                inputs: list[str], unmatched: list[str]) -> CardFields:
    return CardFields(
        name=config.dataset, build_id=build_id, code_version=pipelines.__version__,
        config=config.model_dump(mode="json"), seed=config.seed,
        input_hash=hashlib.sha256("".join(sorted(input_hashes.values())).encode()).hexdigest(),
        inputs=[str(Path(p).resolve()) for p in inputs], unmatched_files=unmatched,
        ingest_problems=ingest.problems)


def _artifacts(counts: Counts, quarantined: list[dict], version_dir: str, build_id: str) -> None:
    table = [{Col.PRODUCT: p, Col.SPLIT: s, "samples": n}
             for p, splits in sorted(counts.by_product_split.items()) for s, n in sorted(splits.items())]
    create_table_artifact(table, key="spineforge-samples", description=f"samples in {version_dir}")
    lines = [f"# SpineForge build `{build_id}`", f"Published `{version_dir}`: {counts.samples} samples.", "",
             "| product | split | samples |", "|---|---|---|"]
    lines += [f"| {r[Col.PRODUCT]} | {r[Col.SPLIT]} | {r['samples']} |" for r in table]
    lines += ["", f"Quarantined cases: {len(quarantined)}"] + [f"- {describe_quarantine(q)}" for q in quarantined]
    create_markdown_artifact("\n".join(lines), key="spineforge-build-report")


def _prune(cache: Path, jobs: list[CaseJob], config: BuildConfig, keep_days: float, logger) -> None:
    """Drop cached cases no build has used for `keep_days` (this build's are marked used)."""
    removed = prune_cache(cache, {job_key(j, config) for j in jobs}, keep_days * 86400)
    if removed:
        logger.info("cache: removed %d entries unused for %g days", len(removed), keep_days)


def _noop(plan, build_id: str, started: float, hashes: InputHashes, cached: int = 0) -> BuildSummary:
    card = read_card(plan.dataset_dir / plan.version)
    return BuildSummary(str(plan.dataset_dir / plan.version), plan.version, build_id, False, card.counts, [],
                        time.perf_counter() - started, cached, hashes.hashed)


@flow(name="spineforge-build")
def build_dataset(config: BuildConfig, inputs: list[str], out: str, version: str | None = None,
                  manifests_dir: str | None = None, torch_threads: int | None = None,
                  cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS,
                  host_threads: dict[str, int] | None = None, compact: bool = False) -> BuildSummary:
    started = time.perf_counter()
    logger = get_run_logger()
    dataset_dir = Path(out) / config.dataset
    cache = cache_dir(dataset_dir)
    hashes = InputHashes(cache)
    ingest = discover_and_hash(inputs, config, hashes)  # 1
    unhashed = sum(not j.hashed for j in ingest.jobs)
    logger.info("discovered %d cases (%d to process, %d new or changed), %d unmatched files, %d problems",
                len(ingest.rows), len(ingest.jobs), unhashed, len(ingest.discovery.unmatched), len(ingest.problems))

    def finish(jobs: list[CaseJob]) -> None:
        _prune(cache, jobs, config, cache_keep_days, logger)
        hashes.save()

    with dataset_lock(dataset_dir, on_wait=logger.info):
        for name in remove_stale_files(dataset_dir, cache):
            logger.info("removed leftover of an interrupted build: %s", name)
        if not unhashed:  # every input unchanged since a build: known to be published without any work?
            build_id = compute_build_id(ingest.input_hashes, config, pipelines.__version__)
            plan = plan_version(Path(out), config.dataset, build_id, version)
            if plan.existing:
                finish(ingest.jobs)
                logger.info("build %s is already published as %s; nothing to do", build_id, plan.version)
                return _noop(plan, build_id, started, hashes)

        storage = result_storage(cache / CACHE_RESULTS)  # 2-7
        task = process_case_task.with_options(result_storage=storage)
        options = {"cache_dir": str(cache), "torch_threads": torch_threads, "host_threads": host_threads}

        def rerun(job: CaseJob) -> CaseResult:
            return task.with_options(refresh_cache=True).submit(job, config=config, **options).result()

        results, cached = run_cases(task, ingest.jobs, config, options, rerun)
        logger.info("cases: %d processed, %d from cache", len(ingest.jobs) - cached, cached)
        store = ResultStore(result_storage=LocalFileSystem.load(storage.split("/", 1)[1]))
        jobs = drop_duplicates(settle_hashes(ingest.jobs, results, ingest.rows, hashes, config, cache, store),
                               ingest.rows)
        jobs = drop_content_duplicates(jobs, results, ingest.rows, config)
        input_hashes = {j.case.case_id: j.input_sha256 for j in jobs}
        build_id = compute_build_id(input_hashes, config, pipelines.__version__)
        plan = plan_version(Path(out), config.dataset, build_id, version)
        if plan.existing:
            finish(jobs)
            logger.info("build %s is already published as %s; nothing to do", build_id, plan.version)
            return _noop(plan, build_id, started, hashes, cached)

        samples, staged = accepted_samples(jobs, results, ingest.rows, config)
        rows = list(ingest.rows.values())
        quarantined = [quarantine_entry(r) for r in rows if r.quarantined]
        if not samples:
            reasons = "; ".join(describe_quarantine(q) for q in quarantined)
            raise BuildError(f"no samples to publish: {reasons or 'no cases found in ' + ', '.join(inputs)}")
        unmatched = describe_unmatched(ingest.discovery, {c: json.loads(r.file_sha256) for c, r in ingest.rows.items()},
                                       hashes.sha256)
        fields = card_fields(config, build_id, input_hashes, ingest, inputs, unmatched)
        keys = {j.case.case_id: job_key(j, config) for j in jobs}
        version_dir = publish_task(plan, samples, rows, staged, keys, fields, config, compact)  # 8
        finish(jobs)
    card = read_card(Path(version_dir))
    logger.info("published %s", version_dir)
    if manifests_dir:
        logger.info("recorded lineage in %s", record_lineage(Path(version_dir), Path(manifests_dir)))
    _artifacts(card.counts, quarantined, version_dir, build_id)
    return BuildSummary(version_dir, plan.version, build_id, True, card.counts, quarantined,
                        time.perf_counter() - started, cached, hashes.hashed)


# --- entry point -----------------------------------------------------------------------------

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
              cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS, compact: bool = False) -> BuildSummary:
    """Run the build flow on threads here, a local Dask cluster (`workers` > 1) or an existing scheduler."""
    from pipelines.runtime.cluster import (
        check_cluster,
        local_cluster,
        local_memory_limit,
        task_runner_for,
    )
    from pipelines.runtime.prefect_api import begin_local_api, build_api

    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    if cache_keep_days < 0:
        raise BuildError(f"--cache-keep-days must be 0 or more, got {cache_keep_days}")
    for path in inputs:  # fail before any flow machinery starts
        if not Path(path).is_dir():
            raise InputError(f"input folder not found: {path}")
    started = time.perf_counter()
    noop = already_published(config, inputs, out, version, cache_keep_days)  # before any cluster or API server
    if noop is not None:
        log.info("build %s is already published as %s; nothing to do", noop.build_id, noop.version_dir)
        return replace(noop, seconds=time.perf_counter() - started)
    _check_output(Path(out), config.dataset)
    # local workers split this machine's cores; on an existing cluster each task takes its host's share
    local = workers > 1 and not dask_address
    threads = threads_per_worker or (thread_share(os.cpu_count() or 1, workers) if local else None)
    host_threads = None
    with ExitStack() as stack:
        if local:
            begin_local_api()  # starts while the local workers do
        if local:
            memory_limit = local_memory_limit(inputs, config, workers)
            log.info("starting %d local Dask workers (%d thread(s) each, memory limit %.1f GiB each)",
                     workers, threads, memory_limit / 2**30)
            dask_address = stack.enter_context(local_cluster(workers, memory_limit))
        build = build_dataset.with_options(task_runner=task_runner_for(dask_address))  # before waiting for the API
        stack.enter_context(build_api(dask_address))
        if dask_address and not local:
            host_threads = check_cluster(dask_address, inputs, config)
        summary = build(
            config=config, inputs=[str(p) for p in inputs], out=str(out), version=version,
            manifests_dir=str(manifests_dir) if manifests_dir else None, torch_threads=threads,
            cache_keep_days=cache_keep_days, host_threads=host_threads, compact=compact)
    # wall time of the whole call: cluster and API start-up included, not just the flow run
    return replace(summary, seconds=time.perf_counter() - started)
