"""`spineforge ingest` (run_ingest): discovery, naming, labels and QC without building products."""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.errors import QCError
from pipelines.ingest.cases import (
    IngestResult,
    describe_unmatched,
    ingest_inputs,
    quarantine_content_duplicates,
    record_read,
)
from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.load import StoredGeometry, load_case
from pipelines.io.hashing import sha256_file
from pipelines.io.input_hashes import file_signature
from pipelines.io.publish import table, write_frame
from schemas.config import load_config
from schemas.layout import CASES_CSV, CASES_PARQUET, INGEST_SUMMARY
from schemas.manifest import (
    CASES_COLUMNS,
    QC,
    CaseRow,
    describe_quarantine,
    quarantine_entry,
)
from schemas.rules import KEY_SEPARATOR


@dataclass
class IngestSummary:
    cases: int
    accepted: int
    quarantined: int
    duplicates: int
    unmatched_files: list[str]
    problems: list[dict]
    quarantine: list[dict]  # case_id, qc_reason, qc_message
    out: str
    seconds: float
    materialized: dict | None = None
    text: str = field(default="", repr=False)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "text"}, indent=2)


def _suffix(path: Path) -> str:
    name = path.name
    if path.is_dir():
        return ".dicom"
    return ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix


def materialize(result: IngestResult, accepted: set[str], target: Path) -> int:
    """A normalised tree of symbolic links: TARGET/<case>/<role>[_<key>]<ext> -> the source file."""
    links = 0
    for job in result.jobs:
        if job.case.case_id not in accepted:
            continue
        folder = target / job.case.case_id
        folder.mkdir(parents=True, exist_ok=True)
        for key, source in sorted(job.case.files.items()):
            link = folder / (key.replace(KEY_SEPARATOR, "_") + _suffix(source))
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source.resolve(), target_is_directory=source.is_dir())
            links += 1
    return links


@dataclass
class CaseCheck:
    """What the ingest keeps of a case read and checked: no voxels (memory stays flat over cases)."""

    stored: StoredGeometry
    levels: list[str]
    cut_levels: frozenset[str]
    fingerprint: list[str]
    notes: list[str]


class _Progress:
    """A line on stderr every few seconds while cases are read: done/total, cases/s, MB/s."""

    def __init__(self, total: int, every_s: float = 5.0):
        self.total, self.every_s, self.done, self.bytes = total, every_s, 0, 0
        self.started = self.last = time.perf_counter()

    def step(self, nbytes: int) -> None:
        self.done += 1
        self.bytes += nbytes
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            elapsed = max(now - self.started, 1e-9)
            print(f"ingest: {self.done}/{self.total} cases read, {self.done / elapsed:.1f} cases/s, "
                  f"{self.bytes / 1e6 / elapsed:.0f} MB/s", file=sys.stderr, flush=True)


def _load_all(cases: list[CaseFiles], config, outcomes: dict, workers: int) -> dict[str, dict[str, str]]:
    """Read and check every case, each file once, `workers` cases at a time; keep only its summary."""
    progress = _Progress(len(cases))

    def one(case: CaseFiles):
        nbytes = sum(file_signature(p)[0] for p in case.files.values())  # bytes (of a DICOM folder: its files)
        try:
            loaded = load_case(case, config)
            return case.case_id, loaded.hashes, CaseCheck(loaded.stored, loaded.levels, loaded.cut_levels,
                                                          loaded.fingerprint, loaded.notes), nbytes
        except QCError as exc:
            hashes = {k: exc.hashes.get(k) or sha256_file(p) for k, p in case.files.items()}
            return case.case_id, hashes, exc, nbytes

    all_hashes = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for case_id, hashes, outcome, nbytes in pool.map(one, cases):
            all_hashes[case_id] = hashes
            outcomes[case_id] = outcome
            progress.step(nbytes)
    return all_hashes


def _record(row: CaseRow, outcome: CaseCheck | QCError) -> None:
    if isinstance(outcome, QCError):
        row.quarantine(outcome.reason, outcome.message)
        return
    record_read(row, outcome.stored, outcome.levels, outcome.cut_levels, outcome.notes)
    row.accept()


def _text(summary: IngestSummary, out: Path, materialize_dir: Path | None) -> str:
    lines = [f"{summary.cases} cases: {summary.accepted} accepted, {summary.quarantined} quarantined "
             f"({summary.duplicates} duplicates); {len(summary.unmatched_files)} unmatched files "
             f"[{summary.seconds:.1f} s]"]
    lines += [f"  quarantined {describe_quarantine(q)}" for q in summary.quarantine]
    lines += [f"  unmatched {p}" for p in summary.unmatched_files]
    lines += [f"  {p['reason']} {p['path']}: {p['message']}" for p in summary.problems]
    lines.append(f"wrote {out / CASES_PARQUET} and {out / CASES_CSV}")
    if summary.materialized:
        lines.append(f"materialized {summary.materialized['links']} links under {materialize_dir}")
    return "\n".join(lines)


def run_ingest(roots: list[Path], out: Path, config_path: str | None = None,
               materialize_dir: Path | None = None, workers: int | None = None) -> IngestSummary:
    config = load_config(config_path)
    outcomes: dict = {}
    started = time.perf_counter()
    result = ingest_inputs(roots, config, hasher=lambda cases: _load_all(cases, config, outcomes,
                                                                        workers or os.cpu_count() or 1))
    for job in result.jobs:
        _record(result.rows[job.case.case_id], outcomes[job.case.case_id])
    quarantine_content_duplicates({j.case.case_id: outcomes[j.case.case_id].fingerprint for j in result.jobs
                                   if isinstance(outcomes[j.case.case_id], CaseCheck)}, result.rows, config)
    rows = list(result.rows.values())
    out.mkdir(parents=True, exist_ok=True)
    write_frame(table(rows, CASES_COLUMNS), out / CASES_PARQUET, out / CASES_CSV)
    quarantined = [r for r in rows if r.quarantined]
    summary = IngestSummary(
        cases=len(rows), accepted=len(rows) - len(quarantined), quarantined=len(quarantined),
        duplicates=sum(r.qc_reason == QC.DUPLICATE for r in rows),
        unmatched_files=describe_unmatched(result.discovery, {r.case_id: json.loads(r.file_sha256) for r in rows}),
        problems=result.problems, out=str(out), seconds=round(time.perf_counter() - started, 3),
        quarantine=[quarantine_entry(r) for r in quarantined])
    if materialize_dir is not None:
        accepted = {r.case_id for r in rows if not r.quarantined}
        summary.materialized = {"dir": str(materialize_dir), "links": materialize(result, accepted,
                                                                                  Path(materialize_dir))}
    (out / INGEST_SUMMARY).write_text(summary.to_json())
    summary.text = _text(summary, out, materialize_dir)
    return summary
