"""Steps 1-4 for one case: read, QC, translate labels, resample CT and mask to the canonical grid."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import find_objects

from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.labels import (id_to_level, level_id, order_cranial_to_caudal, source_lookup,
                                     structure_level, translate)
from pipelines.ingest.qc import QCError, check_ct_values, check_geometry, check_levels
from pipelines.io.volumes import VolumeReadError, read_checked, read_geometry
from pipelines.ops.orient import Volume, affine_from_sitk, axis_codes, volume_from_sitk
from pipelines.ops.resample import (corners_world, grids_overlap, resample_labels, resample_onto, same_grid,
                                    target_grid)
from schemas.config import BuildConfig


@dataclass
class PreparedCase:
    case_id: str
    ct: Volume  # int16 HU on the canonical grid
    labels: Volume  # uint8 canonical level ids on the same grid
    levels: list[str]  # present levels, cranial -> caudal
    info: dict = field(default_factory=dict)  # shape/spacing/orientation as stored, for the cases table
    cut_levels: frozenset[str] = frozenset()  # levels touching the border of the scanned volume


def _read(case: CaseFiles, role: str) -> tuple[sitk.Image, int]:
    """(image, non-finite voxel count) of one role's file."""
    if role not in case.files:
        raise QCError("missing_role", f"case {case.case_id} has no {role} file")
    try:
        return read_checked(case.files[role])
    except VolumeReadError as exc:
        rel = case.files[role].relative_to(case.root).as_posix()
        raise QCError("unreadable", f"{rel}: {exc.reason}") from exc


def _onto_ct(labels_img: sitk.Image, ct_img: sitk.Image, what: str) -> sitk.Image:
    """A label image on the CT grid: different voxel order or grid is resolved by world position."""
    ct_affine, lab_affine = affine_from_sitk(ct_img), affine_from_sitk(labels_img)
    if same_grid(ct_affine, ct_img.GetSize(), lab_affine, labels_img.GetSize()):
        return labels_img
    if not grids_overlap(ct_affine, ct_img.GetSize(), lab_affine, labels_img.GetSize()):
        raise QCError("grid_mismatch", f"CT and {what} do not overlap in world coordinates")
    return resample_onto(labels_img, ct_affine, ct_img.GetSize(), "nearest", 0)


def canonical_mask(case: CaseFiles, mask: np.ndarray) -> np.ndarray:
    """The case's multi-label mask in canonical level ids; ids no table names are quarantined."""
    lut, ignored = source_lookup(case.labels, case.files.get("structures"))
    canonical, unknown = translate(mask, lut, ignored)
    if unknown:
        raise QCError("unknown_labels", f"mask ids {sorted(unknown)} are not in the {case.labels} table")
    return canonical


def levels_present(labels: np.ndarray, min_vertebrae: int) -> tuple[list[str], frozenset[str]]:
    """(levels cranial -> caudal, levels cut by the volume border) of a canonical label array."""
    names = id_to_level()
    levels = order_cranial_to_caudal([names[i] for i in np.unique(labels).tolist() if i in names])
    check_levels(levels, min_vertebrae)
    return levels, frozenset(names[i] for i in touching_border(labels) if i in names)


def _multilabel_mask(case: CaseFiles, ct_img: sitk.Image, config: BuildConfig) -> sitk.Image:
    mask_img, _ = _read(case, "mask")
    check_geometry(affine_from_sitk(mask_img), config.qc.spacing_range_mm, "mask")
    labels_img = sitk.GetImageFromArray(canonical_mask(case, sitk.GetArrayViewFromImage(mask_img)))
    labels_img.CopyInformation(mask_img)
    return _onto_ct(labels_img, ct_img, "mask")


def _merge_structure_masks(case: CaseFiles, ct_img: sitk.Image, config: BuildConfig) -> sitk.Image:
    """One canonical label map from per-structure binary masks; non-vertebra structures are skipped."""
    merged = np.zeros(ct_img.GetSize()[::-1], np.uint8)
    for name, path in case.keyed("structure_mask").items():
        level = structure_level(name)
        if level is None:
            continue
        try:
            image, _ = read_checked(path)
        except VolumeReadError as exc:
            raise QCError("unreadable", f"{path.relative_to(case.root).as_posix()}: {exc.reason}") from exc
        check_geometry(affine_from_sitk(image), config.qc.spacing_range_mm, name)
        binary = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
        on_ct = sitk.GetArrayFromImage(_onto_ct(binary, ct_img, name))  # a copy: the image is temporary
        merged[on_ct > 0] = level_id(level)
    out = sitk.GetImageFromArray(merged)
    out.CopyInformation(ct_img)
    return out


