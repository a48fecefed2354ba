"""PyTorch Datasets over a published version, one per product.

Shards are opened lazily and read-only, one handle per shard per process: a handle opened before
a DataLoader forks is never used in the child (the process id is checked), and pickling (spawn)
drops open handles. Rows come from the manifest, so filtering by split touches no shard.

A version may also be an `s3://bucket/prefix/<dataset>/<version>` URL: shards are then downloaded whole
into `cache_dir` (at most `cache_limit` bytes; see `pipelines.io.object_cache`), verified, and held open
(not evictable) only while in use: at most `open_shards` per process.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from pipelines.io.remote_version import RemoteVersion, open_version
from pipelines.io.shards import group_layout, open_shard, read_group
from pipelines.io.store import StoreOptions
from pipelines.loaders.batch import _FLAGS, _SLOTS, _TOKENS, MAX_SLOTS, MAX_WORKERS, _BatchSlots
from pipelines.loaders.sampler import block_order, epoch_order
from schemas.detector import Geometry
from schemas.manifest import DRR, PRODUCT_COLUMNS, SAMPLE_ID_COLUMNS, SPLITS, VERTEBRA, VOLUME, X2CT, Col, PairRow
from schemas.shard_layout import product_datasets


class ShardDataset(Dataset):
    product: str = ""

    def __init__(self, root: str | Path, split: str | None = None,
                 transform: Callable[[dict], dict] | None = None, verify_checksums: bool = False,
                 cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 store: StoreOptions | None = None, open_shards: int = 8):
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        version = open_version(root, cache_dir, cache_limit, store)
        self.root = version.root if isinstance(version, RemoteVersion) else Path(root)
        self.version = version
        self.open_shards = max(1, open_shards)
        version.check_schema()
        self.columns = (*SAMPLE_ID_COLUMNS, *PRODUCT_COLUMNS[self.product])
        rows = version.samples(self.product, split)
        self.rows = rows[[*self.columns, Col.SHARD, Col.KEY]].to_dict("records")
        version.check_shards({r[Col.SHARD] for r in self.rows}, verify_checksums)
        self.config = version.config
        self.keys = [spec.key for spec in product_datasets(self.product, self.config)]
        self.transform = transform
        self._files: dict[str, h5py.File] = {}  # open shards, least recently used first
        self._pins: dict[str, object] = {}  # remote shards: the cache pin held while the shard is open
        self._pid: int | None = None
        # batch-slot flags, shared with the DataLoader workers this dataset will be handed to
        self._token = f"{os.getpid()}-{next(_TOKENS)}"  # never reused in this process
        self._flags = torch.empty(0, dtype=torch.uint8).set_(
            torch.UntypedStorage._new_shared(MAX_WORKERS * MAX_SLOTS), 0, (MAX_WORKERS, MAX_SLOTS)).zero_()
        _FLAGS[self._token] = self._flags

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def remote(self) -> bool:
        return isinstance(self.version, RemoteVersion)

    def _shard(self, name: str) -> h5py.File:
        if self._pid != os.getpid():  # new process: forget (never close) inherited handles
            self._files, self._pins, self._pid = {}, {}, os.getpid()
        if name in self._files:
            self._files[name] = self._files.pop(name)  # most recently used last
            return self._files[name]
        if not self.remote:
            self._files[name] = open_shard(self.version.shard_path(name))
            return self._files[name]
        while len(self._files) >= self.open_shards:  # let go of the least recently used: evictable again
            self._release(next(iter(self._files)))
        pin = self.version.open_file(name)
        try:
            self._files[name] = open_shard(pin.path)
        except BaseException:
            pin.close()
            raise
        self._pins[name] = pin
        return self._files[name]

    def _release(self, name: str) -> None:
        self._files.pop(name).close()
        pin = self._pins.pop(name, None)
        if pin is not None:
            pin.close()

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The shuffled order of (seed, epoch). A remote version larger than its cache is shuffled in
        blocks of shards that fit a quarter of the cache (`block_order`), so each shard is fetched once."""
        limit = self.version.cache.limit if self.remote else None
        if limit is None:
            return epoch_order(len(self), seed, epoch)
        names = [r[Col.SHARD] for r in self.rows]
        sizes = self.version.shard_bytes(set(names))
        if sum(sizes.values()) <= limit:
            return epoch_order(len(self), seed, epoch)
        return block_order(names, sizes, limit // 4, seed, epoch)

    def prefetch(self, indices) -> None:
        """Download the shards of `indices` ahead of reading them, in that order (remote versions)."""
        if self.remote:
            order = list(dict.fromkeys(self.rows[int(i)][Col.SHARD] for i in indices))
            self.version.prefetch(order)

    def __getitem__(self, index: int) -> dict:
        return self._sample(index, None)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A batch, as DataLoader fetches it. Inside a DataLoader worker every numeric array of the batch
        is decoded straight into one reusable block of shared memory (see `_BatchSlots`); with
        `collate_fn=collate` that block is what the trainer process receives: no copy on either side."""
        info = get_worker_info()
        if info is None or info.id >= MAX_WORKERS or not indices:
            return [self._sample(index, None) for index in indices]
        first = self.rows[indices[0]]
        layout = [(k, (len(indices), *shape), dtype)
                  for k, shape, dtype in group_layout(self._shard(first[Col.SHARD]), first[Col.KEY], self.keys)]
        key = (self._token, tuple((k, shape, np.dtype(dtype).str) for k, shape, dtype in layout))
        if key not in _SLOTS:
            _SLOTS[key] = _BatchSlots(layout, self._token, self._flags[info.id], info.id)
        for slots in _SLOTS.values():  # slots taken for an earlier batch but never shipped are free again
            slots.reserved.clear()
        batch = _SLOTS[key].acquire()

        def rows_of_batch(i: int) -> Callable:
            def buffer(name: str, shape: tuple, dtype: np.dtype):
                rows = batch.get(name)
                if rows is None or tuple(rows.shape[1:]) != tuple(shape) or rows.numpy().dtype != dtype:
                    return None  # a sample of another shape: read on its own
                return rows[i]
            return buffer

        return [self._sample(index, rows_of_batch(i)) for i, index in enumerate(indices)]

    def _sample(self, index: int, rows: Callable | None) -> dict:
        row = self.rows[index]
        where = f"{self.version.shard_path(row[Col.SHARD])}:{row[Col.KEY]}"
        tensors: dict[str, torch.Tensor] = {}

        def buffer(key: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
            target = rows(key, shape, dtype) if rows is not None else None
            tensors[key] = target if target is not None else torch.from_numpy(np.empty(shape, dtype))
            return tensors[key].numpy()

        arrays = read_group(self._shard(row[Col.SHARD]), row[Col.KEY], self.keys, where, buffer)
        sample: dict = {k: row[k] for k in self.columns}
        for key, value in arrays.items():
            if key in tensors:
                sample[key] = tensors[key]
            elif value.dtype.kind == "S":
                sample[key] = [v.decode() for v in value]
            else:
                sample[key] = torch.from_numpy(np.ascontiguousarray(value))
        return self.transform(sample) if self.transform else sample

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_pins"], state["_pid"] = {}, {}, None
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for name in list(self._files):
                self._release(name)
            if self.remote:
                self.version.stop_prefetch()
        self._files, self._pins = {}, {}


class VertebraDataset(ShardDataset):
    """128^3 `ct` (int16 HU), `mask` (this vertebra), `labels` (canonical ids), with `level`."""

    product = VERTEBRA


class X2CTDataset(ShardDataset):
    """150^3 `ct` with `xray1` (AP) and `xray2` (lateral) DRRs, X2CT-GAN's names."""

    product = X2CT


class DRRDataset(ShardDataset):
    """V views of whole-CT `drr` and `drr_vertebra`, with poses and the rotation centre.

    `geometry` (detector) and `attenuation` are the version's: with `pipelines.loaders.consumers.diffdrr_pose`
    and `diffdrr_drr` they re-render a stored view with diffdrr itself."""

    product = DRR

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.geometry = Geometry.from_record(self.config.detector.model_dump())
        self.attenuation = self.config.attenuation


class VolumeDataset(ShardDataset):
    """A case's whole 1 mm CT `ct` (int16 HU) and canonical `labels` (uint8), with `level_ids` (cranial ->
    caudal), `vertebra_boxes` (L x 2 x 3 voxel first / last + 1), `vertebra_centres` (L x 3 world mm) and
    the `affine`: what `pipelines.loaders.stream.DRRStream` renders views from. Shapes differ by case."""

    product = VOLUME

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attenuation = self.config.attenuation


class VertebraPairDataset(Dataset):
    """3D/3D registration pairs from pairs.parquet: `fixed` and `moving` vertebra samples."""

    def __init__(self, root: str | Path, split: str | None = None,
                 transform: Callable[[dict], dict] | None = None, **store_kwargs):
        self.vertebrae = VertebraDataset(root, split=split, **store_kwargs)
        pairs = self.vertebrae.version.pairs()
        if split is not None:
            pairs = pairs[pairs[Col.SPLIT] == split]
        self.pairs = [PairRow(**p) for p in pairs.sort_values(Col.PAIR_ID).to_dict("records")]
        self._index = {row[Col.SAMPLE_ID]: i for i, row in enumerate(self.vertebrae.rows)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        sample = {Col.PAIR_ID: pair.pair_id, Col.LEVEL: pair.level,
                  "fixed": self.vertebrae[self._index[pair.fixed_sample_id]],
                  "moving": self.vertebrae[self._index[pair.moving_sample_id]]}
        return self.transform(sample) if self.transform else sample


DATASETS = {cls.product: cls for cls in (VertebraDataset, X2CTDataset, DRRDataset, VolumeDataset)}


def open_dataset(root: str | Path, product: str, split: str | None = None, **kwargs) -> ShardDataset:
    if product not in DATASETS:
        raise ValueError(f"product must be one of {sorted(DATASETS)}, got {product!r}")
    return DATASETS[product](root, split=split, **kwargs)
