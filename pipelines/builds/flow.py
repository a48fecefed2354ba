"""The build flow: the pipeline's steps, in order (docs/design.md states them and their guarantees).

`pipelines.builds.run.build` checks the request and plans the build (`pipelines.builds.plan`: inputs
walked, hashed by content and keyed once; a no-op decided under the dataset lock before any cluster or
API server starts); `run_flow` then runs `build_dataset`, which holds the dataset lock throughout: one coarse task per case (read, QC,
translate labels, resample, crop, sample, render -> staged shards, cached by case content), then
content duplicates, then publishing (shards -> manifest -> cases -> report -> dataset.json -> atomic
rename). Concurrent builds of one dataset run one after the other; leftovers of a build that died
are removed under the lock. Where the tasks run (threads here, a local Dask cluster, an existing
scheduler) is chosen by `run_flow`, not by the flow.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.utilities.annotations import quote

import pipelines
from pipelines.builds.cache import result_storage, run_cases
from pipelines.builds.plan import BuildPlan, BuildSummary
from pipelines.builds.request import DEFAULT_CACHE_KEEP_DAYS, BuildRequest
from pipelines.builds.tasks import process_case_task, publish_task
from pipelines.case.process import CaseResult
from pipelines.errors import BuildError
from pipelines.ingest.cases import (
    CaseJob,
    IngestResult,
    describe_unmatched,
    quarantine_content_duplicates,
    record_read,
)
from pipelines.io.dataset_lock import dataset_lock, remove_stale_files
from pipelines.io.publish import CardFields
from pipelines.io.shards import read_card
from pipelines.runtime.threads import thread_share
from schemas.card import Counts
from schemas.config import BuildConfig
from schemas.layout import CACHE_RESULTS
from schemas.manifest import QC, QC_ACCEPTED, CaseRow, Col, SampleRow, describe_quarantine, quarantine_entry

log = logging.getLogger("spineforge")


def drop_content_duplicates(jobs: list[CaseJob], results: dict, rows: dict[str, CaseRow],
                            config: BuildConfig) -> list[CaseJob]:
    """Cases holding the same scan as another by content (another format, orientation, dtype, or a crop)
    are quarantined as duplicates, by the verdict `spineforge ingest` gives too."""
    fingerprints = {j.case.case_id: results[j.case.case_id].fingerprint for j in jobs
                    if isinstance(results.get(j.case.case_id), CaseResult)
                    and results[j.case.case_id].qc_status == QC_ACCEPTED}
    dropped = quarantine_content_duplicates(fingerprints, rows, config)
    return [j for j in jobs if j.case.case_id not in dropped]


def record_result(row: CaseRow, result: CaseResult | Exception) -> None:
    """A case task's outcome in its cases-table row."""
    if isinstance(result, Exception):
        row.quarantine(QC.PROCESSING_ERROR, f"{type(result).__name__}: {result}"[:500])
        return
    if result.stored is not None:
        record_read(row, result.stored, result.levels, result.cut_levels, result.notes)
        row.skipped_samples = json.dumps(result.skipped)
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
        record_result(row, result)
        if not row.quarantined:
            staged[job.case.case_id] = result.staging_files
            samples += [replace(s, case_id=job.case.case_id, split=job.split, input_sha256=job.input_sha256,
                                seed=config.seed) for s in result.samples]
    return samples, staged




