"""Reading medical volumes (NIfTI, NRRD, MHA/MHD, DICOM series): voxels, geometry and content hash in one read.

`load_volume` is the one way SpineForge reads a volume's voxels: one read of the file, its content
hash, its voxels, an integrity check (a truncated .nii.gz is an error, not zeros) and the count of
non-finite voxels, all from that read. Geometry is SimpleITK's reading of the header, so every
step agrees on where a voxel is.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipelines.errors import VolumeReadError
from pipelines.io.dicom_series import image_header, read_dicom_folder
from pipelines.io.hashing import sha256_file
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


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def _sitk_error(path: Path, exc: RuntimeError) -> VolumeReadError:
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "read failed")
    return VolumeReadError(path, f"unreadable image ({first[:160]})")


# DICOM tags read from each series' first file


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


def read_geometry(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """(voxel -> RAS affine, size) from a file's header alone, as SimpleITK reads it (no voxels)."""
    if Path(path).is_dir():
        image = read_image(path)
        return affine_from_sitk(image), image.GetSize()
    reader = image_header(path)
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


def _image_onimage_header(array_ijk: np.ndarray, header: sitk.ImageFileReader) -> sitk.Image:
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
        header = image_header(path)
        if tuple(header.GetSize()) != array.shape:
            raise VolumeReadError(path, f"header size {header.GetSize()} disagrees with the voxels {array.shape}")
        image = _image_onimage_header(array, header)
        return LoadedVolume(sha, image, _count_nonfinite(array))
    sha = sha256_file(path)
    notes: list[str] = []
    image = read_image(path, notes)
    return LoadedVolume(sha, image, _count_nonfinite(sitk.GetArrayViewFromImage(image)), notes)


# fit-xray's output formats: float32 with spacing, or integers by a linear mapping stated on output


