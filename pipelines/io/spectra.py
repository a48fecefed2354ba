"""A per-machine cache of computed tube spectra (spekpy takes ~2 s to import and ~0.6 s a spectrum).

A spectrum is a pure function of (spekpy version, kVp, anode angle, bin width), so it is kept as one
small .npz file per key under $SPINEFORGE_SPECTRA_CACHE, else $XDG_CACHE_HOME/spineforge (default
~/.cache/spineforge); `SPINEFORGE_SPECTRA_CACHE=off` turns it off (`machine_cache`: written under a
temporary name and renamed, so a reader never sees half a file; an unreadable file is recomputed).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.io import machine_cache

CACHE_ENV = "SPINEFORGE_SPECTRA_CACHE"


def cache_root():
    return machine_cache.cache_root(CACHE_ENV)


def cached_spectrum(key: str, compute: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(energies, fluence) for `key` (a file-name-safe string) from the cache, or computed and stored."""
    root = cache_root()

    def arrays():
        energies, fluence = compute()
        return {"energies": energies, "fluence": fluence}

    out = machine_cache.cached_arrays(None if root is None else root / f"spectrum-{key}.npz", arrays,
                                      lambda a: {"energies", "fluence"} <= set(a))
    return out["energies"], out["fluence"]
