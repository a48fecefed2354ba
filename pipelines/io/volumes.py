"""Reading medical volumes (NIfTI, NRRD, MHA/MHD, DICOM series) and hashing input files.

`load_volume` is the one way SpineForge reads a volume's voxels: one read of the file, its content
hash, its voxels, an integrity check (a truncated .nii.gz is an error, not zeros) and the count of
non-finite voxels, all from that read. Geometry is SimpleITK's reading of the header, so every
step agrees on where a voxel is.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipelines.errors import InputError, VolumeReadError
from pipelines.ops.orient import affine_from_sitk
from schemas.manifest import QC

_NIFTI_ERRORS = (EOFError, OSError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
                 nib.wrapstruct.WrapStructError)


@dataclass(frozen=True)
class LoadedVolume:
    """A volume read once: content hash, SimpleITK image (voxels + geometry), non-finite count."""

    sha256: str
    image: sitk.Image
    nonfinite: int
    notes: list[str] = field(default_factory=list)  # e.g. DICOM series in the folder that were not used

    @property
    def affine(self) -> np.ndarray:
        return affine_from_sitk(self.image)

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.image.GetSize())

    def array_view(self) -> np.ndarray:
        """Voxels as [k, j, i] (SimpleITK's view order), without a copy."""
        return sitk.GetArrayViewFromImage(self.image)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, or of a folder (a DICOM series) over its files' names and contents."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for member in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{member.relative_to(path).as_posix()}\0{sha256_file(member)}\n".encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def combined_hash(hashes: dict[str, str]) -> str:
    """One hash over a case's files, independent of dict order."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def _sitk_error(path: Path, exc: RuntimeError) -> VolumeReadError:
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "read failed")
    return VolumeReadError(path, f"unreadable image ({first[:160]})")


# DICOM tags read from each series' first file
MODALITY, IMAGE_TYPE, DESCRIPTION = "0008|0060", "0008|0008", "0008|103e"
POSITION, ORIENTATION = "0020|0032", "0020|0037"
LOCALIZER_WORDS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")
SLICE_GAP_TOLERANCE = 0.1  # a gap more than 10 % off the typical slice step means missing slices


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[str, ...]
    modality: str
    image_type: str
    description: str

    @property
    def is_localizer(self) -> bool:
        text = f"{self.image_type} {self.description}".upper()
        return any(word in text for word in LOCALIZER_WORDS)

    def describe(self) -> str:
        kind = f"{self.modality or 'no modality'}{' localizer' if self.is_localizer else ''}"
        label = f" '{self.description}'" if self.description else ""
        return f"{kind}{label}, {len(self.files)} file(s), series {self.uid}"


def _tag(reader, tag: str, index: int | None = None) -> str:
    if index is None:
        return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
    return reader.GetMetaData(index, tag).strip() if reader.HasMetaDataKey(index, tag) else ""


def dicom_series(folder: Path) -> list[DicomSeries]:
    """Every series in a folder (split by SeriesInstanceUID, any file names), with its first file's tags."""
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        header = _header(Path(files[0]))
        out.append(DicomSeries(uid, files, _tag(header, MODALITY), _tag(header, IMAGE_TYPE), _tag(header, DESCRIPTION)))
    return out


def choose_ct_series(folder: Path, series: list[DicomSeries]) -> tuple[DicomSeries, list[str]]:
    """The CT volume of a DICOM folder -- the largest CT series that is not a localizer/scout -- and a
    note naming every series left out. VolumeReadError('no_ct_series') when there is none."""
    if not series:
        raise VolumeReadError(folder, "folder holds no DICOM series")
    volumes = [s for s in series if s.modality.upper() == "CT" and not s.is_localizer and len(s.files) > 1]
    if not volumes:
        found = "; ".join(s.describe() for s in series)
        raise VolumeReadError(folder, f"no CT volume among its DICOM series ({found})", code=QC.NO_CT_SERIES)
    chosen = max(volumes, key=lambda s: (len(s.files), s.uid))
    others = [s for s in series if s is not chosen]
    notes = [f"DICOM folder {folder.name}: used {chosen.describe()}; not used: "
             + "; ".join(s.describe() for s in others)] if others else []
    return chosen, notes


def check_slices(folder: Path, reader: sitk.ImageSeriesReader, n: int) -> None:
    """Slices of one orientation, evenly spaced along it: else 'mixed_orientation' / 'missing_slices'."""
    orientations = {_tag(reader, ORIENTATION, i) for i in range(n)}
    if len(orientations) > 1:
        raise VolumeReadError(folder, f"slices of {len(orientations)} different orientations in one series",
                              code=QC.MIXED_ORIENTATION)
    if n < 3 or not orientations or not all(_tag(reader, POSITION, i) for i in range(n)):
        return
    cosines = np.array([float(v) for v in orientations.pop().split("\\")], dtype=float)
    normal = np.cross(cosines[:3], cosines[3:6])
    positions = np.array([[float(v) for v in _tag(reader, POSITION, i).split("\\")] for i in range(n)])
    steps = np.abs(np.diff(positions @ normal))
    typical = float(np.median(steps))
    if typical <= 0 or np.any(np.abs(steps - typical) > SLICE_GAP_TOLERANCE * typical):
        worst = float(steps.max())
        raise VolumeReadError(folder, f"uneven slice positions: steps {steps.min():.2f}-{worst:.2f} mm where "
                              f"{typical:.2f} mm is typical (about {max(round(worst / typical) - 1, 1) if typical else 0} "
                              "slice(s) missing, or repeated slices)", code=QC.MISSING_SLICES)


def read_dicom_folder(path: Path) -> tuple[sitk.Image, list[str]]:
    """The CT series of a DICOM folder as one volume (slices ordered by position), with notes."""
    chosen, notes = choose_ct_series(path, dicom_series(path))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    check_slices(path, reader, len(chosen.files))
    return image, notes


def read_image(path: Path, notes: list[str] | None = None) -> sitk.Image:
    """Read a 3D image file or a DICOM series folder with SimpleITK; raise VolumeReadError with the reason.
    For a DICOM folder, notes on the series not used are appended to `notes`."""
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "no such file")
    try:
        if path.is_dir():
            image, found = read_dicom_folder(path)
            if notes is not None:
                notes += found
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK reports every reader failure as RuntimeError
        raise _sitk_error(path, exc) from exc
    if image.GetDimension() != 3:
        raise VolumeReadError(path, f"expected a 3D image, got {image.GetDimension()}D")
    return image


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(Path(path), "unreadable header") from exc
    return reader


