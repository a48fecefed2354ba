"""QC checks as small pure functions; a failed check raises QCError with a reason code."""
from __future__ import annotations

import numpy as np

from pipelines.errors import QCError
from schemas.manifest import QC


def check_geometry(affine: np.ndarray, spacing_range: tuple[float, float], what: str) -> None:
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(np.isfinite(affine)) or np.any(spacing <= 0) or abs(np.linalg.det(linear)) < 1e-9:
        raise QCError(QC.DEGENERATE_GEOMETRY, f"{what} has a singular voxel-to-world matrix")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise QCError(QC.DEGENERATE_GEOMETRY, f"{what} direction matrix is not orthonormal")
    lo, hi = spacing_range
    if np.any(spacing < lo) or np.any(spacing > hi):
        raise QCError(QC.IMPLAUSIBLE_SPACING,
                      f"{what} spacing {np.round(spacing, 3).tolist()} mm outside [{lo}, {hi}]")


def check_ct_values(ct: np.ndarray, hu_range: tuple[float, float]) -> None:
    if not np.all(np.isfinite(ct)):
        raise QCError(QC.NON_FINITE, f"CT holds {int(np.size(ct) - np.isfinite(ct).sum())} non-finite voxels")
    lo, hi = float(ct.min()), float(ct.max())
    if lo < hu_range[0] or hi > hu_range[1] or hi - lo < 100:
        raise QCError(QC.IMPLAUSIBLE_HU, f"CT range [{lo:.0f}, {hi:.0f}] is not plausible HU")


def check_levels(levels: list[str], min_vertebrae: int) -> None:
    if not levels:
        raise QCError(QC.EMPTY_MASK, "the mask holds no vertebra label")
    if len(levels) < min_vertebrae:
        raise QCError(QC.TOO_FEW_VERTEBRAE,
                      f"{len(levels)} vertebrae ({', '.join(levels)}) < qc.min_vertebrae={min_vertebrae}")
