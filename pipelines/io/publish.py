"""Publishing a version: shards -> manifest -> cases -> report -> dataset.json -> atomic rename.

A version folder appears only through the final rename of a complete staging folder, so a
reader never sees a half-written version, and two builds of one version cannot both publish.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipelines.io.shards import atomic_h5, copy_groups, group_nbytes
from pipelines.io.volumes import sha256_file
from schemas import SCHEMA_VERSION
from schemas.manifest import (CASES_COLUMNS, CASES_CSV, CASES_PARQUET, DATASET_CARD, MANIFEST_COLUMNS,
                              MANIFEST_CSV, MANIFEST_PARQUET, PAIRS_CSV, PAIRS_PARQUET, PRODUCTS, SHARD_DIR,
                              shard_name)

_VERSION = re.compile(r"^v(\d+)$")
LOCK_FILE = ".lock"
CACHE_DIR = ".cache"  # per-case staged files and Prefect result records, reused across builds


class PublishError(Exception):
    pass


@dataclass
class PublishPlan:
    dataset_dir: Path
    version: str
    existing: bool  # True when this build_id is already published under `version`


def read_card(version_dir: Path) -> dict:
    path = Path(version_dir) / DATASET_CARD
    if not path.is_file():
        raise FileNotFoundError(f"not a published SpineForge version (no {DATASET_CARD}): {version_dir}")
    return json.loads(path.read_text())


def published_versions(dataset_dir: Path) -> list[str]:
    if not dataset_dir.is_dir():
        return []
    names = [p.name for p in dataset_dir.iterdir() if p.is_dir() and _VERSION.match(p.name)]
    return sorted(names, key=lambda n: int(_VERSION.match(n).group(1)))


def plan_version(out: Path, dataset: str, build_id: str, version: str | None) -> PublishPlan:
    """Decide where a build publishes: a no-op for a known build_id, a refusal for a clash."""
    dataset_dir = Path(out) / dataset
    if version is not None:
        if not _VERSION.match(version) and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", version):
            raise PublishError(f"invalid version name {version!r}")
        target = dataset_dir / version
        if target.exists():
            card = read_card(target)
            if card.get("build_id") != build_id:
                raise PublishError(
                    f"version {version} of {dataset} is already published with build_id "
                    f"{card.get('build_id')}; this build is {build_id}. Published versions are "
                    f"immutable: choose another --version or omit it to get the next one")
            return PublishPlan(dataset_dir, version, True)
        return PublishPlan(dataset_dir, version, False)
    versions = published_versions(dataset_dir)
    for name in versions:
        if read_card(dataset_dir / name).get("build_id") == build_id:
            return PublishPlan(dataset_dir, name, True)
    last = int(_VERSION.match(versions[-1]).group(1)) if versions else 0
    return PublishPlan(dataset_dir, f"v{last + 1}", False)


def plan_shards(sizes: list[int], target_bytes: int, min_shards: int) -> list[list[int]]:
    """Split samples (in order) into contiguous shards of about equal bytes.

    As many shards as the byte target needs, and at least `min_shards` (so that that many reader
    workers each get a file), never more shards than samples.
    """
    n = len(sizes)
    if n == 0:
        return []
    total = sum(sizes)
    count = min(n, max(-(-total // target_bytes), min_shards))
    shards, current, acc = [], [], 0
    for i, size in enumerate(sizes):
        current.append(i)
        acc += size
        remaining_samples = n - i - 1
        remaining_shards = count - len(shards) - 1
        boundary = total * (len(shards) + 1) / count
        if remaining_shards > 0 and (acc >= boundary or remaining_samples == remaining_shards):
            shards.append(current)
            current = []
    shards.append(current)
    return shards


def write_shards(samples: pd.DataFrame, staging_files: dict[str, str], shard_dir: Path,
                 target_bytes: int, min_shards: int) -> tuple[pd.Series, list[dict]]:
    """Gather sample groups into per-product shards; returns (shard per sample, shard records)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    assigned = pd.Series(index=samples.index, dtype=object)
    records = []
    for product in PRODUCTS:
        rows = samples[samples["product"] == product].sort_values("sample_id")
        sizes = [group_nbytes(Path(staging_files[r.case_id]), r.sample_id) for r in rows.itertuples()]
        for n, positions in enumerate(plan_shards(sizes, target_bytes, min_shards)):
            batch = rows.index[positions]
            name = shard_name(product, n)
            with atomic_h5(shard_dir / name) as h5:
                for case_id, grp in rows.loc[batch].groupby("case_id", sort=True):
                    copy_groups(Path(staging_files[case_id]), list(grp.sample_id), h5)
            assigned.loc[batch] = name
            path = shard_dir / name
            records.append({"file": f"{SHARD_DIR}/{name}", "product": product, "bytes": path.stat().st_size,
                            "n_samples": len(batch), "sha256": sha256_file(path)})
    return assigned, records


