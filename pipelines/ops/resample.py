"""Resampling to an isotropic grid in a canonical orientation, with SimpleITK.

The output grid covers the input's physical extent; the transform is the identity, so every
world position is preserved (a landmark keeps its RAS coordinate up to interpolation).
"""
from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from pipelines.ops.orient import (
    affine_from_sitk,
    direction_from_codes,
    sitk_geometry_from_affine,
)

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}


def corners_world(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """RAS positions of the 8 corner voxel centres of a grid."""
    idx = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=float)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def same_grid(affine_a: np.ndarray, shape_a, affine_b: np.ndarray, shape_b) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=1e-3)


def grids_overlap(affine_a: np.ndarray, shape_a, affine_b: np.ndarray, shape_b) -> bool:
    """Do the physical boxes (voxel centres) of two grids intersect?"""
    a, b = corners_world(affine_a, tuple(shape_a)), corners_world(affine_b, tuple(shape_b))
    return bool(np.all(a.max(0) >= b.min(0)) and np.all(b.max(0) >= a.min(0)))


def target_grid(affine: np.ndarray, shape: tuple[int, int, int], spacing_mm: float,
                orientation: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the isotropic `orientation` grid that covers the input's voxel centres.

    Each output axis starts at the input's extreme voxel centre on its negative side, so a grid
    that is already isotropic at `spacing_mm` and in `orientation` maps onto itself.
    """
    corners = corners_world(affine, shape)
    direction = direction_from_codes(orientation)
    # coordinates of the corners along each output axis
    along = corners @ direction  # (8, 3): projection onto each output axis unit vector
    start = along.min(axis=0)
    extent = along.max(axis=0) - start
    out_shape = tuple(int(n) for n in np.floor(extent / spacing_mm + 1e-6).astype(int) + 1)
    out_affine = np.eye(4)
    out_affine[:3, :3] = direction * spacing_mm
    out_affine[:3, 3] = direction @ start
    return out_affine, out_shape


def resample_onto(image: sitk.Image, affine: np.ndarray, shape: tuple[int, int, int],
                  interpolator: str, pad_value: float) -> sitk.Image:
    """Resample `image` onto the grid (affine, shape) with the identity transform."""
    spacing, direction, origin = sitk_geometry_from_affine(affine)
    return sitk.Resample(
        image,
        [int(s) for s in shape],
        sitk.Transform(),
        _INTERPOLATORS[interpolator],
        origin,
        spacing,
        direction,
        float(pad_value),
        image.GetPixelID(),
    )


def resample_to_spacing(image: sitk.Image, spacing_mm: float, orientation: str,
                        interpolator: str, pad_value: float) -> sitk.Image:
    """Resample to an isotropic `spacing_mm` grid in `orientation` covering the same extent."""
    affine, shape = target_grid(affine_from_sitk(image), image.GetSize(), spacing_mm, orientation)
    return resample_onto(image, affine, shape, interpolator, pad_value)


def resample_labels_linear_argmax(labels: sitk.Image, affine: np.ndarray,
                                  shape: tuple[int, int, int]) -> sitk.Image:
    """Resample each label's indicator linearly and keep, per voxel, the most probable label.

    Streams one label at a time (memory of two float volumes, not one per label); background wins
    where the summed label probability is below the best label's.
    """
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels)) if v != 0]
    best_p = np.zeros(shape[::-1], np.float32)
    best_l = np.zeros(shape[::-1], sitk.GetArrayViewFromImage(labels).dtype)
    total = np.zeros(shape[::-1], np.float32)
    for value in values:
        indicator = sitk.Cast(sitk.Equal(labels, value), sitk.sitkFloat32)
        p = sitk.GetArrayFromImage(resample_onto(indicator, affine, shape, "linear", 0.0))
        total += p
        better = p > best_p
        best_p[better] = p[better]
        best_l[better] = value
    best_l[best_p <= 1.0 - total] = 0  # background probability is 1 - sum of label probabilities
    out = sitk.GetImageFromArray(best_l)
    spacing, direction, origin = sitk_geometry_from_affine(affine)
    out.SetSpacing(spacing)
    out.SetDirection(direction)
    out.SetOrigin(origin)
    return out


def resample_labels(labels: sitk.Image, affine: np.ndarray, shape: tuple[int, int, int],
                    mode: str) -> sitk.Image:
    if mode == "nearest":
        return resample_onto(labels, affine, shape, "nearest", 0)
    if mode == "linear_argmax":
        return resample_labels_linear_argmax(labels, affine, shape)
    raise ValueError(f"unknown label interpolator {mode!r}")