def card_fields(config: BuildConfig, build_id: str, ingest: IngestResult, inputs: list[str],
                unmatched: list[str]) -> CardFields:
    input_hashes = ingest.input_hashes  # what build_id hashes: every case given, before content duplicates
    return CardFields(
        name=config.dataset, build_id=build_id, code_version=pipelines.__version__,
        physics_data=pipelines.physics_data_versions(),
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


@flow(name="spineforge-build")
def build_dataset(plan: BuildPlan, torch_threads: int | None = None, cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS,
                  host_threads: dict[str, int] | None = None, compact: bool = False) -> BuildSummary:
    started = time.perf_counter()
    logger = get_run_logger()
    config, ingest = plan.config, plan.ingest
    logger.info("discovered %d cases (%d to process), %d unmatched files, %d problems; %d input files hashed",
                len(ingest.rows), len(ingest.jobs), len(ingest.discovery.unmatched), len(ingest.problems),
                plan.hashes.hashed)
    with dataset_lock(plan.dataset_dir, on_wait=logger.info):
        for name in remove_stale_files(plan.dataset_dir, plan.cache):
            logger.info("removed leftover of an interrupted build: %s", name)
        if plan.refresh_target():  # published by another build while this one waited for the lock
            plan.finish(cache_keep_days)
            logger.info("build %s is already published as %s; nothing to do", plan.build_id, plan.target.version)
            return plan.noop_summary(started)

        task = process_case_task.with_options(result_storage=result_storage(plan.cache / CACHE_RESULTS))
        options = {"torch_threads": torch_threads, "host_threads": host_threads}
        results, cached = run_cases(task, ingest.jobs, plan.case_keys, config, plan.cache, options)
        logger.info("cases: %d processed, %d from cache", len(ingest.jobs) - cached, cached)
        jobs = drop_content_duplicates(ingest.jobs, results, ingest.rows, config)
        samples, staged = accepted_samples(jobs, results, ingest.rows, config)
        rows = list(ingest.rows.values())
        quarantined = [quarantine_entry(r) for r in rows if r.quarantined]
        if not samples:
            reasons = "; ".join(describe_quarantine(q) for q in quarantined)
            raise BuildError(f"no samples to publish: {reasons or 'no cases found in ' + ', '.join(plan.inputs)}")
        unmatched = describe_unmatched(ingest.discovery, {c: json.loads(r.file_sha256) for c, r in ingest.rows.items()},
                                       plan.hashes.sha256)
        fields = card_fields(config, plan.build_id, ingest, plan.inputs, unmatched)
        keys = {j.case.case_id: plan.case_keys[j.case.case_id] for j in jobs}
        version_dir = publish_task(plan.target, samples, rows, staged, keys, fields, config, compact)
        plan.finish(cache_keep_days)
    card = read_card(Path(version_dir))
    logger.info("published %s", version_dir)
    _artifacts(card.counts, quarantined, version_dir, plan.build_id)
    return BuildSummary(version_dir, plan.target.version, plan.build_id, True, card.counts, quarantined,
                        time.perf_counter() - started, cached, plan.hashes.hashed)


def run_flow(request: BuildRequest, plan: BuildPlan) -> BuildSummary:
    """Run the build flow of a plan that is not a no-op: on threads here, a local Dask cluster
    (`workers` > 1) or an existing scheduler, against the Prefect API `build_api` gives."""
    from pipelines.runtime.cluster import check_cluster, local_cluster, local_memory_limit, task_runner_for
    from pipelines.runtime.prefect_api import begin_local_api, build_api

    # local workers split this machine's cores; on an existing cluster each task takes its host's share
    dask_address = request.dask_address
    local = request.workers > 1 and not dask_address
    threads = request.threads_per_worker or (thread_share(os.cpu_count() or 1, request.workers) if local else None)
    host_threads = None
    cases = [j.case for j in plan.ingest.jobs]
    with ExitStack() as stack:
        if local:
            begin_local_api()  # starts while the local workers do
            memory_limit = local_memory_limit(cases, plan.config, request.workers)
            log.info("starting %d local Dask workers (%d thread(s) each, memory limit %.1f GiB each)",
                     request.workers, threads, memory_limit / 2**30)
            dask_address = stack.enter_context(local_cluster(request.workers, memory_limit))
        build = build_dataset.with_options(task_runner=task_runner_for(dask_address))  # before waiting for the API
        stack.enter_context(build_api(dask_address))
        if dask_address and not local:
            host_threads = check_cluster(dask_address, cases, plan.config)
        # quote: Prefect passes the plan as it is, without walking every case of it for futures
        return build(plan=quote(plan), torch_threads=threads, cache_keep_days=request.cache_keep_days,
                     host_threads=host_threads, compact=request.compact)
