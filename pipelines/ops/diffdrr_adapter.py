"""diffdrr, adapted: the one place that builds its DRR module and reads what it keeps private.

SpineForge renders with diffdrr's detector rays and calibration; the module's voxel-to-world affine
and the detector's calibration matrix are private attributes (`_affine`, `_calibration`) in
diffdrr 0.6, so they are read here alone, and a diffdrr release that renames them fails in one place.
"""
from __future__ import annotations

import numpy as np
import torch
from diffdrr.drr import DRR
from torchio import ScalarImage, Subject

from pipelines.ops.camera import AP_REORIENT
from schemas.detector import Geometry


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def diffdrr_subject(mu: np.ndarray, affine: np.ndarray) -> Subject:
    """The torchio Subject diffdrr's DRR takes: density = linear attenuation (1/mm), RAS affine, 'AP' frame."""
    tensor = torch.as_tensor(np.ascontiguousarray(mu, dtype=np.float32))[None]
    image = ScalarImage(tensor=tensor, affine=np.asarray(affine, dtype=np.float64))
    return Subject(volume=image, density=image, mask=None, orientation="AP",
                   reorient=torch.as_tensor(AP_REORIENT, dtype=torch.float32), fiducials=None)


def diffdrr_module(mu: np.ndarray, affine: np.ndarray, geometry: Geometry, renderer: str = "siddon") -> DRR:
    """diffdrr.drr.DRR for a volume and a stored detector geometry; call it with `RigidTransform(camera)`."""
    return DRR(diffdrr_subject(mu, affine), sdd=geometry.sdd_mm, height=geometry.height, width=geometry.width,
               delx=geometry.pixel_spacing_mm, renderer=renderer, reverse_x_axis=geometry.reverse_x_axis)



def module_affine(drr: DRR) -> np.ndarray:
    """The module's voxel -> world (mm) affine, float64."""
    return drr._affine[0].double().cpu().numpy()


def detector_calibration(drr: DRR) -> np.ndarray:
    """The detector's 4x4 calibration (unit-focal grid -> camera frame), float64."""
    return drr.detector._calibration.double().cpu().numpy()


def detector_grid(drr: DRR) -> torch.Tensor:
    """(N, 3) unit-focal detector points, row-major over the detector, float64."""
    return drr.detector.target[0].double()
