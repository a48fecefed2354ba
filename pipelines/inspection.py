"""`spineforge inspect`: what a published version holds, for people and for scripts (--json)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.io.publish import read_card
from schemas.manifest import CASES_PARQUET


def inspect_version(version_dir: Path) -> dict:
    card = read_card(version_dir)
    cases = pd.read_parquet(version_dir / CASES_PARQUET)
    quarantined = cases.loc[cases.qc_status == "quarantined", ["case_id", "qc_reason", "qc_message"]]
    total_bytes = sum(s["bytes"] for s in card["shards"])
    split_table = pd.DataFrame(card["counts"]["by_product_split"]).fillna(0).astype(int).T
    split_table["total"] = split_table.sum(axis=1)
    lines = [
        f"{card['name']} {card['version']}  build_id {card['build_id']}  schema {card['schema_version']}",
        f"created {card['created']}  code {card['code_version']}  seed {card['seed']}",
        f"cases: {card['cases']['discovered']} discovered, {card['cases']['accepted']} accepted, "
        f"{card['cases']['quarantined']} quarantined",
        "", "samples per product and split:", split_table.to_string(), "",
        "samples per level: " + ", ".join(f"{k}={v}" for k, v in card["counts"]["by_level"].items()),
        f"shards: {len(card['shards'])} files, {total_bytes / 1e6:.1f} MB",
    ]
    lines += [f"  {s['file']}  {s['n_samples']} samples  {s['bytes'] / 1e6:.1f} MB" for s in card["shards"]]
    cfg = card["config"]
    lines += ["", "lineage:",
              f"  inputs: {', '.join(card.get('inputs', []))}",
              f"  input_hash: {card.get('input_hash', '')}",
              f"  unmatched files: {len(card.get('unmatched_files', []))}, ingest problems: {len(card.get('ingest_problems', []))}",
              "config: " + ", ".join([
                  f"{cfg['resample']['spacing_mm']} mm {cfg['resample']['orientation']}",
                  f"vertebra {cfg['vertebra']['size']}^3 {'/'.join(cfg['vertebra']['levels'])}",
                  f"x2ct {cfg['x2ct']['size']}^3 at {cfg['x2ct']['z_offsets_mm']} mm",
                  f"drr {cfg['detector']['height']}x{cfg['detector']['width']} at {cfg['detector']['pixel_spacing_mm']} mm, "
                  f"SDD {cfg['detector']['sdd_mm']} mm, {cfg['detector']['renderer']}",
                  f"splits {cfg['splits']}"])]
    if len(quarantined):
        lines += ["quarantined:"] + [f"  {r.case_id}: {r.qc_reason} ({r.qc_message})" for r in quarantined.itertuples()]
    return {"card": card, "quarantined": quarantined.to_dict("records"), "text": "\n".join(lines)}
