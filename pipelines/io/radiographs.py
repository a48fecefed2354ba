"""Real radiographs as they come: a DICOM DX/CR/XA/RF (every transfer syntax pydicom's pixel handlers
decode with their plugins) or a 2-D image file, read into a `Radiograph` record -- pixel values with
bone bright, the pixel spacing and where it came from (never guessed), and the projection geometry the
header states.

DICOM values go through the header's own chain: modality LUT (rescale slope/intercept or a Modality
LUT Sequence), optionally the VOI LUT or window, then MONOCHROME1 / Presentation LUT Shape INVERSE turned
to bone-bright polarity by reflecting the values in the range the header declares (so that every
encoding of one image gives the same values). See docs/radiographs.md.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.errors import VolumeReadError
from schemas.detector import SPACING_PLANES, SpacingPlane

# where a DICOM radiograph's pixel spacing is looked for, in this order (all at the detector plane but
# PixelSpacing, which some modalities calibrate to the patient: see `spacing_plane`)
SPACING_TAGS = ("ImagerPixelSpacing", "PixelSpacing", "NominalScannedPixelSpacing")
# 2-D formats whose header always states the pixel spacing
SPACED_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz")
GREY = ("MONOCHROME1", "MONOCHROME2")


class SpacingUnknownError(VolumeReadError):
    """A radiograph whose pixel spacing no header states: it must be given, never assumed."""


@dataclass(frozen=True)
class Radiograph:
    """A real radiograph as loaded: float32 values with bone bright -- (rows, columns), or
    (frames, rows, columns) when every frame of a multi-frame file was asked for -- and its geometry."""

    image: np.ndarray | None  # None where only the header was read (`pixels=False`)
    spacing_mm: tuple[float, float]  # (row, column) pixel pitch at `spacing_plane`
    spacing_source: str  # the tag or header the spacing came from, or 'given'
    spacing_plane: str = SpacingPlane.DETECTOR  # 'detector' (as SpineForge's detector is given) or 'isocentre'
    sdd_mm: float | None = None  # source to detector (DistanceSourceToDetector)
    sod_mm: float | None = None  # source to isocentre (see `sod_source`)
    sod_source: str = ""  # DistanceSourceToIsocenter, DistanceSourceToDetector / magnification, DistanceSourceToPatient
    magnification: float | None = None  # EstimatedRadiographicMagnificationFactor
    shape: tuple[int, int] = (0, 0)  # (rows, columns) of a frame
    patient_orientation: tuple[str, ...] = ()  # PatientOrientation: where +column and +row point on the patient
    primary_angle_deg: float | None = None  # PositionerPrimaryAngle (+ = LAO), XA/RF
    secondary_angle_deg: float | None = None  # PositionerSecondaryAngle (+ = cranial), XA/RF
    view_position: str = ""  # ViewPosition (AP, PA, LL, RL, ...)
    modality: str = ""
    photometric: str = ""
    inverted: bool = False  # MONOCHROME1 or Presentation LUT Shape INVERSE, turned bone bright
    value_range: tuple[float, float] | None = None  # the header's declared range of the values (after LUTs)
    voi: str = ""  # the VOI transform applied ('' when none was asked)
    transfer_syntax: str = ""
    lossy: bool = False  # LossyImageCompression '01' or a lossy transfer syntax
    frames: int = 1  # frames in the file
    frame: int | None = 0  # the frame returned (None: all of them)
    notes: tuple[str, ...] = field(default=())  # assumptions made where a tag is absent

    @property
    def detector_mm(self) -> tuple[float, float]:
        """The image's physical size (rows, columns) at `spacing_plane`."""
        rows, cols = self.shape
        return rows * self.spacing_mm[0], cols * self.spacing_mm[1]

    def record(self) -> dict:
        """Everything but the pixels, as plain values (fit-xray's sidecar, RadiographDataset's items)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "image"}
        out.update(shape=list(self.shape), detector_mm=list(self.detector_mm),
                   patient_orientation=list(self.patient_orientation),
                   spacing_mm=list(self.spacing_mm), notes=list(self.notes),
                   value_range=None if self.value_range is None else list(self.value_range))
        return out


def _number(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _pair(value) -> tuple[float, float] | None:
    """A spacing pair as DICOM states it, or None where it is missing, zero, negative or not numeric."""
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 and np.isfinite([row, col]).all() else None


def _tag_text(ds, tag: str) -> str:
    element = ds.get(tag)
    return "absent" if element is None or element == "" else repr(str(element))


def dicom_spacing(ds, path: Path, plane: str = SpacingPlane.DETECTOR) -> tuple[tuple[float, float], str, str]:
    """(spacing, source, plane) of a DICOM radiograph at `plane`: ImagerPixelSpacing, else PixelSpacing,
    else NominalScannedPixelSpacing; at the isocentre, divided by EstimatedRadiographicMagnificationFactor.
    A missing, zero, negative or non-numeric value everywhere is a SpacingUnknownError naming the tags."""
    if plane not in SPACING_PLANES:
        raise ValueError(f"spacing plane must be one of {SPACING_PLANES}, got {plane!r}")
    found = next(((tag, _pair(ds.get(tag))) for tag in SPACING_TAGS if _pair(ds.get(tag)) is not None), None)
    if found is None:
        looked = ", ".join(f"{tag} {_tag_text(ds, tag)}" for tag in SPACING_TAGS)
        raise SpacingUnknownError(path, f"no usable pixel spacing in the DICOM header ({looked}); give it "
                                        "(--spacing ROW COL / spacing_mm=)")
    tag, spacing = found
    at = SpacingPlane.DETECTOR
    if tag == "PixelSpacing" and ds.get("PixelSpacingCalibrationType"):
        at = SpacingPlane.ISOCENTRE  # calibrated to the patient (PS3.3 C.8.11.7)
    if at == plane:
        return spacing, tag, plane
    m = _number(ds.get("EstimatedRadiographicMagnificationFactor"))
    if m is None or m <= 0:
        raise SpacingUnknownError(path, f"{tag} is at the {at}; the spacing at the {plane} needs "
                                        "EstimatedRadiographicMagnificationFactor, which is "
                                        f"{_tag_text(ds, 'EstimatedRadiographicMagnificationFactor')}")
    scale = 1.0 / m if plane == SpacingPlane.ISOCENTRE else m
    return (spacing[0] * scale, spacing[1] * scale), f"{tag} {'/' if plane == 'isocentre' else 'x'} " \
        "EstimatedRadiographicMagnificationFactor", plane


def _sod(ds, sdd: float | None, m: float | None) -> tuple[float | None, str, tuple[str, ...]]:
    """Source to isocentre: DistanceSourceToIsocenter, else SDD / EstimatedRadiographicMagnificationFactor,
    else DistanceSourceToPatient (which DX defines to the patient's nearest support: an assumption, noted)."""
    iso = _number(ds.get("DistanceSourceToIsocenter"))
    if iso and iso > 0:
        return iso, "DistanceSourceToIsocenter", ()
    if sdd and m and m > 0:
        return sdd / m, "DistanceSourceToDetector / EstimatedRadiographicMagnificationFactor", ()
    patient = _number(ds.get("DistanceSourceToPatient"))
    if patient and patient > 0:
        return patient, "DistanceSourceToPatient", ("source to isocentre taken as DistanceSourceToPatient",)
    return None, "", ("no source-to-isocentre distance in the header",)


def _check_length(ds, path: Path) -> None:
    """Uncompressed pixel data longer than its header says is a wrong Rows/Columns/frames: refused
    (pydicom itself refuses data shorter than expected)."""
    if ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
        return
    frames = int(_number(ds.get("NumberOfFrames")) or 1)
    expected = (int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1))
                * int(ds.BitsAllocated) + 7) // 8
    actual = len(ds.PixelData)
    if actual > expected + (expected % 2):
        raise VolumeReadError(path, f"pixel data is {actual} bytes, the header's {ds.Rows}x{ds.Columns}x{frames} "
                                    f"at {ds.BitsAllocated} bits needs {expected}: a wrong size in the header")


