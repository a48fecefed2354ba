"""Real radiographs: a 2-D image file, or a DICOM DX/CR/XA with its header (spacing, distances,
photometric interpretation), as the loaders and `fit-xray` take them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.errors import VolumeReadError


def read_image_2d(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2D radiograph (DICOM, MHA, NRRD, PNG, ...) as (rows, columns) with (row, col) spacing in mm."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(Path(path), "unreadable image") from exc
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):  # RGB(A) picture: average the colour channels
        array = array[..., :3].mean(-1)
    if array.ndim != 2:
        raise VolumeReadError(Path(path), f"expected a 2D image, got shape {array.shape}")
    sx, sy = image.GetSpacing()[:2]
    return array.astype(np.float32), (float(sy), float(sx))

@dataclass(frozen=True)
class Radiograph:
    """A real radiograph as loaded: (rows, columns) float32 with bone bright, and its geometry."""

    image: np.ndarray
    spacing_mm: tuple[float, float]  # (row, column), at the detector plane where the file says so
    spacing_source: str  # the tag or header the spacing came from
    sdd_mm: float | None = None  # source to detector (DICOM DistanceSourceToDetector)
    sod_mm: float | None = None  # source to patient / isocentre (DICOM DistanceSourceToPatient)
    modality: str = ""
    inverted: bool = False  # MONOCHROME1 (bright = low value) turned to bone bright

def _dicom_pair(value) -> tuple[float, float] | None:
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None

def _dicom_pixels(ds) -> np.ndarray | None:
    """A DICOM dataset's first frame as pydicom decodes it, through its modality LUT (rescale slope and
    intercept), colour averaged; None where pydicom has no decoder for its transfer syntax."""
    from pydicom.pixels import apply_modality_lut

    try:
        pixels = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    return pixels[..., :3].mean(-1) if int(ds.get("SamplesPerPixel", 1) or 1) > 1 else pixels

def read_radiograph(path: Path, spacing_mm: tuple[float, float] | None = None) -> Radiograph:
    """A 2D radiograph: DICOM (DX, CR, XA, ...; read once by pydicom, header and pixels) or any image
    `read_image_2d` reads (MHA/NRRD/NIfTI with spacing, PNG/TIFF without; also DICOM whose transfer syntax
    pydicom cannot decode, through SimpleITK's GDCM). DICOM spacing: ImagerPixelSpacing (at the
    detector, as SpineForge's detector is given), else PixelSpacing; `spacing_mm` overrides it.
    MONOCHROME1 images are inverted (v' = max + min - v of the modality values) so that bone is bright, as
    in radiograph-polarity views. A multi-frame file (XA cine) gives its first frame."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise VolumeReadError(path, "no such file")
    try:
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError):
        ds = None  # not DICOM
    array = _dicom_pixels(ds) if ds is not None else None
    by_pydicom = array is not None
    source = "image header"
    if not by_pydicom:
        array, spacing = read_image_2d(path)
    if array.ndim != 2:
        raise VolumeReadError(path, f"expected a 2D image, got shape {array.shape}")
    sdd = sod = None
    modality, inverted = "", False
    if ds is not None:
        modality = str(ds.get("Modality", ""))
        pairs = [(tag, _dicom_pair(ds.get(tag))) for tag in ("ImagerPixelSpacing", "PixelSpacing")]
        source, spacing = next(((t, p) for t, p in pairs if p is not None),
                               ("none in the DICOM header (1 mm assumed)", (1.0, 1.0)))
        sdd = float(ds.DistanceSourceToDetector) if ds.get("DistanceSourceToDetector") else None
        sod = float(ds.DistanceSourceToPatient) if ds.get("DistanceSourceToPatient") else None
        if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
            inverted = True
            if by_pydicom:  # (SimpleITK's GDCM reader hands MONOCHROME1 back already inverted)
                array = array.max() + array.min() - array
    if spacing_mm is not None:
        spacing, source = (float(spacing_mm[0]), float(spacing_mm[-1])), "given"
    return Radiograph(array, spacing, source, sdd, sod, modality, inverted)
