"""One build of a dataset at a time: the dataset folder's lock, and the leftovers of builds that died."""
from __future__ import annotations

import fcntl
import shutil
from contextlib import contextmanager
from pathlib import Path

from schemas.layout import LOCK_FILE, STAGING_PREFIX, TMP_SUFFIX


@contextmanager
def dataset_lock(dataset_dir: Path, on_wait=None):
    """Exclusive lock on a dataset folder for the length of a build (released if the process dies).

    A second build of the same dataset waits here, then finds what the first one published.
    """
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with open(dataset_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"another build of {dataset_dir.name} is running; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

def remove_stale_files(dataset_dir: Path, cache_dir: Path) -> list[str]:
    """Leftovers of builds that died (call under the dataset lock): half-published folders, temp files."""
    removed = []
    for path in sorted(dataset_dir.glob(f"{STAGING_PREFIX}*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    for path in sorted(cache_dir.rglob(f"*{TMP_SUFFIX}")) if cache_dir.is_dir() else []:
        path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(dataset_dir)))
    return removed
