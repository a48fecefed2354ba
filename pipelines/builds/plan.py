"""The one decision of a build: what its inputs are, by content, and whether it is already published.

`plan_build` walks the input folders once, takes each file's content hash from the record of an
earlier build while its (size, mtime, inode) signature is unchanged and hashes every other file
now, computes every case's cache key and the build_id once, and decides under the dataset lock
whether a version with that build_id exists (a no-op). Everything is keyed by content, so a touched,
copied, restored or re-mounted input tree finds its cases in the cache and its version published.
`pipelines.builds.run.build` makes the plan before Prefect is imported; the flow runs it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, InstanceOf, model_serializer

import pipelines
from pipelines.builds.request import DEFAULT_CACHE_KEEP_DAYS
from pipelines.case.keys import job_key
from pipelines.ingest.cases import IngestResult, hash_files, ingest_inputs
from pipelines.io.dataset_lock import dataset_lock
from pipelines.io.input_hashes import InputHashes
from pipelines.io.publish import PublishPlan, plan_version
from pipelines.io.retention import prune_cache
from pipelines.io.shards import read_card
from schemas.card import Counts, compute_build_id
from schemas.config import BuildConfig
from schemas.layout import cache_dir

log = logging.getLogger("spineforge")


@dataclass
class BuildSummary:
    version_dir: str
    version: str
    build_id: str
    published: bool  # False when this build_id was already published (no-op)
    counts: Counts
    quarantined: list[dict] = field(default_factory=list)  # case_id, qc_reason, qc_message
    seconds: float = 0.0  # wall time of the whole call (cluster and API start-up included)
    cases_cached: int = 0  # cases taken from the cache instead of recomputed
    files_hashed: int = 0  # input files read to hash them (new or changed signatures)


class BuildPlan(BaseModel):
    """What a build will do. As a flow parameter, Prefect records its summary (`describe`), not every case."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: BuildConfig
    inputs: list[str]
    out: str
    requested_version: str | None = None
    ingest: InstanceOf[IngestResult]
    hashes: InstanceOf[InputHashes]
    case_keys: dict[str, str]  # case_id -> cache key (content, relevant config, code)
    build_id: str
    target: InstanceOf[PublishPlan]  # the version it publishes, or the one that already holds its build_id

    @property
    def dataset_dir(self) -> Path:
        return Path(self.out) / self.config.dataset

    @property
    def cache(self) -> Path:
        return cache_dir(self.dataset_dir)

    @property
    def noop(self) -> bool:
        return self.target.existing

    @model_serializer
    def describe(self) -> dict[str, Any]:
        return {"dataset": self.config.dataset, "build_id": self.build_id, "version": self.target.version,
                "already_published": self.noop, "n_cases": len(self.ingest.rows), "to_process": len(self.ingest.jobs),
                "files_hashed": self.hashes.hashed, "inputs": self.inputs, "out": self.out}

    def refresh_target(self) -> bool:
        """Decide the version again (under the lock, after waiting for another build); True for a no-op."""
        self.target = plan_version(Path(self.out), self.config.dataset, self.build_id, self.requested_version)
        return self.noop

    def finish(self, keep_days: float, keys: set[str] | None = None) -> list[str]:
        """Remember the input hashes and drop cached cases unused for `keep_days` (under the lock)."""
        removed = prune_cache(self.cache, set(self.case_keys.values()) if keys is None else keys, keep_days * 86400)
        self.hashes.save()
        return removed

    def noop_summary(self, started: float, cases_cached: int = 0) -> BuildSummary:
        card = read_card(self.target.dataset_dir / self.target.version)
        return BuildSummary(str(self.target.dataset_dir / self.target.version), self.target.version, self.build_id,
                            False, card.counts, [], time.perf_counter() - started, cases_cached, self.hashes.hashed)


def plan_build(config: BuildConfig, inputs: list[str], out: str, version: str | None = None,
               cache_keep_days: float | None = DEFAULT_CACHE_KEEP_DAYS, progress=log.info) -> BuildPlan:
    """Walk, hash and key the inputs once and decide the version (a no-op finishes here: hashes kept,
    cache pruned with `cache_keep_days` unless it is None)."""
    dataset_dir = Path(out) / config.dataset
    hashes = InputHashes(cache_dir(dataset_dir))

    def hasher(cases):
        paths = [p for c in cases for p in c.files.values()]
        new = [p for p in paths if hashes.lookup(p) is None]
        if new:
            progress(f"hashing {len(new)} new or changed input file(s) of {len(paths)}")
        hashes.hash_all(new)
        return hash_files(cases, hashes.lookup)

    ingest: IngestResult = ingest_inputs([Path(p) for p in inputs], config, hasher=hasher)
    build_id = compute_build_id(ingest.input_hashes, config, pipelines.content_version())
    plan = BuildPlan(config=config, inputs=[str(p) for p in inputs], out=str(out), requested_version=version,
                     ingest=ingest, hashes=hashes, case_keys={j.case.case_id: job_key(j, config) for j in ingest.jobs},
                     build_id=build_id, target=PublishPlan(dataset_dir, version or "", False))
    if not dataset_dir.is_dir():  # nothing published yet: no lock to take, nothing to find
        plan.refresh_target()
        return plan
    with dataset_lock(dataset_dir, on_wait=progress):
        if plan.refresh_target() and cache_keep_days is not None:
            plan.finish(cache_keep_days)
    return plan
