"""PyTorch Datasets over a published version, one per product.

Shards are opened lazily and read-only, one handle per shard per process: a handle opened before
a DataLoader forks is never used in the child (the process id is checked), and pickling (spawn)
drops open handles. Rows come from the manifest, so filtering by split touches no shard.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from pipelines.io.publish import read_card
from pipelines.io.shards import ShardError
from pipelines.io.volumes import sha256_file
from pipelines.ops.sampling import stable_hash
from schemas import SCHEMA_VERSION
from schemas.config import BuildConfig
from schemas.manifest import DATASET_CARD, MANIFEST_PARQUET, PAIRS_PARQUET, SHARD_DIR, SPLITS
from schemas.shard_layout import product_datasets

_META = {
    "vertebra": ("level", "padded_fraction"),
    "x2ct": ("z_offset_mm", "padded_fraction"),
    "drr": ("ref_level", "target_level"),
}


class ShardDataset(Dataset):
    product: str = ""

    def __init__(self, root: str | Path, split: str | None = None,
                 transform: Callable[[dict], dict] | None = None, verify_checksums: bool = False):
        self.root = Path(root)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        card = read_card(self.root)
        if card.get("schema_version") != SCHEMA_VERSION:
            raise ShardError(f"{self.root / DATASET_CARD}: schema_version {card.get('schema_version')!r} "
                             f"is not the supported {SCHEMA_VERSION!r}")
        config = BuildConfig.model_validate(card["config"])
        manifest = pd.read_parquet(self.root / MANIFEST_PARQUET)
        rows = manifest[manifest["product"] == self.product]
        if split is not None:
            rows = rows[rows["split"] == split]
        cols = ["sample_id", "case_id", "split", "shard", "key", *_META[self.product]]
        self.rows = rows[cols].sort_values("sample_id").to_dict("records")
        listed = {Path(sh["file"]).name: sh for sh in card["shards"]}
        for name in sorted({r["shard"] for r in self.rows}):
            path = self.root / SHARD_DIR / name
            if name not in listed:
                raise ShardError(f"{path}: named by the manifest but not listed in {DATASET_CARD}")
            if not path.is_file():
                raise ShardError(f"{path}: shard file is missing")
            if verify_checksums and sha256_file(path) != listed[name]["sha256"]:
                raise ShardError(f"{path}: sha256 differs from {DATASET_CARD} (file changed since publishing)")
        self.keys = [spec.key for spec in product_datasets(self.product, config)]
        self.transform = transform
        self._files: dict[str, h5py.File] = {}
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, name: str) -> h5py.File:
        if self._pid != os.getpid():  # new process: forget (never close) inherited handles
            self._files, self._pid = {}, os.getpid()
        if name not in self._files:
            path = self.root / SHARD_DIR / name
            try:
                self._files[name] = h5py.File(path, "r")
            except OSError as exc:
                raise ShardError(f"{path}: not a readable HDF5 shard ({exc})") from exc
        return self._files[name]

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        where = f"{self.root / SHARD_DIR / row['shard']}:{row['key']}"
        shard = self._shard(row["shard"])
        if row["key"] not in shard:
            raise ShardError(f"{where}: sample listed in the manifest is missing from the shard")
        group = shard[row["key"]]
        sample: dict = {k: row[k] for k in ("sample_id", "case_id", "split", *_META[self.product])}
        try:
            for key in self.keys:
                value = group[key][()]  # h5py verifies each chunk's fletcher32 checksum here
                if value.dtype.kind == "S":
                    sample[key] = [v.decode() for v in value]
                else:
                    sample[key] = torch.from_numpy(np.ascontiguousarray(value))
            sample["affine"] = torch.from_numpy(np.asarray(group.attrs["affine"], dtype=np.float64))
        except (OSError, KeyError) as exc:
            raise ShardError(f"{where}: corrupt or incomplete sample ({exc})") from exc
        return self.transform(sample) if self.transform else sample

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, None
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = {}


DRR_KEYS = ("drr", "drr_vertebra", "xray1", "xray2")


def transmission(sample: dict) -> dict:
    """Transform: stored line integrals -> transmitted intensity exp(-integral), in [0, 1]."""
    return {k: torch.exp(-v) if k in DRR_KEYS else v for k, v in sample.items()}


def normalised(sample: dict) -> dict:
    """Transform: each DRR view scaled to [0, 1] by its own maximum (for display, not physics)."""
    out = dict(sample)
    for key in DRR_KEYS:
        if key in out:
            v = out[key]
            peak = v.flatten(-2).amax(-1).clamp(min=1e-12)[..., None, None]
            out[key] = v / peak
    return out


class VertebraDataset(ShardDataset):
    """128^3 `ct` (int16 HU), `mask` (this vertebra), `labels` (canonical ids), with `level`."""

    product = "vertebra"


class X2CTDataset(ShardDataset):
    """150^3 `ct` with `xray1` (AP) and `xray2` (lateral) DRRs, X2CT-GAN's names."""

    product = "x2ct"


class DRRDataset(ShardDataset):
    """V views of whole-CT `drr` and `drr_vertebra`, with poses and the rotation centre."""

    product = "drr"


class VertebraPairDataset(Dataset):
    """3D/3D registration pairs from pairs.parquet: `fixed` and `moving` vertebra samples."""

    def __init__(self, root: str | Path, split: str | None = None,
                 transform: Callable[[dict], dict] | None = None):
        self.vertebrae = VertebraDataset(root, split=split)
        pairs = pd.read_parquet(Path(root) / PAIRS_PARQUET)
        if split is not None:
            pairs = pairs[pairs["split"] == split]
        self.pairs = pairs.sort_values("pair_id").to_dict("records")
        self._index = {row["sample_id"]: i for i, row in enumerate(self.vertebrae.rows)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        sample = {"pair_id": pair["pair_id"], "level": pair["level"],
                  "fixed": self.vertebrae[self._index[pair["fixed_sample_id"]]],
                  "moving": self.vertebrae[self._index[pair["moving_sample_id"]]]}
        return self.transform(sample) if self.transform else sample


class ShuffledSamples(IterableDataset):
    """Iterate a map-style dataset in a shuffled order fixed by (seed, epoch).

    Each DataLoader worker (and each distributed rank) takes a disjoint slice of the permutation,
    so every sample is seen exactly once per epoch, whatever the number of workers. Call
    `set_epoch(e)` before each epoch (persistent workers pick it up at their next iteration).
    """

    def __init__(self, dataset: Dataset, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.dataset = dataset
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> np.ndarray:
        return np.random.default_rng(stable_hash(self.seed, "epoch", self.epoch)).permutation(len(self.dataset))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.world_size))

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        mine = self.order()[self.rank::self.world_size][worker::workers]
        for index in mine:
            yield self.dataset[int(index)]


DATASETS = {cls.product: cls for cls in (VertebraDataset, X2CTDataset, DRRDataset)}


def open_dataset(root: str | Path, product: str, split: str | None = None, **kwargs) -> ShardDataset:
    if product not in DATASETS:
        raise ValueError(f"product must be one of {sorted(DATASETS)}, got {product!r}")
    return DATASETS[product](root, split=split, **kwargs)
