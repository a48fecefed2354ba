"""Fixed-size crops around a centre, padded where the patch leaves the volume."""
from __future__ import annotations

import numpy as np


def patch_start(centre_ijk: np.ndarray, size: int) -> np.ndarray:
    """First voxel index of a `size`^3 patch whose centre lies nearest `centre_ijk`.

    For an even size the centre falls between voxels size//2 - 1 and size//2 of the patch.
    """
    centre = np.asarray(centre_ijk, dtype=float)
    return np.floor(centre - (size - 1) / 2.0 + 0.5).astype(int)


def crop_around(array: np.ndarray, centre_ijk: np.ndarray, size: int,
                pad_value: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Cut a size^3 patch centred on `centre_ijk`; returns (patch, start index, padded fraction)."""
    start = patch_start(centre_ijk, size)
    stop = start + size
    patch = np.full((size,) * 3, pad_value, dtype=array.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(stop, array.shape)
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        patch[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = \
            array[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
        inside = float(np.prod(src_hi - src_lo))
    else:
        inside = 0.0
    return patch, start, 1.0 - inside / float(size ** 3)


def shifted_affine(affine: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Affine of a sub-grid whose voxel 0 is voxel `start` of the parent grid."""
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=float) + affine[:3, 3]
    return out


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo, hi) inclusive voxel bounds of the non-zero region, or None when empty."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in idx):
        return None
    return np.array([i[0] for i in idx]), np.array([i[-1] for i in idx])


def box_slices(box: tuple[np.ndarray, np.ndarray], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index slices of an inclusive (lo, hi) box grown by `margin` voxels, clipped to `shape`."""
    lo, hi = box
    return tuple(slice(max(int(a) - margin, 0), min(int(b) + 1 + margin, n)) for a, b, n in zip(lo, hi, shape))


def bbox_centre(mask: np.ndarray) -> np.ndarray | None:
    box = bounding_box(mask)
    if box is None:
        return None
    lo, hi = box
    return (lo + hi) / 2.0


def centre_of_mass(mask: np.ndarray) -> np.ndarray | None:
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None
    return idx.mean(axis=0)
