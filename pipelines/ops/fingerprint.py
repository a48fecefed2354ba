"""Content fingerprints of CT scans: the same scan found under any name, format, orientation or crop.

A fingerprint is the list of hashes of a CT's axial slices, taken in canonical RAS voxel order
(nibabel's reorientation: exact axis flips and swaps) from its values rounded to whole HU, on a fixed
in-plane sub-grid. A copy
saved as NRRD instead of NIfTI, as float instead of int16, or with its axes flipped or permuted has
the same slice hashes; a cranio-caudal crop (a slab) keeps the hashes of the slices it kept. Uniform
slices (e.g. all air or all padding) are left out: they say nothing about which scan they come from.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from pipelines.ops.orient import reorient

UNIFORM = ""  # placeholder for a slice that holds one value only


IN_PLANE_STRIDE = 4  # every 4th voxel along each in-plane axis: 1/16 of the bytes, as discriminating


def slice_hashes(array_ijk: np.ndarray, affine: np.ndarray) -> list[str]:
    """Hashes of the axial (S) slices of a CT in canonical RAS order, inferior first; UNIFORM for flat ones.

    Each slice is hashed on a fixed sub-grid (every IN_PLANE_STRIDE-th voxel of the canonical slice, from
    its first corner): the same voxels of the same scan give the same sub-grid, and CT noise makes any
    two different slices differ on it. Whole-HU int16 values, so float or integer storage agree."""
    canonical, _ = reorient(array_ijk, affine, "RAS")  # flips and axis swaps: a view, no copy
    grid = canonical[::IN_PLANE_STRIDE, ::IN_PLANE_STRIDE, :]
    values = np.rint(grid) if grid.dtype.kind == "f" else grid
    planes = np.ascontiguousarray(np.clip(values, -32768, 32767).astype(np.int16).transpose(2, 0, 1))
    shape = str(canonical.shape[:2]).encode()
    out = []
    for plane in planes:
        if plane.min() == plane.max():
            out.append(UNIFORM)
            continue
        digest = hashlib.blake2b(plane.tobytes(), digest_size=8)
        digest.update(shape)
        out.append(digest.hexdigest())
    return out


def informative(hashes: list[str]) -> set[str]:
    return {h for h in hashes if h != UNIFORM}


@dataclass(frozen=True)
class Duplicate:
    case_id: str  # the case that is not processed
    kept: str  # the case that keeps the scan
    shared: int  # informative slices in common
    message: str


def describe_overlap(shared: int, n_case: int, n_kept: int, kept: str) -> str:
    if shared == n_case == n_kept:
        return (f"same CT voxels as case {kept} (another file of the same scan: format, orientation or "
                "data type differ); processed once there")
    if shared == n_case:
        return f"a crop of case {kept}: all {n_case} of its CT slices are among that scan's {n_kept}; processed there"
    return (f"shares {shared} of its {n_case} CT slices with case {kept} ({n_kept} slices): the same scan, "
            "cut differently; processed there")


def find_duplicates(fingerprints: dict[str, list[str]], keep: str = "larger",
                    min_shared_fraction: float = 0.5) -> list[Duplicate]:
    """Cases whose CT shares at least `min_shared_fraction` of the smaller scan's informative slices
    with a case that is kept. `keep`: 'larger' keeps the scan with more slices (ties: first case id),
    'first' the first case id. The result depends only on the fingerprints, never on input order."""
    sets = {case: informative(h) for case, h in fingerprints.items()}
    if keep == "larger":
        order = sorted(sets, key=lambda c: (-len(sets[c]), c))
    elif keep == "first":
        order = sorted(sets)
    else:
        raise ValueError(f"keep must be 'larger' or 'first', got {keep!r}")
    kept: list[str] = []
    by_hash: dict[str, list[str]] = {}
    out = []
    for case in order:
        mine = sets[case]
        counts: dict[str, int] = {}
        for h in mine:
            for other in by_hash.get(h, ()):
                counts[other] = counts.get(other, 0) + 1
        best = max(counts, key=lambda o: (counts[o], o), default=None)
        if best is not None and mine:
            shared = counts[best]
            smaller = min(len(mine), len(sets[best]))
            if shared >= max(1, math.ceil(min_shared_fraction * smaller)):
                out.append(Duplicate(case, best, shared, describe_overlap(shared, len(mine), len(sets[best]), best)))
                continue
        kept.append(case)
        for h in mine:
            by_hash.setdefault(h, []).append(case)
    return out
