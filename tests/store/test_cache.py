"""The node cache of remote objects against a real S3 server: verified whole-object downloads in parts,
resumed after a kill, retried after a cut connection, one downloader per object, LRU eviction that never
takes an open file, and the size rules."""
from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipelines.errors import StoreError
from pipelines.io.object_cache import ObjectCache
from pipelines.io.store import S3Url, StoreOptions
from schemas.card import ObjectRecord
from schemas.layout import cache_lock_path, cache_partial_paths
from tests.store.proxy import FaultProxy

MiB = 1024 * 1024
STORE = S3Url("spineforge", "cache-tests")


def _blob(client, name: str, size: int, seed: int) -> tuple[ObjectRecord, bytes]:
    """A random object in the store, as a version would record it."""
    import numpy as np

    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    sha = hashlib.sha256(data).hexdigest()
    key = f"objects/{sha}.bin"
    client.put_object(Bucket=STORE.bucket, Key=STORE.key(key), Body=data)
    return ObjectRecord(key=key, sha256=sha, bytes=size), data


def test_download_in_parts_is_verified_and_cached_once(client, tmp_path):
    obj, data = _blob(client, "a", 5 * MiB + 123, 1)
    cache = ObjectCache(tmp_path, None, STORE, part_bytes=MiB)
    pinned = cache.open(obj)
    assert pinned.path.read_bytes() == data
    pinned.close()
    assert (cache.stats.parts_fetched, cache.stats.bytes_fetched) == (6, len(data))
    assert cache.open(obj).path == pinned.path and cache.stats.parts_fetched == 6  # warm: nothing fetched


def test_a_cut_connection_refetches_only_that_part(s3_server, client, tmp_path):
    obj, data = _blob(client, "cut", 4 * MiB, 2)
    proxy = FaultProxy(s3_server.port)
    try:
        cache = ObjectCache(tmp_path, None, STORE, StoreOptions(endpoint_url=proxy.endpoint), part_bytes=MiB)
        proxy.cut_after(600_000, times=2)  # the first two connections break inside their first part
        assert cache.open(obj).path.read_bytes() == data
    finally:
        proxy.close()
    assert proxy.cuts_done == 2
    assert cache.stats.part_retries >= 1 and cache.stats.parts_fetched == 4


DOWNLOADER = """
import sys
from pipelines.io.object_cache import ObjectCache
from pipelines.io.store import S3Url, StoreOptions
from schemas.card import ObjectRecord
from schemas.layout import cache_lock_path, cache_partial_paths
cache = ObjectCache(sys.argv[1], None, S3Url("spineforge", "cache-tests"), StoreOptions(endpoint_url=sys.argv[2]),
                    part_bytes=int(sys.argv[3]))
cache.fetch(ObjectRecord.model_validate_json(sys.argv[4]))
"""


def test_a_killed_download_resumes_and_refetches_at_most_one_part(s3_server, client, tmp_path):
    obj, data = _blob(client, "kill", 12 * MiB, 3)
    proxy = FaultProxy(s3_server.port)
    proxy.rate = 8 * MiB  # bytes/s: the download takes ~1.5 s, long enough to be killed inside it
    journal = tmp_path / "partial" / f"{obj.sha256}.bin.parts.json"
    try:
        child = subprocess.Popen([sys.executable, "-c", DOWNLOADER, str(tmp_path), proxy.endpoint, str(MiB),
                                  obj.model_dump_json()])
        deadline = time.monotonic() + 60
        while not (journal.is_file() and json.loads(journal.read_text() or "{}").get("done", 0) >= 4):
            assert child.poll() is None and time.monotonic() < deadline, "download ended before it was killed"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        proxy.close()
    done = json.loads(journal.read_text())["done"]
    assert 4 <= done < 12
    cache = ObjectCache(tmp_path, None, STORE, part_bytes=MiB)
    assert not cache.path(obj).exists()  # nothing visible until verified
    cache.fetch(obj)
    assert cache.path(obj).read_bytes() == data
    # exactly the parts the journal did not hold: the one in flight at the kill, and those never started
    assert cache.stats.parts_fetched == 12 - done


