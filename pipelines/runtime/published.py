"""Is this build already published? Answered from remembered input hashes, before any work.

Discovery walks the input folders and reads no input file: each file's content hash comes from the
record of an earlier build (valid while its size, mtime and inode are unchanged). When every input
is known and a version with the resulting build_id exists, the build is a no-op, decided without
Prefect, a Dask cluster or an API server. Anything new or changed (or no record) answers None, and
the build flow runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pipelines
from pipelines.case.keys import job_key
from pipelines.ingest.cases import CaseJob, hash_files, ingest_inputs
from pipelines.io.input_hashes import InputHashes
from pipelines.io.publish import dataset_lock, plan_version, prune_cache
from pipelines.io.shards import read_card
from schemas.card import Counts, compute_build_id
from schemas.config import BuildConfig
from schemas.layout import cache_dir


@dataclass
class BuildSummary:
    version_dir: str
    version: str
    build_id: str
    published: bool  # False when this build_id was already published (no-op)
    counts: Counts
    quarantined: list[dict]  # case_id, qc_reason, qc_message
    seconds: float  # wall time of the whole call (cluster and API start-up included)
    cases_cached: int = 0  # cases taken from the cache instead of recomputed
    files_hashed: int = 0  # input files read only to hash them (a case task that failed before reading)


def prune_unused(dataset_dir: Path, jobs: list[CaseJob], config: BuildConfig, keep_days: float) -> list[str]:
    """Drop cached cases no build has used for `keep_days` (these jobs' are marked used), under the lock."""
    with dataset_lock(dataset_dir):
        return prune_cache(cache_dir(dataset_dir), {job_key(j, config) for j in jobs}, keep_days * 86400)


def already_published(config: BuildConfig, inputs: list[str], out: str, version: str | None,
                      cache_keep_days: float | None = None) -> BuildSummary | None:
    """The no-op summary when every input is unchanged since a build and its version exists, else None.

    With `cache_keep_days`, a no-op still prunes the build cache as a build would.
    """
    started = time.perf_counter()
    dataset_dir = Path(out) / config.dataset
    if not dataset_dir.is_dir():
        return None
    hashes = InputHashes(cache_dir(dataset_dir))
    ingest = ingest_inputs([Path(p) for p in inputs], config, hasher=lambda cases: hash_files(cases, hashes.lookup))
    if not ingest.jobs or any(not job.hashed for job in ingest.jobs):
        return None
    build_id = compute_build_id(ingest.input_hashes, config, pipelines.__version__)
    plan = plan_version(Path(out), config.dataset, build_id, version)
    if not plan.existing:
        return None
    if cache_keep_days is not None:
        prune_unused(dataset_dir, ingest.jobs, config, cache_keep_days)
    card = read_card(plan.dataset_dir / plan.version)
    return BuildSummary(str(plan.dataset_dir / plan.version), plan.version, build_id, False, card.counts, [],
                        time.perf_counter() - started)
