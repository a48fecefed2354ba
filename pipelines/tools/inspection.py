"""`spineforge inspect`: what a published version holds, for people and for scripts (--json)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.io.remote_version import open_version
from schemas.manifest import (
    QC_QUARANTINED,
    QUARANTINE_COLUMNS,
    Col,
    describe_quarantine,
)


def _config_line(card) -> str:
    cfg = card.build_config()
    d = cfg.detector
    return "config: " + ", ".join([
        f"{cfg.resample.spacing_mm} mm {cfg.resample.orientation}",
        f"vertebra {cfg.vertebra.size}^3 {'/'.join(cfg.vertebra.levels)}",
        f"x2ct {cfg.x2ct.size}^3 at {cfg.x2ct.z_offsets_mm} mm",
        f"drr {d.height}x{d.width} at {d.pixel_spacing_mm} mm, SDD {d.sdd_mm} mm, {d.renderer}",
        f"splits {cfg.splits.model_dump()}"])


def inspect_version(version_dir: str | Path, store=None, cache_dir: str | Path | None = None) -> dict:
    """A version folder or an s3:// version (its tables read through the cache in `cache_dir`)."""
    version = open_version(version_dir, cache_dir, store=store)
    card, cases = version.card, version.cases
    quarantined = cases.loc[cases[Col.QC_STATUS] == QC_QUARANTINED, QUARANTINE_COLUMNS].to_dict("records")
    total_bytes = sum(s.bytes for s in card.shards)
    split_table = pd.DataFrame(card.counts.by_product_split).fillna(0).astype(int).T
    split_table["total"] = split_table.sum(axis=1)
    lines = [
        f"{card.name} {card.version}  build_id {card.build_id}  schema {card.schema_version}",
        f"created {card.created}  code {card.code_version}  seed {card.seed}",
        f"cases: {card.cases.discovered} discovered, {card.cases.accepted} accepted, "
        f"{card.cases.quarantined} quarantined",
        "", "samples per product and split:", split_table.to_string(), "",
        "samples per level: " + ", ".join(f"{k}={v}" for k, v in card.counts.by_level.items()),
        f"shards: {len(card.shards)} files, {total_bytes / 1e6:.1f} MB",
    ]
    lines += [f"  {s.file}  {s.n_samples} samples  {s.bytes / 1e6:.1f} MB" for s in card.shards]
    lines += ["", "lineage:",
              f"  inputs: {', '.join(card.inputs)}",
              f"  input_hash: {card.input_hash}",
              f"  unmatched files: {len(card.unmatched_files)}, ingest problems: {len(card.ingest_problems)}",
              _config_line(card)]
    if quarantined:
        lines += ["quarantined:"] + [f"  {describe_quarantine(q)}" for q in quarantined]
    return {"card": card.model_dump(mode="json"), QC_QUARANTINED: quarantined, "text": "\n".join(lines)}
