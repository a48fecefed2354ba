"""Loaders on an s3:// version: the same samples as the local version, resumable mid-epoch with a cold or
a warm cache, shard-block shuffling when the version is larger than the cache, and DRRStream."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from pipelines.loaders.datasets import DRRDataset, VertebraDataset
from pipelines.loaders.sampler import ShuffledSamples, block_order, epoch_order


def _digest(sample: dict) -> str:
    return hashlib.sha256(sample["ct"].numpy().tobytes()).hexdigest()[:16]


def _run(dataset, seed=5, epoch=1, batch=2, state=None, stop_after=None):
    sampler = ShuffledSamples(dataset, seed=seed, batch_size=batch)
    sampler.set_epoch(epoch)
    if state is not None:
        sampler.load_state_dict(state)
    out = []
    for i, sample in enumerate(sampler):
        if stop_after is not None and i == stop_after:
            return out, sampler.state_dict(stop_after)
        out.append((sample["sample_id"], _digest(sample)))
    return out, None


def test_block_order_is_a_permutation_visiting_shards_block_by_block():
    shards = [f"s{i % 7}" for i in range(70)]
    sizes = {f"s{i}": 10 for i in range(7)}
    order = block_order(shards, sizes, 25, seed=1, epoch=0)  # blocks of two shards
    assert sorted(order.tolist()) == list(range(70))
    blocks = [{shards[i] for i in order[k:k + 20]} for k in range(0, 60, 20)]
    assert all(len(b) == 2 for b in blocks) and len(set().union(*blocks)) == 6
    assert np.array_equal(order, block_order(shards, sizes, 25, seed=1, epoch=0))
    assert not np.array_equal(order, block_order(shards, sizes, 25, seed=1, epoch=1))


def test_remote_samples_equal_local_and_resume_with_cold_and_warm_cache(published, tmp_path):
    local = VertebraDataset(published["local"])
    full, _ = _run(local)
    assert len(full) == len(local)
    cache = tmp_path / "cache"
    head, state = _run(VertebraDataset(published["url"], cache_dir=cache), stop_after=4)
    assert head == full[:4]
    # resumed on a fresh process's dataset: once with the warm cache, once with a cold one
    warm = VertebraDataset(published["url"], cache_dir=cache)
    rest_warm, _ = _run(warm, state=state)
    assert warm.version.cache.stats.bytes_fetched == 0
    cold = VertebraDataset(published["url"], cache_dir=tmp_path / "cold")
    rest_cold, _ = _run(cold, state=state)
    assert head + rest_warm == full and head + rest_cold == full
    assert cold.version.cache.stats.objects_downloaded > 0


def test_a_version_larger_than_the_cache_is_read_shard_block_by_block(published, tmp_path):
    probe = VertebraDataset(published["url"], cache_dir=tmp_path / "probe")
    sizes = probe.version.shard_bytes({r["shard"] for r in probe.rows})
    limit = 4 * max(sizes.values()) + 1  # the smallest cache allowed
    assert sum(sizes.values()) > limit, "the fixture must be larger than the cache"
    dataset = VertebraDataset(published["url"], cache_dir=tmp_path / "small", cache_limit=limit, open_shards=1)
    order = dataset.epoch_order(5, 1)
    assert sorted(order.tolist()) == list(range(len(dataset)))
    assert not np.array_equal(order, epoch_order(len(dataset), 5, 1))  # not the plain shuffle
    got, _ = _run(dataset)
    local = VertebraDataset(published["local"])
    assert sorted(got) == sorted((local[i]["sample_id"], _digest(local[i])) for i in range(len(local)))
    stats = dataset.version.cache.stats
    assert stats.objects_downloaded == len(sizes) + 1  # each shard once (+ the manifest)
    assert stats.over_limit == 0 and dataset.version.cache.used_bytes() <= limit
    # resume state is what it always was: positions consumed
    head, state = _run(VertebraDataset(published["url"], cache_dir=tmp_path / "small", cache_limit=limit), stop_after=3)
    rest, _ = _run(VertebraDataset(published["url"], cache_dir=tmp_path / "small", cache_limit=limit), state=state)
    assert head + rest == got and set(state) == {"seed", "epoch", "consumed", "num_samples"}


def test_drr_dataset_and_stream_read_from_the_store(published, tmp_path):
    from pipelines.loaders.stream import DRRStream

    remote, local = DRRDataset(published["url"], cache_dir=tmp_path), DRRDataset(published["local"])
    assert remote.geometry == local.geometry
    assert torch.equal(remote[0]["drr"], local[0]["drr"])
    config = {"height": 24, "width": 24, "pixel_spacing_mm": 4.0, "items_per_epoch": 2, "realistic": False}
    a = DRRStream(published["url"], config=config, seed=2, cache_dir=tmp_path)
    b = DRRStream(published["local"], config=config, seed=2)
    items_a, items_b = list(a), list(b)
    assert len(items_a) == 2
    for x, y in zip(items_a, items_b):
        assert x["sample_id"] == y["sample_id"] and torch.equal(x["drr"], y["drr"])


def test_pairs_table_comes_from_the_store(published, tmp_path):
    from pipelines.loaders.datasets import VertebraPairDataset

    remote = VertebraPairDataset(published["url"], cache_dir=tmp_path)
    local = VertebraPairDataset(published["local"])
    assert len(remote) == len(local) > 0
    assert torch.equal(remote[0]["fixed"]["ct"], local[0]["fixed"]["ct"])