def _fetch_in_process(root, obj_json, queue):
    cache = ObjectCache(root, None, STORE, part_bytes=MiB)
    downloaded = cache.fetch(ObjectRecord.model_validate_json(obj_json))
    queue.put((downloaded, cache.stats.parts_fetched))


def test_one_downloader_per_object_per_node(client, tmp_path):
    obj, data = _blob(client, "shared", 8 * MiB, 4)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fetch_in_process, args=(str(tmp_path), obj.model_dump_json(), queue))
             for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert sorted(r[0] for r in results) == [False, False, True]
    assert sum(r[1] for r in results) == 8  # the object's parts, fetched once on this node
    assert (tmp_path / "objects" / f"{obj.sha256}.bin").read_bytes() == data


def test_eviction_is_least_recently_used_and_never_takes_an_open_file(client, tmp_path):
    objs = [_blob(client, f"e{i}", MiB, 10 + i)[0] for i in range(4)]
    cache = ObjectCache(tmp_path, 3 * MiB, STORE, part_bytes=MiB)
    held = cache.open(objs[0])  # oldest, but open
    for obj in objs[1:3]:
        cache.open(obj).close()
        time.sleep(0.01)
    cache.open(objs[3]).close()  # needs room: evicts objs[1], the least recently used closed one
    present = {o.key for o in objs if cache.path(o).exists()}
    assert present == {objs[0].key, objs[2].key, objs[3].key}
    assert cache.used_bytes() <= 3 * MiB and cache.stats.over_limit == 0
    assert held.path.read_bytes()[:4]  # still readable
    held.close()


