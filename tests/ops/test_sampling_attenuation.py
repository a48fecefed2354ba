import numpy as np
import pytest

from pipelines.ops.attenuation import hu_to_mu
from pipelines.ops.sampling import (
    assign_split,
    matrix_to_pose,
    pose_to_matrix,
    rng_for,
    sample_pose,
    sample_vertebra_pair,
)

LEVELS = ["T10", "T11", "T12", "L1", "L2", "L3", "L4"]


def test_hu_to_mu_is_water_referenced_and_clipped_at_air():
    mu = hu_to_mu(np.array([-1024.0, -1000.0, 0.0, 1000.0]), 0.02)
    np.testing.assert_allclose(mu, [0.0, 0.0, 0.02, 0.04], atol=1e-9)
    boosted = hu_to_mu(np.array([0.0, 1000.0]), 0.02, bone_threshold_hu=350, bone_multiplier=2.0)
    np.testing.assert_allclose(boosted, [0.02, 0.08])


def test_pair_reference_range_and_offsets():
    seen_ref, seen_off = set(), set()
    for i in range(400):
        ref, target = sample_vertebra_pair(LEVELS, [-1, 1, 2], np.random.default_rng(i))
        r, t = LEVELS.index(ref), LEVELS.index(target)
        assert 2 <= r <= len(LEVELS) - 3
        assert t - r in (-1, 1, 2)
        seen_ref.add(r)
        seen_off.add(t - r)
    assert seen_ref == {2, 3, 4} and seen_off == {-1, 1, 2}


def test_pair_needs_five_vertebrae():
    assert sample_vertebra_pair(LEVELS[:4], [1], np.random.default_rng(0)) is None


def test_draws_depend_only_on_seed_case_product_index():
    a = rng_for(7, "case-1", "drr", 3).uniform(size=4)
    b = rng_for(7, "case-1", "drr", 3).uniform(size=4)
    c = rng_for(7, "case-1", "drr", 4).uniform(size=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_splits_are_deterministic_and_follow_fractions():
    fractions = {"train": 0.7, "val": 0.2, "test": 0.1}
    ids = [f"case{i}" for i in range(3000)]
    splits = [assign_split(1, cid, fractions) for cid in ids]
    assert splits == [assign_split(1, cid, fractions) for cid in ids]
    assert splits.count("train") / 3000 == pytest.approx(0.7, abs=0.03)
    assert splits.count("test") / 3000 == pytest.approx(0.1, abs=0.03)


def test_pose_matrix_rotates_about_the_centre():
    c = np.array([10.0, -5.0, 40.0])
    params = np.array([0.1, -0.2, 0.3, 0.0, 0.0, 0.0])
    m = pose_to_matrix(params, c, "ZXY")
    np.testing.assert_allclose(m @ np.append(c, 1), np.append(c, 1), atol=1e-12)  # the centre is fixed


def test_pose_matrix_hand_computed_quarter_turn():
    # 90 degrees about Z (first angle of ZXY) around c = (1, 0, 0), then t = (0, 0, 5)
    m = pose_to_matrix(np.array([np.pi / 2, 0, 0, 0, 0, 5.0]), np.array([1.0, 0, 0]), "ZXY")
    # x = (2, 0, 0): x - c = (1, 0, 0) -> R -> (0, 1, 0) -> + t + c = (1, 1, 5)
    np.testing.assert_allclose(m @ [2, 0, 0, 1], [1, 1, 5, 1], atol=1e-12)


def test_pose_conversion_both_ways_and_centre_dependence():
    rng = np.random.default_rng(3)
    params = sample_pose(rng, np.deg2rad([10, 10, 10]), [10, 10, 10])
    c1, c2 = np.array([0.0, 0, 0]), np.array([30.0, -20, 100])
    m1, m2 = pose_to_matrix(params, c1, "ZXY"), pose_to_matrix(params, c2, "ZXY")
    np.testing.assert_allclose(matrix_to_pose(m1, c1, "ZXY"), params, atol=1e-10)
    np.testing.assert_allclose(matrix_to_pose(m2, c2, "ZXY"), params, atol=1e-10)
    np.testing.assert_allclose(m1[:3, :3], m2[:3, :3])  # rotation does not depend on the centre
    assert not np.allclose(m1[:3, 3], m2[:3, 3])  # the matrix translation does


def test_sampled_pose_respects_ranges():
    rng = np.random.default_rng(0)
    draws = np.stack([sample_pose(rng, [0.1, 0.2, 0.3], [1, 2, 3]) for _ in range(500)])
    assert np.all(np.abs(draws) <= [0.1, 0.2, 0.3, 1, 2, 3])
