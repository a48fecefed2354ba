"""A per-machine cache of computed arrays: pure functions of their key, costly to compute, small to
keep (tube spectra, checked implant meshes).

Each entry is one .npz file under a directory chosen by an environment variable (a path, or `off` to
turn that cache off), else $XDG_CACHE_HOME/spineforge (default ~/.cache/spineforge). Files are written
under a temporary name and renamed, so a reader never sees half a file. A file that cannot be read,
or whose arrays fail the caller's check, is computed again and replaced; a cache that cannot be
written (read-only, full) costs time, never a result.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger("spineforge")


def cache_root(env: str) -> Path | None:
    """The cache directory named by the environment variable `env`: its value, None for `off`, else
    $XDG_CACHE_HOME/spineforge (default ~/.cache/spineforge)."""
    root = os.environ.get(env)
    if root == "off":
        return None
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "spineforge"


def cached_arrays(path: Path | None, compute: Callable[[], dict[str, np.ndarray]],
                  valid: Callable[[dict[str, np.ndarray]], bool] | None = None) -> dict[str, np.ndarray]:
    """The arrays stored at `path` (None: no cache), or `compute()`'s, stored there. `valid`: a check
    of arrays read back (e.g. a content digest); a file that fails it is computed again."""
    if path is not None and path.is_file():
        try:
            with np.load(path) as data:
                arrays = {name: data[name] for name in data.files}
            if valid is None or valid(arrays):
                return arrays
            log.warning("%s: cached arrays failed their check; computing them again", path)
        except (OSError, ValueError, KeyError) as e:  # damaged or foreign
            log.warning("%s: unreadable cache file (%s); computing it again", path, e)
    arrays = compute()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, **arrays)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:  # a read-only or full cache costs time, never the result
            pass
    return arrays
