"""Read, QC and labels for one case, the one path `spineforge ingest` and the build share: read each file
once, check it, translate its labels and put them on the CT's grid.

Quarantinable problems raise QCError (with the hashes of the files read so far); a mask on another
grid than its CT is resampled onto it by world position (nearest neighbour), never rejected for it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import find_objects

from pipelines.errors import QCError, VolumeReadError
from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.labels import (
    id_to_level,
    level_id,
    order_cranial_to_caudal,
    source_lookup,
    structure_level,
    translate,
)
from pipelines.ingest.qc import check_ct_values, check_geometry, check_levels
from pipelines.io.hashing import sha256_file
from pipelines.io.volumes import LoadedVolume, load_volume, read_geometry
from pipelines.ops.fingerprint import slice_hashes
from pipelines.ops.orient import affine_from_sitk, axis_codes
from pipelines.ops.resample import (
    corners_world,
    grids_overlap,
    resample_onto,
    same_grid,
)
from schemas.config import BuildConfig
from schemas.manifest import QC
from schemas.rules import Role, role_key


@dataclass
class StoredGeometry:
    """The CT as stored, for the cases table."""

    shape: str  # JSON [x, y, z]
    spacing: str  # JSON [sx, sy, sz] mm
    orientation: str  # axis codes, e.g. LAS

    @classmethod
    def of(cls, affine: np.ndarray, shape) -> StoredGeometry:
        return cls(json.dumps([int(n) for n in shape]),
                   json.dumps([round(float(x), 6) for x in np.linalg.norm(affine[:3, :3], axis=0)]),
                   axis_codes(affine))


@dataclass
class LoadedCase:
    """A case read and checked: CT and canonical labels on the CT's grid, as stored (not resampled)."""

    case_id: str
    ct: sitk.Image
    labels: sitk.Image  # uint8 canonical level ids
    levels: list[str]  # cranial -> caudal
    cut_levels: frozenset[str]  # levels whose vertebra touches the scan border
    stored: StoredGeometry
    hashes: dict[str, str] = field(default_factory=dict)  # file key -> sha256
    fingerprint: list[str] = field(default_factory=list)  # CT slice hashes (ops/fingerprint.py)
    notes: list[str] = field(default_factory=list)  # choices made while reading, for the cases table


def has_required_roles(case: CaseFiles) -> list[str]:
    """The roles a case lacks to be processed: a CT, and a multi-label mask or structure masks."""
    has_mask = Role.MASK in case.files or bool(case.keyed(Role.STRUCTURE_MASK))
    return [role for role, ok in ((Role.CT, Role.CT in case.files), (Role.MASK, has_mask)) if not ok]


class _Reader:
    """Reads a case's files once each, remembering their hashes (also for QCError)."""

    def __init__(self, case: CaseFiles, expected: dict[str, str] | None):
        self.case, self.expected, self.hashes = case, expected or {}, {}
        self.notes: list[str] = []  # what a reader chose and left out (e.g. DICOM series not used)

    def rel(self, key: str) -> str:
        return self.case.files[key].relative_to(self.case.root).as_posix()

    def fail(self, reason: str, message: str) -> QCError:
        return QCError(reason, message, self.hashes)

    def load(self, key: str) -> LoadedVolume:
        try:
            loaded = load_volume(self.case.files[key])
        except VolumeReadError as exc:
            raise self.fail(exc.code, f"{self.rel(key)}: {exc.reason}") from exc
        self.hashes[key] = loaded.sha256
        self.notes += loaded.notes
        if key in self.expected and self.expected[key] != loaded.sha256:
            raise RuntimeError(f"{self.rel(key)} changed while the build was running (content hash differs)")
        return loaded

    def geometry(self, key: str):
        try:
            return read_geometry(self.case.files[key])
        except VolumeReadError as exc:
            raise self.fail(QC.UNREADABLE, f"{self.rel(key)}: {exc.reason}") from exc

    def remaining_hashes(self) -> dict[str, str]:
        """Hashes of the files no check decoded (vertebra crops, centroids, structures.csv)."""
        for key, path in self.case.files.items():
            if key not in self.hashes:
                self.hashes[key] = self.expected.get(key) or sha256_file(path)
        return self.hashes


def _onto_ct(labels: sitk.Image, ct: sitk.Image, what: str, reader: _Reader) -> sitk.Image:
    """A label image on the CT grid: different voxel order or grid is resolved by world position."""
    ct_affine, lab_affine = affine_from_sitk(ct), affine_from_sitk(labels)
    if same_grid(ct_affine, ct.GetSize(), lab_affine, labels.GetSize()):
        return labels
    if not grids_overlap(ct_affine, ct.GetSize(), lab_affine, labels.GetSize()):
        raise reader.fail(QC.GRID_MISMATCH, f"CT and {what} do not overlap in world coordinates")
    return resample_onto(labels, ct_affine, ct.GetSize(), "nearest", 0)


