"""Cache keys of one case's results: what a case task's output depends on, and nothing else."""
from __future__ import annotations

import hashlib
import json

import pipelines
from pipelines.ingest.cases import CaseJob
from schemas.config import BuildConfig, sample_shaping_config

CASE_CACHE_FORMAT = "staged-per-product-v3-fingerprint"  # changes when CaseResult or the staged files change shape


def case_key(case_id: str, input_sha256: str, split: str, config: BuildConfig) -> str:
    """Cache key of one case's results: its content, split, the config that shapes it, the code and physics data versions.

    Publish-only settings (dataset name, shard sizing, registration pairs) are left out, so
    changing them reuses every case.
    """
    relevant = sample_shaping_config(config)
    payload = json.dumps([case_id, input_sha256, split, relevant, pipelines.content_version()], sort_keys=True)
    return f"{case_id}-{hashlib.sha256((payload + CASE_CACHE_FORMAT).encode()).hexdigest()[:20]}"


def job_key(job: CaseJob, config: BuildConfig) -> str:
    """A case job's cache key: by its files' content (every job of a build plan is hashed)."""
    if not job.hashed:
        raise ValueError(f"case {job.case.case_id} has unhashed files: a cache key needs their content")
    return case_key(job.case.case_id, job.input_sha256, job.split, config)
