"""report.html: a QC page with pictures (DRR contact sheet, patch mid-slices with mask overlay)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipelines.ingest.labels import order_cranial_to_caudal
from pipelines.io.shards import open_shard  # noqa: E402  (registers the Blosc filter)
from schemas.card import DatasetCard  # noqa: E402
from schemas.layout import REPORT_HTML, shard_path  # noqa: E402
from schemas.manifest import (  # noqa: E402
    DRR,
    QC_QUARANTINED,
    QC_TABLE_COLUMNS,
    QUARANTINE_COLUMNS,
    VERTEBRA,
    X2CT,
    Col,
)
from schemas.shard_layout import Key  # noqa: E402

MAX_TILES = 8


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _sheet(tiles: list[tuple[str, np.ndarray, np.ndarray | None]]) -> str:
    """A row-wrapped grid of grey images, optional red mask contour, titled."""
    cols = min(4, len(tiles))
    rows = int(np.ceil(len(tiles) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, mask) in zip(axes.ravel(), tiles):
        ax.imshow(image, cmap="gray")
        if mask is not None and mask.any():
            ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(title, fontsize=8)
    return _png(fig)


def _tiles(version_dir: Path, manifest: pd.DataFrame, product: str) -> list:
    rows = manifest[manifest[Col.PRODUCT] == product].head(MAX_TILES // 3 if product != VERTEBRA else MAX_TILES)
    tiles = []
    for row in rows.itertuples():
        with open_shard(shard_path(version_dir, row.shard)) as h5:
            g = h5[row.key]
            if product == DRR:
                tiles += [(f"{row.sample_id} AP", g[Key.DRR][0], None),
                          (f"{row.ref_level}->{row.target_level} vertebra AP", g[Key.DRR_VERTEBRA][0], None)]
                if Key.DRR_XRAY in g:  # the realistic view beside the exact one, instruments outlined
                    tiles.append((f"{row.sample_id} AP realistic", g[Key.DRR_XRAY][0], g[Key.INSTRUMENT_MASK][0] > 0))
            elif product == X2CT:
                tiles += [(f"{row.sample_id} {Key.XRAY1}", g[Key.XRAY1][()], None),
                          (f"{row.sample_id} {Key.XRAY2}", g[Key.XRAY2][()], None)]
                if Key.XRAY1_XRAY in g:
                    tiles += [(f"{row.sample_id} {Key.XRAY1_XRAY}", g[Key.XRAY1_XRAY][()], None),
                              (f"{row.sample_id} {Key.XRAY2_XRAY}", g[Key.XRAY2_XRAY][()], None)]
            else:
                mid = g[Key.CT].shape[1] // 2
                tiles.append((f"{row.sample_id} coronal", g[Key.CT][:, mid, :].T[::-1],
                              g[Key.MASK][:, mid, :].T[::-1]))
    return tiles


def level_bars(by_level: dict[str, int]) -> tuple[list[str], list[int]]:
    """(levels cranio-caudally, their sample counts): the chart's bars in the spine's order, not the alphabet's."""
    levels = order_cranial_to_caudal(list(by_level))
    return levels, [by_level[level] for level in levels]


def _level_histogram(counts) -> str | None:
    if not counts.by_level:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.bar(*level_bars(counts.by_level), color="#4a7ab0")
    ax.set_ylabel("samples")
    ax.set_title("samples per vertebra level")
    return _png(fig)


def write_report(version_dir: Path, card: DatasetCard, manifest: pd.DataFrame, cases: pd.DataFrame,
                 out: Path | None = None) -> Path:
    """Write the QC page of a version to `out` (default: the version's report.html)."""
    parts = [f"<h1>{html.escape(card.name)} {html.escape(card.version)}</h1>",
             f"<p>build_id <code>{card.build_id}</code> &middot; schema {card.schema_version} "
             f"&middot; {card.created} &middot; code {html.escape(card.code_version)}</p>"]
    split_table = pd.DataFrame(card.counts.by_product_split).fillna(0).astype(int)
    parts.append("<h2>Samples per product and split</h2>" + split_table.to_html())
    hist = _level_histogram(card.counts)
    if hist:
        parts.append(f'<img alt="level histogram" src="data:image/png;base64,{hist}">')
    for product, title in ((DRR, "DRR contact sheet"), (X2CT, "X2CT X-rays"),
                           (VERTEBRA, "Vertebra patches (mid coronal slice, mask in red)")):
        tiles = _tiles(version_dir, manifest, product)
        if tiles:
            parts.append(f"<h2>{title}</h2><img alt=\"{product}\" src=\"data:image/png;base64,{_sheet(tiles)}\">")
    quarantined = cases[cases[Col.QC_STATUS] == QC_QUARANTINED][QUARANTINE_COLUMNS]
    parts.append(f"<h2>Quarantined cases ({len(quarantined)})</h2>" +
                 (quarantined.to_html(index=False) if len(quarantined) else "<p>none</p>"))
    qc_table = cases[QC_TABLE_COLUMNS].sort_values(Col.CASE_ID).fillna("")
    parts.append(f"<h2>QC of every case ({len(qc_table)})</h2>" +
                 qc_table.to_html(index=False, table_id="qc-cases", escape=True))
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>SpineForge report</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    path = Path(out) if out is not None else version_dir / REPORT_HTML
    path.write_text(page)
    return path
