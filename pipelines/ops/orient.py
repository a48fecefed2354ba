"""Orientation codes, affines, and the SimpleITK <-> (array, affine) bridge.

Conventions used everywhere in SpineForge:
- arrays are indexed [i, j, k] along the image's own voxel axes (x fastest in the file);
- `affine` maps voxel indices to RAS+ world millimetres (NIfTI/nibabel convention);
- SimpleITK works in LPS world coordinates, so its direction/origin are converted here, once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_AXIS_VECTORS = {
    "R": (0, 1.0), "L": (0, -1.0),
    "A": (1, 1.0), "P": (1, -1.0),
    "S": (2, 1.0), "I": (2, -1.0),
}


@dataclass(frozen=True)
class Volume:
    """A voxel array with its voxel -> RAS mm affine."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def orientation(self) -> str:
        return axis_codes(self.affine)


def direction_from_codes(codes: str) -> np.ndarray:
    """3x3 RAS direction matrix whose columns are the unit vectors the voxel axes point to."""
    d = np.zeros((3, 3))
    for col, code in enumerate(codes.upper()):
        row, sign = _AXIS_VECTORS[code]
        d[row, col] = sign
    return d


def axis_codes(affine: np.ndarray) -> str:
    """Nearest axis codes ('RAS', 'LPS', 'PIR' ...) of an affine's voxel axes."""
    codes = []
    for col in range(3):
        v = affine[:3, col]
        row = int(np.argmax(np.abs(v)))
        codes.append("RAS"[row] if v[row] > 0 else "LPI"[row])
    return "".join(codes)


def affine_from_sitk(image) -> np.ndarray:
    """Voxel index -> RAS mm affine of a SimpleITK image (or an ImageFileReader after ReadImageInformation)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ origin
    return affine


def sitk_geometry_from_affine(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, direction, origin) in SimpleITK's LPS convention for a voxel -> RAS affine."""
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = LPS_TO_RAS @ (linear / spacing)
    origin = LPS_TO_RAS @ affine[:3, 3]
    return tuple(spacing.tolist()), tuple(direction.ravel().tolist()), tuple(origin.tolist())


def volume_from_sitk(image: sitk.Image) -> Volume:
    """SimpleITK image -> Volume ([i, j, k] array, RAS affine). Copies the voxels."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(np.ascontiguousarray(array), affine_from_sitk(image))


def sitk_from_volume(volume: Volume) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    spacing, direction, origin = sitk_geometry_from_affine(volume.affine)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    xyz = np.atleast_2d(np.asarray(xyz, dtype=float))
    inv = np.linalg.inv(affine)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


def craniocaudal_axis(affine: np.ndarray) -> tuple[int, float]:
    """(voxel axis, sign) along which the index runs toward Superior (+1) or Inferior (-1)."""
    s_components = affine[2, :3]
    axis = int(np.argmax(np.abs(s_components)))
    return axis, float(np.sign(s_components[axis]))


def reorient(array: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """`array` with its voxel axes flipped and swapped (exactly, no resampling) so that index i, j, k
    increase toward `codes` (e.g. 'RAS', 'SPL'), and the affine of the result. Returns a view."""
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(codes)))
    return apply_orientation(array, transform), affine @ inv_ornt_aff(transform, array.shape)
