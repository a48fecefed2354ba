"""Real radiographs as tensors in the conventions of the rendered views, so a trainer validates on
real images with the code it trains with: one image per item, `real_image` (1, H, W) float32 with
bone bright, optionally fitted to a detector geometry (a DRRStream's `geometry`) exactly as
`spineforge fit-xray` fits it -- central field cropped or padded at the detector plane, resampled to
the geometry's pixels -- with `valid` marking real image data. The same transforms apply
(`pipelines.loaders.transforms`, `pipelines.loaders.augment.Augment`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipelines.io.radiographs import read_radiograph
from pipelines.ops.xray import fit_xray
from schemas.detector import Geometry
from schemas.manifest import Col
from schemas.shard_layout import Key


class RadiographDataset(Dataset):
    """Radiograph files (DICOM DX/CR/XA, fit-xray's outputs, MHA/NRRD/NIfTI/PNG/TIFF) as samples.

    Each sample: `sample_id` (the file name), `real_image` and `valid` (1, H, W), `pixel_spacing_mm`
    (row, column) of the returned grid, `source_spacing_mm` and `spacing_source` (the tag it came from),
    `sdd_mm` / `sod_mm` from the file when it states them, `inverted` (MONOCHROME1 turned bone bright).
    `spacing_mm` overrides every file's spacing (for PNG/TIFF, which carry none)."""

    def __init__(self, paths: Sequence[str | Path], geometry: Geometry | None = None,
                 transform: Callable[[dict], dict] | None = None, spacing_mm: tuple[float, float] | None = None):
        self.paths = [Path(p) for p in paths]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"radiographs not found: {', '.join(missing[:5])}")
        self.geometry, self.transform, self.spacing_mm = geometry, transform, spacing_mm

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        r = read_radiograph(path, self.spacing_mm)
        image, valid, spacing = r.image, np.ones(r.image.shape, bool), r.spacing_mm
        if self.geometry is not None:
            g = self.geometry
            spacing = (g.pixel_spacing_mm, g.pixel_spacing_mm)
            image, valid, _ = fit_xray(image, r.spacing_mm, (g.height, g.width), spacing, pad_value=float(image.min()))
        sample = {Col.SAMPLE_ID: path.name, Key.RADIOGRAPH: torch.from_numpy(np.ascontiguousarray(image))[None],
                  Key.VALID: torch.from_numpy(valid)[None], "pixel_spacing_mm": torch.tensor(spacing, dtype=torch.float64),
                  "source_spacing_mm": torch.tensor(r.spacing_mm, dtype=torch.float64), "spacing_source": r.spacing_source,
                  "sdd_mm": r.sdd_mm if r.sdd_mm is not None else float("nan"),
                  "sod_mm": r.sod_mm if r.sod_mm is not None else float("nan"),
                  "modality": r.modality, "inverted": r.inverted}
        return self.transform(sample) if self.transform else sample