def read_geometry(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """(voxel -> RAS affine, size) from a file's header alone, as SimpleITK reads it (no voxels)."""
    if Path(path).is_dir():
        image = read_image(path)
        return affine_from_sitk(image), image.GetSize()
    reader = _header(path)
    return affine_from_sitk(reader), tuple(int(n) for n in reader.GetSize())


def _check_nifti_spacing(path: Path, raw: bytes) -> None:
    """A header whose voxel spacing (pixdim[1:4]) is zero, negative or not finite: its geometry is
    wrong, though nibabel and SimpleITK would both read it (each silently takes 1 mm instead)."""
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    spacing = [float(v) for v in header["pixdim"][1:1 + min(3, int(header["dim"][0]))]]
    bad = [(axis, v) for axis, v in enumerate(spacing, start=1) if not np.isfinite(v) or v <= 0]
    if bad:
        named = ", ".join(f"pixdim[{axis}] = {v:g}" for axis, v in bad)
        raise VolumeReadError(path, f"degenerate voxel spacing in the header ({named} mm)",
                              code=QC.DEGENERATE_GEOMETRY)


def _nifti_voxels(path: Path, data: bytes) -> np.ndarray:
    """A NIfTI file's voxels ([i, j, k]) decoded from its bytes; raw dtype when it is not scaled."""
    try:
        raw = gzip.decompress(data) if path.name.lower().endswith(".gz") else data
        _check_nifti_spacing(path, raw)
        image = nib.Nifti1Image.from_bytes(raw)
        slope, inter = image.dataobj.slope, image.dataobj.inter
        if slope == 1.0 and inter == 0.0:  # no scaling: keep the stored dtype, as SimpleITK does
            array = np.asanyarray(image.dataobj.get_unscaled())
        else:
            array = np.asanyarray(image.dataobj).astype(np.float32)
    except _NIFTI_ERRORS as exc:
        raise VolumeReadError(path, f"truncated or corrupt NIfTI ({str(exc)[:120]})") from exc
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeReadError(path, f"expected a 3D image, got shape {array.shape}")
    return array


def _image_on_header(array_ijk: np.ndarray, header: sitk.ImageFileReader) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_ijk.transpose(2, 1, 0)))
    image.SetOrigin(header.GetOrigin())
    image.SetSpacing(header.GetSpacing())
    image.SetDirection(header.GetDirection())
    return image


