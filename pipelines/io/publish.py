"""Publishing a version: shards -> manifest -> cases -> report -> dataset.json -> atomic rename.

A version folder appears only through the final rename of a complete staging folder, so a
reader never sees a half-written version, and two builds of one version cannot both publish.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipelines.errors import PublishError
from pipelines.io.shards import atomic_h5, copy_groups, group_nbytes, read_card
from pipelines.io.volumes import sha256_file
from schemas import SCHEMA_VERSION
from schemas.card import CaseCounts, Counts, DatasetCard, ShardRecord
from schemas.layout import (
    CACHE_CASES,
    CACHE_RESULTS,
    CASES_CSV,
    CASES_PARQUET,
    DATASET_CARD,
    LOCK_FILE,
    MANIFEST_CSV,
    MANIFEST_PARQUET,
    PAIRS_CSV,
    PAIRS_PARQUET,
    SHARD_DIR,
    STAGING_PREFIX,
    TMP_SUFFIX,
    shard_name,
    shard_record_file,
    staging_version_dir,
)
from schemas.manifest import (
    CASES_COLUMNS,
    MANIFEST_COLUMNS,
    PAIRS_COLUMNS,
    PRODUCTS,
    QC_ACCEPTED,
    QC_QUARANTINED,
    CaseRow,
    Col,
    SampleRow,
    record_dicts,
)

_VERSION = re.compile(r"^v(\d+)$")


@dataclass
class PublishPlan:
    dataset_dir: Path
    version: str
    existing: bool  # True when this build_id is already published under `version`


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
            if card.build_id != build_id:
                raise PublishError(
                    f"version {version} of {dataset} is already published with build_id "
                    f"{card.build_id}; this build is {build_id}. Published versions are "
                    f"immutable: choose another --version or omit it to get the next one")
            return PublishPlan(dataset_dir, version, True)
        return PublishPlan(dataset_dir, version, False)
    versions = published_versions(dataset_dir)
    for name in versions:
        if read_card(dataset_dir / name).build_id == build_id:
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
                 target_bytes: int, min_shards: int) -> tuple[pd.Series, list[ShardRecord]]:
    """Gather sample groups into per-product shards; returns (shard per sample, shard records)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    assigned = pd.Series(index=samples.index, dtype=object)
    records = []
    for product in PRODUCTS:
        rows = samples[samples[Col.PRODUCT] == product].sort_values(Col.SAMPLE_ID)
        sizes = [group_nbytes(Path(staging_files[r.case_id]), r.sample_id) for r in rows.itertuples()]
        for n, positions in enumerate(plan_shards(sizes, target_bytes, min_shards)):
            batch = rows.index[positions]
            name = shard_name(product, n)
            with atomic_h5(shard_dir / name) as h5:
                for case_id, grp in rows.loc[batch].groupby(Col.CASE_ID, sort=True):
                    copy_groups(Path(staging_files[case_id]), list(grp.sample_id), h5)
            assigned.loc[batch] = name
            path = shard_dir / name
            records.append(ShardRecord(file=shard_record_file(name), product=product, bytes=path.stat().st_size,
                                       n_samples=len(batch), sha256=sha256_file(path)))
    return assigned, records


def table(records: list, columns: list[str]) -> pd.DataFrame:
    """A published table from typed records, columns in schema order."""
    return pd.DataFrame(record_dicts(records), columns=columns)


def counts(manifest: pd.DataFrame, registration_pairs: int | None) -> Counts:
    by_product, by_split = {}, {}
    for product, grp in manifest.groupby(Col.PRODUCT):
        by_product[product] = int(len(grp))
        by_split[product] = {k: int(v) for k, v in grp[Col.SPLIT].value_counts().items()}
    levels = pd.concat([manifest[Col.LEVEL], manifest[Col.TARGET_LEVEL]]).dropna()
    return Counts(samples=int(len(manifest)), by_product=by_product, by_product_split=by_split,
                  by_level={k: int(v) for k, v in levels.value_counts().sort_index().items()},
                  registration_pairs=registration_pairs)


def case_counts(cases: list[CaseRow]) -> CaseCounts:
    return CaseCounts(discovered=len(cases), accepted=sum(c.qc_status == QC_ACCEPTED for c in cases),
                      quarantined=sum(c.qc_status == QC_QUARANTINED for c in cases))


@dataclass
class CardFields:
    """What the build knows of a version before publishing (the rest is measured while writing)."""

    name: str
    build_id: str
    code_version: str
    config: dict
    seed: int
    input_hash: str
    inputs: list[str]
    unmatched_files: list[str]
    ingest_problems: list[dict]


def _write_table(records: list, columns: list[str], parquet: Path, csv: Path) -> pd.DataFrame:
    df = table(records, columns)
    df.to_parquet(parquet, index=False)
    df.to_csv(csv, index=False)
    return df


def publish_version(plan: PublishPlan, samples: list[SampleRow], cases: list[CaseRow],
                    staging_files: dict[str, str], fields: CardFields, target_bytes: int, min_shards: int = 1,
                    report_writer=None, pairs_builder=None) -> Path:
    """Assemble the version in a hidden staging folder and rename it into place.

    `pairs_builder(manifest) -> list[PairRow]` and `report_writer(folder, card, manifest, cases)`
    are optional steps of the build (registration pairs, the QC page).
    """
    final = plan.dataset_dir / plan.version
    staging = staging_version_dir(plan.dataset_dir, plan.version, fields.build_id, os.getpid())
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        manifest = table(samples, MANIFEST_COLUMNS)
        manifest[Col.SHARD], shards = write_shards(manifest, staging_files, staging / SHARD_DIR, target_bytes,
                                                   min_shards)
        manifest = manifest.sort_values([Col.PRODUCT, Col.SAMPLE_ID]).reset_index(drop=True)
        manifest.to_parquet(staging / MANIFEST_PARQUET, index=False)
        manifest.to_csv(staging / MANIFEST_CSV, index=False)
        case_table = _write_table(cases, CASES_COLUMNS, staging / CASES_PARQUET, staging / CASES_CSV)
        n_pairs = None
        if pairs_builder is not None:
            pairs = pairs_builder(manifest)
            _write_table(pairs, PAIRS_COLUMNS, staging / PAIRS_PARQUET, staging / PAIRS_CSV)
            n_pairs = len(pairs)
        card = DatasetCard(**vars(fields), version=plan.version, schema_version=SCHEMA_VERSION,
                           created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           counts=counts(manifest, n_pairs), shards=shards, cases=case_counts(cases))
        if report_writer is not None:
            report_writer(staging, card, manifest, case_table)
        (staging / DATASET_CARD).write_text(card.to_json())
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
    for path in sorted(dataset_dir.glob(f"{STAGING_PREFIX}*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    for path in sorted(cache_dir.rglob(f"*{TMP_SUFFIX}")) if cache_dir.is_dir() else []:
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
    for folder, suffix in ((CACHE_CASES, ".h5"), (CACHE_RESULTS, "")):
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
    target = Path(manifests_dir) / card.name / card.version
    target.mkdir(parents=True, exist_ok=True)
    for name in (DATASET_CARD, MANIFEST_CSV):
        shutil.copyfile(Path(version_dir) / name, target / name)
    return target
