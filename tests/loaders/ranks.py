"""One rank of the two-rank loader test (run as a script by tests/loaders/test_distributed.py).

Each rank iterates a ShuffledSamples over a published version through a DataLoader with two
workers; sample ids are gathered over gloo and rank 0 prints one JSON line with everything seen.
"""
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


if __name__ == "__main__":
    main(sys.argv[1])
