"""One case end to end (docs/design.md, step 2), staged as one read-only HDF5 file per product: the shards that
published versions hard-link, so sample bytes are written once."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.case.prepare import load_and_prepare
from pipelines.case.products import drr_samples, vertebra_samples, volume_samples, x2ct_samples
from pipelines.errors import QCError
from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.load import StoredGeometry
from pipelines.io.shards import atomic_h5, write_sample
from schemas.config import BuildConfig
from schemas.layout import staged_case_file
from schemas.manifest import QC_ACCEPTED, QC_QUARANTINED, SampleRow, sample_key
from schemas.shard_layout import Attr

log = logging.getLogger("spineforge")


@dataclass
class CaseResult:
    case_id: str
    qc_status: str
    qc_reason: str = ""
    qc_message: str = ""
    stored: StoredGeometry | None = None  # the CT as stored
    levels: list[str] = field(default_factory=list)  # cranial -> caudal
    cut_levels: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # samples not produced, with the reason
    file_sha256: dict[str, str] = field(default_factory=dict)  # file key -> sha256 of what was read
    staging_files: dict[str, str] = field(default_factory=dict)  # product -> staged shard file
    samples: list[SampleRow] = field(default_factory=list)  # manifest rows (without shard/split/seed)
    fingerprint: list[str] = field(default_factory=list)  # CT slice hashes, for duplicates by content
    notes: list[str] = field(default_factory=list)  # choices made while reading (e.g. DICOM series not used)


def stage_samples(samples: list, cache: Path, key: str, case_id: str, split: str, compression: str) -> dict[str, str]:
    """Write each product's samples to `<cache>/cases/<key>/<product>.h5`, read-only once complete."""
    files = {}
    for product in dict.fromkeys(s.product for s in samples):
        target = staged_case_file(cache, key, product)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_h5(target) as h5:
            for s in samples:
                if s.product == product:
                    attrs = {Attr.PRODUCT: s.product, Attr.CASE_ID: case_id, Attr.SPLIT: split, **s.attrs}
                    write_sample(h5, s.sample_id, s.datasets, attrs, compression)
        target.chmod(0o444)  # shared by every version that links it: never written in place
        files[product] = str(target)
    return files


def process_case(case: CaseFiles, config: BuildConfig, split: str, cache: Path,
                 progress: Callable[[str], None] = log.info, stage_name: str | None = None,
                 expected_hashes: dict[str, str] | None = None) -> CaseResult:
    """Load, prepare, build every enabled product, write them to the cache's staged file `stage_name`.

    Quarantinable problems come back as a quarantined CaseResult; anything else raises.
    """
    emit = progress

    def progress(msg: str) -> None:
        emit(f"[{case.case_id}] {msg}")

    try:
        prepared = load_and_prepare(case, config, expected_hashes)
    except QCError as exc:
        progress(f"quarantined: {exc.reason} ({exc.message})")
        return CaseResult(case.case_id, QC_QUARANTINED, exc.reason, exc.message, file_sha256=exc.hashes)
    progress(f"resampled to {config.resample.spacing_mm} mm {config.resample.orientation}: "
             f"shape {prepared.ct.array.shape}, {len(prepared.levels)} vertebrae")

    samples, skipped = [], []
    if config.vertebra.enabled:
        samples += vertebra_samples(prepared, config, skipped)
        progress(f"vertebra patches: {len(samples)}")
    if config.x2ct.enabled:
        samples += x2ct_samples(prepared, config, progress, skipped)
    if config.drr.enabled:
        samples += drr_samples(prepared, config, progress, skipped)
    if config.volume_enabled:
        samples += volume_samples(prepared, config)
        progress(f"volume {prepared.ct.array.shape} with {len(prepared.levels)} vertebrae")

    files = stage_samples(samples, Path(cache), stage_name or case.case_id, case.case_id, split,
                          config.shards.compression)
    rows = [s.row for s in samples]
    for row in rows:
        row.key = sample_key(row.sample_id)
    return CaseResult(case.case_id, QC_ACCEPTED, stored=prepared.stored, levels=prepared.levels,
                      cut_levels=sorted(prepared.cut_levels), skipped=skipped, staging_files=files, samples=rows,
                      file_sha256=prepared.hashes, fingerprint=prepared.fingerprint, notes=prepared.notes)
