"""A version read from an object store: the card from the store, every other file through the node's
cache (`pipelines.io.object_cache`), and `open_version` choosing between it and a local folder."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipelines.errors import ShardError, StoreError
from pipelines.io.object_cache import ObjectCache, Pinned
from pipelines.io.publish_store import read_store_card
from pipelines.io.shards import PublishedVersion
from pipelines.io.store import S3Url, StoreOptions, is_remote
from schemas.card import ObjectRecord
from schemas.layout import (
    CASES_PARQUET,
    DATASET_CARD,
    MANIFEST_PARQUET,
    PAIRS_PARQUET,
    STORE_CACHE_DIR,
    shard_record_file,
    user_cache_dir,
)

DEFAULT_CACHE = user_cache_dir() / STORE_CACHE_DIR
MIN_SHARDS_IN_CACHE = 4  # cache_limit must hold this many of the largest shard: one open, the next ones coming


def open_version(root: str | Path, cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 store: StoreOptions | None = None) -> PublishedVersion:
    """A local version folder, or an `s3://.../<dataset>/<version>` read through a cache in `cache_dir`
    (default ~/.cache/spineforge/store) holding at most `cache_limit` bytes (default: no limit)."""
    if is_remote(root):
        return RemoteVersion(str(root), cache_dir, cache_limit, store)
    return PublishedVersion(Path(root))


class RemoteVersion(PublishedVersion):
    """A version in an object store. Tables are fetched once into the cache; shards on demand or ahead
    (`prefetch`), whole, verified, and pinned while open (`open_file`)."""

    def __init__(self, url: str, cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 store: StoreOptions | None = None):
        self.url = S3Url.parse(url)
        self.root = str(self.url)
        self.store = store or StoreOptions()
        if cache_limit is not None and cache_limit <= 0:
            raise StoreError(f"cache_limit must be a positive number of bytes, got {cache_limit}")
        card = read_store_card(self.store.client(), self.url)
        if card is None:
            raise StoreError(f"{self.url}: no published version there (no {DATASET_CARD})")
        if not card.objects:
            raise StoreError(f"{self.url}/{DATASET_CARD}: lists no objects (not written by spineforge publish)")
        self.card = card
        self.cache = ObjectCache(cache_dir or DEFAULT_CACHE, cache_limit, self.url.parent(), self.store)
        self._prefetcher: Prefetcher | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_prefetcher"] = None  # a thread: each process starts its own
        return state

    def object(self, rel: str) -> ObjectRecord:
        if rel not in self.card.objects:
            raise ShardError(f"{self.url}/{rel}: not listed in {DATASET_CARD}")
        return self.card.objects[rel]

    def _table(self, rel: str) -> pd.DataFrame:
        pinned = self.cache.open(self.object(rel))
        try:
            return pd.read_parquet(pinned.path)
        finally:
            pinned.close()

    @property
    def manifest(self) -> pd.DataFrame:
        if "_manifest" not in self.__dict__:
            self._manifest = self._table(MANIFEST_PARQUET)
        return self._manifest

    @property
    def cases(self) -> pd.DataFrame:
        if "_cases" not in self.__dict__:
            self._cases = self._table(CASES_PARQUET)
        return self._cases

    def pairs(self) -> pd.DataFrame:
        return self._table(PAIRS_PARQUET)

    def shard_path(self, name: str) -> str:  # where a shard lives, for messages
        return f"{self.url}/{shard_record_file(name)}"

    def shard_object(self, name: str) -> ObjectRecord:
        return self.object(shard_record_file(name))

    def shard_bytes(self, names: Iterable[str]) -> dict[str, int]:
        return {n: self.shard_object(n).bytes for n in names}

    def check_shards(self, names, verify_checksums: bool = False) -> None:
        """Each named shard is in the card; the cache can hold a few of the largest (downloads are always
        verified, so `verify_checksums` adds nothing here)."""
        listed = {Path(s.file).name for s in self.card.shards}
        for name in sorted(set(names)):
            if name not in listed:
                raise ShardError(f"{self.shard_path(name)}: named by the manifest but not listed in {DATASET_CARD}")
            self.shard_object(name)
        largest = max(self.shard_bytes(names).values(), default=0)
        limit = self.cache.limit
        if limit is not None and limit < MIN_SHARDS_IN_CACHE * largest:
            raise StoreError(f"cache_limit {limit / 1e6:.1f} MB is below {MIN_SHARDS_IN_CACHE} x the largest shard "
                             f"({largest / 1e6:.1f} MB) of {self.url}: give at least "
                             f"{MIN_SHARDS_IN_CACHE * largest / 1e6:.0f} MB")

    def _own_prefetcher(self) -> Prefetcher | None:
        """This process's prefetcher: one inherited through a fork has no threads (and its lock may have
        been held at the fork), so it is dropped untouched."""
        if self._prefetcher is not None and self._prefetcher.pid != os.getpid():
            self._prefetcher = None
        return self._prefetcher

    def open_file(self, name: str) -> Pinned:
        """A shard's local file, downloaded if need be and pinned (not evictable) until closed."""
        if self._own_prefetcher() is not None:
            self._prefetcher.reached(name)
        return self.cache.open(self.shard_object(name))

    def prefetch(self, names_in_order: list[str], budget: int | None = None) -> None:
        """Download shards ahead of the reader, in the order it will open them, while at most `budget`
        bytes (default: half the cache limit) lie ahead of it. Replaces any earlier prefetch."""
        if self._own_prefetcher() is not None:
            self._prefetcher.stop()
        if budget is None:
            budget = self.cache.limit // 2 if self.cache.limit is not None else sum(self.shard_bytes(names_in_order).values())
        self._prefetcher = Prefetcher(self.cache, [self.shard_object(n) for n in names_in_order], names_in_order, budget)

    def stop_prefetch(self) -> None:
        if self._own_prefetcher() is not None:
            self._prefetcher.stop()
            self._prefetcher = None


class Prefetcher:
    """`threads` threads downloading objects in the reader's order, at most `budget` bytes ahead of it.

    An object another downloader of this node holds (a DataLoader worker's own prefetcher, say) is
    skipped rather than waited for, so the workers of a node download different objects side by side."""

    def __init__(self, cache: ObjectCache, objects: list[ObjectRecord], names: list[str], budget: int,
                 threads: int = 2):
        self.cache, self.objects, self.budget = cache, objects, max(budget, 1)
        self.pid = os.getpid()
        self.position = {name: i for i, name in reversed(list(enumerate(names)))}
        self.cursor = 0  # the object the reader opened last
        self.next = 0  # the next object to claim
        self.error: Exception | None = None
        self._wake = threading.Condition()
        self._stopped = False
        self.threads = [threading.Thread(target=self._run, name="spineforge-prefetch", daemon=True)
                        for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def reached(self, name: str) -> None:
        with self._wake:
            self.cursor = max(self.cursor, self.position.get(name, self.cursor))
            self._wake.notify_all()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()

    def _claim(self) -> int | None:
        with self._wake:
            while not self._stopped and self.next < len(self.objects):
                i = self.next
                ahead = sum(o.bytes for o in self.objects[self.cursor:i + 1])
                if i <= self.cursor or ahead <= self.budget:
                    self.next += 1
                    return i
                self._wake.wait(0.5)
            return None

    def _run(self) -> None:
        while (index := self._claim()) is not None:
            try:
                self.cache.fetch(self.objects[index], wait=False)
            except Exception as exc:  # the reader meets it again when it opens the shard, and reports it there
                self.error = exc
                return
