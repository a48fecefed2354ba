"""Ingest-only QC in one pass per file: read the bytes once, hash them, decode NIfTI from memory.

Checks everything a build checks before resampling (readability, geometry, finite values, HU range,
labels, grid overlap, levels, single-vertebra placement); a mask is resampled onto the CT only when
the two grids differ. Other formats (NRRD, MHA, DICOM) are hashed and then read with SimpleITK.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.labels import level_id, structure_level
from pipelines.ingest.qc import QCError, check_ct_values, check_geometry
from pipelines.io.volumes import VolumeReadError, is_nifti, read_geometry, read_image, sha256_file
from pipelines.ops.orient import Volume, sitk_from_volume, volume_from_sitk
from pipelines.ops.resample import grids_overlap, resample_onto, same_grid
from pipelines.preprocess import canonical_mask, check_vertebra_files, levels_present, stored_info
from schemas.config import BuildConfig


@dataclass
class Loaded:
    sha256: str
    volume: Volume  # [i, j, k] array, voxel -> RAS affine
    nonfinite: int


def load_once(path: Path) -> Loaded:
    """Read a volume once: hash and decode from the same bytes (NIfTI), else hash then SimpleITK."""
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "no such file")
    if not is_nifti(path):
        sha = sha256_file(path)
        volume = volume_from_sitk(read_image(path))
    else:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        try:
            raw = gzip.decompress(data) if path.name.lower().endswith(".gz") else data
            image = nib.Nifti1Image.from_bytes(raw)
            array = np.asanyarray(image.dataobj)
        except (EOFError, OSError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
                nib.wrapstruct.WrapStructError) as exc:
            raise VolumeReadError(path, f"truncated or corrupt NIfTI ({str(exc)[:120]})") from exc
        # geometry as SimpleITK (and so the build) reads it: qform/sform rules differ between readers
        volume = Volume(array, read_geometry(path)[0])
    array = volume.array
    nonfinite = int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind == "f" else 0
    return Loaded(sha, volume, nonfinite)


def _load(case: CaseFiles, key: str) -> Loaded:
    try:
        return load_once(case.files[key])
    except VolumeReadError as exc:
        raise QCError("unreadable", f"{case.files[key].relative_to(case.root).as_posix()}: {exc.reason}") from exc


def _onto(labels: Volume, ct: Volume, what: str) -> np.ndarray:
    """Labels on the CT grid: as they are when the grids agree, else resampled by world position."""
    if same_grid(labels.affine, labels.array.shape, ct.affine, ct.array.shape):
        return labels.array
    if not grids_overlap(ct.affine, ct.array.shape, labels.affine, labels.array.shape):
        raise QCError("grid_mismatch", f"CT and {what} do not overlap in world coordinates")
    moved = resample_onto(sitk_from_volume(labels), ct.affine, ct.array.shape, "nearest", 0)
    return volume_from_sitk(moved).array


def check_case(case: CaseFiles, config: BuildConfig) -> tuple[dict[str, str], dict]:
    """(sha256 per file key, cases-table fields); QC problems raise QCError (hashes then partial)."""
    hashes: dict[str, str] = {}
    try:
        ct = _load(case, "ct")
        hashes["ct"] = ct.sha256
        if ct.nonfinite:
            raise QCError("non_finite", f"CT holds {ct.nonfinite} non-finite voxels")
        check_geometry(ct.volume.affine, config.qc.spacing_range_mm, "CT")
        check_ct_values(ct.volume.array, config.qc.hu_range)
        labels = np.zeros(ct.volume.array.shape, np.uint8)
        if "mask" in case.files:
            mask = _load(case, "mask")
            hashes["mask"] = mask.sha256
            check_geometry(mask.volume.affine, config.qc.spacing_range_mm, "mask")
            canonical = canonical_mask(case, np.asarray(mask.volume.array))
            labels = _onto(Volume(canonical, mask.volume.affine), ct.volume, "mask")
        for name in case.keyed("structure_mask"):
            part = _load(case, f"structure_mask:{name}")
            hashes[f"structure_mask:{name}"] = part.sha256
            level = structure_level(name)
            if level is not None:
                on_ct = _onto(Volume((part.volume.array != 0).astype(np.uint8), part.volume.affine), ct.volume, name)
                labels[on_ct > 0] = level_id(level)
        for key, path in case.files.items():
            if key not in hashes:
                hashes[key] = sha256_file(path)
        check_vertebra_files(case, ct.volume.affine, ct.volume.array.shape)
        levels, cut = levels_present(labels, config.qc.min_vertebrae)
        return hashes, stored_info(ct.volume.affine, ct.volume.array.shape) | {
            "levels": ",".join(levels), "cut_levels": ",".join(sorted(cut))}
    except QCError as exc:
        exc.hashes = hashes
        raise
