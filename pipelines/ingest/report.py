"""`spineforge ingest`: discovery, naming, labels and QC without building products."""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.ingest.cases import ingest_inputs
from pipelines.ingest.check import check_case
from pipelines.ingest.discover import CaseFiles
from pipelines.ingest.qc import QCError
from pipelines.io.publish import table
from pipelines.io.volumes import sha256_file
from schemas.config import load_config
from schemas.manifest import CASES_COLUMNS, CASES_CSV, CASES_PARQUET, QC_ACCEPTED, QC_QUARANTINED


def _suffix(path: Path) -> str:
    name = path.name
    if path.is_dir():
        return ".dicom"
    return ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix


def materialize(result, accepted: set[str], target: Path) -> int:
    """A normalised tree of symbolic links: TARGET/<case>/<role>[_<key>]<ext> -> the source file."""
    links = 0
    for job in result.jobs:
        if job.case.case_id not in accepted:
            continue
        folder = target / job.case.case_id
        folder.mkdir(parents=True, exist_ok=True)
        for key, source in sorted(job.case.files.items()):
            link = folder / (key.replace(":", "_") + _suffix(source))
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source.resolve(), target_is_directory=source.is_dir())
            links += 1
    return links


def _check_all(cases: list[CaseFiles], config, outcomes: dict, workers: int) -> dict[str, dict[str, str]]:
    """Hash and check every case in one pass per file, `workers` cases at a time."""
    def one(case: CaseFiles):
        if "ct" not in case.files or not ("mask" in case.files or case.keyed("structure_mask")):
            return case.case_id, {k: sha256_file(p) for k, p in case.files.items()}, None
        try:
            hashes, info = check_case(case, config)
            return case.case_id, hashes, info
        except QCError as exc:
            hashes = {k: exc.hashes.get(k) or sha256_file(p) for k, p in case.files.items()}
            return case.case_id, hashes, exc

    all_hashes = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for case_id, hashes, outcome in pool.map(one, cases):
            all_hashes[case_id] = hashes
            outcomes[case_id] = outcome
    return all_hashes


def run_ingest(roots: list[Path], out: Path, config_path: str | None = None,
               materialize_dir: Path | None = None, workers: int | None = None) -> dict:
    config = load_config(config_path)
    outcomes: dict = {}
    started = time.perf_counter()
    result = ingest_inputs(roots, config, hasher=lambda cases: _check_all(cases, config, outcomes,
                                                                         workers or os.cpu_count() or 1))
    for job in result.jobs:
        row = result.rows[job.case.case_id]
        outcome = outcomes[job.case.case_id]
        if isinstance(outcome, QCError):
            row.update(qc_status=QC_QUARANTINED, qc_reason=outcome.reason, qc_message=outcome.message)
        else:
            row.update(outcome, qc_status=QC_ACCEPTED)
    cases = table(list(result.rows.values()), CASES_COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    cases.to_parquet(out / CASES_PARQUET, index=False)
    cases.to_csv(out / CASES_CSV, index=False)
    summary = {
        "cases": int(len(cases)),
        "accepted": int((cases.qc_status == QC_ACCEPTED).sum()),
        "quarantined": int((cases.qc_status == QC_QUARANTINED).sum()),
        "duplicates": int((cases.qc_reason == "duplicate").sum()),
        "unmatched_files": result.discovery.unmatched,
        "problems": result.problems,
        "quarantine": cases.loc[cases.qc_status == QC_QUARANTINED, ["case_id", "qc_reason", "qc_message"]]
        .to_dict("records"),
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if materialize_dir is not None:
        accepted = set(cases.loc[cases.qc_status == QC_ACCEPTED, "case_id"])
        summary["materialized"] = {"dir": str(materialize_dir),
                                   "links": materialize(result, accepted, Path(materialize_dir))}
    (out / "ingest.json").write_text(json.dumps(summary, indent=2))
    lines = [f"{summary['cases']} cases: {summary['accepted']} accepted, {summary['quarantined']} quarantined "
             f"({summary['duplicates']} duplicates); {len(summary['unmatched_files'])} unmatched files "
             f"[{summary['seconds']:.1f} s]"]
    lines += [f"  quarantined {q['case_id']}: {q['qc_reason']} ({q['qc_message']})" for q in summary["quarantine"]]
    lines += [f"  unmatched {p}" for p in summary["unmatched_files"]]
    lines += [f"  {p['reason']} {p['path']}: {p['message']}" for p in summary["problems"]]
    lines.append(f"wrote {out / CASES_PARQUET} and {out / CASES_CSV}")
    if "materialized" in summary:
        lines.append(f"materialized {summary['materialized']['links']} links under {materialize_dir}")
    summary["text"] = "\n".join(lines)
    return summary
