"""Batch memory: each DataLoader worker decodes a batch straight into a reusable shared-memory slot,
and `collate` hands that slot to the trainer as it is (no copy on either side)."""
from __future__ import annotations

import itertools
import weakref

import numpy as np
import torch
from torch.utils.data import default_collate


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
_FLAGS: weakref.WeakValueDictionary[str, torch.Tensor] = weakref.WeakValueDictionary()  # token -> flags
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
