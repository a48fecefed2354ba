"""Builds whose output is an object store: built in a local work folder first (its case cache makes the
next build cost what changed), then published to the store (`pipelines.io.publish_store`)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipelines.builds.plan import BuildSummary
from pipelines.io.lineage import record_lineage
from pipelines.io.publish_store import publish_to_store, read_store_card
from pipelines.io.store import S3Url, StoreOptions


def publish_built(summary: BuildSummary, out: str, version: str | None, store: StoreOptions | None = None,
                  progress=None, manifests_dir: str | None = None) -> BuildSummary:
    """A local build's summary, published to `out` (s3://...) and described as the store's version;
    with `manifests_dir`, the lineage is recorded under the store's version name."""
    result = publish_to_store(Path(summary.version_dir), out, version, store, progress=progress)
    if manifests_dir:
        card = read_store_card((store or StoreOptions()).client(), S3Url.parse(result.url))
        record_lineage(Path(summary.version_dir), Path(manifests_dir), card)
    return replace(summary, version_dir=result.url, version=result.version, published=result.published)
