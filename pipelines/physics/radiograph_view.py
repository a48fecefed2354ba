"""Views rendered like a given radiograph: its detector (rows, columns, pixel pitch at the detector), its
source-to-detector and source-to-isocentre distances, the direction it was taken from, and the way its
columns and rows run over the patient -- all read from its DICOM header, so that a network trains on
exactly the detector it is tested on.

The direction, in SpineForge's world (RAS mm), as a rotation of the AP base camera about the isocentre:
- XA/RF with PositionerPrimaryAngle p / PositionerSecondaryAngle s (PS3.3 C.8.7.5): at 0/0 the beam runs
  posterior to anterior (PA); +p turns the detector towards the patient's left (LAO), +s towards the head
  (cranial); gantry = Rz(p) Rx(s) Rz(180 deg);
- otherwise ViewPosition AP (identity), PA (Rz 180), LL (source right, detector left: Rz -90), RL (Rz +90);
- neither: AP, noted.
PatientOrientation (its column letters, e.g. 'L') sets the column direction (SpineForge's
`reverse_x_axis`); rows must run towards the feet. Absent: the base views' radiological columns, noted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipelines.errors import VolumeReadError
from pipelines.io.radiographs import Radiograph, read_radiograph
from pipelines.ops.camera import base_camera, project_points
from schemas.detector import Geometry, SpacingPlane

# patient directions in SpineForge's world frame (RAS: +x right, +y anterior, +z superior)
PATIENT_AXES = {"R": (1.0, 0.0, 0.0), "L": (-1.0, 0.0, 0.0), "A": (0.0, 1.0, 0.0), "P": (0.0, -1.0, 0.0),
                "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0)}
VIEW_POSITIONS = {"AP": 0.0, "PA": 180.0, "LL": -90.0, "RL": 90.0}  # turn of the AP camera about S (deg)


def rotation_x(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def gantry_of(primary_deg: float | None, secondary_deg: float | None, view_position: str,
              where: Path) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """(rotation of the AP camera about the isocentre, what it is, notes) from a header's angles/view."""
    if primary_deg is not None or secondary_deg is not None:
        p, s = primary_deg or 0.0, secondary_deg or 0.0
        notes = () if primary_deg is not None and secondary_deg is not None else (
            "one positioner angle absent: taken as 0",)
        return (rotation_z(p) @ rotation_x(s) @ rotation_z(180.0),
                f"C-arm {'LAO' if p >= 0 else 'RAO'} {abs(p):g} {'CRA' if s >= 0 else 'CAU'} {abs(s):g}", notes)
    view = view_position.strip().upper()
    if view in VIEW_POSITIONS:
        return rotation_z(VIEW_POSITIONS[view]), view, ()
    if view:
        raise VolumeReadError(where, f"ViewPosition {view!r} is not one SpineForge renders ({', '.join(VIEW_POSITIONS)}) "
                                     "and the header has no positioner angles")
    return np.eye(3), "AP", ("no ViewPosition or positioner angles: AP assumed",)


def _direction(letters: str, where: Path) -> np.ndarray:
    try:
        v = np.sum([PATIENT_AXES[c] for c in letters], axis=0)
    except KeyError:
        raise VolumeReadError(where, f"PatientOrientation {letters!r} is not made of R/L/A/P/H/F") from None
    return v / np.linalg.norm(v)


def column_convention(geometry: Geometry, gantry: np.ndarray, orientation: tuple[str, ...],
                      where: Path) -> tuple[bool, tuple[str, ...]]:
    """SpineForge's `reverse_x_axis` that makes the rendered columns run where PatientOrientation says;
    rows must run towards the feet (the detector's rows run from the view's top down)."""
    if len(orientation) != 2 or not all(orientation):
        return geometry.reverse_x_axis, ("no PatientOrientation: columns as SpineForge's base views",)
    camera = np.eye(4)
    camera[:3, :3] = gantry
    camera = camera @ base_camera("AP", geometry.sod_mm)
    near = np.zeros(3)
    col_dir, row_dir = _direction(orientation[0], where), _direction(orientation[1], where)
    plain = replace(geometry, reverse_x_axis=False)
    start, along_col, along_row = project_points(camera, np.stack([near, col_dir, row_dir]), plain)
    if along_row[0] - start[0] <= 0.5 * abs(along_row[1] - start[1]):
        raise VolumeReadError(where, f"PatientOrientation {'/'.join(orientation)}: rows run towards "
                                     f"{orientation[1]}, which this view cannot render (its rows run from the top "
                                     "of the view down)")
    return bool(along_col[1] - start[1] < 0), ()