class _HeldHead:
    """A store client whose HEAD of one key waits for `release`: a download caught between making room
    and fetching its first byte."""

    def __init__(self, client, key: str):
        self.client, self.key = client, key
        self.entered, self.release = threading.Event(), threading.Event()

    def head_object(self, **kwargs):
        if kwargs["Key"] == self.key:
            self.entered.set()
            assert self.release.wait(30)
        return self.client.head_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_two_downloads_at_once_count_each_other_against_the_limit(client, tmp_path):
    old, first, second = (_blob(client, f"r{i}", MiB, 40 + i)[0] for i in range(3))
    cache = ObjectCache(tmp_path, 2 * MiB + MiB // 2, STORE, part_bytes=MiB)
    cache.open(old).close()  # closed, so evictable
    held = _HeldHead(cache.options.client(), STORE.key(first.key))
    cache._client, cache._pid = held, os.getpid()  # this process's client, as the property would keep it
    thread = threading.Thread(target=cache.fetch, args=(first,))
    thread.start()
    assert held.entered.wait(30)  # `first` has made its room and not yet fetched a byte
    assert cache.used_bytes() == 2 * MiB  # ... but its whole size is already held
    cache.fetch(second)  # must evict `old`: `first` is coming
    held.release.set()
    thread.join(30)
    assert not cache.path(old).exists() and cache.path(first).exists() and cache.path(second).exists()
    assert cache.used_bytes() == 2 * MiB and cache.stats.over_limit == 0


def _journal_done(journal) -> int | None:
    try:
        return json.loads(journal.read_text()).get("done")
    except (FileNotFoundError, ValueError):
        return None


def test_a_finished_download_moves_in_under_the_cache_lock(client, tmp_path):
    """The size count lists the partial and the cached objects one folder after the other: a download
    moving its file between the two listings would be counted in neither, and room made on that count
    overfills the cache (seen once: a shard over the limit). The move waits for the cache-wide lock."""
    obj, _ = _blob(client, "m", 2 * MiB, 60)
    cache = ObjectCache(tmp_path, None, STORE, part_bytes=MiB)
    part, journal = cache_partial_paths(tmp_path, obj.key)
    with open(cache_lock_path(tmp_path), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        thread = threading.Thread(target=cache.fetch, args=(obj,))
        thread.start()
        deadline = time.time() + 30
        while _journal_done(journal) != 2:
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        assert part.is_file() and not cache.path(obj).exists()  # every byte fetched, the move held back
        assert 2 * MiB <= cache.used_bytes() < 2 * MiB + 4096  # the object (and its journal) counted once
    thread.join(30)
    assert cache.path(obj).exists() and not part.exists() and cache.used_bytes() == 2 * MiB


def test_a_tampered_object_is_an_error_and_never_cached(client, tmp_path):
    obj, data = _blob(client, "t", 2 * MiB, 5)
    client.put_object(Bucket=STORE.bucket, Key=STORE.key(obj.key), Body=data[::-1])  # same size, other bytes
    cache = ObjectCache(tmp_path, None, STORE, part_bytes=MiB)
    with pytest.raises(StoreError, match="sha256 .* differs"):
        cache.fetch(obj)
    assert not cache.path(obj).exists() and not list((tmp_path / "partial").iterdir())


def test_a_resumed_download_of_a_changed_object_starts_again(client, tmp_path):
    obj, data = _blob(client, "c", 3 * MiB, 6)
    cache = ObjectCache(tmp_path, None, STORE, part_bytes=MiB)
    part, journal = cache._journal(obj)
    part.write_bytes(b"\0" * obj.bytes)  # a journal from an earlier download, with another ETag
    journal.write_text(json.dumps({"etag": '"stale"', "bytes": obj.bytes, "part_bytes": MiB, "done": 2}))
    cache.fetch(obj)
    assert cache.path(obj).read_bytes() == data and cache.stats.parts_fetched == 3


def test_cache_limit_below_a_few_shards_is_a_clear_error(published, tmp_path):
    from pipelines.loaders.datasets import VolumeDataset

    with pytest.raises(StoreError, match=r"cache_limit .* below 4 x the largest shard"):
        VolumeDataset(published["url"], cache_dir=tmp_path, cache_limit=100_000)
    with pytest.raises(StoreError, match="positive"):
        VolumeDataset(published["url"], cache_dir=tmp_path, cache_limit=0)


def test_no_version_at_a_url_is_a_clear_error(s3_server, tmp_path):
    from pipelines.loaders.datasets import DRRDataset

    with pytest.raises(StoreError, match="no published version"):
        DRRDataset("s3://spineforge/nothing/here/v9", cache_dir=tmp_path)
    with pytest.raises(StoreError, match="no such bucket"):
        DRRDataset("s3://no-such-bucket-x/a/v1", cache_dir=tmp_path)


@pytest.mark.parametrize("workers", [0, 2])
def test_many_processes_read_the_same_node_cache(published, tmp_path, workers):
    """DataLoader workers share one cache: every sample equal to the local version's, every shard cached."""
    import torch
    from torch.utils.data import DataLoader

    from pipelines.loaders.datasets import VertebraDataset
    from pipelines.loaders.sampler import ShuffledSamples

    remote = VertebraDataset(published["url"], cache_dir=tmp_path)
    local = VertebraDataset(published["local"])
    loader = DataLoader(ShuffledSamples(remote, seed=3, batch_size=2), batch_size=2, num_workers=workers,
                        multiprocessing_context="forkserver" if workers else None)
    seen = {}
    for batch in loader:
        for i, sid in enumerate(batch["sample_id"]):
            seen[sid] = batch["ct"][i]
    expected = {local[i]["sample_id"]: local[i]["ct"] for i in range(len(local))}
    assert seen.keys() == expected.keys() and all(torch.equal(seen[k], expected[k]) for k in seen)
    shards = {r["shard"] for r in remote.rows}
    cached = {p.name for p in (tmp_path / "objects").iterdir()}
    objects = {remote.version.shard_object(s).key.split("/")[-1] for s in shards}
    assert objects <= cached
    assert not list((tmp_path / "partial").iterdir())
