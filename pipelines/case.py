"""One case end to end (steps 1-7), staged as an HDF5 file for the publish step to gather."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pipelines
from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.qc import QCError
from pipelines.io.shards import atomic_h5, write_sample
from pipelines.preprocess import prepare_case
from pipelines.products import drr_samples, vertebra_samples, x2ct_samples
from schemas.config import BuildConfig
from schemas.manifest import QC_ACCEPTED, QC_QUARANTINED

log = logging.getLogger("spineforge")


@dataclass
class CaseResult:
    case_id: str
    qc_status: str
    qc_reason: str = ""
    qc_message: str = ""
    info: dict = field(default_factory=dict)  # stored shape/spacing/orientation/levels
    staging_file: str | None = None
    samples: list[dict] = field(default_factory=list)  # manifest rows (without shard/split)


def case_key(case_id: str, input_sha256: str, split: str, config: BuildConfig) -> str:
    """Cache key of one case's results: its content, split, the config that shapes it, the code.

    Publish-only settings (dataset name, shard sizing, registration pairs) are left out, so
    changing them reuses every case.
    """
    relevant = config.model_dump(mode="json", exclude={"dataset": True, "registration_pairs": True,
                                                       "shards": {"target_bytes", "min_shards"}})
    payload = json.dumps({"case": case_id, "input": input_sha256, "split": split, "config": relevant,
                          "code": pipelines.__version__}, sort_keys=True)
    return f"{case_id}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


def process_case(case: CaseFiles, config: BuildConfig, split: str, staging_dir: Path,
                 progress: Callable[[str], None] = log.info, stage_name: str | None = None) -> CaseResult:
    """Prepare one case, build every enabled product, write them to `<staging_dir>/<stage_name>.h5`.

    Quarantinable problems come back as a quarantined CaseResult; anything else raises.
    """
    emit = progress

    def progress(msg: str) -> None:
        emit(f"[{case.case_id}] {msg}")

    try:
        prepared = prepare_case(case, config)
    except QCError as exc:
        progress(f"quarantined: {exc.reason} ({exc.message})")
        return CaseResult(case.case_id, QC_QUARANTINED, exc.reason, exc.message)
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

    staging_dir.mkdir(parents=True, exist_ok=True)
    target = staging_dir / f"{stage_name or case.case_id}.h5"
    with atomic_h5(target) as h5:
        for s in samples:
            attrs = {"product": s.product, "case_id": case.case_id, "split": split, **s.attrs}
            write_sample(h5, s.sample_id, s.datasets, attrs, config.shards.compression, s.view_stacks)
    rows = [{"sample_id": s.sample_id, "product": s.product, "key": "/" + s.sample_id,
             "n_views": 0, **s.row} for s in samples]
    info = prepared.info | {"cut_levels": ",".join(sorted(prepared.cut_levels)), "skipped_samples": json.dumps(skipped)}
    return CaseResult(case.case_id, QC_ACCEPTED, info=info, staging_file=str(target), samples=rows)
