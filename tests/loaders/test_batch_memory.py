"""Batches decoded straight into reusable shared memory: never overwritten while the trainer holds them."""
import gc

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

import pipelines.loaders.batch as loaders
from pipelines.loaders import MAX_SLOTS, VertebraDataset, collate

# Workers are spawned: forked from this pytest process (which ran a Prefect build) they exit with status 1
# at shutdown whatever the collate; a trainer script's forked workers are tested in test_cli_demo.
SPAWN = "spawn"


def slots_in_worker(sample: dict) -> dict:
    """Transform run inside the worker: how many batch slots this worker has allocated so far."""
    sample["slots"] = sum(len(s.storages) for s in loaders._SLOTS.values())
    return sample


@pytest.fixture(scope="module")
def reference(training_version):
    ds = VertebraDataset(training_version[0])
    return {ds[i]["sample_id"]: ds[i] for i in range(len(ds))}


def _check(batch: dict, reference: dict) -> None:
    for j, sid in enumerate(batch["sample_id"]):
        for key, value in reference[sid].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(batch[key][j], value), (sid, key)


def test_held_batches_and_views_stay_intact_beyond_the_slot_limit(training_version, reference):
    ds = VertebraDataset(training_version[0], transform=slots_in_worker)
    three_epochs = RandomSampler(ds, num_samples=3 * len(ds), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate, sampler=three_epochs,
                        multiprocessing_context=SPAWN)
    held, views = [], []
    for batch in loader:  # 72 batches held, 36 per worker: more than MAX_SLOTS
        held.append(batch)
        views.append((batch["sample_id"][0], batch["ct"][0, 3:5]))  # a view outliving its batch dict
    assert len(held) == 3 * len(ds) > 2 * MAX_SLOTS
    assert max(int(b["slots"].max()) for b in held) == MAX_SLOTS  # the cap holds; one-off buffers beyond it
    for batch in held:
        _check(batch, reference)
    del held
    gc.collect()
    for _ in loader:  # more batches, after the dicts (not the views) are gone
        pass
    for sid, view in views:
        assert torch.equal(view, reference[sid]["ct"][3:5]), sid


def test_dropped_batches_give_their_memory_back(training_version, reference):
    ds = VertebraDataset(training_version[0], transform=slots_in_worker)
    four_epochs = RandomSampler(ds, num_samples=4 * len(ds), generator=torch.Generator().manual_seed(1))
    most = 0
    for batch in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate, sampler=four_epochs,
                            multiprocessing_context=SPAWN):
        _check(batch, reference)
        most = max(most, int(batch["slots"].max()))
    assert most <= 6  # reused: in flight are at most the prefetched batches and the one in hand


@pytest.mark.parametrize("workers, collate_fn", [(0, None), (0, collate), (2, None)])
def test_every_loader_setup_reads_the_same_samples(training_version, reference, workers, collate_fn):
    ds = VertebraDataset(training_version[0])
    n = 0
    context = SPAWN if workers else None
    for batch in DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate_fn,
                            multiprocessing_context=context):
        _check(batch, reference)
        n += len(batch["sample_id"])
    assert n == len(ds)
