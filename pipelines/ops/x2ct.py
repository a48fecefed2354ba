"""X2CT-GAN's data conventions, as pure functions on one x2ct sample.

X2CT-GAN (kylekma/X2CT) reads `ct_xray_data.h5` files made by its `CT2XRAY/` scripts:
- `ct`: the scan as SimpleITK's `GetArrayFromImage` returns it for an axial, identity-direction
  volume: axes (D, H, W) = (z, y, x) in LPS, i.e. D runs inferior -> superior, H anterior ->
  posterior, W patient right -> left; values are scanner numbers, HU + 1024 (air 0), which its
  training config clips to [0, 2500] and divides by 2500.
- `xray1`: the frontal view, the projection over H, laid out on (D, W); `xray2`: the lateral view,
  the projection over W, laid out on (D, H) -- the axes its generator and `projection_visual` use
  (`CTOrder_Xray1/2`: output_map over H and over W). Both are 8-bit, each image scaled by its own
  maximum (`raw / max * 255` cast to uint8), which its config divides by 255.

Here the CT patch is re-ordered to (D, H, W) with nibabel, and each stored perspective view is
resampled onto the CT's own (D, W) or (D, H) grid at the isocentre plane by projecting those grid
points through the view's recorded camera, so a CT voxel column and the X-ray pixel it projects to
share indices -- no flips or transposes are guessed.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates, zoom

from pipelines.ops.camera import project_points
from pipelines.ops.orient import reorient
from schemas.detector import Geometry
from schemas.shard_layout import Key

# Index directions of X2CT-GAN's (D, H, W) in RAS axis codes (the way each index increases).
X2CT_AXCODES = "SPL"
SCANNER_OFFSET_HU = 1024  # CT2XRAY stores HU + 1024, so air is 0
UINT16_MAX = np.iinfo(np.uint16).max
VIEW_PLANES = {Key.XRAY1: ("D", "W"), Key.XRAY2: ("D", "H")}  # rows, columns of each view
AXIS_INDEX = {"D": 0, "H": 1, "W": 2}


def to_x2ct_order(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(array in X2CT-GAN's (D, H, W) order, its voxel -> RAS affine)."""
    out, out_affine = reorient(volume, affine, X2CT_AXCODES)
    return np.ascontiguousarray(out), out_affine


def resize_volume(volume: np.ndarray, affine: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear resize to size^3 as X2CT-GAN's `Resize_image` does (scipy zoom, first and last voxel
    centres kept), with the affine of the new grid. No-op when the size already matches."""
    shape = np.array(volume.shape)
    if np.all(shape == size):
        return volume, affine
    out = zoom(volume.astype(np.float32), size / shape, order=1)
    scale = np.diag([*((shape - 1) / max(size - 1, 1)), 1.0])
    return out, affine @ scale


def scanner_values(hu: np.ndarray) -> np.ndarray:
    """HU -> X2CT-GAN's stored CT numbers: HU + 1024, rounded, clipped to uint16 (air and below: 0)."""
    return np.clip(np.rint(hu.astype(np.float64)) + SCANNER_OFFSET_HU, 0, UINT16_MAX).astype(np.uint16)


def plane_points(affine: np.ndarray, shape: tuple[int, int, int], plane: tuple[str, str], size: int) -> np.ndarray:
    """World points (size, size, 3) of an output image whose rows/columns follow two CT axes, spanning
    the same first..last voxel centres, in the CT's mid-plane of the remaining axis."""
    rows, cols = (AXIS_INDEX[a] for a in plane)
    depth = ({0, 1, 2} - {rows, cols}).pop()
    index = np.zeros((size, size, 3))
    along = [np.linspace(0, shape[a] - 1, size) for a in (rows, cols)]
    index[..., rows], index[..., cols] = np.meshgrid(*along, indexing="ij")
    index[..., depth] = (shape[depth] - 1) / 2.0
    return index @ affine[:3, :3].T + affine[:3, 3]


def view_on_plane(view: np.ndarray, camera: np.ndarray, geometry: Geometry, points: np.ndarray) -> np.ndarray:
    """Sample a stored detector image at the projections of `points` (linear; 0 = no attenuation
    outside the detector). The detector is pre-smoothed when the plane's pixels are coarser than its own."""
    size = points.shape[0]
    pix = project_points(camera, points.reshape(-1, 3), geometry)
    step = np.abs(np.diff(pix.reshape(size, size, 2), axis=0)).max() if size > 1 else 1.0
    image = np.asarray(view, dtype=np.float64)
    if step > 1.5:  # anti-alias: about one output pixel of blur
        image = gaussian_filter(image, sigma=0.4 * step)
    return map_coordinates(image, pix.T, order=1, mode="constant", cval=0.0).reshape(size, size)


def to_uint8_by_max(image: np.ndarray) -> np.ndarray:
    """CT2XRAY's 8-bit scaling: each image divided by its own maximum, times 255, truncated."""
    peak = float(np.max(image)) if image.size else 0.0
    if peak <= 0:
        return np.zeros(image.shape, np.uint8)
    return (np.clip(image, 0, None) / peak * 255).astype(np.uint8)
