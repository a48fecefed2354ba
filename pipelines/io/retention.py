"""What is kept: old versions removed (`gc`) and cached cases no build has used for a while dropped,
freeing only what nothing kept still links."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import PublishError
from pipelines.io.dataset_lock import dataset_lock
from pipelines.io.publish import published_versions
from schemas.layout import CACHE_CASES, CACHE_RESULTS


def prune_cache(cache_dir: Path, used: set[str], keep_seconds: float, now: float | None = None) -> list[str]:
    """Drop cache entries (staged case files and result records) that this build did not use and
    that no build has used for `keep_seconds`; mark the used ones as used now (call under the lock).

    Entries are named by case cache key: `cases/<key>/` (staged shards) and `results/<key>`. A
    staged shard that a published version links stays on disk with that version (its other link).
    """
    now = time.time() if now is None else now
    removed = []
    for folder in (CACHE_CASES, CACHE_RESULTS):
        for path in sorted((cache_dir / folder).glob("*")) if (cache_dir / folder).is_dir() else []:
            if path.name in used:
                os.utime(path, (now, now))
            elif now - path.stat().st_mtime > keep_seconds:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(f"{folder}/{path.name}")
    return removed

@dataclass
class GCResult:
    removed: list[str]
    kept: list[str]
    freed_bytes: int  # space returned to the file system (files no kept version or cache entry links)

def gc_versions(dataset_dir: Path, keep: int) -> GCResult:
    """Remove all but the `keep` newest versions (vN order), under the dataset lock.

    Shards are hard links, so removing a version frees only the files no other version (or cache
    entry) still links, and a kept version never loses a byte.
    """
    if keep < 1:
        raise PublishError(f"--keep must be at least 1, got {keep}")
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"no dataset folder {dataset_dir}")
    with dataset_lock(dataset_dir):
        versions = published_versions(dataset_dir)
        remove, kept = versions[:-keep], versions[-keep:]
        freed = 0
        for name in remove:
            folder = dataset_dir / name
            freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.stat().st_nlink == 1)
            shutil.rmtree(folder)
    return GCResult(remove, kept, freed)
