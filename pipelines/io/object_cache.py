"""A node's bounded local cache of remote objects (shards and tables), shared by every process on it.

- Objects are downloaded whole, in ranged parts pinned to the object's ETag (`If-Match`), one part
  after another; a journal records the parts done, so a download killed at any point re-fetches at
  most the part it was in.
- Nothing becomes visible in the cache until its size and SHA-256 match the version's record: a
  changed or tampered object is an error and never enters the cache.
- One downloader per object per node: an exclusive file lock per object; the others wait, then find it.
- A reader pins an object with a shared lock on it while it has the file open; eviction (least recently
  used first) takes an object only when it can take the exclusive lock, so an open shard is never evicted.

The cache folder must be on a local file system (POSIX `flock`), one per node.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import StoreError
from pipelines.io.store import PART_BYTES, S3Url, StoreOptions, is_precondition_failed, store_errors
from schemas.card import ObjectRecord
from schemas.layout import (
    CACHE_DOWNLOAD_LOG,
    CACHE_LOCK_DIR,
    CACHE_OBJECT_DIR,
    CACHE_PARTIAL_DIR,
    DownloadLog,
    cache_lock_path,
    cache_object_path,
    cache_partial_paths,
    tmp_path,
)

log = logging.getLogger("spineforge")
RETRIES = 5  # attempts per part when the connection breaks mid-part
_STATS_LOCK = threading.Lock()


@dataclass
class CacheStats:
    """What this process fetched from the store (for tests and benchmarks)."""

    parts_fetched: int = 0
    bytes_fetched: int = 0
    objects_downloaded: int = 0
    part_retries: int = 0
    over_limit: int = 0  # downloads that had to exceed the limit: everything else was open

    def add(self, **counts: int) -> None:
        with _STATS_LOCK:  # prefetch threads and the reader count into one record
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


@dataclass
class Pinned:
    """An object in the cache held open (shared lock) until `close()`: it cannot be evicted meanwhile."""

    path: Path
    fd: int = field(repr=False)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the shared lock
            self.fd = -1

    def __del__(self) -> None:  # a reader dropped without close(): the object is evictable again
        self.close()


def _part_ranges(size: int, part: int) -> list[tuple[int, int]]:
    return [(start, min(start + part, size)) for start in range(0, size, part)] or [(0, 0)]


class ObjectCache:
    """Objects of one store, cached under `root` up to `limit_bytes` (None: no limit)."""

    def __init__(self, root: str | Path, limit_bytes: int | None, store: S3Url, options: StoreOptions | None = None,
                 part_bytes: int = PART_BYTES):
        self.root = Path(root)
        self.limit = limit_bytes
        self.store, self.options, self.part_bytes = store, options or StoreOptions(), part_bytes
        for sub in (CACHE_OBJECT_DIR, CACHE_PARTIAL_DIR, CACHE_LOCK_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._client, self._pid = None, None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"], state["_pid"], state["stats"] = None, None, CacheStats()
        return state

    @property
    def client(self):
        if self._pid != os.getpid():  # a client is never shared across a fork
            self._client, self._pid = self.options.client(), os.getpid()
        return self._client

    def path(self, obj: ObjectRecord) -> Path:
        return cache_object_path(self.root, obj.key)

    # --- reading -------------------------------------------------------------------------------

    def _pin_present(self, obj: ObjectRecord) -> Pinned | None:
        path = self.path(obj)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:  # evicted between open and lock
                raise FileNotFoundError(path)
        except FileNotFoundError:
            os.close(fd)
            return None
        os.utime(path)  # most recently used
        return Pinned(path, fd)

    def open(self, obj: ObjectRecord) -> Pinned:
        """The object, downloaded first if need be, pinned until the caller closes it."""
        pinned = self._pin_present(obj)
        while pinned is None:
            self.fetch(obj)
            pinned = self._pin_present(obj)
        return pinned

    def fetch(self, obj: ObjectRecord, wait: bool = True) -> bool | None:
        """Make the object present (downloading it unless another process of this node does); True if
        this call downloaded it. With `wait` False, None (at once) while another downloader has it."""
        if self.path(obj).is_file():
            return False
        with open(cache_lock_path(self.root, obj.key), "a+") as lock:
            try:  # one downloader per object per node; the rest wait here (or, not waiting, go on)
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            if self.path(obj).is_file():
                return False
            self._reserve(obj)
            self._download(obj)
            return True

    # --- downloading ---------------------------------------------------------------------------

    def _journal(self, obj: ObjectRecord) -> tuple[Path, Path]:
        return cache_partial_paths(self.root, obj.key)

    def _resume_point(self, obj: ObjectRecord, part: Path, journal: Path) -> tuple[str | None, int]:
        """(ETag, parts done) of an earlier, interrupted download of this object, or (None, 0)."""
        try:
            state = json.loads(journal.read_text())
        except (FileNotFoundError, ValueError):
            return None, 0
        if (state.get("bytes"), state.get("part_bytes")) != (obj.bytes, self.part_bytes) or not part.is_file():
            return None, 0
        return state.get("etag"), int(state.get("done", 0))

    def _download(self, obj: ObjectRecord) -> None:
        part, journal = self._journal(obj)
        key = self.store.key(obj.key)
        where = f"{self.store.child(obj.key)}"
        etag, done = self._resume_point(obj, part, journal)
        resumed_at, started = done, time.time()
        for _attempt in range(2):  # a second time from scratch if the object changed under a resumed download
            with store_errors(where):
                head = self.client.head_object(Bucket=self.store.bucket, Key=key)
            if int(head["ContentLength"]) != obj.bytes:
                self._discard(part, journal)
                raise StoreError(f"{where}: {head['ContentLength']} bytes in the store, the version records "
                                 f"{obj.bytes} (the object was changed; not cached)")
            if etag != head["ETag"]:
                etag, done = head["ETag"], 0
                resumed_at = 0
            try:
                digest = self._fetch_parts(obj, key, etag, done, part, journal, where)
                break
            except _Changed:
                self._discard(part, journal)
                etag, done = None, 0
        else:
            raise StoreError(f"{where}: the object keeps changing while it downloads; not cached")
        if digest != obj.sha256:
            self._discard(part, journal)
            raise StoreError(f"{where}: sha256 {digest[:12]}... differs from the version's record {obj.sha256[:12]}... "
                             "(the object was changed or corrupted in the store; not cached)")
        with open(cache_lock_path(self.root), "a+") as lock:  # `used_bytes` under this lock sees it once
            fcntl.flock(lock, fcntl.LOCK_EX)
            os.replace(part, self.path(obj))
        journal.unlink(missing_ok=True)
        self.stats.add(objects_downloaded=1)
        with open(self.root / CACHE_DOWNLOAD_LOG, "a") as log_file:  # one short append: whole lines
            entry = {DownloadLog.KEY: obj.key, DownloadLog.BYTES: obj.bytes, DownloadLog.RESUMED_AT_PART: resumed_at,
                     DownloadLog.PARTS: len(_part_ranges(obj.bytes, self.part_bytes)), DownloadLog.PID: os.getpid(),
                     DownloadLog.STARTED: round(started, 3), DownloadLog.TIME: round(time.time(), 3)}
            log_file.write(json.dumps(entry) + "\n")

    def _fetch_parts(self, obj, key, etag, done, part: Path, journal: Path, where: str) -> str:
        ranges = _part_ranges(obj.bytes, self.part_bytes)
        hasher = hashlib.sha256()
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, obj.bytes)
            for start, end in ranges[:done]:  # parts an earlier download finished: hashed from disk
                hasher.update(os.pread(fd, end - start, start))
            record = {"etag": etag, "bytes": obj.bytes, "part_bytes": self.part_bytes, "done": done}
            for index in range(done, len(ranges)):
                start, end = ranges[index]
                _write_json(journal, record | {"fetching": index})  # a kill now loses at most this part
                data = self._get_range(key, etag, start, end, where) if end > start else b""
                os.pwrite(fd, data, start)
                hasher.update(data)
                record["done"] = index + 1
            _write_json(journal, record)
        finally:
            os.close(fd)
        return hasher.hexdigest()

    def _get_range(self, key: str, etag: str, start: int, end: int, where: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(RETRIES):
            try:
                with store_errors(where):
                    try:
                        body = self.client.get_object(Bucket=self.store.bucket, Key=key, IfMatch=etag,
                                                      Range=f"bytes={start}-{end - 1}")["Body"]
                    except ClientError as exc:
                        if is_precondition_failed(exc):
                            raise _Changed() from None
                        raise
                    data = body.read()
                if len(data) != end - start:
                    raise _ShortRead(f"{len(data)} of {end - start} bytes")
                self.stats.add(parts_fetched=1, bytes_fetched=len(data))
                return data
            except (BotoCoreError, OSError, _ShortRead) as exc:  # connection broken mid-part: this part again
                self.stats.add(part_retries=1)
                if attempt == RETRIES - 1:
                    raise StoreError(f"{where}: download of bytes {start}-{end - 1} failed {RETRIES} times "
                                     f"({type(exc).__name__}); the parts done are kept for the next try") from None
                time.sleep(min(0.2 * 2 ** attempt, 3.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _discard(part: Path, journal: Path) -> None:
        part.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)

    # --- size ----------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the cached and partial objects. Exact under the cache-wide lock, which a finished
        download takes to move its partial file in: otherwise a file moved between the listing of the
        two folders would be counted in neither, and room made on that count would overfill the cache."""
        return sum(p.stat().st_size for sub in (CACHE_OBJECT_DIR, CACHE_PARTIAL_DIR)
                   for p in (self.root / sub).iterdir() if p.is_file())

    def _reserve(self, obj: ObjectRecord) -> None:
        """Make room for the object, then hold it: its partial file is grown to the object's full size
        under the cache-wide lock, so a download that starts meanwhile (another thread or process)
        counts this one's bytes before it has fetched them. A resumed part is counted as it stands."""
        if self.limit is None:
            return
        part, _ = self._journal(obj)
        with open(cache_lock_path(self.root), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            have = part.stat().st_size if part.is_file() else 0
            self._make_room(obj.bytes - have)
            if have < obj.bytes:
                fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    os.ftruncate(fd, obj.bytes)  # sparse: the reservation costs no write
                finally:
                    os.close(fd)

    def _make_room(self, incoming: int) -> None:
        """Evict least recently used objects that no process holds open until `incoming` bytes fit
        (the caller holds the cache-wide lock)."""
        used = self.used_bytes()
        candidates = sorted(((p.stat().st_mtime, p) for p in (self.root / CACHE_OBJECT_DIR).iterdir()),
                            key=lambda item: item[0])
        for _, path in candidates:
            if used + incoming <= self.limit:
                break
            used -= _evict_if_closed(path)
        if used + incoming > self.limit:
            self.stats.add(over_limit=1)
            log.warning("shard cache %s: %.0f MB over its limit while every cached shard is open",
                        self.root, (used + incoming - self.limit) / 1e6)


class _Changed(Exception):
    """The object's ETag changed under a download."""


class _ShortRead(Exception):
    """The connection ended before the part's last byte."""


def _evict_if_closed(path: Path) -> int:
    """Remove a cached object no process has open (pinned); its size when removed, else 0."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return 0
    size = os.fstat(fd).st_size
    path.unlink(missing_ok=True)
    os.close(fd)
    return size


def _write_json(path: Path, record: dict) -> None:
    tmp = tmp_path(path)
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
