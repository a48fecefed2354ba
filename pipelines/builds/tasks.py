"""Thin Prefect tasks: one coarse task per case, cached by the key its plan computed; one to publish."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.case.process import CaseResult, process_case
from pipelines.ingest.cases import CaseJob
from pipelines.io.publish import CardFields, PublishPlan, publish_version
from pipelines.ops.pairs import registration_pairs
from pipelines.runtime.threads import dask_worker_share, thread_limit
from schemas.config import BuildConfig
from schemas.manifest import CaseRow, SampleRow


def case_cache_key(context, parameters: dict) -> str:
    """Prefect cache key: the case's key as the plan computed it (content, relevant config, code), so an
    unchanged case under unchanged relevant config is not recomputed."""
    return parameters["case_key"]


@task(name="process-case", task_run_name="case-{job.case.case_id}", cache_key_fn=case_cache_key,
      persist_result=True, retries=2, retry_delay_seconds=2)
def process_case_task(job: CaseJob, case_key: str, config: BuildConfig, cache_dir: str, torch_threads: int | None = None,
                      host_threads: dict[str, int] | None = None) -> CaseResult:
    """One case, read to staged shards under its cache key `case_key`; results persist in the build cache
    (result_storage set by the flow).

    `torch_threads` holds torch and SimpleITK to that many threads; without it, a task on a worker
    of an existing Dask cluster takes its host's share (`host_threads`: Dask threads per host).
    """
    threads = torch_threads or dask_worker_share(host_threads)
    with thread_limit(threads):  # several workers share the machine: each keeps to its share
        return process_case(job.case, config, job.split, Path(cache_dir), progress=get_run_logger().info,
                            stage_name=case_key, expected_hashes=job.file_sha256)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(plan: PublishPlan, samples: list[SampleRow], cases: list[CaseRow],
                 staged: dict[str, dict[str, str]], case_keys: dict[str, str], fields: CardFields,
                 config: BuildConfig, compact: bool = False) -> str:
    from pipelines.tools.report import write_report  # matplotlib: needed here only, not in case workers

    pairs = config.registration_pairs
    builder = (partial(registration_pairs, seed=config.seed, max_per_level=pairs.max_pairs_per_level)
               if pairs.enabled else None)
    return str(publish_version(plan, samples, cases, staged, case_keys, fields, config.shards, compact,
                               report_writer=write_report, pairs_builder=builder))
