"""One rank of the two-rank loader tests (run as a script by tests/loaders/test_distributed.py).

`ranks.py ROOT`: each rank iterates a ShuffledSamples over a published version through a DataLoader
with two workers; `ranks.py ROOT stream`: a DRRStream through its loader (two workers, torch's
default collate). What each rank saw is gathered over gloo and rank 0 prints one JSON line.
"""
import hashlib
import json
import sys

import torch.distributed as dist
from torch.utils.data import DataLoader

from pipelines.loaders import ShuffledSamples, VertebraDataset

BATCH, WORKERS, STOP_AFTER = 2, 2, 3


def ids(loader, limit=None):
    out = []
    for n, batch in enumerate(loader):
        if limit is not None and n == limit:
            break
        out += list(batch["sample_id"])
    return out


def main(root: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def iterable():
        return ShuffledSamples(VertebraDataset(root), seed=7, rank=rank, world_size=world, batch_size=BATCH)

    def loader(ds):
        return DataLoader(ds, batch_size=BATCH, num_workers=WORKERS, multiprocessing_context="fork")

    ds = iterable()
    seen = {"epoch0": ids(loader(ds)), "epoch0_again": ids(loader(ds))}
    ds.set_epoch(1)
    seen["epoch1"] = ids(loader(ds))
    # mid-epoch: stop after STOP_AFTER batches, save the state, restart in a fresh iterable
    ds = iterable()
    ds.set_epoch(2)
    seen["before_stop"] = ids(loader(ds), limit=STOP_AFTER)
    state = ds.state_dict(STOP_AFTER * BATCH)
    restarted = iterable()
    restarted.load_state_dict(json.loads(json.dumps(state)))  # as a checkpoint would carry it
    seen["after_restart"] = ids(loader(restarted))
    seen["epoch2_uninterrupted"] = ids(loader(ds_epoch(iterable(), 2)))
    gathered = [None] * world
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        print(json.dumps({"world_size": world, "workers": WORKERS, "batch": BATCH, "state": state,
                          "n_samples": len(VertebraDataset(root)), "ranks": gathered}))
    dist.destroy_process_group()


def ds_epoch(ds, epoch):
    ds.set_epoch(epoch)
    return ds


STREAM = {"height": 32, "width": 32, "items_per_epoch": 16, "views_per_case": 2, "xray": {"kv": [80, 80]}}


def digest(tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def streamed(loader, limit=None):
    """(position, digest of its realistic views, of its exact views) of each item, in arrival order."""
    out = []
    for n, batch in enumerate(loader):
        if limit is not None and n == limit:
            break
        out += [[int(p), digest(x), digest(d)] for p, x, d in zip(batch["position"], batch["drr_xray"], batch["drr"])]
    return out


def main_stream(root: str) -> None:
    from pipelines.loaders.stream import DRRStream

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def stream():
        return DRRStream(root, config=STREAM, seed=7, rank=rank, world_size=world, batch_size=BATCH)

    ds = stream()
    seen = {"epoch0": streamed(ds.loader(WORKERS))}
    ds.set_epoch(1)
    seen["before_stop"] = streamed(ds.loader(WORKERS), limit=STOP_AFTER)
    state = ds.state_dict(STOP_AFTER * BATCH)
    restarted = stream()
    restarted.load_state_dict(json.loads(json.dumps(state)))
    seen["after_restart"] = streamed(restarted.loader(WORKERS))
    gathered = [None] * world
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        print(json.dumps({"world_size": world, "workers": WORKERS, "batch": BATCH, "state": state,
                          "n_items": ds.num_samples, "ranks": gathered}))
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[2:] == ["stream"]:
        main_stream(sys.argv[1])
    else:
        main(sys.argv[1])
