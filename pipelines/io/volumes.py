"""Reading medical volumes (NIfTI, NRRD, MHA/MHD, DICOM series) and hashing input files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import SimpleITK as sitk


class VolumeReadError(Exception):
    """A file that exists in the input but cannot be read as an image."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
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
