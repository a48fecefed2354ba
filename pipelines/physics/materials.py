"""HU -> (density, material fractions): one continuous mapping, the same for every patient.

Three anchors (air, soft tissue, bone; `schemas.config.XrayConfig.materials`) each stand for a
material of NIST composition and density at one HU. Between two anchors a voxel is a mixture by
volume whose fractions move linearly with HU; above the bone anchor it is bone whose density keeps
rising linearly (denser bone); at or below -1000 HU it is air. So every material's partial density
(g/cm^3 of that material per cm^3 of voxel) is a continuous, piecewise-linear function of HU with
kinks at the tissue and bone anchors only.

The walk reads the attenuation volume v = mu_water (1 + HU/1000), clipped at 0 (`ops.attenuation`),
which is linear in HU above -1000: in v the same partial densities read
    q_m(v) = c_m0 + c_m1 v + c_m2 max(v - k1, 0) + c_m3 max(v - k2, 0)
(k1, k2: the tissue and bone anchors in v), so a ray's mass thickness of every material follows
exactly from four integrals of one walk: its length in the volume, the line integral of v and the two
hinge integrals (`ops.traversal.traverse_hinges_numba`).
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from pipelines.ops.attenuation import hu_to_mu
from pipelines.physics.units import MM_PER_CM

TISSUE_CHANNELS = 3  # air, tissue, bone: the mass channels a walk gives, before the instruments' alloys


def anchor_knots(anchor_hu: np.ndarray, mu_water_per_mm: float) -> np.ndarray:
    """The tissue and bone anchors in attenuation units (float32, exactly as the volume's voxels)."""
    return hu_to_mu(np.asarray(anchor_hu[1:], dtype=np.float32), mu_water_per_mm)


def hinge_coefficients(knots: np.ndarray, densities: np.ndarray) -> np.ndarray:
    """(3, 4): row m gives material m's partial density (g/cm^3) in the basis
    [1, v, max(v - k1, 0), max(v - k2, 0)] for v >= 0 (air, tissue, bone)."""
    k1, k2 = (float(k) for k in knots)
    if not 0.0 < k1 < k2:
        raise ValueError(f"anchors must rise: got knots {k1}, {k2}")
    rho_air, rho_tissue, rho_bone = (float(r) for r in densities)
    span = k2 - k1
    return np.array([
        [rho_air, -rho_air / k1, rho_air / k1, 0.0],
        [0.0, rho_tissue / k1, -rho_tissue * (1.0 / k1 + 1.0 / span), rho_tissue / span],
        [0.0, 0.0, rho_bone / span, 0.0],
    ])


def mass_thickness(whole: np.ndarray, hinges: np.ndarray, coefficients: np.ndarray,
                   out: np.ndarray | None = None) -> np.ndarray:
    """(..., 3) g/cm^2 of air, tissue and bone from a walk's line integral of v (...,) and its
    (..., 3) columns [length mm, hinge 1, hinge 2] (`traverse_hinges_numba`). `out` (N, 3) float64, N
    the rays (it may be a column slice of a wider array: the view's mass channels): written in place
    and returned; None: a new array of the walk's shape."""
    c = np.ascontiguousarray(coefficients / MM_PER_CM, dtype=np.float64)
    flat_whole = np.asarray(whole, dtype=np.float64).reshape(-1)
    flat_hinges = np.asarray(hinges, dtype=np.float64).reshape(-1, np.shape(hinges)[-1])
    if out is None:
        result = np.empty((*np.shape(whole), TISSUE_CHANNELS))
        _mass_thickness(flat_whole, flat_hinges, c, result.reshape(-1, TISSUE_CHANNELS))
        return result
    if out.shape != (len(flat_whole), TISSUE_CHANNELS):
        raise ValueError(f"mass thickness out of shape {out.shape}: expected {(len(flat_whole), TISSUE_CHANNELS)}")
    _mass_thickness(flat_whole, flat_hinges, c, out)
    return out


@numba.njit(cache=True)
def _mass_thickness(whole, hinges, c, out):
    """One pass over the rays: c[m] . [length, v, hinge 1, hinge 2] per material, left to right as
    numpy's whole-array expression sums it (the same float64 values), held at 0 from below."""
    for r in range(len(whole)):
        for m in range(c.shape[0]):
            q = c[m, 0] * hinges[r, 0] + c[m, 1] * whole[r] + c[m, 2] * hinges[r, 1] + c[m, 3] * hinges[r, 2]
            out[r, m] = q if q > 0.0 else 0.0


def mass_thickness_torch(whole: torch.Tensor, hinges: torch.Tensor, coefficients: np.ndarray) -> torch.Tensor:
    """`mass_thickness` of a walk's tensors, on their device (float64)."""
    c = coefficients / MM_PER_CM
    out = torch.stack([float(c[m, 0]) * hinges[..., 0] + float(c[m, 1]) * whole + float(c[m, 2]) * hinges[..., 1]
                       + float(c[m, 3]) * hinges[..., 2] for m in range(3)], dim=-1)
    return out.clamp_(min=0.0)


def volume_fractions(hu: np.ndarray, anchor_hu: np.ndarray) -> np.ndarray:
    """(..., 3) volume fractions of air, tissue and bone per HU (bone's may exceed 1 above its anchor)."""
    h = np.maximum(np.asarray(hu, dtype=np.float64), anchor_hu[0])
    h0, h1, h2 = (float(a) for a in anchor_hu)
    tissue_low = (h - h0) / (h1 - h0)
    air = np.clip(1.0 - tissue_low, 0.0, None)
    bone = np.clip((h - h1) / (h2 - h1), 0.0, None)
    tissue = np.where(h <= h1, tissue_low, np.clip(1.0 - bone, 0.0, None))
    return np.stack([air, tissue, bone], axis=-1)


def density(hu: np.ndarray, anchor_hu: np.ndarray, densities: np.ndarray) -> np.ndarray:
    """Mass density (g/cm^3) per HU: the anchors' densities mixed by `volume_fractions`."""
    return volume_fractions(hu, anchor_hu) @ np.asarray(densities, dtype=np.float64)
