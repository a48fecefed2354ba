"""`spineforge validate`: every checksum, key, dtype, shape and count of a version, or a list of problems."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from pipelines.errors import ShardError, StoreError
from pipelines.ingest.labels import level_id
from pipelines.io.remote_version import RemoteVersion
from pipelines.io.shards import PublishedVersion, open_shard
from pipelines.io.store import is_remote
from schemas import SCHEMA_VERSION
from schemas.config import MAX_INSTRUMENTS, BuildConfig
from schemas.layout import DATASET_CARD
from schemas.manifest import DRR, MANIFEST_COLUMNS, VOLUME, Col
from schemas.shard_layout import (
    GROUP_ATTRS,
    XRAY_RECORD_FIELDS,
    Attr,
    Key,
    XrayField,
    expected_shape,
    product_attrs,
    product_datasets,
    volume_dims,
)


def _check_group(name: str, group: h5py.Group, product: str, n_views: int, config: BuildConfig) -> list[str]:
    problems = []
    for attr in GROUP_ATTRS + product_attrs(product, config):
        if attr not in group.attrs:
            problems.append(f"{name}: attribute {attr!r} missing")
    if Attr.XRAY in group.attrs:
        problems += _check_xray_record(name, group.attrs[Attr.XRAY], n_views if product == DRR else 2)
    if group.attrs.get(Attr.PRODUCT) != product:
        problems.append(f"{name}: product attribute {group.attrs.get(Attr.PRODUCT)!r} != manifest {product!r}")
    dims = None
    if product == VOLUME and Key.CT in group and Key.LEVEL_IDS in group:  # the grid and level count are the case's
        dims = volume_dims(group[Key.CT].shape, len(group[Key.LEVEL_IDS]))
        problems += _check_volume_levels(name, group)
    masks = {}  # the instrument masks, as read for their checksums
    for spec in product_datasets(product, config):
        if spec.key not in group:
            problems.append(f"{name}: dataset {spec.key!r} missing")
            continue
        ds = group[spec.key]
        shape = expected_shape(spec, n_views, dims)
        if ds.dtype != spec.dtype:
            problems.append(f"{name}/{spec.key}: dtype {ds.dtype}, schema says {spec.dtype}")
        if ds.shape != shape:
            problems.append(f"{name}/{spec.key}: shape {ds.shape}, schema says {shape}")
        try:
            data = ds[()]  # reading verifies every chunk's fletcher32 checksum
        except OSError as exc:
            problems.append(f"{name}/{spec.key}: unreadable ({exc})")
            continue
        if spec.key in (Key.INSTRUMENT_IDS, Key.INSTRUMENT_MASK):
            masks[spec.key] = data
    if not problems and len(masks) == 2:
        problems += _check_instrument_ids(name, masks[Key.INSTRUMENT_IDS], masks[Key.INSTRUMENT_MASK],
                                          group.attrs[Attr.XRAY])
    return problems


def _check_instrument_ids(name: str, ids: np.ndarray, kinds: np.ndarray, xray_record: str) -> list[str]:
    """A ray crosses an instrument (some id bit) exactly where it has an instrument kind, and only the
    record's instruments have bits."""
    problems = []
    if not np.array_equal(ids > 0, kinds > 0):
        problems.append(f"{name}: {Key.INSTRUMENT_IDS} and {Key.INSTRUMENT_MASK} disagree on where instruments are")
    count = len(json.loads(xray_record)[XrayField.INSTRUMENTS])
    if count < MAX_INSTRUMENTS and (ids >> count).any():
        problems.append(f"{name}: {Key.INSTRUMENT_IDS} has bits beyond the record's {count} instruments")
    return problems


def _check_volume_levels(name: str, group: h5py.Group) -> list[str]:
    """A volume's levels attribute names its level ids, in order."""
    try:
        levels = json.loads(group.attrs.get(Attr.LEVELS, "[]"))
        ids = [level_id(level) for level in levels]
    except (TypeError, ValueError, KeyError) as exc:
        return [f"{name}: attribute {Attr.LEVELS!r} is not a list of level names ({exc})"]
    if ids != group[Key.LEVEL_IDS][()].tolist():
        return [f"{name}: {Attr.LEVELS} {levels} disagree with {Key.LEVEL_IDS} {group[Key.LEVEL_IDS][()].tolist()}"]
    return []