def _why(exc: Exception) -> str:
    """A decoder's message on one line (pydicom lists each plugin's reason on a line of its own)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return "; ".join(lines[1:] if len(lines) > 1 and lines[0].endswith(":") else lines)


def _hint(ds) -> str:
    from pydicom.uid import JPEGExtended12Bit

    if ds.file_meta.TransferSyntaxUID == JPEGExtended12Bit and int(ds.get("BitsStored", 8)) > 8:
        try:
            import libjpeg  # noqa: F401  (pylibjpeg-libjpeg)
        except ImportError:
            return ("; 12-bit JPEG Extended needs pylibjpeg-libjpeg (GPL-3.0 licence): "
                    "pip install 'spineforge[jpeg-extended]'")
    return ""


def _decoded(ds, path: Path, frame: int | None, decoder: str = "") -> np.ndarray:
    """Stored values of one frame (or all), by pydicom's pixel handlers, colour refused unless grey."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR" or (photometric not in GREY and int(ds.get("SamplesPerPixel", 1)) == 1):
        raise VolumeReadError(path, f"PhotometricInterpretation {photometric or 'absent'} is not a grey image; "
                                    "a radiograph is MONOCHROME1 or MONOCHROME2")
    _check_length(ds, path)
    frames = int(_number(ds.get("NumberOfFrames")) or 1)
    if frame is not None and not -frames <= frame < frames:
        raise VolumeReadError(path, f"frame {frame} asked for; the file has {frames}")
    ds.pixel_array_options(index=frame % frames if frame is not None and frames > 1 else None,
                           decoding_plugin=decoder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on VR/padding; real problems raise
            pixels = np.asarray(ds.pixel_array)
    except (NotImplementedError, RuntimeError) as exc:
        raise VolumeReadError(path, f"cannot decode its {ds.file_meta.TransferSyntaxUID.name} pixel data "
                                    f"({_why(exc)}){_hint(ds)}") from exc
    except (ValueError, AttributeError, KeyError) as exc:
        if decoder and "No plugin named" in str(exc):
            raise ValueError(f"{path}: no pixel decoder {decoder!r} for {ds.file_meta.TransferSyntaxUID.name}: "
                             f"{_why(exc)}") from exc
        raise VolumeReadError(path, f"broken pixel data: {_why(exc)}") from exc
    if pixels.ndim == (4 if frame is None and frames > 1 else 3):  # colour samples: only grey is accepted
        if not (np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])):
            raise VolumeReadError(path, f"a colour image ({photometric}, channels differ); a radiograph is grey")
        pixels = pixels[..., 0]
    return pixels