def check_vertebra_files(case: CaseFiles, ct_affine: np.ndarray, ct_shape) -> None:
    """Single-vertebra crops and masks must lie inside their case's CT (headers only, no voxels)."""
    ct_corners = corners_world(ct_affine, tuple(ct_shape))
    lo, hi = ct_corners.min(0) - 1.0, ct_corners.max(0) + 1.0
    for role in ("vertebra_ct", "vertebra_mask"):
        for level, path in case.keyed(role).items():
            try:
                affine, size = read_geometry(path)
            except VolumeReadError as exc:
                raise QCError("unreadable", f"{path.relative_to(case.root).as_posix()}: {exc.reason}") from exc
            corners = corners_world(affine, size)
            if np.any(corners.min(0) < lo) or np.any(corners.max(0) > hi):
                raise QCError("vertebra_mismatch", f"{path.relative_to(case.root).as_posix()} ({level}) lies "
                                                   f"outside the CT of case {case.case_id}")


def stored_info(affine: np.ndarray, shape) -> dict:
    """Cases-table fields of a CT as stored: shape, spacing, orientation."""
    return {
        "shape": json.dumps([int(n) for n in shape]),
        "spacing": json.dumps([round(float(x), 6) for x in np.linalg.norm(affine[:3, :3], axis=0)]),
        "orientation": axis_codes(affine),
    }


def prepare_case(case: CaseFiles, config: BuildConfig) -> PreparedCase:
    """Read, check, translate and resample one case; raises QCError for quarantinable problems."""
    ct_img, ct_nonfinite = _read(case, "ct")
    info = stored_info(affine_from_sitk(ct_img), ct_img.GetSize())
    if ct_nonfinite:
        raise QCError("non_finite", f"CT holds {ct_nonfinite} non-finite voxels")
    check_geometry(affine_from_sitk(ct_img), config.qc.spacing_range_mm, "CT")
    check_ct_values(sitk.GetArrayViewFromImage(ct_img), config.qc.hu_range)
    check_vertebra_files(case, affine_from_sitk(ct_img), ct_img.GetSize())
    if "mask" in case.files:
        labels_img = _multilabel_mask(case, ct_img, config)
    else:
        labels_img = _merge_structure_masks(case, ct_img, config)

    levels, cut = levels_present(sitk.GetArrayViewFromImage(labels_img), config.qc.min_vertebrae)

    rs = config.resample
    affine, shape = target_grid(affine_from_sitk(ct_img), ct_img.GetSize(), rs.spacing_mm, rs.orientation)
    ct_rs = resample_onto(sitk.Cast(ct_img, sitk.sitkFloat32), affine, shape, rs.ct_interpolator, rs.ct_pad_hu)
    lab_rs = resample_labels(labels_img, affine, shape, rs.label_interpolator)
    kept = set(np.unique(sitk.GetArrayViewFromImage(lab_rs)).tolist())
    names = id_to_level()
    lost = [names[i] for i in np.unique(sitk.GetArrayViewFromImage(labels_img)).tolist() if i and i not in kept]
    if lost:
        raise QCError("label_lost", f"levels {lost} vanished when resampling to {rs.spacing_mm} mm")
    ct = volume_from_sitk(ct_rs)
    hu = np.clip(np.rint(ct.array), -32768, 32767).astype(np.int16)
    return PreparedCase(
        case.case_id,
        Volume(hu, ct.affine),
        Volume(volume_from_sitk(lab_rs).array.astype(np.uint8), ct.affine),
        levels,
        info | {"levels": ",".join(levels)},
        cut,
    )


def touching_border(labels: np.ndarray) -> list[int]:
    """Label ids whose bounding box reaches the first or last voxel along any axis."""
    out = []
    for index, box in enumerate(find_objects(labels), start=1):
        if box is not None and any(sl.start == 0 or sl.stop == n for sl, n in zip(box, labels.shape)):
            out.append(index)
    return out
