"""The one entry point of a build: `build(request)`.

In order: the destination is checked (a writable folder; for an s3:// out, the store's credentials
and bucket) before any input is read; the plan walks, hashes and keys the inputs and decides the
version -- a no-op ends here, before Prefect, Dask or any server is imported or started; otherwise
the build flow runs (`flow.run_flow`); an s3:// build is then published to the store from its work
folder; and the lineage is recorded where asked, under the version name it was published as.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from pipelines.builds.plan import BuildPlan, BuildSummary, plan_build
from pipelines.builds.publish import publish_built
from pipelines.builds.request import DEFAULT_CACHE_KEEP_DAYS, BuildRequest, check_destination
from pipelines.io.lineage import record_lineage
from schemas.config import BuildConfig

log = logging.getLogger("spineforge")


def build(request: BuildRequest, plan: BuildPlan | None = None, progress=log.info) -> BuildSummary:
    """Build, publish and record what `request` asks for (`plan`: one already made for it)."""
    started = time.perf_counter()
    check_destination(request)
    plan = plan or plan_build(request.config, list(request.inputs), request.build_root, request.build_version,
                              request.cache_keep_days, progress)
    if plan.noop:
        progress(f"build {plan.build_id} is already published as {plan.target.version}; nothing to do")
        summary = plan.noop_summary(started)
    else:
        from pipelines.builds.flow import run_flow  # Prefect and Dask: only when there is work

        summary = run_flow(request, plan)
    if request.remote:  # built in the work folder; the store names the version and holds the lineage
        summary = publish_built(summary, request.out, request.version, request.store, progress, request.manifests_dir)
    elif request.manifests_dir and summary.published:
        progress(f"recorded lineage in {record_lineage(summary.version_dir, request.manifests_dir)}")
    # wall time of the whole call: cluster and API start-up included, not just the flow run
    return replace(summary, seconds=time.perf_counter() - started)


def run_build(config: BuildConfig, inputs: list[str], out: str, version: str | None = None, workers: int = 1,
              dask_address: str | None = None, manifests_dir: str | None = None,
              threads_per_worker: int | None = None, cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS,
              compact: bool = False) -> BuildSummary:
    """`build` for Python callers: the request's fields as arguments."""
    return build(BuildRequest(config, tuple(inputs), str(out), version, workers=workers, dask_address=dask_address,
                              manifests_dir=str(manifests_dir) if manifests_dir else None,
                              cache_keep_days=cache_keep_days, compact=compact,
                              threads_per_worker=threads_per_worker))
