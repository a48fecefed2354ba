"""`spineforge export x2ct DIR OUT`: files that X2CT-GAN trains on as it trains on its own data.

OUT/<sample>/ct_xray_data.h5 holds `ct` (uint16 HU + 1024, axes (D, H, W)), `xray1` and `xray2`
(uint8, each scaled by its maximum, on the CT's (D, W) and (D, H) grids) -- see `ops/x2ct.py` for
the conventions and where they come from; OUT/train.txt, OUT/test.txt (and val.txt when the version
has a validation split) list the sample folders, one per line; OUT/export.json records all of it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.errors import ExportError
from pipelines.io.shards import PublishedVersion, atomic_h5
from pipelines.ops.camera import base_camera
from pipelines.ops.x2ct import (
    VIEW_PLANES,
    plane_points,
    resize_volume,
    scanner_values,
    to_uint8_by_max,
    to_x2ct_order,
    view_on_plane,
)
from schemas.detector import Geometry
from schemas.export import x2ct_export_record
from schemas.layout import EXPORT_RECORD, X2CT_LIST_SUFFIX, X2CT_SAMPLE_FILE
from schemas.manifest import X2CT
from schemas.shard_layout import Attr, Key

ALWAYS_LISTED = ("train", "test")  # X2CT-GAN reads these two lists; val only when there is one
VIEW_OF = {Key.XRAY1: ("AP", 0), Key.XRAY2: ("LAT", 1)}  # stored view order: AP, then lateral


def x2ct_arrays(ct_hu: np.ndarray, xrays: np.ndarray, attrs, ct_size: int | None,
                xray_size: int | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One stored x2ct sample -> ({ct, xray1, xray2, spacing}, affine of the exported CT)."""
    affine = np.asarray(attrs[Attr.AFFINE], np.float64)
    geometry = Geometry.from_record(json.loads(attrs[Attr.DETECTOR]))
    iso = np.asarray(attrs[Attr.ISOCENTER], np.float64)
    hu, affine = to_x2ct_order(ct_hu, affine)
    hu, affine = resize_volume(hu, affine, ct_size or hu.shape[0])
    n_xray = xray_size or hu.shape[0]
    out = {Key.CT: scanner_values(hu)}
    for key, (view, index) in VIEW_OF.items():
        points = plane_points(affine, hu.shape, VIEW_PLANES[key], n_xray)
        out[key] = to_uint8_by_max(view_on_plane(xrays[index], base_camera(view, geometry.sod_mm, iso),
                                                 geometry, points))
    out[Key.SPACING] = np.linalg.norm(affine[:3, :3], axis=0).astype(np.float64)
    return out, affine


def export_x2ct(version_dir: Path, out: Path, ct_size: int | None = None, xray_size: int | None = None,
                progress=None) -> dict:
    version = PublishedVersion(Path(version_dir))
    out = Path(out)
    for name, value in (("--ct-size", ct_size), ("--xray-size", xray_size)):
        if value is not None and value < 2:
            raise ExportError(f"{name} must be at least 2, got {value}")
    rows = version.samples(X2CT)
    if rows.empty:
        raise ExportError(f"{version_dir} holds no x2ct samples (is the x2ct product enabled in its config?)")
    out.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {}
    shapes: dict[str, list[int]] = {}
    for n, (row, group) in enumerate(version.iter_groups(rows)):
        arrays, _ = x2ct_arrays(group[Key.CT][()], np.stack([group[Key.XRAY1][()], group[Key.XRAY2][()]]),
                                group.attrs, ct_size, xray_size)
        folder = out / row.sample_id
        folder.mkdir(exist_ok=True)
        with atomic_h5(folder / X2CT_SAMPLE_FILE) as dst:
            for key, value in arrays.items():
                dst.create_dataset(key, data=value)
        shapes = {k: list(v.shape) for k, v in arrays.items() if k != Key.SPACING}
        lists.setdefault(row.split, []).append(row.sample_id)
        if progress:
            progress(f"x2ct export {n + 1}/{len(rows)}: {row.sample_id}")
    written = {}
    for split in (*ALWAYS_LISTED, *sorted(set(lists) - set(ALWAYS_LISTED))):
        names = sorted(lists.get(split, []))
        (out / f"{split}{X2CT_LIST_SUFFIX}").write_text("".join(f"{s}\n" for s in names))
        written[split] = len(names)
    card = version.card
    record = x2ct_export_record({"dataset": card.name, "version": card.version, "build_id": card.build_id},
                                shapes, written)
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return {"out": str(out), "samples": int(len(rows)), "lists": written, "shapes": shapes}