def _multilabel_mask(case: CaseFiles, ct: sitk.Image, config: BuildConfig, reader: _Reader) -> sitk.Image:
    mask = reader.load(Role.MASK).image
    check_geometry(affine_from_sitk(mask), config.qc.spacing_range_mm, Role.MASK)
    lut, ignored = source_lookup(case.labels, case.files.get(Role.STRUCTURES))
    canonical, unknown = translate(sitk.GetArrayViewFromImage(mask), lut, ignored)
    if unknown:
        raise reader.fail(QC.UNKNOWN_LABELS, f"mask ids {sorted(unknown)} are not in the {case.labels} table")
    labels = sitk.GetImageFromArray(canonical)
    labels.CopyInformation(mask)
    return _onto_ct(labels, ct, Role.MASK, reader)


def _merged_structure_masks(case: CaseFiles, ct: sitk.Image, config: BuildConfig, reader: _Reader) -> sitk.Image:
    """One canonical label map from per-structure binary masks; non-vertebra structures are skipped."""
    merged = np.zeros(ct.GetSize()[::-1], np.uint8)
    for name in case.keyed(Role.STRUCTURE_MASK):
        level = structure_level(name)
        if level is None:  # not a vertebra: only hashed
            continue
        image = reader.load(role_key(Role.STRUCTURE_MASK, name)).image
        check_geometry(affine_from_sitk(image), config.qc.spacing_range_mm, name)
        binary = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
        on_ct = sitk.GetArrayFromImage(_onto_ct(binary, ct, name, reader))  # a copy: the image is temporary
        merged[on_ct > 0] = level_id(level)
    out = sitk.GetImageFromArray(merged)
    out.CopyInformation(ct)
    return out


def _check_vertebra_files(case: CaseFiles, ct: sitk.Image, reader: _Reader) -> None:
    """Single-vertebra crops and masks must lie inside their case's CT (headers only, no voxels)."""
    ct_corners = corners_world(affine_from_sitk(ct), tuple(ct.GetSize()))
    lo, hi = ct_corners.min(0) - 1.0, ct_corners.max(0) + 1.0
    for role in (Role.VERTEBRA_CT, Role.VERTEBRA_MASK):
        for level in case.keyed(role):
            key = role_key(role, level)
            affine, size = reader.geometry(key)
            corners = corners_world(affine, size)
            if np.any(corners.min(0) < lo) or np.any(corners.max(0) > hi):
                raise reader.fail(QC.VERTEBRA_MISMATCH,
                                  f"{reader.rel(key)} ({level}) lies outside the CT of case {case.case_id}")


def touching_border(labels: np.ndarray) -> list[int]:
    """Label ids whose bounding box reaches the first or last voxel along any axis."""
    out = []
    for index, box in enumerate(find_objects(labels), start=1):
        if box is not None and any(sl.start == 0 or sl.stop == n for sl, n in zip(box, labels.shape)):
            out.append(index)
    return out


def levels_present(labels: np.ndarray, min_vertebrae: int) -> tuple[list[str], frozenset[str]]:
    """(levels cranial -> caudal, levels cut by the volume border) of a canonical label array."""
    names = id_to_level()
    levels = order_cranial_to_caudal([names[i] for i in np.unique(labels).tolist() if i in names])
    check_levels(levels, min_vertebrae)
    return levels, frozenset(names[i] for i in touching_border(labels) if i in names)


def load_case(case: CaseFiles, config: BuildConfig, expected: dict[str, str] | None = None) -> LoadedCase:
    """Read, check and label one case; raises QCError for quarantinable problems.

    `expected` are content hashes found at discovery: a file that no longer has its hash raises
    RuntimeError (it changed during the build), which the build retries and then quarantines.
    """
    missing = has_required_roles(case)
    if missing:
        raise QCError(QC.MISSING_ROLE, f"no {' or '.join(missing)} file matched for this case")
    reader = _Reader(case, expected)
    try:
        loaded = reader.load(Role.CT)
        ct = loaded.image
        stored = StoredGeometry.of(loaded.affine, loaded.size)
        if loaded.nonfinite:
            raise reader.fail(QC.NON_FINITE, f"CT holds {loaded.nonfinite} non-finite voxels")
        check_geometry(loaded.affine, config.qc.spacing_range_mm, "CT")
        check_ct_values(loaded.array_view(), config.qc.hu_range)
        fingerprint = slice_hashes(loaded.array_view().transpose(2, 1, 0), loaded.affine)  # same read
        _check_vertebra_files(case, ct, reader)
        if Role.MASK in case.files:
            labels = _multilabel_mask(case, ct, config, reader)
        else:
            labels = _merged_structure_masks(case, ct, config, reader)
        levels, cut = levels_present(sitk.GetArrayViewFromImage(labels), config.qc.min_vertebrae)
    except QCError as exc:
        exc.hashes = reader.remaining_hashes()
        raise
    return LoadedCase(case.case_id, ct, labels, levels, cut, stored, reader.remaining_hashes(), fingerprint,
                      reader.notes)