def _values(ds, pixels: np.ndarray, voi: bool) -> tuple[np.ndarray, tuple[float, float], str]:
    """The header's value chain on stored values: modality LUT, then VOI (window or LUT) where asked;
    with the range the header declares for the values (the stored range through the same chain)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    ends = np.array([lo, hi], dtype=np.int64 if bits > 16 else (np.int32 if signed else np.uint32))
    values, ends = apply_modality_lut(pixels, ds), apply_modality_lut(ends.astype(pixels.dtype), ds)
    applied = ""
    if voi:
        if "VOILUTSequence" not in ds and "WindowCenter" not in ds:
            raise ValueError("no VOI LUT or window in the header")
        values, ends = apply_voi_lut(values, ds), apply_voi_lut(np.asarray(ends), ds)
        applied = "VOI LUT Sequence" if "VOILUTSequence" in ds else f"window {ds.WindowCenter}/{ds.WindowWidth}"
    ends = np.asarray(ends, dtype=np.float64)
    return np.asarray(values, dtype=np.float32), (float(ends.min()), float(ends.max())), applied


def read_dicom_radiograph(path: Path, ds, spacing_mm=None, plane: str = SpacingPlane.DETECTOR, frame: int | None = 0,
                          voi: bool = False, decoder: str = "", pixels: bool = True) -> Radiograph:
    """A DICOM radiograph read by pydicom: see `read_radiograph`."""
    from pydicom.uid import JPEG2000, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless

    if "PixelData" not in ds:
        raise VolumeReadError(path, "no pixel data in the DICOM file")
    notes: list[str] = []
    if spacing_mm is None:
        spacing, source, plane = dicom_spacing(ds, path, plane)
    else:
        spacing, source = (float(spacing_mm[0]), float(spacing_mm[-1])), "given"
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    inverted = photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).strip() == "INVERSE"
    values, value_range, applied = None, None, ""
    if pixels:
        stored = _decoded(ds, path, frame, decoder)
        try:
            values, value_range, applied = _values(ds, stored, voi)
        except ValueError as exc:
            raise VolumeReadError(path, f"cannot apply the header's LUTs: {exc}") from exc
        if inverted:  # reflected in the declared range: the same values whichever encoding carried them
            values = np.float32(value_range[0] + value_range[1]) - values
    sdd = _number(ds.get("DistanceSourceToDetector"))
    sdd = sdd if sdd and sdd > 0 else None
    if sdd is None:
        notes.append("no source-to-detector distance in the header")
    m = _number(ds.get("EstimatedRadiographicMagnificationFactor"))
    sod, sod_source, sod_notes = _sod(ds, sdd, m)
    syntax = ds.file_meta.TransferSyntaxUID
    lossy = str(ds.get("LossyImageCompression", "")).strip() == "01" or syntax in (
        JPEGBaseline8Bit, JPEGExtended12Bit, JPEG2000, JPEGLSNearLossless)
    frames = int(_number(ds.get("NumberOfFrames")) or 1)
    orientation = tuple(str(v).strip().upper() for v in (ds.get("PatientOrientation") or ()))
    return Radiograph(values, spacing, source, plane, sdd, sod, sod_source, m,
                      (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)), orientation,
                      _number(ds.get("PositionerPrimaryAngle")), _number(ds.get("PositionerSecondaryAngle")),
                      str(ds.get("ViewPosition", "") or ""), str(ds.get("Modality", "") or ""), photometric,
                      inverted, value_range, applied, syntax.name, lossy, frames,
                      None if frame is None else frame % frames, tuple(notes) + sod_notes)


def read_image_2d(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """A 2-D image file (MHA, NRRD, NIfTI, PNG, TIFF, ...) as (rows, columns) float32 and its (row, col)
    spacing in mm -- None where the file states none: PNG/TIFF/JPEG/BMP without physical pixel size
    (SimpleITK reports its default 1 x 1 for those, which is not a measurement)."""
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(path, "unreadable image") from exc
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):  # RGB(A) picture: accepted only when grey
        rgb = array[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise VolumeReadError(path, "a colour image (channels differ); a radiograph is grey")
        array = rgb[..., 0]
    if array.ndim != 2:
        raise VolumeReadError(path, f"expected a 2D image, got shape {array.shape}")
    sx, sy = image.GetSpacing()[:2]
    name = path.name.lower()
    spaced = name.endswith(SPACED_SUFFIXES) or (sx, sy) != (1.0, 1.0)
    return array.astype(np.float32), ((float(sy), float(sx)) if spaced else None)


def read_radiograph(path: Path, spacing_mm: tuple[float, float] | None = None, plane: str = SpacingPlane.DETECTOR,
                    frame: int | None = 0, voi: bool = False, decoder: str = "", pixels: bool = True) -> Radiograph:
    """A 2-D radiograph with its spacing and geometry (`pixels=False`: a DICOM header alone, image None).

    DICOM (DX, CR, XA, RF, ...; any transfer syntax pydicom's handlers decode): spacing from
    ImagerPixelSpacing, else PixelSpacing, else NominalScannedPixelSpacing, at `plane` ('detector', or
    'isocentre' through EstimatedRadiographicMagnificationFactor); `frame` picks one frame of a
    multi-frame file (None: all, as (frames, rows, columns)); `voi` applies the header's VOI LUT or
    window; `decoder` names one of pydicom's decoding plugins ('pylibjpeg', 'gdcm', 'pillow', ...; default:
    the first that can). Other files: the spacing their header states (MHA/NRRD/NIfTI; PNG/TIFF written with a
    physical pixel size). A file whose spacing nothing states raises SpacingUnknownError unless
    `spacing_mm` (row, column) is given: a size is never assumed."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise VolumeReadError(path, "no such file")
    if spacing_mm is not None and (len(spacing_mm) not in (1, 2) or min(spacing_mm) <= 0):
        raise ValueError(f"spacing_mm must be one or two positive numbers (row, column), got {spacing_mm}")
    try:
        ds = pydicom.dcmread(path, defer_size=None if pixels else "64 KB")  # the header alone: pixels not read
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
        ds = None  # not DICOM
    if ds is not None:
        return read_dicom_radiograph(path, ds, spacing_mm, plane, frame, voi, decoder, pixels)
    if frame not in (0, None) or voi or not pixels:
        raise ValueError(f"{path}: frame, voi and a header-only read apply to DICOM files only")
    array, spacing = read_image_2d(path)
    source = "image header"
    if spacing_mm is not None:
        spacing, source = (float(spacing_mm[0]), float(spacing_mm[-1])), "given"
    elif spacing is None:
        raise SpacingUnknownError(path, f"a {path.suffix or 'suffix-less'} file without a physical pixel size; "
                                        "give it (--spacing ROW COL / spacing_mm=)")
    if plane != SpacingPlane.DETECTOR and source != "given":
        raise SpacingUnknownError(path, f"the spacing at the {plane} needs a magnification only DICOM states")
    return Radiograph(array, spacing, source, plane, shape=array.shape, value_range=(float(array.min()), float(array.max())),
                      notes=("geometry: none in a non-DICOM file",))


def radiograph_problem(path: Path, spacing_mm=None, plane: str = SpacingPlane.DETECTOR) -> tuple[str, str]:
    """(spacing source, '') of a radiograph file that can be used, or ('', the reason) of one that cannot,
    from its header alone (pixels are decoded when the file is read)."""
    import pydicom

    path = Path(path)
    try:
        if not path.is_file():
            raise VolumeReadError(path, "no such file")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            ds = None
        if ds is not None:
            photometric = str(ds.get("PhotometricInterpretation", "")).strip()
            if photometric not in GREY and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
                raise VolumeReadError(path, f"PhotometricInterpretation {photometric or 'absent'} is not a grey image")
            return ("given" if spacing_mm is not None else dicom_spacing(ds, path, plane)[1]), ""
        if spacing_mm is not None:
            return "given", ""
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise VolumeReadError(path, "unreadable image") from exc
        if not (path.name.lower().endswith(SPACED_SUFFIXES) or tuple(reader.GetSpacing()[:2]) != (1.0, 1.0)):
            raise SpacingUnknownError(path, f"a {path.suffix or 'suffix-less'} file without a physical pixel size")
        return "image header", ""
    except VolumeReadError as exc:
        return "", exc.reason
