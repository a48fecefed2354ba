"""`spineforge xray-info`: what SpineForge reads from radiograph files -- encoding, frames, size, the pixel
spacing and the tag it came from, SDD/SOD and direction -- and whether each is read, refused (with the
reason) or broken, without writing anything."""
from __future__ import annotations

from pathlib import Path

from pipelines.errors import VolumeReadError
from pipelines.io.radiographs import SpacingUnknownError, read_radiograph
from pipelines.physics.radiograph_view import gantry_of


def _files(inputs: list[Path]) -> list[Path]:
    out = []
    for path in inputs:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            out.append(path)
    return out


def _mm(value) -> str:
    return "" if value is None else f"{value:g}"


def radiograph_row(path: Path, spacing_mm=None) -> dict:
    """One file: what its header states and what reading it gives (`outcome` 'read', or why not)."""
    row = {"file": path.name, "path": str(path)}
    try:
        r = read_radiograph(path, spacing_mm)
        row["outcome"] = "read"
    except SpacingUnknownError as exc:
        row["outcome"] = f"refused: {exc.reason.split('; give it')[0]}"
        try:  # do its pixels decode? (the spacing stays unknown: nothing is fitted or rendered with it)
            r = read_radiograph(path, (1.0, 1.0))
            row["pixels"] = "decoded"
        except (VolumeReadError, ValueError) as inner:
            row["pixels"] = f"broken: {getattr(inner, 'reason', inner)}"
            return row
        row.update(spacing_mm="", spacing_source="none")
    except (VolumeReadError, ValueError) as exc:
        row["outcome"] = f"broken: {getattr(exc, 'reason', exc)}"
        return row
    row.setdefault("pixels", "decoded")
    row.setdefault("spacing_mm", "x".join(f"{v:g}" for v in r.spacing_mm))
    row.setdefault("spacing_source", r.spacing_source)
    try:
        _, direction, assumed = gantry_of(r.primary_angle_deg, r.secondary_angle_deg, r.view_position, path)
        direction += " (assumed)" if assumed else ""
    except VolumeReadError as exc:
        direction = exc.reason
    row.update(modality=r.modality, encoding=r.transfer_syntax or path.suffix, frames=r.frames,
               size="x".join(map(str, r.shape)), sdd_mm=_mm(r.sdd_mm), sod_mm=_mm(r.sod_mm), direction=direction,
               photometric=r.photometric, inverted=r.inverted, lossy=r.lossy, notes=list(r.notes),
               value_range=r.value_range)
    return row


def radiograph_rows(inputs: list[Path], spacing_mm=None) -> list[dict]:
    files = _files(inputs)
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing[:5])}")
    return [radiograph_row(p, spacing_mm) for p in files]
