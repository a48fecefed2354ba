"""Publishing a version to an object store, and removing old ones there.

Layout under `s3://<bucket>/<prefix>/<dataset>/`:

    objects/<sha256><suffix>     every file of every version, named by its content, written once
    <version>/dataset.json       the version's card, listing which object holds each of its files

Objects go first (create-only, each with its SHA-256); the card goes last, create-only, and is the one
commit point: until it exists no reader sees the version, and once it exists every object it names is
complete. Two publishers of one version race for that one create: exactly one wins. Publishing again
finds the objects already there (named by content) and uploads nothing.
"""
from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import PublishError, StoreError
from pipelines.io.hashing import sha256_file
from pipelines.io.shards import read_card
from pipelines.io.store import (
    S3Url,
    StoreOptions,
    delete_keys,
    get_bytes,
    head,
    list_folders,
    list_objects,
    put_bytes_if_absent,
    upload_file_if_absent,
)
from schemas.card import DatasetCard, ObjectRecord
from schemas.layout import DATASET_CARD, OBJECTS_DIR, object_name

log = logging.getLogger("spineforge")
_VERSION = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def version_names(client, dataset_url: S3Url) -> list[str]:
    """Committed versions of a dataset in the store (those whose dataset.json exists), vN order."""
    names = [n for n in list_folders(client, dataset_url, dataset_url.prefix)
             if n != OBJECTS_DIR and head(client, dataset_url, dataset_url.key(n, DATASET_CARD)) is not None]
    numbered = sorted((n for n in names if _VERSION.match(n)), key=lambda n: int(_VERSION.match(n).group(1)))
    return numbered + sorted(n for n in names if not _VERSION.match(n))


def read_store_card(client, version_url: S3Url) -> DatasetCard | None:
    data = get_bytes(client, version_url, version_url.key(DATASET_CARD))
    return None if data is None else DatasetCard.model_validate_json(data)


@dataclass
class StorePublish:
    url: str  # s3://bucket/prefix/<dataset>/<version>
    version: str
    build_id: str
    published: bool  # False: this build was already there (a no-op)
    uploaded_objects: int
    uploaded_bytes: int
    present_objects: int  # objects found in the store already (not sent again)
    seconds: float


def _plan(client, dataset_url: S3Url, card: DatasetCard, version: str | None) -> tuple[str, DatasetCard | None]:
    """(version name, the card already there for this build or None); refuses a clash."""
    if version is not None:
        if not _NAME.match(version):
            raise PublishError(f"invalid version name {version!r}")
        there = read_store_card(client, dataset_url.child(version))
        if there is not None and there.build_id != card.build_id:
            raise PublishError(f"{dataset_url.child(version)} is already published with build_id {there.build_id}; "
                               f"this build is {card.build_id}. Published versions are immutable: choose another "
                               "--version or omit it to get the next one")
        return version, there
    names = version_names(client, dataset_url)
    for name in names:
        there = read_store_card(client, dataset_url.child(name))
        if there is not None and there.build_id == card.build_id:
            return name, there
    numbers = [int(_VERSION.match(n).group(1)) for n in names if _VERSION.match(n)]
    return f"v{max(numbers, default=0) + 1}", None


def version_files(version_dir: Path, card: DatasetCard) -> dict[str, str]:
    """Every file of a local version except its card: relative path -> sha256 (shards: the card's record)."""
    shards = {s.file: s.sha256 for s in card.shards}
    files = {}
    for path in sorted(p for p in Path(version_dir).rglob("*") if p.is_file()):
        rel = path.relative_to(version_dir).as_posix()
        if rel != DATASET_CARD:
            files[rel] = shards.get(rel) or sha256_file(path)
    missing = sorted(set(shards) - set(files))
    if missing:
        raise PublishError(f"{version_dir}: shard files missing ({', '.join(missing[:3])}); run spineforge validate")
    return files