def table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in columns:
        if col not in df:
            df[col] = None
    return df[columns + [c for c in df.columns if c not in columns]]


def counts(manifest: pd.DataFrame) -> dict:
    out: dict = {"samples": int(len(manifest)), "by_product": {}, "by_product_split": {}, "by_level": {}}
    for product, grp in manifest.groupby("product"):
        out["by_product"][product] = int(len(grp))
        out["by_product_split"][product] = {k: int(v) for k, v in grp["split"].value_counts().items()}
    levels = pd.concat([manifest["level"], manifest["target_level"]]).dropna()
    out["by_level"] = {k: int(v) for k, v in levels.value_counts().sort_index().items()}
    return out


def publish_version(plan: PublishPlan, manifest_rows: list[dict], case_rows: list[dict],
                    staging_files: dict[str, str], card: dict, target_bytes: int, min_shards: int = 1,
                    report_writer=None, pairs_builder=None) -> Path:
    """Assemble the version in a hidden staging folder and rename it into place."""
    final = plan.dataset_dir / plan.version
    staging = plan.dataset_dir / f".publishing-{plan.version}-{card['build_id'][:12]}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        manifest = table(manifest_rows, MANIFEST_COLUMNS)
        manifest["shard"], shards = write_shards(manifest, staging_files, staging / SHARD_DIR, target_bytes,
                                                     min_shards)
        manifest = manifest.sort_values(["product", "sample_id"]).reset_index(drop=True)
        manifest.to_parquet(staging / MANIFEST_PARQUET, index=False)
        manifest.to_csv(staging / MANIFEST_CSV, index=False)
        cases = table(case_rows, CASES_COLUMNS)
        cases.to_parquet(staging / CASES_PARQUET, index=False)
        cases.to_csv(staging / CASES_CSV, index=False)
        n_pairs = None
        if pairs_builder is not None:
            pairs = pairs_builder(manifest)
            pairs.to_parquet(staging / PAIRS_PARQUET, index=False)
            pairs.to_csv(staging / PAIRS_CSV, index=False)
            n_pairs = int(len(pairs))
        card = dict(card, version=plan.version, schema_version=SCHEMA_VERSION,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    counts=dict(counts(manifest), registration_pairs=n_pairs), shards=shards,
                    cases={"discovered": int(len(cases)),
                           "accepted": int((cases.qc_status == "accepted").sum()),
                           "quarantined": int((cases.qc_status == "quarantined").sum())})
        if report_writer is not None:
            report_writer(staging, card, manifest, cases)
        (staging / DATASET_CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
        try:
            os.rename(staging, final)  # atomic; fails if another build published first
        except OSError as exc:
            raise PublishError(f"cannot publish {final}: {exc.strerror} (another build published it first?)") from exc
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise PublishError(f"no space left on device while writing {plan.dataset_dir}: nothing was published") from exc
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


@contextmanager
def dataset_lock(dataset_dir: Path, on_wait=None):
    """Exclusive lock on a dataset folder for the length of a build (released if the process dies).

    A second build of the same dataset waits here, then finds what the first one published.
    """
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with open(dataset_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"another build of {dataset_dir.name} is running; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_files(dataset_dir: Path, cache_dir: Path) -> list[str]:
    """Leftovers of builds that died (call under the dataset lock): half-published folders, temp files."""
    removed = []
    for path in sorted(dataset_dir.glob(".publishing-*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    for path in sorted(cache_dir.rglob("*.tmp")) if cache_dir.is_dir() else []:
        path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(dataset_dir)))
    return removed




def prune_cache(cache_dir: Path, used: set[str], keep_seconds: float, now: float | None = None) -> list[str]:
    """Drop cache entries (staged case files and result records) that this build did not use and
    that no build has used for `keep_seconds`; mark the used ones as used now (call under the lock).

    Entries are named by case cache key: `cases/<key>.h5` and `results/<key>`.
    """
    now = time.time() if now is None else now
    removed = []
    for folder, suffix in (("cases", ".h5"), ("results", "")):
        for path in sorted((cache_dir / folder).glob("*")) if (cache_dir / folder).is_dir() else []:
            if path.name.removesuffix(suffix) in used:
                os.utime(path, (now, now))
            elif path.is_file() and now - path.stat().st_mtime > keep_seconds:
                path.unlink(missing_ok=True)
                removed.append(f"{folder}/{path.name}")
    return removed


def record_lineage(version_dir: Path, manifests_dir: Path) -> Path:
    """Copy a version's card and manifest CSV to `<manifests_dir>/<dataset>/<version>/` for git."""
    card = read_card(version_dir)
    target = Path(manifests_dir) / card["name"] / card["version"]
    target.mkdir(parents=True, exist_ok=True)
    for name in (DATASET_CARD, MANIFEST_CSV):
        shutil.copyfile(Path(version_dir) / name, target / name)
    return target
