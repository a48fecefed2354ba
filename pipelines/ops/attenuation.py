"""HU -> linear attenuation coefficient, the same mapping for every patient.

mu = mu_water * (1 + HU / 1000), clipped at 0 (air); voxels above the bone threshold are
optionally weighted by `bone_multiplier`. Units: 1/mm, so a DRR pixel (a line integral of mu over
millimetres) is dimensionless and comparable across the whole dataset.
"""
from __future__ import annotations

import numpy as np


def hu_to_mu(hu: np.ndarray, mu_water_per_mm: float, bone_threshold_hu: float = 350.0,
             bone_multiplier: float = 1.0) -> np.ndarray:
    hu = np.asarray(hu, dtype=np.float32)
    mu = np.float32(mu_water_per_mm) * (1.0 + hu / np.float32(1000.0))
    np.maximum(mu, 0.0, out=mu)
    if bone_multiplier != 1.0:
        mu = np.where(hu > bone_threshold_hu, mu * np.float32(bone_multiplier), mu)
    return mu.astype(np.float32, copy=False)


def mu_of(hu: np.ndarray, attenuation) -> np.ndarray:
    """`hu_to_mu` with a build's `attenuation` settings (schemas.config.AttenuationConfig)."""
    return hu_to_mu(hu, attenuation.mu_water_per_mm, attenuation.bone_threshold_hu, attenuation.bone_multiplier)
