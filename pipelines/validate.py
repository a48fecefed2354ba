"""`spineforge validate`: every checksum, key, dtype, shape and count of a version, or a list of problems."""
from __future__ import annotations

from pathlib import Path

import h5py
import pandas as pd

from pipelines.io.publish import read_card
from pipelines.io.volumes import sha256_file
from schemas import SCHEMA_VERSION
from schemas.config import BuildConfig
from schemas.manifest import MANIFEST_COLUMNS, MANIFEST_PARQUET, SHARD_DIR
from schemas.shard_layout import GROUP_ATTRS, PRODUCT_ATTRS, product_datasets


def _check_shard_files(version_dir: Path, card: dict) -> list[str]:
    problems = []
    listed = {s["file"] for s in card["shards"]}
    for extra in sorted((version_dir / SHARD_DIR).glob("*")):
        if f"{SHARD_DIR}/{extra.name}" not in listed:
            problems.append(f"{SHARD_DIR}/{extra.name}: file not listed in dataset.json")
    for shard in card["shards"]:
        path = version_dir / shard["file"]
        if not path.is_file():
            problems.append(f"{shard['file']}: missing")
        elif path.stat().st_size != shard["bytes"]:
            problems.append(f"{shard['file']}: {path.stat().st_size} bytes, dataset.json says {shard['bytes']}")
        elif sha256_file(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 mismatch (file changed since publishing)")
    return problems


def _check_group(name: str, group: h5py.Group, product: str, n_views: int, config: BuildConfig) -> list[str]:
    problems = []
    for attr in GROUP_ATTRS + PRODUCT_ATTRS[product]:
        if attr not in group.attrs:
            problems.append(f"{name}: attribute {attr!r} missing")
    if group.attrs.get("product") != product:
        problems.append(f"{name}: product attribute {group.attrs.get('product')!r} != manifest {product!r}")
    for spec in product_datasets(product, config):
        if spec.key not in group:
            problems.append(f"{name}: dataset {spec.key!r} missing")
            continue
        ds = group[spec.key]
        shape = tuple(n_views if s == "V" else s for s in spec.shape)
        if ds.dtype != spec.dtype:
            problems.append(f"{name}/{spec.key}: dtype {ds.dtype}, schema says {spec.dtype}")
        if ds.shape != shape:
            problems.append(f"{name}/{spec.key}: shape {ds.shape}, schema says {shape}")
        try:
            ds[()]  # reading verifies every chunk's fletcher32 checksum
        except OSError as exc:
            problems.append(f"{name}/{spec.key}: unreadable ({exc})")
    return problems


def validate_version(version_dir: Path) -> list[str]:
    version_dir = Path(version_dir)
    card = read_card(version_dir)
    problems = []
    if card.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version {card.get('schema_version')} != supported {SCHEMA_VERSION}")
    config = BuildConfig.model_validate(card["config"])
    problems += _check_shard_files(version_dir, card)
    manifest = pd.read_parquet(version_dir / MANIFEST_PARQUET)
    missing_cols = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing_cols:
        return problems + [f"manifest lacks columns {missing_cols}"]
    if manifest["sample_id"].duplicated().any():
        problems.append("manifest has duplicate sample_id values")
    for product, n in card["counts"]["by_product"].items():
        got = int((manifest["product"] == product).sum())
        if got != n:
            problems.append(f"{product}: manifest has {got} samples, dataset.json says {n}")
    for shard in card["shards"]:
        rows = manifest[manifest["shard"] == Path(shard["file"]).name]
        if len(rows) != shard["n_samples"]:
            problems.append(f"{shard['file']}: manifest lists {len(rows)} samples, dataset.json says {shard['n_samples']}")
        path = version_dir / shard["file"]
        if not path.is_file():
            continue
        try:
            with h5py.File(path, "r") as h5:
                keys = {"/" + k for k in h5.keys()}
                if keys != set(rows["key"]):
                    problems.append(f"{shard['file']}: groups {sorted(keys ^ set(rows['key']))[:5]} differ from the manifest")
                for row in rows.itertuples():
                    if row.key in h5:
                        problems += _check_group(f"{shard['file']}:{row.key}", h5[row.key], row.product,
                                                 int(row.n_views), config)
        except OSError as exc:
            problems.append(f"{shard['file']}: not a readable HDF5 file ({exc})")
    return problems
