"""Which shard files a new version holds, and where each comes from: no sample byte is copied
unless a compaction is asked for.

- A case's samples of one product are staged once, by its case task, as one read-only file.
- A version's shard is a hard link: to that staged file (a per-case shard), or to a pack of the
  previous version whose member cases are all unchanged. An unchanged set of cases therefore gives
  the same shard files, byte for byte (the same inodes), and a version costs the size of what changed.
- Packs: per-case shards of a product are merged into target-sized shards only on request
  (`--compact`) or when more than `shards.compact_above` of them are loose. A pack is named by its
  members, so a later version reuses it as long as none of its cases changed or went.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from pipelines.io.shards import atomic_h5, copy_groups
from schemas.layout import case_shard_name, pack_shard_name

log = logging.getLogger("spineforge")


@dataclass(frozen=True)
class ShardSource:
    name: str  # file name under the version's shards/
    product: str
    members: tuple[str, ...]  # case keys whose samples it holds
    link_from: Path | None = None  # an existing file to hard-link; None: a new pack to write
    parts: dict = field(default_factory=dict, compare=False)  # new pack: member key -> staged file


def byte_balanced_groups(sizes: list[int], target_bytes: int, min_groups: int) -> list[list[int]]:
    """Split items (in order) into contiguous groups of about equal bytes: as many as the byte target
    needs and at least `min_groups` (one per reader worker), never more groups than items."""
    n = len(sizes)
    if n == 0:
        return []
    total = sum(sizes)
    count = min(n, max(-(-total // target_bytes), min_groups))
    groups, current, acc = [], [], 0
    for i, size in enumerate(sizes):
        current.append(i)
        acc += size
        remaining_items, remaining_groups = n - i - 1, count - len(groups) - 1
        if remaining_groups > 0 and (acc >= total * (len(groups) + 1) / count or remaining_items == remaining_groups):
            groups.append(current)
            current = []
    groups.append(current)
    return groups


def plan_product(product: str, staged: dict[str, Path], previous_packs: dict[str, tuple[tuple[str, ...], Path]],
                 compact: bool, compact_above: int, target_bytes: int, min_shards: int) -> list[ShardSource]:
    """The shards of one product: kept packs, then per-case shards or (when compacting) new packs.

    `staged`: case key -> staged file of this build's accepted cases; `previous_packs`: pack name ->
    (member keys, file) in the previous version.
    """
    keys = set(staged)
    sources = [ShardSource(name, product, members, path) for name, (members, path) in sorted(previous_packs.items())
               if set(members) <= keys]
    packed = {k for s in sources for k in s.members}
    loose = sorted(keys - packed)
    if len(loose) > 1 and (compact or len(loose) > compact_above):
        sizes = [staged[k].stat().st_size for k in loose]
        for group in byte_balanced_groups(sizes, target_bytes, min_shards):
            members = tuple(loose[i] for i in group)
            sources.append(ShardSource(pack_shard_name(product, list(members)), product, members, None,
                                       {k: staged[k] for k in members}))
        return sources
    return sources + [ShardSource(case_shard_name(product, k), product, (k,), staged[k]) for k in loose]


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link `source` as `target` (True); copy it where links are impossible (False)."""
    try:
        os.link(source, target)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        log.warning("cannot hard-link %s (%s): copying it", source, exc.strerror)
        shutil.copy2(source, target)
        return False


def write_pack(source: ShardSource, target: Path) -> None:
    """A new pack: every sample group of its members' staged files, copied verbatim; read-only."""
    with atomic_h5(target) as h5:
        for key in source.members:
            path = source.parts[key]
            with h5py.File(path, "r") as part:
                names = sorted(part.keys())
            copy_groups(path, names, h5)
    target.chmod(0o444)


def materialize(sources: list[ShardSource], shard_dir: Path) -> dict[str, int]:
    """Create the version's shard files; returns bytes {linked, copied, written}."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    bytes_by = {"linked": 0, "copied": 0, "written": 0}
    for source in sources:
        target = shard_dir / source.name
        if source.link_from is not None:
            linked = link_or_copy(source.link_from, target)
            bytes_by["linked" if linked else "copied"] += target.stat().st_size
        else:
            write_pack(source, target)
            bytes_by["written"] += target.stat().st_size
    return bytes_by
