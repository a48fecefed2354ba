"""Reading medical volumes (NIfTI, NRRD, MHA/MHD, DICOM series) and hashing input files.

`load_volume` is the one way SpineForge reads a volume's voxels: one read of the file, its content
hash, its voxels, an integrity check (a truncated .nii.gz is an error, not zeros) and the count of
non-finite voxels, all from that read. Geometry is SimpleITK's reading of the header, so every
step agrees on where a voxel is.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipelines.errors import VolumeReadError
from pipelines.ops.orient import affine_from_sitk

_NIFTI_ERRORS = (EOFError, OSError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
                 nib.wrapstruct.WrapStructError)


@dataclass(frozen=True)
class LoadedVolume:
    """A volume read once: content hash, SimpleITK image (voxels + geometry), non-finite count."""

    sha256: str
    image: sitk.Image
    nonfinite: int

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


def read_image(path: Path) -> sitk.Image:
    """Read a 3D image file or a DICOM series folder with SimpleITK; raise VolumeReadError with the reason."""
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


def _nifti_voxels(path: Path, data: bytes) -> np.ndarray:
    """A NIfTI file's voxels ([i, j, k]) decoded from its bytes; raw dtype when it is not scaled."""
    try:
        raw = gzip.decompress(data) if path.name.lower().endswith(".gz") else data
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
    image = read_image(path)
    return LoadedVolume(sha, image, _count_nonfinite(sitk.GetArrayViewFromImage(image)))


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
