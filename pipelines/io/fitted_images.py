"""Writing a fitted 2-D image (`spineforge fit-xray`): the formats it writes faithfully, checked before
anything is read, and atomic writes (complete or absent) whose files follow the user's umask."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.errors import InputError

FLOAT_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nii", ".nii.gz", ".tif", ".tiff")

INTEGER_SUFFIXES = {".png": (8, 16), ".dcm": (16,)}

def image_suffix(path: Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix

def umask_mode(mode: int = 0o666) -> int:
    """`mode` as the process's umask leaves it: what `open()` would have created (a temporary file from
    `mkstemp` is 0600 whatever the umask, so it is set to this before it is renamed into place)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _atomic_write(path: Path, write) -> None:
    """`write(tmp)` to a temporary file beside `path`, given the umask's mode, renamed into place."""
    suffix = image_suffix(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write it ({str(exc).strip().splitlines()[-1]})") from exc


def check_image_output(path: Path, bits: int) -> None:
    """Refuse, before anything is written, an output format fit-xray cannot write faithfully."""
    suffix = image_suffix(path)
    if suffix in FLOAT_SUFFIXES:
        return
    if suffix not in INTEGER_SUFFIXES:
        known = ", ".join([*FLOAT_SUFFIXES, *INTEGER_SUFFIXES])
        raise InputError(f"{path}: cannot write {suffix or 'a file without a suffix'}; use one of {known}")
    if bits not in INTEGER_SUFFIXES[suffix]:
        raise InputError(f"{path}: {suffix} takes --bits {' or '.join(map(str, INTEGER_SUFFIXES[suffix]))}, not {bits}")
    if not Path(path).parent.is_dir():
        raise InputError(f"{path}: folder {Path(path).parent} does not exist")

def write_image_2d(path: Path, array: np.ndarray, spacing_mm: tuple[float, float], bits: int = 16,
               window: tuple[float, float] | None = None) -> str:
    """Write a 2-D image with its (row, col) spacing, atomically (a temporary file renamed into place;
    nothing is left on failure). Float formats keep float32 values (uint8 masks stay uint8); PNG and
    DICOM get unsigned integers of `bits`, mapped linearly from `window` (default: the image's min..max)
    to 0..2^bits-1. Returns a description of the mapping."""
    path = Path(path)
    check_image_output(path, bits)
    suffix = image_suffix(path)
    array = np.asarray(array)
    mapping = "values as computed (float32)"
    if suffix in INTEGER_SUFFIXES:
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
    _atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp))
    return mapping


def beside(path: Path, tag: str, suffix: str | None = None) -> Path:
    """`out.nii.gz` -> `out_valid.nii.gz` (tag '_valid'), or `out.json` (tag '', suffix '.json')."""
    path = Path(path)
    own = image_suffix(path)
    stem = path.name[: len(path.name) - len(own)] if own else path.name
    return path.with_name(stem + tag + (own if suffix is None else suffix))


@dataclass(frozen=True)
class Fitted:
    mapping: str  # how values were written
    mask: Path  # the valid-region mask
    sidecar: Path  # the JSON record of where every value came from


def write_fitted(path: Path, image: np.ndarray, valid: np.ndarray, spacing_mm: tuple[float, float], bits: int,
                 provenance: dict) -> Fitted:
    """fit-xray's three files -- the image, its `_valid` mask and a `.json` sidecar with `provenance`
    (the input's spacing and its source, its geometry, the fit) -- all written or none left."""
    path = Path(path)
    mask, sidecar = beside(path, "_valid"), beside(path, "", ".json")
    written: list[Path] = []
    try:
        mapping = write_image_2d(path, image, spacing_mm, bits)
        written.append(path)
        write_image_2d(mask, valid.astype(np.uint8), spacing_mm, bits)
        written.append(mask)
        text = json.dumps({**provenance, "values": mapping}, indent=2, default=str)
        _atomic_write(sidecar, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    except BaseException:
        for done in written:  # all three files or none
            done.unlink(missing_ok=True)
        raise
    return Fitted(mapping, mask, sidecar)
