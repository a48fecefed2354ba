"""PyTorch Datasets over a published version, one per product.

Shards are opened lazily and read-only, one handle per shard per process: a handle opened before
a DataLoader forks is never used in the child (the process id is checked), and pickling (spawn)
drops open handles. Rows come from the manifest, so filtering by split touches no shard.
"""
from __future__ import annotations

import itertools
import os
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from pipelines.io.shards import PublishedVersion, group_layout, open_shard, read_group
from pipelines.ops.drr import Geometry
from pipelines.ops.sampling import stable_hash
from schemas.layout import shard_path
from schemas.manifest import (
    DRR,
    PRODUCT_COLUMNS,
    SAMPLE_ID_COLUMNS,
    SPLITS,
    VERTEBRA,
    X2CT,
    Col,
    PairRow,
)
from schemas.shard_layout import IMAGE_KEYS, product_datasets


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


ALIGN = 64  # bytes: each array of a batch slot starts on a cache line
MAX_WORKERS, MAX_SLOTS = 64, 32


def _slot_offsets(layout: list[tuple[str, tuple, np.dtype]]) -> tuple[dict[str, int], int]:
    offsets, end = {}, 0
    for key, shape, dtype in layout:
        offsets[key] = end
        end += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // ALIGN) * ALIGN
    return offsets, end


