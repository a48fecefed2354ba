"""Translate mask label ids of a source convention to canonical level ids (schemas/labels)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.rules import LEVELS_TABLE, TOTALSEG_NAMES_TABLE, VERSE_TABLE, label_table


@lru_cache(maxsize=1)
def levels_table() -> pd.DataFrame:
    """Canonical levels: level name, id, region, rank (cranial -> caudal)."""
    return pd.read_csv(LEVELS_TABLE)


@lru_cache(maxsize=1)
def _level_ids() -> dict[str, int]:
    """Level name -> canonical id (the first row of a name, as the table lists them)."""
    table = levels_table()
    ids: dict[str, int] = {}
    for level, i in zip(table.level, table.id):
        ids.setdefault(level, int(i))
    return ids


def level_id(level: str) -> int:
    """A level's canonical id (a dict lookup: the stream asks once or twice an item)."""
    try:
        return _level_ids()[level]
    except (KeyError, TypeError):
        raise KeyError(f"unknown vertebra level {level!r}") from None


def id_to_level() -> dict[int, str]:
    return dict(zip(levels_table().id.astype(int), levels_table().level))


def order_cranial_to_caudal(levels: list[str]) -> list[str]:
    rank = dict(zip(levels_table().level, levels_table()["rank"]))
    return sorted(levels, key=lambda lv: rank[lv])


def source_lookup(labels: str, structures_csv: Path | None = None) -> tuple[dict[int, int], set[int]]:
    """(source id -> canonical id, source ids that are known non-vertebra structures).

    `labels` names the convention: 'verse' (VerSe ids) or 'structures_csv' (a structures.csv with
    columns id, structure, whose vertebra names follow TotalSegmentator).
    """
    if labels == "verse":
        table = pd.read_csv(VERSE_TABLE)
        return {int(s): level_id(lv) for s, lv in zip(table.source_id, table.level)}, set()
    if labels.startswith("totalsegmentator_"):
        path = label_table(labels)
        if not path.is_file():
            raise KeyError(f"unknown label convention {labels!r}")
        table = pd.read_csv(path, keep_default_na=False)
        vertebra = table[table.level != ""]
        lut = {int(s): level_id(lv) for s, lv in zip(vertebra.source_id, vertebra.level)}
        return lut, set(table.source_id.astype(int)) - set(lut)
    if labels == "structures_csv":
        if structures_csv is None:
            raise FileNotFoundError("label convention 'structures_csv' needs the case's structures.csv")
        structures = pd.read_csv(structures_csv)
        names = pd.read_csv(TOTALSEG_NAMES_TABLE)
        to_level = dict(zip(names.structure, names.level))
        lut, other = {}, set()
        for sid, name in zip(structures.id.astype(int), structures.structure):
            if name in to_level:
                lut[sid] = level_id(to_level[name])
            else:
                other.add(sid)
        return lut, other
    raise KeyError(f"unknown label convention {labels!r}")


def translate(mask: np.ndarray, lut: dict[int, int], ignored: set[int]) -> tuple[np.ndarray, set[int]]:
    """Canonical uint8 label array, and the source ids that neither table names."""
    present = set(np.unique(mask).astype(int).tolist()) - {0}
    unknown = present - set(lut) - ignored
    table = np.zeros(int(max(present | {0})) + 1, dtype=np.uint8)
    for sid, cid in lut.items():
        if sid < len(table):
            table[sid] = cid
    return table[mask.astype(np.int64)], unknown


@lru_cache(maxsize=1)
def _structure_levels() -> dict[str, str]:
    names = pd.read_csv(TOTALSEG_NAMES_TABLE)
    return dict(zip(names.structure, names.level))


def structure_level(name: str) -> str | None:
    """Canonical level of a TotalSegmentator structure name (vertebrae_L1 -> L1), None otherwise."""
    return _structure_levels().get(name)
