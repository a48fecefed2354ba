"""A per-machine cache of computed tube spectra (spekpy takes ~2 s to import and ~0.6 s a spectrum).

A spectrum is a pure function of (spekpy version, kVp, anode angle, bin width), so it is kept as one
small .npz file per key under $SPINEFORGE_SPECTRA_CACHE, else $XDG_CACHE_HOME/spineforge (default
~/.cache/spineforge); `SPINEFORGE_SPECTRA_CACHE=off` turns it off. Files are written under a
temporary name and renamed, so a reader never sees half a file; an unreadable file is recomputed.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE_ENV = "SPINEFORGE_SPECTRA_CACHE"


def cache_root() -> Path | None:
    root = os.environ.get(CACHE_ENV)
    if root == "off":
        return None
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "spineforge"


def cached_spectrum(key: str, compute: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(energies, fluence) for `key` (a file-name-safe string) from the cache, or computed and stored."""
    root = cache_root()
    path = None if root is None else root / f"spectrum-{key}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path) as data:
                return data["energies"], data["fluence"]
        except (OSError, ValueError, KeyError):
            pass  # damaged or foreign: compute it again
    energies, fluence = compute()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, energies=energies, fluence=fluence)
            os.replace(tmp, path)
        except OSError:  # a read-only or full cache costs time, never the build
            pass
    return energies, fluence