def _view(storage: torch.UntypedStorage, offset: int, shape: tuple, dtype: np.dtype) -> torch.Tensor:
    return torch.empty(0, dtype=_torch_dtype(dtype)).set_(storage, offset // np.dtype(dtype).itemsize, shape)


class _BatchSlots:
    """One worker's batch memory for one batch layout, in shared memory, reused once the trainer lets go.

    Fresh shared memory is expensive (a file, zeroed pages, page faults on first write, the same again to
    free it, and one file descriptor passed per tensor) -- more than decoding the samples into it. So a
    batch's arrays are laid out in one shared storage (one descriptor per batch), and a worker keeps up to
    MAX_SLOTS of them. A flag per slot, in shared memory the dataset allocates before its workers start,
    is set when a batch leaves the worker and cleared in the trainer process by a finalizer on the received
    storage, which runs only once no tensor or view of that batch is left. A slot is reused only while its
    flag is clear, so a batch the trainer still holds is never overwritten."""

    def __init__(self, layout: list[tuple[str, tuple, np.dtype]], token: str, flags: torch.Tensor, worker: int):
        self.layout = layout
        self.offsets, self.nbytes = _slot_offsets(layout)
        self.token, self.flags, self.worker = token, flags, worker  # flags: this worker's row
        self.storages: list[torch.UntypedStorage] = []
        self.reserved: set[int] = set()

    def acquire(self) -> dict[str, torch.Tensor]:
        in_use = self.flags.numpy()
        for j, storage in enumerate(self.storages):
            if not in_use[j] and j not in self.reserved:
                self.reserved.add(j)
                return self._tensors(storage)
        storage = torch.UntypedStorage._new_shared(self.nbytes)
        if len(self.storages) < MAX_SLOTS:  # beyond that the trainer holds every slot: a one-off buffer
            self.storages.append(storage)
            self.reserved.add(len(self.storages) - 1)
            _SLOT_OF[storage.data_ptr()] = (self, len(self.storages) - 1)
        return self._tensors(storage)

    def _tensors(self, storage: torch.UntypedStorage) -> dict[str, torch.Tensor]:
        return {key: _view(storage, self.offsets[key], shape, dtype) for key, shape, dtype in self.layout}


_SLOTS: dict[tuple, _BatchSlots] = {}  # this process's slots: (flags token, layout) -> slots
_SLOT_OF: dict[int, tuple[_BatchSlots, int]] = {}  # storage address -> (slots, index)
_FLAGS: "weakref.WeakValueDictionary[str, torch.Tensor]" = weakref.WeakValueDictionary()  # token -> flags
_TOKENS = itertools.count()


def _release(token: str, worker: int, slot: int) -> None:
    flags = _FLAGS.get(token)
    if flags is not None:
        flags[worker, slot] = 0


def _received(items: dict, release: tuple[str, int, int, str]) -> dict:
    """Trainer side of a pooled batch: free its slot when the last view of its storage is gone."""
    token, worker, slot, key = release
    weakref.finalize(items[key].untyped_storage(), _release, token, worker, slot)
    return items


class _PooledBatch(dict):
    """A collated batch whose arrays live in one reusable slot; unpickled by the trainer as a plain dict."""

    def __init__(self, items: dict, release: tuple):
        super().__init__(items)
        self.release = release

    def __reduce__(self):
        return _received, (dict(self), self.release)


def _whole_buffer(values: list) -> torch.Tensor | None:
    """The batch tensor whose consecutive rows `values` are (views of one storage), or None."""
    first = values[0]
    if not all(isinstance(v, torch.Tensor) for v in values) or first.dim() == 0:
        return None
    storage = first.untyped_storage()
    size, step, start = tuple(first.shape), first.numel(), first.storage_offset()
    for i, v in enumerate(values):
        if (v.untyped_storage().data_ptr() != storage.data_ptr() or tuple(v.shape) != size
                or v.dtype != first.dtype or not v.is_contiguous() or v.storage_offset() != start + i * step):
            return None
    return torch.empty(0, dtype=first.dtype).set_(storage, start, (len(values), *size))


def collate(samples: list):
    """DataLoader `collate_fn` for SpineForge datasets: the batch memory a dataset decoded its samples into
    is returned as it is (no copy into new shared memory; reused once the trainer drops the batch);
    every other field as `default_collate`."""
    if not samples or not isinstance(samples[0], dict):
        return default_collate(samples)
    out, release = {}, None
    for key in samples[0]:
        values = [s[key] for s in samples]
        whole = _whole_buffer(values)
        if whole is None:
            out[key] = default_collate(values)
            continue
        out[key] = whole
        owner = _SLOT_OF.get(whole.untyped_storage().data_ptr())
        if owner is not None and release is None:
            slots, j = owner
            slots.flags[j] = 1  # in the trainer's hands until its finalizer clears it
            release = (slots.token, slots.worker, j, key)
    return _PooledBatch(out, release) if release is not None else out


class ShardDataset(Dataset):
    product: str = ""

    def __init__(self, root: str | Path, split: str | None = None,
                 transform: Callable[[dict], dict] | None = None, verify_checksums: bool = False):
        self.root = Path(root)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        version = PublishedVersion(self.root)
        version.check_schema()
        self.columns = (*SAMPLE_ID_COLUMNS, *PRODUCT_COLUMNS[self.product])
        rows = version.samples(self.product, split)
        self.rows = rows[[*self.columns, Col.SHARD, Col.KEY]].to_dict("records")
        version.check_shards({r[Col.SHARD] for r in self.rows}, verify_checksums)
        self.config = version.config
        self.keys = [spec.key for spec in product_datasets(self.product, self.config)]
        self.transform = transform
        self._files: dict[str, h5py.File] = {}
        self._pid: int | None = None
        # batch-slot flags, shared with the DataLoader workers this dataset will be handed to
        self._token = f"{os.getpid()}-{next(_TOKENS)}"  # never reused in this process
        self._flags = torch.empty(0, dtype=torch.uint8).set_(
            torch.UntypedStorage._new_shared(MAX_WORKERS * MAX_SLOTS), 0, (MAX_WORKERS, MAX_SLOTS)).zero_()
        _FLAGS[self._token] = self._flags

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, name: str) -> h5py.File:
        if self._pid != os.getpid():  # new process: forget (never close) inherited handles
            self._files, self._pid = {}, os.getpid()
        if name not in self._files:
            self._files[name] = open_shard(shard_path(self.root, name))
        return self._files[name]

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
        where = f"{shard_path(self.root, row[Col.SHARD])}:{row[Col.KEY]}"
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
        state["_files"], state["_pid"] = {}, None
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = {}


