"""Real radiographs as tensors in the conventions of the rendered views, so a trainer validates on
real images with the code it trains with: one image per item, `real_image` (1, H, W) float32 with
bone bright, optionally fitted to a detector geometry (a DRRStream's `geometry`) exactly as
`spineforge fit-xray` fits it -- central field cropped or padded at the detector plane, resampled to
the geometry's pixels -- with `valid` marking real image data. The same transforms apply
(`pipelines.loaders.transforms`, `pipelines.loaders.augment.Augment`)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipelines.io.radiographs import radiograph_problem, read_radiograph
from pipelines.ops.xray import fit_xray
from schemas.detector import Geometry, SpacingPlane
from schemas.manifest import Col
from schemas.shard_layout import Key


class RadiographDataset(Dataset):
    """Radiograph files (DICOM DX/CR/XA/RF, fit-xray's outputs, MHA/NRRD/NIfTI, PNG/TIFF with a physical
    pixel size) as samples.

    Each sample: `sample_id` (the file name), `real_image` and `valid` (1, H, W), `pixel_spacing_mm`
    (row, column) of the returned grid, `source_spacing_mm`, `spacing_source` (the tag it came from) and
    `spacing_plane`, and the geometry the file states (`sdd_mm`, `sod_mm`, `primary_angle_deg`,
    `secondary_angle_deg`: NaN where absent), `view_position`, `modality`, `inverted` (MONOCHROME1 turned
    bone bright). `spacing_mm` overrides every file's spacing (needed for files that state none);
    `spacing_plane` 'isocentre' takes DICOM spacings through their magnification factor.

    Files that cannot be used (no spacing, not a grey image, unreadable) are left out with a row in
    `report` (path, spacing_source, reason) and a warning; none usable is an error naming the reasons.
    """

    def __init__(self, paths: Sequence[str | Path] | str | Path, geometry: Geometry | None = None,
                 transform: Callable[[dict], dict] | None = None, spacing_mm: tuple[float, float] | None = None,
                 spacing_plane: str = SpacingPlane.DETECTOR, frame: int = 0, voi: bool = False):
        if isinstance(paths, (str, Path)):  # a folder: its files, in name order
            folder = Path(paths)
            if not folder.is_dir():
                raise FileNotFoundError(f"radiographs not found: {folder} is not a folder")
            paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        given = [Path(p) for p in paths]
        missing = [str(p) for p in given if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"radiographs not found: {', '.join(missing[:5])}")
        rows = []
        for path in given:
            source, reason = radiograph_problem(path, spacing_mm, spacing_plane)
            rows.append({"path": str(path), "usable": not reason, "spacing_source": source, "reason": reason})
        self.report = pd.DataFrame(rows, columns=["path", "usable", "spacing_source", "reason"])
        refused = self.report[~self.report["usable"]]
        if len(refused) == len(given):
            reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in zip(refused["path"][:5], refused["reason"][:5]))
            raise ValueError(f"no usable radiograph among {len(given)} file(s): {reasons}")
        if len(refused):
            warnings.warn(f"{len(refused)} of {len(given)} radiograph(s) left out (see .report): "
                          f"{Path(refused['path'].iloc[0]).name}: {refused['reason'].iloc[0]}", stacklevel=2)
        self.paths = [Path(p) for p in self.report.loc[self.report["usable"], "path"]]
        self.geometry, self.transform, self.spacing_mm = geometry, transform, spacing_mm
        self.spacing_plane, self.frame, self.voi = spacing_plane, frame, voi

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        r = read_radiograph(path, self.spacing_mm, self.spacing_plane, self.frame, self.voi)
        image, valid, spacing = r.image, np.ones(r.image.shape, bool), r.spacing_mm
        if self.geometry is not None:
            g = self.geometry
            spacing = (g.pixel_spacing_mm, g.pixel_spacing_mm)
            image, valid, _ = fit_xray(image, r.spacing_mm, (g.height, g.width), spacing, pad_value=float(image.min()))
        nan = float("nan")
        sample = {Col.SAMPLE_ID: path.name, Key.RADIOGRAPH: torch.from_numpy(np.ascontiguousarray(image))[None],
                  Key.VALID: torch.from_numpy(valid)[None], "pixel_spacing_mm": torch.tensor(spacing, dtype=torch.float64),
                  "source_spacing_mm": torch.tensor(r.spacing_mm, dtype=torch.float64), "spacing_source": r.spacing_source,
                  "spacing_plane": r.spacing_plane,
                  "sdd_mm": r.sdd_mm if r.sdd_mm is not None else nan,
                  "sod_mm": r.sod_mm if r.sod_mm is not None else nan,
                  "primary_angle_deg": r.primary_angle_deg if r.primary_angle_deg is not None else nan,
                  "secondary_angle_deg": r.secondary_angle_deg if r.secondary_angle_deg is not None else nan,
                  "view_position": r.view_position, "modality": r.modality, "inverted": r.inverted}
        return self.transform(sample) if self.transform else sample
