"""A version's lineage for review in git: its card and manifest CSV under `<manifests>/<dataset>/<version>/`."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.io.shards import read_card
from schemas.card import DatasetCard
from schemas.layout import DATASET_CARD, MANIFEST_CSV


def record_lineage(version_dir: Path, manifests_dir: Path, card: DatasetCard | None = None) -> Path:
    """Copy a version's card and manifest CSV to `<manifests_dir>/<dataset>/<version>/` for git; with
    `card` (a store's card of this build, under the store's version name), that card is written instead."""
    named = card or read_card(version_dir)
    target = Path(manifests_dir) / named.name / named.version
    target.mkdir(parents=True, exist_ok=True)
    if card is None:
        shutil.copyfile(Path(version_dir) / DATASET_CARD, target / DATASET_CARD)
    else:
        (target / DATASET_CARD).write_text(card.to_json())
    shutil.copyfile(Path(version_dir) / MANIFEST_CSV, target / MANIFEST_CSV)
    return target
