"""Walk input roots and group files into cases by naming rule."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.ingest.naming import NamingRule, classify, load_rules


@dataclass
class CaseFiles:
    case_id: str
    convention: str
    labels: str  # label table name for the mask
    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # role (or role:key) -> absolute path

    def keyed(self, role: str) -> dict[str, Path]:
        """Files of a keyed role, e.g. {'vertebrae_L1': path} for role 'structure_mask'."""
        prefix = role + ":"
        return {k[len(prefix):]: p for k, p in sorted(self.files.items()) if k.startswith(prefix)}

    def relative(self) -> dict[str, str]:
        return {role: p.relative_to(self.root).as_posix() for role, p in sorted(self.files.items())}


@dataclass
class Discovery:
    cases: list[CaseFiles]
    unmatched: list[str]  # relative paths that no rule claims
    problems: list[tuple[str, str, str]]  # (path, reason code, message)


class InputError(Exception):
    """An input root that cannot be used at all (missing, not a folder)."""


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def discover(roots: list[Path], rules: list[NamingRule] | None = None) -> Discovery:
    rules = rules if rules is not None else load_rules()
    cases: dict[str, CaseFiles] = {}
    unmatched: list[str] = []
    problems: list[tuple[str, str, str]] = []
    for root in roots:
        root = Path(root).resolve()
        if not root.is_dir():
            raise InputError(f"input folder not found: {root}")
        for path in _walk(root):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                problems.append((rel, "symlink_outside_root", "symbolic link leaves the input root; not followed"))
                continue
            hit = classify(rel, rules)
            if hit is None:
                unmatched.append(rel)
                continue
            rule, case_id, key = hit
            case = cases.setdefault(case_id, CaseFiles(case_id, rule.convention, rule.labels, root))
            if key in case.files:
                problems.append((rel, "duplicate_role",
                                 f"case {case_id} already has a {key}: {case.files[key].name}"))
                continue
            case.files[key] = path
    return Discovery(sorted(cases.values(), key=lambda c: c.case_id), unmatched, problems)
