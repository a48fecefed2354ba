"""Walk input roots and group files into cases by naming rule."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import InputError
from pipelines.ingest.naming import NamingRule, classify, load_rules
from schemas.rules import KEY_SEPARATOR


@dataclass
class CaseFiles:
    case_id: str
    convention: str
    labels: str  # label table name for the mask
    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # role (or role:key) -> absolute path

    def keyed(self, role: str) -> dict[str, Path]:
        """Files of a keyed role, e.g. {'vertebrae_L1': path} for role 'structure_mask'."""
        prefix = role + KEY_SEPARATOR
        return {k[len(prefix):]: p for k, p in sorted(self.files.items()) if k.startswith(prefix)}

    def relative(self) -> dict[str, str]:
        return {role: p.relative_to(self.root).as_posix() for role, p in sorted(self.files.items())}


@dataclass
class Discovery:
    cases: list[CaseFiles]
    unmatched: list[str]  # relative paths that no rule claims
    problems: list[tuple[str, str, str]]  # (path, reason code, message)
    unmatched_paths: list[Path] = field(default_factory=list)  # the unmatched, absolute


DICOM_SUFFIX = ".dicom"  # a folder of DICOM slices is classified as the path "<folder>.dicom"


def is_dicom_file(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' at byte 128 (whatever their extension)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _walk(root: Path):
    """Yield (path, name to classify): files, and each folder of DICOM slices as one input."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        folder = Path(dirpath)
        dicom = [n for n in filenames if is_dicom_file(folder / n)]
        if dicom and folder != root:
            yield folder, folder.with_name(folder.name + DICOM_SUFFIX)
        for name in sorted(set(filenames) - set(dicom)):
            yield folder / name, folder / name


def check_roots(roots: list[Path]) -> None:
    """Every input root is a folder (InputError naming the first that is not)."""
    for root in roots:
        if not Path(root).is_dir():
            raise InputError(f"input folder not found: {root}")


def discover(roots: list[Path], rules: list[NamingRule] | None = None) -> Discovery:
    check_roots(roots)
    rules = rules if rules is not None else load_rules()
    cases: dict[str, CaseFiles] = {}
    unmatched: list[str] = []
    unmatched_paths: list[Path] = []
    problems: list[tuple[str, str, str]] = []
    for root in roots:
        root = Path(root).resolve()
        for path, named in _walk(root):
            rel = named.relative_to(root).as_posix()
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                problems.append((rel, "symlink_outside_root", "symbolic link leaves the input root; not followed"))
                continue
            hit = classify(rel, rules)
            if hit is None:
                unmatched.append(rel)
                unmatched_paths.append(path)
                continue
            rule, case_id, key = hit
            case = cases.setdefault(case_id, CaseFiles(case_id, rule.convention, rule.labels, root))
            if key in case.files:
                problems.append((rel, "duplicate_role",
                                 f"case {case_id} already has a {key}: {case.files[key].name}"))
                continue
            case.files[key] = path
    return Discovery(sorted(cases.values(), key=lambda c: c.case_id), unmatched, problems, unmatched_paths)