@dataclass(frozen=True)
class RadiographView:
    """How to render like one radiograph: its detector geometry and the turn of the AP camera."""

    name: str  # the file's name
    geometry: Geometry
    gantry: np.ndarray  # (3, 3) rotation of the AP base camera about the isocentre
    direction: str  # 'AP', 'PA', 'LL', 'RL' or 'C-arm LAO 30 CRA 15'
    notes: tuple[str, ...] = ()  # what was assumed where the header is silent

    def detector(self) -> tuple:
        """What must agree for views to be rendered by one renderer (and batched together)."""
        g = self.geometry
        return g.height, g.width, round(g.pixel_spacing_mm, 9), round(g.sdd_mm, 6), g.reverse_x_axis


def radiograph_view(r: Radiograph, name: str, template: Geometry, binning: int = 1, sdd_mm: float | None = None,
                    sod_mm: float | None = None, where: Path | None = None) -> RadiographView:
    """The view of a radiograph read at the detector plane, its pixels binned by `binning` (a coarser grid
    over the same field); `sdd_mm` / `sod_mm` stand in where the header states none (noted)."""
    where = where or Path(name)
    if r.spacing_plane != SpacingPlane.DETECTOR:
        raise ValueError(f"{name}: a view is rendered with the spacing at the detector, not the {r.spacing_plane}")
    row, col = r.spacing_mm
    if abs(row - col) > 1e-6 * max(row, col):
        raise VolumeReadError(where, f"pixels of {row:g} x {col:g} mm: SpineForge's detector has square pixels")
    if binning < 1 or r.shape[0] // binning < 1 or r.shape[1] // binning < 1:
        raise ValueError(f"{name}: binning must be 1 to {min(r.shape)}, got {binning}")
    notes = list(r.notes)
    sdd, sod = r.sdd_mm, r.sod_mm
    if sdd is None:
        if sdd_mm is None:
            raise VolumeReadError(where, "no DistanceSourceToDetector in the header; give sdd_mm")
        sdd = sdd_mm
        notes.append(f"source to detector {sdd_mm:g} mm as given")
    if sod is None:
        if sod_mm is None:
            raise VolumeReadError(where, "no source-to-isocentre distance in the header (DistanceSourceToIsocenter, "
                                         "EstimatedRadiographicMagnificationFactor or DistanceSourceToPatient); give sod_mm")
        sod = sod_mm
        notes.append(f"source to isocentre {sod_mm:g} mm as given")
    if not 0 < sod < sdd:
        raise VolumeReadError(where, f"source to isocentre {sod:g} mm must lie between 0 and the source to detector "
                                     f"{sdd:g} mm")
    geometry = Geometry(r.shape[0] // binning, r.shape[1] // binning, row * binning, sdd, sod, "traversal", None,
                        template.reverse_x_axis, template.error_budget)
    gantry, direction, more = gantry_of(r.primary_angle_deg, r.secondary_angle_deg, r.view_position, where)
    reverse, orient_notes = column_convention(geometry, gantry, r.patient_orientation, where)
    geometry = replace(geometry, reverse_x_axis=reverse)
    return RadiographView(name, geometry, gantry, direction, tuple(notes) + more + orient_notes)


def views_like(path: str | Path, template: Geometry, binning: int = 1, sdd_mm: float | None = None,
               sod_mm: float | None = None) -> tuple[RadiographView, ...]:
    """The views of a DICOM radiograph, or of every file of a folder (in name order), from their headers
    alone. All of a folder's radiographs must share one detector (size, pitch, SDD, column direction):
    one renderer per volume renders them, and their views batch together."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no radiograph in the folder")
    views = tuple(radiograph_view(read_radiograph(f, pixels=False), f.name, template, binning, sdd_mm, sod_mm, f)
                  for f in files)
    detectors = {}
    for v in views:
        detectors.setdefault(v.detector(), []).append(v.name)
    if len(detectors) > 1:
        groups = "; ".join(f"{h}x{w} px at {p:g} mm, SDD {s:g} mm, reversed columns {r}: {', '.join(n[:3])}"
                           for (h, w, p, s, r), n in detectors.items())
        raise ValueError(f"{path}: the radiographs differ in their detectors ({groups}); render each detector "
                         "with a stream of its own")
    return views
