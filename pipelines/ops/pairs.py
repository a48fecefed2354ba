"""3D/3D registration pairs: same-level vertebra samples of different patients, within a split.

An index over existing vertebra samples (no voxels are duplicated), drawn deterministically.
"""
from __future__ import annotations

import itertools

import pandas as pd

from pipelines.ops.sampling import rng_for
from schemas.manifest import VERTEBRA, Col, PairRow, pair_id

PAIRS_STREAM = "registration_pairs"  # the draw's name in the seeded generator


def registration_pairs(manifest: pd.DataFrame, seed: int, max_per_level: int) -> list[PairRow]:
    vert = manifest[manifest[Col.PRODUCT] == VERTEBRA].sort_values(Col.SAMPLE_ID)
    rows = []
    for (split, level), grp in vert.groupby([Col.SPLIT, Col.LEVEL], sort=True):
        candidates = [(f, m) for f, m in itertools.permutations(grp.itertuples(index=False), 2)
                      if f.case_id != m.case_id]
        if len(candidates) > max_per_level:
            rng = rng_for(seed, f"{split}/{level}", PAIRS_STREAM, 0)
            keep = sorted(rng.choice(len(candidates), size=max_per_level, replace=False))
            candidates = [candidates[i] for i in keep]
        for f, m in candidates:
            rows.append(PairRow(pair_id(f.sample_id, m.sample_id), level, split, f.sample_id, m.sample_id,
                                f.case_id, m.case_id))
    return rows