def _on_images(sample: dict, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> dict:
    return {k: fn(k, v) if k in IMAGE_KEYS else v for k, v in sample.items()}


def line_integral(sample: dict) -> dict:
    """Transform: the stored convention, unchanged. Pixel p = sum over the ray of mu * step (dimensionless),
    p = -ln(I / I0) for a monochromatic beam; 0 where the ray misses the patient."""
    return sample


def transmission(sample: dict) -> dict:
    """Transform: stored line integrals p -> transmitted intensity I / I0 = exp(-p), in (0, 1]."""
    return _on_images(sample, lambda _, v: torch.exp(-v))


def normalised(sample: dict) -> dict:
    """Transform: each DRR view scaled to [0, 1] by its own maximum, v / max(v) (for display, not physics)."""
    def scale(_, v):
        return v / v.flatten(-2).amax(-1).clamp(min=1e-12)[..., None, None]
    return _on_images(sample, scale)


def log_normalised(sample: dict, bits: int = 8) -> dict:
    """Transform: an X-ray detector's log image as 8-bit-like [0, 1] -- per view,
    v = round((p - min p) / (max p - min p) * (2^bits - 1)) / (2^bits - 1), bright = dense (bone white).
    p is the line integral, i.e. -ln(I / I0): the log of the transmitted intensity, min-max windowed."""
    levels = float(2 ** bits - 1)

    def window(_, v):
        flat = v.flatten(-2)
        lo, hi = flat.amin(-1)[..., None, None], flat.amax(-1)[..., None, None]
        return torch.round((v - lo) / (hi - lo).clamp(min=1e-12) * levels) / levels
    return _on_images(sample, window)


class PoissonNoise:
    """Transform: quantum noise of a detector receiving `photons` per pixel in air. Counts
    N ~ Poisson(photons * exp(-p)); the noisy line integral is -ln(max(N, 1) / photons) (same convention
    as stored). Seeded per (seed, sample_id, epoch): the same noise for a sample in any worker or rank,
    fresh noise each epoch after `set_epoch`."""

    def __init__(self, photons: float = 1e4, seed: int = 0):
        if photons <= 0:
            raise ValueError(f"photons must be positive, got {photons}")
        self.photons, self.seed, self.epoch = float(photons), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, sample: dict) -> dict:
        generator = torch.Generator().manual_seed(stable_hash(self.seed, sample.get(Col.SAMPLE_ID, ""), self.epoch))

        def noisy(_, v):
            expected = (self.photons * torch.exp(-v.double())).cpu()
            counts = torch.poisson(expected, generator=generator).clamp(min=1.0)
            return (-torch.log(counts / self.photons)).to(v.dtype)
        return _on_images(sample, noisy)


class VertebraDataset(ShardDataset):
    """128^3 `ct` (int16 HU), `mask` (this vertebra), `labels` (canonical ids), with `level`."""

    product = VERTEBRA


class X2CTDataset(ShardDataset):
    """150^3 `ct` with `xray1` (AP) and `xray2` (lateral) DRRs, X2CT-GAN's names."""

    product = X2CT


class DRRDataset(ShardDataset):
    """V views of whole-CT `drr` and `drr_vertebra`, with poses and the rotation centre.

    `geometry` (detector) and `attenuation` are the version's: with `pipelines.consumers.diffdrr_pose`
    and `diffdrr_drr` they re-render a stored view with diffdrr itself."""

    product = DRR

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.geometry = Geometry.from_record(self.config.detector.model_dump())
        self.attenuation = self.config.attenuation


