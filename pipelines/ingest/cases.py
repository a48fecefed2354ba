"""Step 1 as a table: discovered cases with hashes, splits, duplicates and missing roles."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.ingest.discover import CaseFiles, Discovery, InputError, discover
from pipelines.io.volumes import combined_hash, sha256_file
from pipelines.ops.sampling import assign_split
from schemas.config import BuildConfig
from schemas.manifest import QC_QUARANTINED


@dataclass
class CaseJob:
    case: CaseFiles
    split: str
    input_sha256: str


@dataclass
class IngestResult:
    jobs: list[CaseJob]  # cases to process
    rows: dict[str, dict]  # case_id -> cases-table row (QC filled in for early quarantines)
    discovery: Discovery
    problems: list[dict] = field(default_factory=list)

    @property
    def input_hashes(self) -> dict[str, str]:
        return {j.case.case_id: j.input_sha256 for j in self.jobs}


def _row(case: CaseFiles, hashes: dict[str, str]) -> dict:
    return {
        "case_id": case.case_id,
        "convention": case.convention,
        "source_paths": json.dumps(case.relative()),
        "roles": ",".join(sorted(case.files)),
        "file_sha256": json.dumps(hashes, sort_keys=True),
        "input_sha256": combined_hash(hashes),
        "qc_status": "",
        "qc_reason": "",
        "qc_message": "",
    }


def salted_case_id(name: str, salt: str) -> str:
    """A pseudonymous case id: stable for one salt, not reversible without it."""
    return "case-" + hashlib.sha256(f"{salt}\0{name}".encode()).hexdigest()[:16]


def _pseudonymise(discovery: Discovery, config: BuildConfig) -> None:
    if config.ingest.case_ids != "salted_hash":
        return
    salt = os.environ.get(config.ingest.salt_env, "")
    if not salt:
        raise InputError(f"ingest.case_ids is salted_hash but ${config.ingest.salt_env} is not set")
    for case in discovery.cases:
        case.case_id = salted_case_id(case.case_id, salt)
    discovery.cases.sort(key=lambda c: c.case_id)


def hash_files(cases: list[CaseFiles]) -> dict[str, dict[str, str]]:
    """sha256 of every file of every case (the build's ingest: content hashes only)."""
    return {c.case_id: {role: sha256_file(p) for role, p in sorted(c.files.items())} for c in cases}


def ingest_inputs(roots: list[Path], config: BuildConfig, hasher=hash_files) -> IngestResult:
    """Discover, hash (through `hasher`, which may also check), flag duplicates and missing roles, split."""
    discovery = discover(roots)
    _pseudonymise(discovery, config)
    all_hashes = hasher(discovery.cases)
    jobs, rows, seen_ct = [], {}, {}
    for case in discovery.cases:
        hashes = dict(sorted(all_hashes[case.case_id].items()))
        row = rows[case.case_id] = _row(case, hashes)
        has_mask = "mask" in case.files or bool(case.keyed("structure_mask"))
        missing = [r for r, ok in (("ct", "ct" in case.files), ("mask", has_mask)) if not ok]
        if missing:
            row.update(qc_status=QC_QUARANTINED, qc_reason="missing_role",
                       qc_message=f"no {' or '.join(missing)} file matched for this case")
            continue
        if hashes["ct"] in seen_ct:
            row.update(qc_status=QC_QUARANTINED, qc_reason="duplicate",
                       qc_message=f"same CT content as case {seen_ct[hashes['ct']]}; processed once there")
            continue
        seen_ct[hashes["ct"]] = case.case_id
        split = assign_split(config.seed, case.case_id, config.splits.model_dump())
        jobs.append(CaseJob(case, split, row["input_sha256"]))
        row["split"] = split
    problems = [{"path": p, "reason": r, "message": m} for p, r, m in discovery.problems]
    return IngestResult(jobs, rows, discovery, problems)
