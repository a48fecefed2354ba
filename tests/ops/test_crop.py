import numpy as np
import pytest

from pipelines.ops.crop import bbox_centre, bounding_box, centre_of_mass, crop_around, patch_start, shifted_affine
from tests.conftest import make_affine


def test_even_patch_centred_between_voxels():
    vol = np.arange(64).reshape(4, 4, 4)
    patch, start, padded = crop_around(vol, (1.5, 1.5, 1.5), 2, -1)
    np.testing.assert_array_equal(start, [1, 1, 1])
    np.testing.assert_array_equal(patch, vol[1:3, 1:3, 1:3])
    assert padded == 0.0


def test_padding_and_padded_fraction_at_a_corner():
    vol = np.ones((4, 4, 4), np.int16)
    patch, start, padded = crop_around(vol, (0, 0, 0), 4, -1024)
    np.testing.assert_array_equal(start, [-1, -1, -1])  # floor(0 - 1.5 + 0.5)
    # the patch spans -1..2 on each axis; indices 0..2 are inside -> 3^3 of 4^3 voxels
    assert padded == pytest.approx(1 - 27 / 64)
    assert (patch == 1).sum() == 27 and (patch == -1024).sum() == 37


def test_patch_entirely_outside_is_all_padding():
    patch, _, padded = crop_around(np.zeros((3, 3, 3)), (50, 50, 50), 2, 7)
    assert padded == 1.0 and np.all(patch == 7)


def test_odd_patch_start():
    np.testing.assert_array_equal(patch_start((5.0, 5.0, 5.0), 3), [4, 4, 4])


def test_shifted_affine_maps_patch_voxel_zero_to_parent_voxel_start():
    affine = make_affine((2.0, 1.0, 0.5), "LPS", (10, 20, 30))
    sub = shifted_affine(affine, np.array([3, 4, 5]))
    np.testing.assert_allclose(sub @ [0, 0, 0, 1], affine @ [3, 4, 5, 1])


def test_bounding_box_and_centres():
    mask = np.zeros((5, 6, 7), bool)
    mask[1:3, 2:6, 4] = True
    lo, hi = bounding_box(mask)
    np.testing.assert_array_equal(lo, [1, 2, 4])
    np.testing.assert_array_equal(hi, [2, 5, 4])
    np.testing.assert_allclose(bbox_centre(mask), [1.5, 3.5, 4])
    np.testing.assert_allclose(centre_of_mass(mask), [1.5, 3.5, 4])
    assert bounding_box(np.zeros((2, 2, 2), bool)) is None
