"""Resample one loaded case: CT and labels to the canonical grid (1 mm RAS by default)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from pipelines.errors import QCError
from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.labels import id_to_level
from pipelines.ingest.load import LoadedCase, StoredGeometry, load_case
from pipelines.ops.orient import Volume, affine_from_sitk, volume_from_sitk
from pipelines.ops.resample import resample_labels, resample_onto, target_grid
from schemas.config import BuildConfig, ResampleConfig
from schemas.manifest import QC


@dataclass
class PreparedCase:
    case_id: str
    ct: Volume  # int16 HU on the canonical grid
    labels: Volume  # uint8 canonical level ids on the same grid
    levels: list[str]  # present levels, cranial -> caudal
    cut_levels: frozenset[str]  # levels touching the border of the scanned volume
    stored: StoredGeometry  # the CT as stored, for the cases table
    hashes: dict[str, str]  # file key -> sha256, from the one read of each file
    fingerprint: list[str] = field(default_factory=list)  # CT slice hashes as stored (ops/fingerprint.py)
    notes: list[str] = field(default_factory=list)  # choices made while reading (e.g. DICOM series not used)


def lost_levels(before: sitk.Image, after: sitk.Image) -> list[str]:
    """Levels present before resampling and absent after."""
    kept = set(np.unique(sitk.GetArrayViewFromImage(after)).tolist())
    names = id_to_level()
    return [names[i] for i in np.unique(sitk.GetArrayViewFromImage(before)).tolist() if i and i not in kept]


def prepare_case(case: LoadedCase, rs: ResampleConfig) -> PreparedCase:
    """Resample a loaded case; a level that vanishes on the new grid raises QCError('label_lost')."""
    affine, shape = target_grid(affine_from_sitk(case.ct), case.ct.GetSize(), rs.spacing_mm, rs.orientation)
    ct_rs = resample_onto(sitk.Cast(case.ct, sitk.sitkFloat32), affine, shape, rs.ct_interpolator, rs.ct_pad_hu)
    lab_rs = resample_labels(case.labels, affine, shape, rs.label_interpolator)
    lost = lost_levels(case.labels, lab_rs)
    if lost:
        raise QCError(QC.LABEL_LOST, f"levels {lost} vanished when resampling to {rs.spacing_mm} mm")
    ct = volume_from_sitk(ct_rs)
    hu = np.clip(np.rint(ct.array), -32768, 32767).astype(np.int16)
    labels = volume_from_sitk(lab_rs).array.astype(np.uint8)
    return PreparedCase(case.case_id, Volume(hu, ct.affine), Volume(labels, ct.affine), case.levels,
                        case.cut_levels, case.stored, case.hashes, case.fingerprint, case.notes)


def load_and_prepare(case: CaseFiles, config: BuildConfig, expected_hashes: dict[str, str] | None = None) -> PreparedCase:
    """One discovered case read, checked and resampled: the shared load-and-QC path, then resampling."""
    loaded = load_case(case, config, expected_hashes)
    try:
        return prepare_case(loaded, config.resample)
    except QCError as exc:
        exc.hashes = loaded.hashes
        raise
