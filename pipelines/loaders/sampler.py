"""A shuffled, resumable order over a dataset, split across DDP ranks and DataLoader workers."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from pipelines.ops.sampling import stable_hash


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of n samples for (seed, epoch): the same in every process and on every machine."""
    return np.random.default_rng(stable_hash(seed, "epoch", epoch)).permutation(n)


def block_order(shards: list[str], sizes: dict[str, int], block_bytes: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of the samples (sample i lives in `shards[i]`) for (seed, epoch) that visits them
    block by block: the shards in a shuffled order, grouped into blocks of at most `block_bytes` (at least
    one shard each), each block's samples shuffled among themselves. A reader whose cache holds a few
    blocks then fetches every shard once per epoch."""
    rng = np.random.default_rng(stable_hash(seed, "blocks", epoch))
    members: dict[str, list[int]] = {}
    for i, name in enumerate(shards):
        members.setdefault(name, []).append(i)
    names = sorted(members)
    blocks, block, total = [], [], 0
    for k in rng.permutation(len(names)):
        name = names[k]
        if block and total + sizes[name] > block_bytes:
            blocks.append(block)
            block, total = [], 0
        block.append(name)
        total += sizes[name]
    blocks += [block] if block else []
    parts = [rng.permutation(np.concatenate([members[n] for n in b])) for b in blocks]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


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


class EpochPositions(IterableDataset):
    """Positions 0 .. num_samples - 1 of an epoch in `order()`, dealt to DDP ranks and DataLoader workers
    by `partition`, resumable mid-epoch; a subclass says what a position yields (`at`).

    Every position is yielded exactly once per epoch over all ranks and workers. Pass the DataLoader's
    `batch_size` so that workers hold whole batches: then, after k batches on each rank,
    `state_dict(k * batch_size)` names exactly the positions consumed, and an iterable given that state
    with `load_state_dict` yields only the rest of the epoch (with any number of ranks or workers).
    Call `set_epoch(e)` before each epoch, as with DistributedSampler.
    """

    def __init__(self, seed: int = 0, rank: int = 0, world_size: int = 1, batch_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.seed = seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch = 0
        self.resume_from = 0  # epoch positions already consumed (over all ranks)

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def order(self) -> np.ndarray:
        """What each epoch position yields, as an index for `at`."""
        return np.arange(self.num_samples)

    def at(self, index: int):
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.resume_from = 0
        self.epoch = epoch

    def remaining(self) -> np.ndarray:
        """Indices of this epoch not yet consumed, in epoch order."""
        return self.order()[self.resume_from:]

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples - self.resume_from, self.world_size))

    def assigned(self) -> np.ndarray:
        """The indices this process (rank, DataLoader worker) yields in the rest of the epoch, in order."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return partition(self.remaining(), self.rank, self.world_size, worker, workers, self.batch_size)

    def __iter__(self):
        for index in self.assigned():
            yield self.at(int(index))

    def state_dict(self, samples_seen: int) -> dict:
        """State after this rank consumed `samples_seen` samples of the current epoch (k batches: k * batch_size);
        every rank is assumed to have consumed as many, as in data-parallel training. Plain ints: save it
        with the checkpoint."""
        if samples_seen < 0:
            raise ValueError(f"samples_seen must be >= 0, got {samples_seen}")
        consumed = min(self.resume_from + samples_seen * self.world_size, self.num_samples)
        return asdict(IterationState(self.seed, self.epoch, consumed, self.num_samples))

    def load_state_dict(self, state: dict) -> None:
        saved = IterationState(**state)
        if saved.num_samples != self.num_samples or saved.seed != self.seed:
            raise ValueError(f"state is for {saved.num_samples} samples with seed {saved.seed}; this "
                             f"iterable has {self.num_samples} samples with seed {self.seed}")
        self.epoch, self.resume_from = int(saved.epoch), int(saved.consumed)


class ShuffledSamples(EpochPositions):
    """Iterate a map-style dataset in a shuffled order fixed by (seed, epoch), resumable mid-epoch
    (see `EpochPositions` for the guarantees and how to resume).

    A dataset may shape the order (`dataset.epoch_order(seed, epoch)`: a remote version larger than its
    cache is shuffled in shard blocks) and fetch ahead (`dataset.prefetch(indices)`: each process's
    shards are downloaded in the order it will read them)."""

    def __init__(self, dataset: Dataset, seed: int = 0, rank: int = 0, world_size: int = 1, batch_size: int = 1):
        super().__init__(seed, rank, world_size, batch_size)
        self.dataset = dataset

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def order(self) -> np.ndarray:
        shaped = getattr(self.dataset, "epoch_order", None)
        return shaped(self.seed, self.epoch) if shaped else epoch_order(len(self.dataset), self.seed, self.epoch)

    def __iter__(self):
        indices = self.assigned()
        if hasattr(self.dataset, "prefetch"):
            self.dataset.prefetch(indices)
        for index in indices:
            yield self.at(int(index))

    def at(self, index: int):
        return self.dataset[index]
