"""Thin Prefect tasks: one coarse task per case, one to publish."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.case import CaseResult, process_case
from pipelines.ingest.cases import CaseJob
from pipelines.io.publish import PublishPlan, publish_version
from pipelines.pairs import registration_pairs
from pipelines.report import write_report


@task(name="process-case", task_run_name="case-{job.case.case_id}", cache_policy=NO_CACHE)
def process_case_task(job: CaseJob, config, staging_dir: str) -> CaseResult:
    logger = get_run_logger()
    return process_case(job.case, config, job.split, Path(staging_dir), progress=logger.info)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(plan: PublishPlan, manifest_rows: list[dict], case_rows: list[dict],
                 staging_files: dict[str, str], card: dict, target_bytes: int) -> str:
    config = card["config"]["registration_pairs"]
    pairs = (partial(registration_pairs, seed=card["seed"], max_per_level=config["max_pairs_per_level"])
             if config["enabled"] else None)
    return str(publish_version(plan, manifest_rows, case_rows, staging_files, card, target_bytes,
                               min_shards=card["config"]["shards"]["min_shards"],
                               report_writer=write_report, pairs_builder=pairs))
