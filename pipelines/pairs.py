"""3D/3D registration pairs: same-level vertebra samples of different patients, within a split.

An index over existing vertebra samples (no voxels are duplicated), drawn deterministically.
"""
from __future__ import annotations

import itertools

import pandas as pd

from pipelines.ops.sampling import rng_for
from schemas.manifest import PAIRS_COLUMNS


def registration_pairs(manifest: pd.DataFrame, seed: int, max_per_level: int) -> pd.DataFrame:
    vert = manifest[manifest["product"] == "vertebra"].sort_values("sample_id")
    rows = []
    for (split, level), grp in vert.groupby(["split", "level"], sort=True):
        candidates = [(f, m) for f, m in itertools.permutations(grp.itertuples(index=False), 2)
                      if f.case_id != m.case_id]
        if len(candidates) > max_per_level:
            rng = rng_for(seed, f"{split}/{level}", "registration_pairs", 0)
            keep = sorted(rng.choice(len(candidates), size=max_per_level, replace=False))
            candidates = [candidates[i] for i in keep]
        for f, m in candidates:
            rows.append({"pair_id": f"{f.sample_id}--{m.sample_id}", "level": level, "split": split,
                         "fixed_sample_id": f.sample_id, "moving_sample_id": m.sample_id,
                         "fixed_case_id": f.case_id, "moving_case_id": m.case_id})
    return pd.DataFrame(rows, columns=PAIRS_COLUMNS)
