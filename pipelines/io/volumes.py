"""Reading medical volumes (NIfTI, NRRD, MHA/MHD, DICOM series) and hashing input files."""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk


class VolumeReadError(Exception):
    """A file that exists in the input but cannot be read as an image."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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


def read_image(path: Path) -> sitk.Image:
    """Read a 3D image file or a DICOM series folder; raise VolumeReadError with the reason."""
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "no such file")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            names = reader.GetGDCMSeriesFileNames(str(path))
            if not names:
                raise VolumeReadError(path, "folder holds no DICOM series")
            reader.SetFileNames(names)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK reports every reader failure as RuntimeError
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "read failed")
        raise VolumeReadError(path, f"unreadable image ({first[:160]})") from exc
    if image.GetDimension() != 3:
        raise VolumeReadError(path, f"expected a 3D image, got {image.GetDimension()}D")
    return image


def read_geometry(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """(voxel -> RAS affine, size) from a file's header alone, as SimpleITK reads it (no voxels)."""
    from pipelines.ops.orient import affine_from_sitk

    if Path(path).is_dir():
        image = read_image(path)
        return affine_from_sitk(image), image.GetSize()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(Path(path), "unreadable header") from exc
    return affine_from_sitk(reader), tuple(int(n) for n in reader.GetSize())


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def verify_nifti(path: Path) -> int:
    """Decode every voxel of a NIfTI file with nibabel; return the count of non-finite voxels.

    Needed because SimpleITK's NIfTI reader accepts a truncated .nii.gz and turns NaN into 0.
    """
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except (EOFError, OSError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise VolumeReadError(Path(path), f"truncated or corrupt NIfTI ({str(exc)[:120]})") from exc
    if data.dtype.kind != "f":
        return 0
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def read_checked(path: Path) -> tuple[sitk.Image, int]:
    """(image, non-finite voxel count as stored); raises VolumeReadError for unreadable files."""
    image = read_image(path)
    if is_nifti(path):
        return image, verify_nifti(path)
    array = sitk.GetArrayViewFromImage(image)
    return image, int(array.size - np.count_nonzero(np.isfinite(array)))


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


def write_xray(path: Path, array: np.ndarray, spacing_mm: tuple[float, float]) -> None:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing((spacing_mm[1], spacing_mm[0]))
    sitk.WriteImage(image, str(path))
