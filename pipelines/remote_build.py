"""Builds whose output is an object store: built in a local work folder first (its case cache makes the
next build cost what changed), then published to the store (`pipelines.io.publish_store`)."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from pipelines.io.publish_store import publish_to_store, read_store_card
from pipelines.io.store import S3Url, StoreOptions, is_remote
from pipelines.plan import BuildSummary
from schemas.layout import DATASET_CARD, MANIFEST_CSV, REMOTE_WORK_DIR, user_cache_dir


def work_folder(out: str, work: str | None = None) -> str:
    """Where a build for `out` is made: `out` itself when local; for an s3:// `out`, `work` or
    ~/.cache/spineforge/spineforge-work/<bucket>/<prefix>."""
    if not is_remote(out):
        return out
    if work:
        return work
    url = S3Url.parse(out)
    return str(user_cache_dir() / REMOTE_WORK_DIR / url.bucket / (url.prefix or "_"))


def publish_built(summary: BuildSummary, out: str, version: str | None, store: StoreOptions | None = None,
                  progress=None, manifests_dir: str | None = None) -> BuildSummary:
    """A local build's summary, published to `out` (s3://...) and described as the store's version;
    with `manifests_dir`, the lineage is recorded under the store's version name."""
    result = publish_to_store(Path(summary.version_dir), out, version, store, progress=progress)
    if manifests_dir:
        card = read_store_card((store or StoreOptions()).client(), S3Url.parse(result.url))
        target = Path(manifests_dir) / card.name / card.version
        target.mkdir(parents=True, exist_ok=True)
        (target / DATASET_CARD).write_text(card.to_json())
        shutil.copyfile(Path(summary.version_dir) / MANIFEST_CSV, target / MANIFEST_CSV)
    return replace(summary, version_dir=result.url, version=result.version, published=result.published)