def _check_xray_record(name: str, text, n_views: int) -> list[str]:
    """The physics record of realistic views: JSON with the drawn parameters, instruments and one noise seed per view."""
    try:
        record = json.loads(text)
    except (TypeError, ValueError) as exc:
        return [f"{name}: attribute {Attr.XRAY!r} is not JSON ({exc})"]
    problems = [f"{name}: {Attr.XRAY} record lacks {k!r}" for k in XRAY_RECORD_FIELDS if k not in record]
    if not problems and len(record[XrayField.NOISE_SEEDS]) != n_views:
        problems.append(f"{name}: {Attr.XRAY} record has {len(record[XrayField.NOISE_SEEDS])} noise seeds for {n_views} views")
    if not problems:  # the record must make its views again: its physics and every instrument parse
        from pipelines.physics.draw import XrayRecord

        try:
            XrayRecord.from_record(record)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{name}: {Attr.XRAY} record does not parse ({exc})")
    return problems


def _check_shard(version: PublishedVersion, shard, rows) -> list[str]:
    problems = []
    try:
        with open_shard(version.root / shard.file) as h5:
            keys = {"/" + k for k in h5.keys()}
            if keys != set(rows[Col.KEY]):
                problems.append(f"{shard.file}: groups {sorted(keys ^ set(rows[Col.KEY]))[:5]} differ from the manifest")
            for row in rows.itertuples():
                if row.key in h5:
                    problems += _check_group(f"{shard.file}:{row.key}", h5[row.key], row.product, int(row.n_views),
                                             version.config)
    except ShardError as exc:
        problems.append(f"{shard.file}: {exc}")
    return problems


def validate_version(version_dir: str | Path, store=None) -> list[str]:
    """Problems of a version folder, or of an s3:// version (see `validate_store_version`); [] when sound."""
    if is_remote(version_dir):
        return validate_store_version(str(version_dir), store)
    return _validate_folder(Path(version_dir))


def validate_store_version(url: str, store=None) -> list[str]:
    """Every object of a version in a store downloaded afresh into a temporary folder (size and SHA-256
    checked against the card on the way), then every check of a local version on that copy."""
    with tempfile.TemporaryDirectory(prefix="spineforge-validate-") as tmp:
        version = RemoteVersion(url, Path(tmp) / "cache", None, store)
        card, problems = version.card, []
        for shard in card.shards:
            obj = card.objects.get(shard.file)
            if obj is None:
                problems.append(f"{shard.file}: listed as a shard but has no object in {url}/{DATASET_CARD}")
            elif (obj.sha256, obj.bytes) != (shard.sha256, shard.bytes):
                problems.append(f"{shard.file}: its object ({obj.key}) disagrees with the shard record")
        folder = Path(tmp) / "version"
        folder.mkdir()
        (folder / DATASET_CARD).write_text(card.to_json())
        for rel, obj in sorted(card.objects.items()):
            try:
                version.cache.fetch(obj)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(version.cache.path(obj), folder / rel)
        return problems + _validate_folder(folder)


def _validate_folder(version_dir: Path) -> list[str]:
    version = PublishedVersion(Path(version_dir))
    card = version.card
    problems = []
    if card.schema_version != SCHEMA_VERSION:
        problems.append(f"schema_version {card.schema_version} != supported {SCHEMA_VERSION}")
    problems += version.file_problems()
    manifest = version.manifest
    missing_cols = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing_cols:
        return problems + [f"manifest lacks columns {missing_cols}"]
    if manifest[Col.SAMPLE_ID].duplicated().any():
        problems.append("manifest has duplicate sample_id values")
    for product, n in card.counts.by_product.items():
        got = int((manifest[Col.PRODUCT] == product).sum())
        if got != n:
            problems.append(f"{product}: manifest has {got} samples, dataset.json says {n}")
    for shard in card.shards:
        rows = manifest[manifest[Col.SHARD] == Path(shard.file).name]
        if len(rows) != shard.n_samples:
            problems.append(f"{shard.file}: manifest lists {len(rows)} samples, dataset.json says {shard.n_samples}")
        if (version.root / shard.file).is_file():
            problems += _check_shard(version, shard, rows)
    return problems