def publish_to_store(version_dir: Path, target: str | S3Url, version: str | None = None,
                     options: StoreOptions | None = None, threads: int = 4, progress=None) -> StorePublish:
    """Publish a local version to `target` (s3://bucket/prefix), as `<prefix>/<dataset>/<version>`.

    `version`: the name in the store (default: the one already holding this build, else the next vN
    there). Only objects the store lacks are sent; the card is written last, create-only."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    root = target if isinstance(target, S3Url) else S3Url.parse(target)
    client = (options or StoreOptions()).client()
    card = read_card(version_dir)
    dataset_url = root.child(card.name)
    name, there = _plan(client, dataset_url, card, version)
    version_url = dataset_url.child(name)
    if there is not None:
        say(f"{version_url}: already published by this build (build_id {card.build_id}); nothing to send")
        return StorePublish(str(version_url), name, card.build_id, False, 0, 0, len(there.objects),
                            time.perf_counter() - started)
    files = version_files(Path(version_dir), card)
    objects = {rel: ObjectRecord(key=object_name(sha, rel), sha256=sha, bytes=(Path(version_dir) / rel).stat().st_size)
               for rel, sha in files.items()}
    present = list_objects(client, dataset_url, dataset_url.key(OBJECTS_DIR) + "/")
    for obj in objects.values():
        listed = present.get(dataset_url.key(obj.key))
        if listed is not None and listed.bytes != obj.bytes:
            raise StoreError(f"{dataset_url.child(obj.key)}: {listed.bytes} bytes in the store, {obj.bytes} expected "
                             "for content named by its hash (the object was changed; remove it and publish again)")
    todo = sorted({o.key: (rel, o) for rel, o in objects.items() if dataset_url.key(o.key) not in present}.values(),
                  key=lambda item: -item[1].bytes)
    total = sum(o.bytes for _, o in todo)
    say(f"{version_url}: sending {len(todo)} of {len(objects)} objects ({total / 1e6:.1f} MB); "
        f"{len(objects) - len(todo)} already in the store")
    sent = 0

    def send(item) -> int:
        rel, obj = item
        created = upload_file_if_absent(client, dataset_url, dataset_url.key(obj.key), Path(version_dir) / rel, obj.sha256)
        return obj.bytes if created else 0

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for done, nbytes in enumerate(pool.map(send, todo), start=1):
            sent += nbytes
            if done % 20 == 0 or done == len(todo):
                say(f"  {done}/{len(todo)} objects, {sent / 1e6:.1f} MB")
    remote_card = card.in_store(name, objects)
    if not put_bytes_if_absent(client, version_url, version_url.key(DATASET_CARD), remote_card.to_json().encode()):
        winner = read_store_card(client, version_url)
        if winner is not None and winner.build_id == card.build_id:
            return StorePublish(str(version_url), name, card.build_id, False, len(todo), sent,
                                len(objects) - len(todo), time.perf_counter() - started)
        raise PublishError(f"cannot publish {version_url}: another build "
                           f"({winner.build_id if winner else 'unknown'}) published it first; nothing of this "
                           "build is visible (run again to publish it as the next version)")
    return StorePublish(str(version_url), name, card.build_id, True, len(todo), sent, len(objects) - len(todo),
                        time.perf_counter() - started)


@dataclass
class StoreGC:
    removed: list[str]
    kept: list[str]
    deleted_objects: int
    freed_bytes: int


def gc_store(dataset: str | S3Url, keep: int, grace_s: float = 3600.0, options: StoreOptions | None = None) -> StoreGC:
    """Remove all but the `keep` newest versions of a dataset in the store, then every object no kept
    version names that is older than `grace_s` (an upload under way is younger: it survives).

    A removed version's card goes first, so a reader sees it whole or not at all. Do not run this
    beside a publish of the same dataset that re-uses objects older than the grace period."""
    if keep < 1:
        raise PublishError(f"--keep must be at least 1, got {keep}")
    dataset_url = dataset if isinstance(dataset, S3Url) else S3Url.parse(dataset)
    client = (options or StoreOptions()).client()
    names = version_names(client, dataset_url)
    if not names:
        raise StoreError(f"{dataset_url}: no published versions")
    remove, kept = names[:-keep], names[-keep:]
    listed = list_objects(client, dataset_url, dataset_url.key(OBJECTS_DIR) + "/")  # before the cards: see above
    used = set()
    for name in kept:
        card = read_store_card(client, dataset_url.child(name))
        used |= {dataset_url.key(o.key) for o in card.objects.values()} if card else set()
    delete_keys(client, dataset_url, [dataset_url.child(n).key(DATASET_CARD) for n in remove])
    now = time.time()
    stale = [k for k, item in listed.items() if k not in used and now - item.modified >= grace_s]
    delete_keys(client, dataset_url, stale)
    return StoreGC(remove, kept, len(stale), sum(listed[k].bytes for k in stale))
