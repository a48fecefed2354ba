"""HDF5 shards: writing sample groups, and the one reader of a published version.

Importing this module registers hdf5plugin's filters (shards are Blosc-LZ4 compressed), so every
reader that goes through here decodes them. Every dataset is one chunk per volume or per view, with
fletcher32 checksums and the configured compression. Files are written under a temporary name and
renamed once complete.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h5py
import hdf5plugin  # registers the Blosc/Zstd HDF5 filters for writers and every reader
import numpy as np
import pandas as pd

from pipelines.errors import ShardError
from pipelines.io.hashing import sha256_file
from schemas import SCHEMA_VERSION
from schemas.card import DatasetCard
from schemas.layout import (
    CASES_PARQUET,
    DATASET_CARD,
    MANIFEST_PARQUET,
    PAIRS_PARQUET,
    SHARD_DIR,
    shard_path,
    shard_record_file,
    tmp_path,
)
from schemas.manifest import Col
from schemas.shard_layout import VIEW_STACK_KEYS, Attr

# --- writing ---------------------------------------------------------------------------------

def _compression(name: str) -> dict:
    """h5py keyword arguments for a compression name (choice measured in benchmarks/read.py)."""
    if name == "blosc-lz4":  # byte shuffle + LZ4: fast to decode, ~3.4x on CT patches
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if name == "zstd":
        return dict(hdf5plugin.Zstd(clevel=3))
    if name == "none":
        return {}
    return {"compression": name}  # lzf, gzip: built into h5py


def _chunks(array: np.ndarray, per_view: bool) -> tuple:
    """One chunk per view for (V, H, W) stacks, else one chunk per array."""
    return (1, *array.shape[1:]) if per_view else array.shape


def _attr_value(value):
    if isinstance(value, (dict, list)) and not (
        isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value)
    ):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return value


def write_sample(h5: h5py.File, sample_id: str, datasets: dict[str, np.ndarray], attrs: dict,
                 compression: str) -> None:
    """Write one sample group: datasets (arrays) and attributes (JSON-encoded when structured)."""
    group = h5.create_group(sample_id)
    group.attrs[Attr.SCHEMA_VERSION] = SCHEMA_VERSION
    for key, value in attrs.items():
        group.attrs[key] = _attr_value(value)
    for key, array in datasets.items():
        array = np.asarray(array)
        if array.ndim == 0 or array.dtype.kind == "S" or array.size < 64:
            group.create_dataset(key, data=array)
        else:
            group.create_dataset(key, data=array, chunks=_chunks(array, key in VIEW_STACK_KEYS), fletcher32=True,
                                 **_compression(compression))


@contextmanager
def atomic_h5(path: Path) -> Iterator[h5py.File]:
    """Open `path` for writing under a temporary name; rename into place only on success."""
    path = Path(path)
    tmp = tmp_path(path)
    h5 = h5py.File(tmp, "w")
    try:
        yield h5
    except BaseException:
        h5.close()
        tmp.unlink(missing_ok=True)
        raise
    h5.close()
    os.replace(tmp, path)


def copy_groups(source: Path, keys: list[str], target: h5py.File) -> None:
    """Copy sample groups verbatim (chunks, filters, attributes) from a staging file."""
    with h5py.File(source, "r") as src:
        for key in keys:
            src.copy(src[key], target, name=key)


# --- reading ---------------------------------------------------------------------------------

def read_card(version_dir: Path) -> DatasetCard:
    path = Path(version_dir) / DATASET_CARD
    if not path.is_file():
        raise FileNotFoundError(f"not a published SpineForge version (no {DATASET_CARD}): {version_dir}")
    return DatasetCard.model_validate_json(path.read_text())


def open_shard(path: Path) -> h5py.File:
    """A shard opened read-only; ShardError naming it when it is missing or not HDF5."""
    if not Path(path).is_file():
        raise ShardError(f"{path}: shard file is missing")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ShardError(f"{path}: not a readable HDF5 shard ({exc})") from exc


AFFINE_LAYOUT = (Attr.AFFINE, (4, 4), np.dtype(np.float64))  # a group's affine attribute, as read


def _into_buffer(dataset: h5py.Dataset) -> bool:
    """Numeric arrays are decoded into a caller's buffer; strings and scalars are read as they are."""
    return bool(dataset.shape) and dataset.dtype.kind in "biuf"


