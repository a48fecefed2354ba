import numpy as np
import pandas as pd

from pipelines.ops.crop import crop_around
from pipelines.ops.pairs import registration_pairs
from pipelines.ops.sampling import rng_for, sample_vertebra_pair
from schemas.manifest import record_dicts

SPINE10 = ["T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]


def test_one_thousand_pairs_follow_the_rules_exactly():
    offsets_seen, refs_seen = set(), set()
    for i in range(1000):
        ref, target = sample_vertebra_pair(SPINE10, [-1, 1, 2], rng_for(0, "synthetic", "drr", i))
        r, t = SPINE10.index(ref), SPINE10.index(target)
        assert 2 <= r <= 7  # 3rd .. 3rd-from-last of 10
        assert t - r in (-1, 1, 2)
        offsets_seen.add(t - r)
        refs_seen.add(r)
    assert refs_seen == set(range(2, 8))
    assert {-1, 1, 2} <= offsets_seen  # both signs occur


def test_vertebra_patch_is_centred_on_a_known_bounding_box():
    labels = np.zeros((64, 64, 64), np.uint8)
    labels[10:20, 20:30, 30:40] = 20  # bbox centre (14.5, 24.5, 34.5)
    patch, start, padded = crop_around(labels, (14.5, 24.5, 34.5), 16, 0)
    np.testing.assert_array_equal(start, [7, 17, 27])
    inside = np.argwhere(patch == 20)
    np.testing.assert_allclose((inside.min(0) + inside.max(0)) / 2, [7.5, 7.5, 7.5])  # (16 - 1) / 2
    assert padded == 0


def _manifest(cases_by_split):
    rows = []
    for split, cases in cases_by_split.items():
        for case in cases:
            for level in ("L1", "L2"):
                rows.append({"sample_id": f"{case}__vertebra__{level}", "product": "vertebra",
                             "case_id": case, "split": split, "level": level})
    rows.append({"sample_id": "x__drr__000", "product": "drr", "case_id": "x", "split": "train", "level": None})
    return pd.DataFrame(rows)


def test_registration_pairs_are_same_level_within_a_split_across_patients():
    manifest = _manifest({"train": ["a", "b", "c"], "test": ["d"]})
    pairs = pd.DataFrame(record_dicts(registration_pairs(manifest, seed=0, max_per_level=100)))
    assert len(pairs) == 2 * 3 * 2  # 2 levels x ordered pairs of 3 patients; test split has 1 patient
    assert (pairs.fixed_case_id != pairs.moving_case_id).all()
    assert set(pairs.split) == {"train"}
    assert all(f.endswith(lv) and m.endswith(lv) for f, m, lv in zip(pairs.fixed_sample_id, pairs.moving_sample_id, pairs.level))


def test_registration_pairs_cap_is_deterministic():
    manifest = _manifest({"train": [f"p{i}" for i in range(10)]})
    a = registration_pairs(manifest, seed=3, max_per_level=7)
    b = registration_pairs(manifest.sample(frac=1, random_state=1), seed=3, max_per_level=7)
    assert len(a) == 14 and a == b
