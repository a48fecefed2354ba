"""Digitally reconstructed radiographs with diffdrr, in SpineForge's world frame.

World frame: RAS millimetres. Cameras: diffdrr places the source at the camera origin and the detector centre at +z * SDD, then
applies its 'AP' re-orientation; a camera extrinsic E (4x4, column vectors) then moves both into
the world. Base views:
- AP:  source anterior at c + (0, +SOD, 0), detector posterior;
- LAT: the AP camera turned -90 degrees about S: source at the patient's right, c + (+SOD, 0, 0),
where c is the isocentre. A volume motion M (4x4 in world mm) is rendered by moving the camera by
M^-1, which is exact: the moved volume seen from E equals the fixed volume seen from M^-1 E.

Intensities: the caller passes linear attenuation (1/mm), never diffdrr's per-volume min-max
normalisation, so a pixel is the dimensionless line integral of mu along its ray.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffdrr.drr import DRR
from diffdrr.pose import RigidTransform
from torchio import ScalarImage, Subject

# diffdrr's 'AP' frame-of-reference change (rotates the C-arm 90 degrees about x).
AP_REORIENT = np.array(
    [[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64
)
VIEWS = ("AP", "LAT")


@dataclass(frozen=True)
class Geometry:
    height: int  # detector rows (pixels)
    width: int  # detector columns (pixels)
    pixel_spacing_mm: float  # detector pixel pitch
    sdd_mm: float  # source-to-detector distance (C-arm focal length)
    sod_mm: float  # source-to-isocentre distance
    renderer: str = "trilinear"  # diffdrr backend: 'siddon' (exact) or 'trilinear'
    samples_per_mm: float = 1.0  # trilinear ray sampling density
    reverse_x_axis: bool = True  # radiological left-right convention

    def record(self) -> dict:
        """Everything needed to re-render a stored view, as plain values."""
        out = asdict(self)
        out.update(principal_point_mm=[0.0, 0.0], reorient="AP", views=list(VIEWS), world="RAS mm")
        return out


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


def camera_for_motion(view: str, sod_mm: float, isocentre, motion: np.ndarray) -> np.ndarray:
    """Camera that sees the volume moved by `motion` (world mm) from the base `view`."""
    return np.linalg.inv(motion) @ base_camera(view, sod_mm, isocentre)


def source_and_detector_centre(camera: np.ndarray, sdd_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """World positions of the source and of the detector centre for a camera extrinsic."""
    pose = camera @ AP_REORIENT
    source = pose[:3, 3]
    centre = pose[:3, :3] @ np.array([0.0, 0.0, sdd_mm]) + pose[:3, 3]
    return source, centre


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Renderer:
    """One diffdrr DRR module per volume, reused for every view of that volume."""

    def __init__(self, mu: np.ndarray, affine: np.ndarray, geometry: Geometry,
                 device: torch.device | None = None):
        self.geometry = geometry
        self.device = device or default_device()
        tensor = torch.as_tensor(np.ascontiguousarray(mu, dtype=np.float32))[None]
        image = ScalarImage(tensor=tensor, affine=np.asarray(affine, dtype=np.float64))
        subject = Subject(
            volume=image,
            density=image,
            mask=None,
            orientation="AP",
            reorient=torch.as_tensor(AP_REORIENT, dtype=torch.float32),
            fiducials=None,
        )
        self.drr = DRR(
            subject,
            sdd=geometry.sdd_mm,
            height=geometry.height,
            width=geometry.width,
            delx=geometry.pixel_spacing_mm,
            renderer=geometry.renderer,
            reverse_x_axis=geometry.reverse_x_axis,
        ).to(self.device)
        extent = np.abs(affine[:3, :3]) @ (np.array(mu.shape) - 1.0)
        self.n_points = int(np.ceil(np.linalg.norm(extent) * geometry.samples_per_mm)) + 2

    @torch.no_grad()
    def render(self, cameras: np.ndarray, batch: int = 1) -> np.ndarray:
        """(V, 4, 4) camera extrinsics -> (V, H, W) float32 line integrals of mu."""
        cameras = np.asarray(cameras, dtype=np.float32).reshape(-1, 4, 4)
        kwargs = {"n_points": self.n_points} if self.geometry.renderer == "trilinear" else {}
        out = []
        for lo in range(0, len(cameras), batch):
            pose = RigidTransform(torch.as_tensor(cameras[lo:lo + batch], device=self.device))
            img = self.drr(pose, **kwargs)
            out.append(img[:, 0].float().cpu().numpy())
        return np.concatenate(out, axis=0)


def project_point(camera: np.ndarray, point: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(row, column) detector pixel where a world point projects, by pinhole geometry.

    Rows run from the detector's top (superior in AP/LAT) down; with `reverse_x_axis` the
    column axis follows the radiological convention.
    """
    pose = camera @ AP_REORIENT
    q = np.linalg.inv(pose) @ np.append(np.asarray(point, dtype=float), 1.0)
    x = q[0] * geometry.sdd_mm / q[2]
    y = q[1] * geometry.sdd_mm / q[2]
    col_from_x = x / geometry.pixel_spacing_mm
    col = geometry.width / 2 - 0.5 + (-col_from_x if geometry.reverse_x_axis else col_from_x)
    row = geometry.height / 2 - 0.5 - y / geometry.pixel_spacing_mm
    return np.array([row, col])
