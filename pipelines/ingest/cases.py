"""Discovery as a table (docs/design.md, step 1): discovered cases with hashes, splits, duplicates and missing roles."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import InputError
from pipelines.ingest.discover import CaseFiles, Discovery, discover
from pipelines.ingest.load import has_required_roles
from pipelines.io.hashing import combined_hash, sha256_file
from pipelines.ops.fingerprint import find_duplicates
from pipelines.ops.sampling import assign_split
from schemas.config import BuildConfig
from schemas.manifest import QC, CaseRow
from schemas.rules import Role

Hasher = Callable[[list[CaseFiles]], dict[str, dict[str, str]]]


@dataclass
class CaseJob:
    case: CaseFiles
    split: str
    input_sha256: str  # combined content hash of the case's files ("" while a file is unhashed)
    file_sha256: dict[str, str] = field(default_factory=dict)  # file key -> sha256 known at discovery

    @property
    def hashed(self) -> bool:
        return bool(self.input_sha256)


@dataclass
class IngestResult:
    jobs: list[CaseJob]  # cases to process
    rows: dict[str, CaseRow]  # case_id -> cases-table row (QC filled in for early quarantines)
    discovery: Discovery
    problems: list[dict] = field(default_factory=list)

    @property
    def input_hashes(self) -> dict[str, str]:
        return {j.case.case_id: j.input_sha256 for j in self.jobs}


def case_row(case: CaseFiles, hashes: dict[str, str | None]) -> CaseRow:
    row = CaseRow(case_id=case.case_id, convention=case.convention, source_paths=json.dumps(case.relative()),
                  roles=",".join(sorted(case.files)))
    set_hashes(row, hashes)
    return row


def set_hashes(row: CaseRow, hashes: dict[str, str | None]) -> None:
    """File hashes and their combined hash; the combined hash stays empty while a file is unhashed."""
    row.file_sha256 = json.dumps(hashes, sort_keys=True)
    row.input_sha256 = combined_hash(hashes) if None not in hashes.values() else ""


def record_read(row: CaseRow, stored, levels: list[str], cut_levels, notes: list[str]) -> None:
    """What reading a case found, in its row: its CT as stored (`StoredGeometry`), levels, cut levels
    and notes (the verdict is set apart: `row.accept()` or `row.quarantine(...)`)."""
    row.shape, row.spacing, row.orientation = stored.shape, stored.spacing, stored.orientation
    row.levels, row.cut_levels = ",".join(levels), ",".join(sorted(cut_levels))
    row.notes = json.dumps(notes) if notes else None


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


def quarantine_content_duplicates(fingerprints: dict[str, list[str]], rows: dict[str, CaseRow],
                                  config: BuildConfig) -> set[str]:
    """Quarantine cases whose CT is (in whole or in part) a scan another case holds, by content
    fingerprint; one case of each group keeps the scan. Returns the quarantined case ids."""
    found = find_duplicates(fingerprints, config.ingest.duplicate_keep, config.ingest.duplicate_min_shared)
    for dup in found:
        rows[dup.case_id].quarantine(QC.DUPLICATE, dup.message)
    return {dup.case_id for dup in found}


def describe_unmatched(discovery: Discovery, file_hashes: dict[str, dict[str, str | None]],
                       sha256: Callable[[Path], str | None] = sha256_file) -> list[str]:
    """The unmatched files, each that is a byte copy of a case's file saying so. Only a file of the
    same size as some case file is hashed, so an unmatched tree costs stat calls, not reads."""
    by_size: dict[int, list[tuple[CaseFiles, str]]] = {}
    for case in discovery.cases:
        for key, path in case.files.items():
            if path.is_file():
                by_size.setdefault(path.stat().st_size, []).append((case, key))
    out = []
    for rel, path in zip(discovery.unmatched, discovery.unmatched_paths):
        same_size = by_size.get(path.stat().st_size, []) if path.is_file() else []
        digest = sha256(path) if same_size else None
        original = next(((c, k) for c, k in same_size if digest and file_hashes.get(c.case_id, {}).get(k) == digest),
                        None)
        if original is not None:
            case, key = original
            rel = f"{rel} (a byte copy of {case.relative()[key]} of case {case.case_id})"
        out.append(rel)
    return out


def hash_files(cases: list[CaseFiles], sha256: Callable[[Path], str | None] = sha256_file) -> dict[str, dict]:
    """Content hash of every file of every case (`sha256` may remember unchanged files, or answer
    None for a file it leaves to the case task to hash as it reads it)."""
    return {c.case_id: {role: sha256(p) for role, p in sorted(c.files.items())} for c in cases}


def ingest_inputs(roots: list[Path], config: BuildConfig, hasher: Hasher = hash_files) -> IngestResult:
    """Discover, hash (through `hasher`, which may also check), flag duplicates and missing roles, split."""
    discovery = discover(roots)
    _pseudonymise(discovery, config)
    all_hashes = hasher(discovery.cases)
    jobs, rows, seen_ct = [], {}, {}
    for case in discovery.cases:
        hashes = dict(sorted(all_hashes[case.case_id].items()))
        row = rows[case.case_id] = case_row(case, hashes)
        missing = has_required_roles(case)
        if missing:
            row.quarantine(QC.MISSING_ROLE, f"no {' or '.join(missing)} file matched for this case")
            continue
        ct_hash = hashes[Role.CT]
        if ct_hash is not None and ct_hash in seen_ct:
            row.quarantine(QC.DUPLICATE, f"same CT content as case {seen_ct[ct_hash]}; processed once there")
            continue
        if ct_hash is not None:
            seen_ct[ct_hash] = case.case_id
        row.split = assign_split(config.seed, case.case_id, config.splits.model_dump())
        jobs.append(CaseJob(case, row.split, row.input_sha256, {k: v for k, v in hashes.items() if v}))
    problems = [{"path": p, "reason": r, "message": m} for p, r, m in discovery.problems]
    return IngestResult(jobs, rows, discovery, problems)