def _count_nonfinite(array: np.ndarray) -> int:
    return int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind == "f" else 0


def load_volume(path: Path) -> LoadedVolume:
    """Read a volume once: hash, voxels, integrity and non-finite count (VolumeReadError if unreadable).

    NIfTI files are read into memory once, hashed, and decoded by nibabel from those bytes
    (SimpleITK's reader would accept a truncated .nii.gz and turn NaN into 0); SimpleITK
    interprets the header so that geometry is the same everywhere. Other formats are hashed,
    then decoded by SimpleITK.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "no such file")
    if is_nifti(path):
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        array = _nifti_voxels(path, data)
        del data
        header = _header(path)
        if tuple(header.GetSize()) != array.shape:
            raise VolumeReadError(path, f"header size {header.GetSize()} disagrees with the voxels {array.shape}")
        image = _image_on_header(array, header)
        return LoadedVolume(sha, image, _count_nonfinite(array))
    sha = sha256_file(path)
    notes: list[str] = []
    image = read_image(path, notes)
    return LoadedVolume(sha, image, _count_nonfinite(sitk.GetArrayViewFromImage(image)), notes)


def read_xray(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
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
    `read_xray` reads (MHA/NRRD/NIfTI with spacing, PNG/TIFF without; also DICOM whose transfer syntax
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
        array, spacing = read_xray(path)
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


# fit-xray's output formats: float32 with spacing, or integers by a linear mapping stated on output
XRAY_FLOAT_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nii", ".nii.gz", ".tif", ".tiff")
XRAY_INTEGER_SUFFIXES = {".png": (8, 16), ".dcm": (16,)}


def xray_suffix(path: Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def check_xray_output(path: Path, bits: int) -> None:
    """Refuse, before anything is written, an output format fit-xray cannot write faithfully."""
    suffix = xray_suffix(path)
    if suffix in XRAY_FLOAT_SUFFIXES:
        return
    if suffix not in XRAY_INTEGER_SUFFIXES:
        known = ", ".join([*XRAY_FLOAT_SUFFIXES, *XRAY_INTEGER_SUFFIXES])
        raise InputError(f"{path}: cannot write {suffix or 'a file without a suffix'}; use one of {known}")
    if bits not in XRAY_INTEGER_SUFFIXES[suffix]:
        raise InputError(f"{path}: {suffix} takes --bits {' or '.join(map(str, XRAY_INTEGER_SUFFIXES[suffix]))}, not {bits}")
    if not Path(path).parent.is_dir():
        raise InputError(f"{path}: folder {Path(path).parent} does not exist")


def write_xray(path: Path, array: np.ndarray, spacing_mm: tuple[float, float], bits: int = 16,
               window: tuple[float, float] | None = None) -> str:
    """Write a 2-D image with its (row, col) spacing, atomically (a temporary file renamed into place;
    nothing is left on failure). Float formats keep float32 values (uint8 masks stay uint8); PNG and
    DICOM get unsigned integers of `bits`, mapped linearly from `window` (default: the image's min..max)
    to 0..2^bits-1. Returns a description of the mapping."""
    path = Path(path)
    check_xray_output(path, bits)
    suffix = xray_suffix(path)
    array = np.asarray(array)
    mapping = "values as computed (float32)"
    if suffix in XRAY_INTEGER_SUFFIXES:
        top = 2 ** bits - 1
        lo, hi = window if window is not None else (float(array.min()), float(array.max()))
        if array.dtype == np.uint8 and window is None:  # a mask: 0/1 kept as 0/1
            out, mapping = array, "values kept (0/1)"
        else:
            scaled = (array.astype(np.float64) - lo) / (hi - lo) * top if hi > lo else np.zeros(array.shape)
            out = np.clip(np.rint(scaled), 0, top).astype(np.uint8 if bits == 8 else np.uint16)
            mapping = f"linear {lo:g}..{hi:g} -> 0..{top} ({bits}-bit)"
    else:
        out = array if array.dtype == np.uint8 else array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(out))
    image.SetSpacing((spacing_mm[1], spacing_mm[0]))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write it ({str(exc).strip().splitlines()[-1]})") from exc
    return mapping
