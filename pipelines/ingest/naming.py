"""Naming rules kept as data (schemas/naming/*.yaml) and applied to input paths.

Rule files are read in file-name order; within a file, rules in their listed order. The first
rule whose pattern matches a path (relative to its input root, forward slashes) wins.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipelines.errors import RuleFileError
from schemas.rules import (
    CASE_GROUP,
    KEY_GROUP,
    LEVEL_KEY_KIND,
    NAMING_DIR,
    Role,
    RuleFile,
    role_key,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class NamingRule:
    convention: str  # e.g. verse, ctspine1k
    labels: str  # label table used for this convention's masks
    role: str
    pattern: re.Pattern
    case: str | None  # fixed case id when the pattern has no `case` group
    source: str  # rule file name, for messages
    case_format: str | None = None  # e.g. "patient-{case:0>3}": the case group -> case id
    key_kind: str | None = None  # "level": the key group is a vertebra level in any spelling


def canonical_case_id(raw: str) -> str:
    """A case id safe for file names and HDF5 keys."""
    out = _UNSAFE.sub("-", raw).strip("-.")
    if not out:
        raise ValueError(f"case id {raw!r} has no usable characters")
    return out


def _rules_of(path: Path) -> list[NamingRule]:
    try:
        spec = RuleFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as exc:
        raise RuleFileError(f"{path}: malformed naming rule file ({' '.join(str(exc).split())[:300]})") from exc
    rules = []
    for item in spec.rules:
        try:
            pattern = re.compile(item.pattern)
        except re.error as exc:
            raise RuleFileError(f"{path}: bad pattern {item.pattern!r} ({exc})") from exc
        if CASE_GROUP not in pattern.groupindex and not item.case and item.role != Role.UNMATCHED:
            raise RuleFileError(f"{path.name}: rule for {item.role} names no case")
        rules.append(NamingRule(spec.convention, spec.labels, item.role, pattern, item.case, path.name,
                                spec.case_format, item.key))
    return rules


def load_rules(extra_dirs: list[Path] | None = None) -> list[NamingRule]:
    """Every rule file of the package and of `extra_dirs`, in file-name order across all of them
    (a `50-...` file of one's own comes before the shipped `90-ctspine1k.yaml`)."""
    files = list(NAMING_DIR.glob("*.yaml"))
    for d in extra_dirs or []:
        files += list(Path(d).glob("*.yaml"))
    files.sort(key=lambda f: (f.name, str(f)))
    return [rule for path in files for rule in _rules_of(path)]


def classify(relpath: str, rules: list[NamingRule]) -> tuple[NamingRule, str, str] | None:
    """(rule, canonical case id, file key) for the first matching rule, or None.

    The file key is the role, or `role:<key>` when the pattern has a `key` group (several files of
    one role per case, e.g. one binary mask per structure).
    """
    for rule in rules:
        m = rule.pattern.search(relpath)
        if not m:
            continue
        if rule.role == Role.UNMATCHED:
            return None
        raw = m.group(CASE_GROUP) if CASE_GROUP in rule.pattern.groupindex else rule.case
        if rule.case_format:
            raw = rule.case_format.format(case=raw)
        key = rule.role
        if KEY_GROUP in rule.pattern.groupindex:
            value = m.group(KEY_GROUP)
            if rule.key_kind == LEVEL_KEY_KIND:
                value = canonical_level(value)
                if value is None:
                    return None  # a level nobody can read: listed as unmatched, not guessed
            key = role_key(rule.role, value)
        return rule, canonical_case_id(raw), key
    return None


_LEVEL = re.compile(r"^(cervical|thoracic|lumbar|sacral|c|t|l|s)[-_ ]?0*(\d{1,2})$", re.IGNORECASE)
_LEVEL_NAMES = {"C": 7, "T": 13, "L": 6}


def canonical_level(raw: str) -> str | None:
    """'L1', 'l2', 'L-3', 'Lumbar3', 'T12', 's1' -> canonical level names; None if not a level."""
    m = _LEVEL.match(raw.strip())
    if not m:
        return None
    letter, number = m.group(1)[0].upper(), int(m.group(2))
    if letter == "S":
        return "S1" if number == 1 else None
    return f"{letter}{number}" if 1 <= number <= _LEVEL_NAMES[letter] else None
