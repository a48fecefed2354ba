"""Thin Prefect tasks: one coarse task per case, one to publish."""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import SimpleITK as sitk
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.case import CaseResult, case_key, process_case
from pipelines.ingest.cases import CaseJob
from pipelines.io.publish import PublishPlan, publish_version
from pipelines.pairs import registration_pairs


@contextmanager
def thread_limit(threads: int | None):
    """Hold torch and SimpleITK to `threads` threads inside the block (None: leave them as they are)."""
    if not threads:
        yield
        return
    before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before[1])


def thread_share(cores: int, busy_threads: int) -> int:
    """Threads for one task when `busy_threads` task slots share `cores` cores."""
    return max(1, cores // max(1, busy_threads))


def dask_worker_share(host_threads: dict[str, int] | None) -> int | None:
    """Inside a Dask worker: this host's cores over all Dask task threads on the host (None elsewhere)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    host = urlsplit(worker.address).hostname
    busy = (host_threads or {}).get(host) or worker.state.nthreads  # a worker that joined later: itself
    return thread_share(os.cpu_count() or 1, busy)


def case_cache_key(context, parameters: dict) -> str:
    """Prefect cache key: an unchanged case under unchanged relevant config is not recomputed."""
    job, config = parameters["job"], parameters["config"]
    return case_key(job.case.case_id, job.input_sha256, job.split, config)


@task(name="process-case", task_run_name="case-{job.case.case_id}", cache_key_fn=case_cache_key,
      persist_result=True, retries=2, retry_delay_seconds=2)
def process_case_task(job: CaseJob, config, staging_dir: str, torch_threads: int | None = None,
                      host_threads: dict[str, int] | None = None) -> CaseResult:
    """Steps 2-7 for one case; results persist in the build cache (result_storage set by the flow).

    `torch_threads` holds torch and SimpleITK to that many threads; without it, a task on a worker
    of an existing Dask cluster takes its host's share (`host_threads`: Dask threads per host).
    """
    logger = get_run_logger()
    key = case_key(job.case.case_id, job.input_sha256, job.split, config)
    threads = torch_threads or dask_worker_share(host_threads)
    with thread_limit(threads):  # several workers share the machine: each keeps to its share
        return process_case(job.case, config, job.split, Path(staging_dir), progress=logger.info,
                            stage_name=key)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(plan: PublishPlan, manifest_rows: list[dict], case_rows: list[dict],
                 staging_files: dict[str, str], card: dict, target_bytes: int) -> str:
    from pipelines.report import write_report  # matplotlib: needed here only, not in case workers

    config = card["config"]["registration_pairs"]
    pairs = (partial(registration_pairs, seed=card["seed"], max_per_level=config["max_pairs_per_level"])
             if config["enabled"] else None)
    return str(publish_version(plan, manifest_rows, case_rows, staging_files, card, target_bytes,
                               min_shards=card["config"]["shards"]["min_shards"],
                               report_writer=write_report, pairs_builder=pairs))