class VertebraPairDataset(Dataset):
    """3D/3D registration pairs from pairs.parquet: `fixed` and `moving` vertebra samples."""

    def __init__(self, root: str | Path, split: str | None = None,
                 transform: Callable[[dict], dict] | None = None):
        self.vertebrae = VertebraDataset(root, split=split)
        pairs = PublishedVersion(Path(root)).pairs()
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


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of n samples for (seed, epoch): the same in every process and on every machine."""
    return np.random.default_rng(stable_hash(seed, "epoch", epoch)).permutation(n)


def partition(positions: np.ndarray, rank: int, world_size: int, worker: int, workers: int,
              batch_size: int) -> np.ndarray:
    """The epoch positions one DataLoader worker of one rank yields, in order.

    Rank r takes every world_size-th position. Its positions are then dealt to workers in whole
    batches, round robin -- the order in which a DataLoader collects batches from its workers -- so
    a rank receives its positions in order, and the first k batches on every rank are exactly the
    first k * batch_size * world_size positions of the epoch.
    """
    mine = positions[rank::world_size]
    blocks = np.arange(len(mine)) // batch_size
    return mine[blocks % workers == worker]


@dataclass(frozen=True)
class IterationState:
    """Where an epoch stands: positions of its (seed, epoch) order consumed over all ranks."""

    seed: int
    epoch: int
    consumed: int
    num_samples: int


class ShuffledSamples(IterableDataset):
    """Iterate a map-style dataset in a shuffled order fixed by (seed, epoch), resumable mid-epoch.

    Every sample is yielded exactly once per epoch over all ranks and DataLoader workers. Pass the
    DataLoader's `batch_size` so that workers hold whole batches: then, after k batches on each rank,
    `state_dict(k * batch_size)` names exactly the samples consumed, and an iterable given that state
    with `load_state_dict` yields only the rest of the epoch (with any number of ranks or workers).
    Call `set_epoch(e)` before each epoch, as with DistributedSampler.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, rank: int = 0, world_size: int = 1, batch_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.seed = seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch = 0
        self.resume_from = 0  # epoch positions already consumed (over all ranks)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.resume_from = 0
        self.epoch = epoch

    def order(self) -> np.ndarray:
        return epoch_order(len(self.dataset), self.seed, self.epoch)

    def remaining(self) -> np.ndarray:
        """Dataset indices of this epoch not yet consumed, in epoch order."""
        return self.order()[self.resume_from:]

    def __len__(self) -> int:
        return len(range(self.rank, len(self.remaining()), self.world_size))

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        for index in partition(self.remaining(), self.rank, self.world_size, worker, workers, self.batch_size):
            yield self.dataset[int(index)]

    def state_dict(self, samples_seen: int) -> dict:
        """State after this rank consumed `samples_seen` samples of the current epoch (k batches: k * batch_size);
        every rank is assumed to have consumed as many, as in data-parallel training. Plain ints: save it
        with the checkpoint."""
        if samples_seen < 0:
            raise ValueError(f"samples_seen must be >= 0, got {samples_seen}")
        consumed = min(self.resume_from + samples_seen * self.world_size, len(self.dataset))
        return asdict(IterationState(self.seed, self.epoch, consumed, len(self.dataset)))

    def load_state_dict(self, state: dict) -> None:
        saved = IterationState(**state)
        if saved.num_samples != len(self.dataset) or saved.seed != self.seed:
            raise ValueError(f"state is for {saved.num_samples} samples with seed {saved.seed}; this "
                             f"iterable has {len(self.dataset)} samples with seed {self.seed}")
        self.epoch, self.resume_from = int(saved.epoch), int(saved.consumed)


DATASETS = {cls.product: cls for cls in (VertebraDataset, X2CTDataset, DRRDataset)}


def open_dataset(root: str | Path, product: str, split: str | None = None, **kwargs) -> ShardDataset:
    if product not in DATASETS:
        raise ValueError(f"product must be one of {sorted(DATASETS)}, got {product!r}")
    return DATASETS[product](root, split=split, **kwargs)