def group_layout(shard: h5py.File, key: str, keys: list[str]) -> list[tuple[str, tuple, np.dtype]]:
    """(name, shape, dtype) of what `read_group` decodes into buffers: numeric datasets, and the affine."""
    group = shard[key]
    return [(k, group[k].shape, group[k].dtype) for k in keys if _into_buffer(group[k])] + [AFFINE_LAYOUT]


def read_group(shard: h5py.File, key: str, keys: list[str], where: str,
               buffer: Callable[[str, tuple, np.dtype], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The named datasets of one sample group (each chunk's fletcher32 checksum is verified here).

    `buffer(name, shape, dtype)`, when given, supplies the C-contiguous array each numeric dataset (and
    the affine) is decoded into (HDF5 decompresses straight into it: no intermediate array, no copy)."""
    if key not in shard:
        raise ShardError(f"{where}: sample listed in the manifest is missing from the shard")
    group = shard[key]
    try:
        out = {}
        for name in keys:
            dataset = group[name]
            if buffer is not None and _into_buffer(dataset):
                out[name] = buffer(name, dataset.shape, dataset.dtype)
                dataset.read_direct(out[name])
            else:
                out[name] = dataset[()]
        affine = np.asarray(group.attrs[Attr.AFFINE], AFFINE_LAYOUT[2])
        if buffer is not None:
            target = buffer(*AFFINE_LAYOUT)
            target[...] = affine
            affine = target
        return out | {Attr.AFFINE: affine}
    except (OSError, KeyError) as exc:
        raise ShardError(f"{where}: corrupt or incomplete sample ({exc})") from exc


@dataclass
class PublishedVersion:
    """A published version folder: its card, tables and shards, checked against each other."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        self.card = read_card(self.root)

    def check_schema(self) -> None:
        if self.card.schema_version != SCHEMA_VERSION:
            raise ShardError(f"{self.root / DATASET_CARD}: schema_version {self.card.schema_version!r} "
                             f"is not the supported {SCHEMA_VERSION!r}")

    @cached_property
    def config(self):
        return self.card.build_config()

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / MANIFEST_PARQUET)

    @cached_property
    def cases(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / CASES_PARQUET)

    def pairs(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / PAIRS_PARQUET)

    def samples(self, product: str, split: str | None = None) -> pd.DataFrame:
        rows = self.manifest[self.manifest[Col.PRODUCT] == product]
        if split is not None:
            rows = rows[rows[Col.SPLIT] == split]
        return rows.sort_values(Col.SAMPLE_ID)

    def shard_path(self, name: str) -> Path:
        return shard_path(self.root, name)

    def check_shards(self, names, verify_checksums: bool = False) -> None:
        """Each named shard is listed in the card and present (and, if asked, has its sha256)."""
        listed = {Path(s.file).name: s for s in self.card.shards}
        for name in sorted(set(names)):
            path = self.shard_path(name)
            if name not in listed:
                raise ShardError(f"{path}: named by the manifest but not listed in {DATASET_CARD}")
            if not path.is_file():
                raise ShardError(f"{path}: shard file is missing")
            if verify_checksums and sha256_file(path) != listed[name].sha256:
                raise ShardError(f"{path}: sha256 differs from {DATASET_CARD} (file changed since publishing)")

    def file_problems(self) -> list[str]:
        """Shard files against the card: unlisted, missing, wrong size or wrong sha256 (re-hashes all)."""
        problems = []
        listed = {s.file for s in self.card.shards}
        for extra in sorted((self.root / SHARD_DIR).glob("*")):
            if shard_record_file(extra.name) not in listed:
                problems.append(f"{shard_record_file(extra.name)}: file not listed in {DATASET_CARD}")
        for shard in self.card.shards:
            path = self.root / shard.file
            if not path.is_file():
                problems.append(f"{shard.file}: missing")
            elif path.stat().st_size != shard.bytes:
                problems.append(f"{shard.file}: {path.stat().st_size} bytes, {DATASET_CARD} says {shard.bytes}")
            elif sha256_file(path) != shard.sha256:
                problems.append(f"{shard.file}: sha256 mismatch (file changed since publishing)")
        return problems

    def iter_groups(self, rows: pd.DataFrame) -> Iterator[tuple[object, h5py.Group]]:
        """(manifest row, HDF5 group) for each row, one shard open at a time."""
        for name, grp in rows.groupby(Col.SHARD, sort=True):
            with open_shard(self.shard_path(name)) as h5:
                for row in grp.itertuples():
                    if row.key not in h5:
                        raise ShardError(f"{self.shard_path(name)}:{row.key}: sample listed in the manifest is "
                                         "missing from the shard")
                    yield row, h5[row.key]
