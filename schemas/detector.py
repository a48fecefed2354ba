"""The detector and projection geometry of every stored view: a plain record, readable without diffdrr."""
from __future__ import annotations

from dataclasses import asdict, dataclass

VIEWS = ("AP", "LAT")
RENDERERS = ("traversal", "clipped_trilinear", "siddon", "trilinear")
DEFAULT_ERROR_BUDGET = 0.005  # relative L2 per view against the exact integral


@dataclass(frozen=True)
class Geometry:
    height: int  # detector rows (pixels)
    width: int  # detector columns (pixels)
    pixel_spacing_mm: float  # detector pixel pitch
    sdd_mm: float  # source-to-detector distance (C-arm focal length)
    sod_mm: float  # source-to-isocentre distance
    renderer: str = "traversal"  # 'traversal', 'clipped_trilinear', or diffdrr's 'siddon' / 'trilinear'
    samples_per_voxel: float | None = None  # trilinear sampling density; None: chosen by error_budget
    reverse_x_axis: bool = True  # radiological left-right convention
    error_budget: float = DEFAULT_ERROR_BUDGET  # clipped_trilinear without samples_per_voxel

    @classmethod
    def from_record(cls, record: dict) -> Geometry:
        """The geometry stored in a sample's `detector` attribute (fields a record predates keep their defaults)."""
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})

    def record(self) -> dict:
        """Everything needed to re-render a stored view, as plain values."""
        out = asdict(self)
        out.update(principal_point_mm=[0.0, 0.0], reorient="AP", views=list(VIEWS), world="RAS mm")
        return out


class SpacingPlane:
    """Where a radiograph's pixel spacing is measured: at the detector (DICOM ImagerPixelSpacing, the pitch
    SpineForge's detector is given in) or at the isocentre (divided by the radiographic magnification)."""

    DETECTOR, ISOCENTRE = "detector", "isocentre"


SPACING_PLANES = (SpacingPlane.DETECTOR, SpacingPlane.ISOCENTRE)
