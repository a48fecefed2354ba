"""Publishing a version: shards -> manifest -> cases -> report -> dataset.json -> atomic rename.

A version folder appears only through the final rename of a complete staging folder, so a
reader never sees a half-written version, and two builds of one version cannot both publish.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipelines.errors import PublishError
from pipelines.io.hashing import sha256_file
from pipelines.io.shards import read_card
from pipelines.io.version_shards import materialize, plan_product
from schemas import SCHEMA_VERSION
from schemas.card import CaseCounts, Counts, DatasetCard, ShardRecord
from schemas.config import ShardConfig
from schemas.layout import (
    CASES_CSV,
    CASES_PARQUET,
    DATASET_CARD,
    MANIFEST_CSV,
    MANIFEST_PARQUET,
    PAIRS_CSV,
    PAIRS_PARQUET,
    SHARD_DIR,
    case_shard_name,
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


def _shard_records(sources, shard_dir: Path, previous: DatasetCard | None, previous_dir: Path | None,
                   counts_by_name: dict[str, int]) -> list[ShardRecord]:
    """Card entries of the shards; a shard the previous version holds as the same file keeps its hash."""
    known = {Path(r.file).name: r for r in previous.shards} if previous else {}
    records = []
    for source in sources:
        path = shard_dir / source.name
        old = known.get(source.name)
        same = old is not None and (previous_dir / old.file).is_file() and os.path.samefile(previous_dir / old.file, path)
        records.append(ShardRecord(file=shard_record_file(source.name), product=source.product,
                                   bytes=path.stat().st_size, n_samples=counts_by_name.get(source.name, 0),
                                   sha256=old.sha256 if same else sha256_file(path), members=list(source.members)))
    return records


def previous_version(dataset_dir: Path) -> Path | None:
    versions = published_versions(dataset_dir)
    return dataset_dir / versions[-1] if versions else None


def _previous_packs(card: DatasetCard | None, version_dir: Path | None, product: str) -> dict:
    if card is None:
        return {}
    return {Path(r.file).name: (tuple(r.members), version_dir / r.file) for r in card.shards
            if r.product == product and r.members and Path(r.file).name != case_shard_name(product, r.members[0])}


def assemble_shards(manifest: pd.DataFrame, staged: dict[str, dict[str, str]], case_keys: dict[str, str],
                    shard_dir: Path, shards: ShardConfig, compact: bool,
                    previous_dir: Path | None) -> tuple[pd.Series, list[ShardRecord], dict[str, int]]:
    """Link (or, compacting, pack) every product's shards; returns (shard per sample, records, bytes)."""
    previous = read_card(previous_dir) if previous_dir is not None else None
    sources = []
    for product in PRODUCTS:
        files = {case_keys[cid]: Path(f[product]) for cid, f in staged.items() if product in f}
        sources += plan_product(product, files, _previous_packs(previous, previous_dir, product), compact,
                                shards.compact_above, shards.target_bytes, shards.min_shards)
    storage = materialize(sources, shard_dir)
    holder = {(s.product, key): s.name for s in sources for key in s.members}
    assigned = pd.Series([holder[(p, case_keys[c])] for p, c in zip(manifest[Col.PRODUCT], manifest[Col.CASE_ID])],
                         index=manifest.index, dtype=object)
    records = _shard_records(sources, shard_dir, previous, previous_dir, assigned.value_counts().to_dict())
    return assigned, records, storage


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
    physics_data: dict[str, str]
    config: dict
    seed: int
    input_hash: str
    inputs: list[str]
    unmatched_files: list[str]
    ingest_problems: list[dict]


def write_frame(df: pd.DataFrame, parquet: Path, csv: Path) -> pd.DataFrame:
    """A table as Parquet (what code reads) and CSV (what people read)."""
    df.to_parquet(parquet, index=False)
    df.to_csv(csv, index=False)
    return df


def _write_table(records: list, columns: list[str], parquet: Path, csv: Path) -> pd.DataFrame:
    return write_frame(table(records, columns), parquet, csv)


def publish_version(plan: PublishPlan, samples: list[SampleRow], cases: list[CaseRow],
                    staged: dict[str, dict[str, str]], case_keys: dict[str, str], fields: CardFields,
                    shards: ShardConfig, compact: bool = False, report_writer=None, pairs_builder=None) -> Path:
    """Assemble the version in a hidden staging folder and rename it into place.

    `staged`: case id -> {product: staged shard file}; `case_keys`: case id -> cache key.
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
        manifest[Col.SHARD], records, storage = assemble_shards(
            manifest, staged, case_keys, staging / SHARD_DIR, shards, compact, previous_version(plan.dataset_dir))
        manifest = manifest.sort_values([Col.PRODUCT, Col.SAMPLE_ID]).reset_index(drop=True)
        write_frame(manifest, staging / MANIFEST_PARQUET, staging / MANIFEST_CSV)
        case_table = _write_table(cases, CASES_COLUMNS, staging / CASES_PARQUET, staging / CASES_CSV)
        n_pairs = None
        if pairs_builder is not None:
            pairs = pairs_builder(manifest)
            _write_table(pairs, PAIRS_COLUMNS, staging / PAIRS_PARQUET, staging / PAIRS_CSV)
            n_pairs = len(pairs)
        card = DatasetCard(**vars(fields), version=plan.version, schema_version=SCHEMA_VERSION,
                           created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           counts=counts(manifest, n_pairs), shards=records, cases=case_counts(cases), storage=storage)
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


