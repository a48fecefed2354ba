"""File roles and the format of naming-rule files (schemas/naming/*.yaml) and label tables."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from schemas import SCHEMA_DIR


class Role:
    """What a discovered file is to its case."""

    CT, MASK, STRUCTURE_MASK = "ct", "mask", "structure_mask"
    VERTEBRA_CT, VERTEBRA_MASK = "vertebra_ct", "vertebra_mask"
    CENTROIDS, STRUCTURES = "centroids", "structures"
    UNMATCHED = "unmatched"  # a rule that claims files only to list them as unmatched


ROLES = (Role.CT, Role.MASK, Role.STRUCTURE_MASK, Role.VERTEBRA_CT, Role.VERTEBRA_MASK, Role.CENTROIDS,
         Role.STRUCTURES, Role.UNMATCHED)
KEY_SEPARATOR = ":"  # keyed roles: "structure_mask:vertebrae_L1", "vertebra_ct:L3"

# Named groups a rule pattern may use.
CASE_GROUP = "case"
KEY_GROUP = "key"
LEVEL_KEY_KIND = "level"  # a rule's key group holds a vertebra level in any spelling

NAMING_DIR = SCHEMA_DIR / "naming"
LABELS_DIR = SCHEMA_DIR / "labels"
LEVELS_TABLE = LABELS_DIR / "levels.csv"  # level, id, region, rank (cranial -> caudal)
VERSE_TABLE = LABELS_DIR / "verse.csv"  # source_id, level
TOTALSEG_NAMES_TABLE = LABELS_DIR / "totalsegmentator_names.csv"  # structure, level


def label_table(convention: str) -> Path:
    """The id table of a multi-label convention (e.g. totalsegmentator_v2)."""
    return LABELS_DIR / f"{convention}.csv"


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str  # one of ROLES
    pattern: str  # regular expression searched in the path relative to the input root
    case: str | None = None  # fixed case id when the pattern has no `case` group
    key: Literal["level"] | None = None  # how to read the pattern's `key` group (LEVEL_KEY_KIND)

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"unknown role {v!r}; roles are {', '.join(ROLES)}")
        return v


class RuleFile(BaseModel):
    """One naming-rule file: a convention, the label table its masks use, and ordered rules."""

    model_config = ConfigDict(extra="forbid")

    convention: str
    labels: str  # label convention of the masks: verse, structures_csv, totalsegmentator_v1/v2
    case_format: str | None = None  # e.g. "patient-{case:0>3}": the case group -> case id
    rules: list[RuleSpec]


def role_key(role: str, key: str) -> str:
    """The file key of one file of a keyed role, e.g. role_key("vertebra_ct", "L3") -> "vertebra_ct:L3"."""
    return f"{role}{KEY_SEPARATOR}{key}"
