import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.ops.orient import (
    Volume,
    affine_from_sitk,
    axis_codes,
    craniocaudal_axis,
    sitk_from_volume,
    volume_from_sitk,
    voxel_to_world,
    world_to_voxel,
)
from pipelines.ops.resample import resample_onto, resample_to_spacing, target_grid
from tests.conftest import make_affine


def test_affine_from_sitk_converts_lps_to_ras():
    img = sitk.Image(4, 5, 6, sitk.sitkInt16)
    img.SetSpacing((2.0, 3.0, 4.0))
    img.SetOrigin((10.0, 20.0, 30.0))  # LPS
    expected = np.array([[-2, 0, 0, -10], [0, -3, 0, -20], [0, 0, 4, 30], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(affine_from_sitk(img), expected)
    assert axis_codes(expected) == "LPS"


def test_volume_roundtrip_keeps_voxels_and_geometry():
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    vol = Volume(arr, make_affine((0.5, 1.0, 2.0), "PIR", (1.0, 2.0, 3.0)))
    back = volume_from_sitk(sitk_from_volume(vol))
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    assert back.orientation == "PIR"
    # [i, j, k] indexing: voxel (1, 2, 3) keeps its value
    assert back.array[1, 2, 3] == arr[1, 2, 3]


@pytest.mark.parametrize("codes,axis,sign", [("RAS", 2, 1.0), ("PIR", 1, -1.0), ("LPS", 2, 1.0), ("SAR", 0, 1.0)])
def test_craniocaudal_axis(codes, axis, sign):
    assert craniocaudal_axis(make_affine((1, 1, 1), codes)) == (axis, sign)


def test_resampling_a_1mm_ras_volume_is_the_identity():
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(6, 7, 8)).astype(np.float32)
    vol = Volume(arr, make_affine((1, 1, 1), "RAS", (5.0, -3.0, 2.0)))
    out = volume_from_sitk(resample_to_spacing(sitk_from_volume(vol), 1.0, "RAS", "linear", -1024))
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-6)
    np.testing.assert_allclose(out.array, arr, atol=1e-5)


def test_target_grid_covers_an_anisotropic_las_input():
    affine = make_affine((0.7, 0.7, 2.5), "LAS", (100.0, -50.0, 20.0))
    out_affine, shape = target_grid(affine, (100, 100, 20), 1.0, "RAS")
    assert axis_codes(out_affine) == "RAS"
    # extent: 99*0.7 = 69.3 -> 70 voxels; 19*2.5 = 47.5 -> 48 voxels
    assert shape == (70, 70, 48)
    # output voxel 0 sits at the input's most-left corner: x = 100 - 99*0.7
    np.testing.assert_allclose(out_affine[:3, 3], [100 - 69.3, -50.0, 20.0])


@pytest.mark.parametrize("codes,spacing", [("LAS", (0.7, 0.7, 2.5)), ("PIR", (1.0, 1.0, 2.0)), ("LPS", (1.3, 0.9, 1.7))])
def test_world_positions_survive_resampling(codes, spacing):
    """A marked voxel keeps its world position within half a voxel; no label vanishes."""
    shape = (30, 32, 28)
    labels = np.zeros(shape, np.uint8)
    labels[10:14, 12:16, 9:12] = 3
    labels[20:22, 5:8, 15:20] = 7
    affine = make_affine(spacing, codes, (12.0, -40.0, 7.0))
    img = sitk_from_volume(Volume(labels, affine))
    out = volume_from_sitk(resample_to_spacing(img, 1.0, "RAS", "nearest", 0))
    assert set(np.unique(out.array)) == {0, 3, 7}
    for label in (3, 7):
        before = voxel_to_world(affine, np.argwhere(labels == label).mean(0))[0]
        after = voxel_to_world(out.affine, np.argwhere(out.array == label).mean(0))[0]
        assert np.linalg.norm(before - after) < 1.0, (label, before, after)
    # a single world point maps back to itself through both grids
    p = voxel_to_world(affine, [[11.0, 13.0, 10.0]])
    q = voxel_to_world(out.affine, np.rint(world_to_voxel(out.affine, p)))
    assert np.all(np.abs(p - q) <= 0.5 + 1e-9)


def test_ct_padding_is_air_outside_the_field_of_view():
    ct = np.full((10, 10, 10), 50.0, np.float32)
    img = sitk_from_volume(Volume(ct, make_affine((1, 1, 1), "RAS")))
    grid = make_affine((1, 1, 1), "RAS", (-5.0, 0.0, 0.0))
    out = volume_from_sitk(resample_onto(img, grid, (10, 10, 10), "linear", -1024))
    assert np.all(out.array[:5] == -1024) and np.all(out.array[5:] == 50)


def test_bspline_ct_resampling_reproduces_a_smooth_field():
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in (20, 20, 16)], indexing="ij")
    field = 100 * np.sin(x / 6) + 50 * np.cos(y / 5) + 80 * np.sin(z * 2.5 / 7)  # smooth, curved along z (mm)
    vol = Volume(field.astype(np.float32), make_affine((1.0, 1.0, 2.5), "RAS"))
    linear = volume_from_sitk(resample_to_spacing(sitk_from_volume(vol), 1.0, "RAS", "linear", -1024))
    spline = volume_from_sitk(resample_to_spacing(sitk_from_volume(vol), 1.0, "RAS", "bspline", -1024))
    xi, yi, zi = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in linear.array.shape], indexing="ij")
    truth = 100 * np.sin(xi / 6) + 50 * np.cos(yi / 5) + 80 * np.sin(zi / 7)
    inner = (slice(None), slice(None), slice(8, -8))  # B-spline boundary effects span ~3 input slices
    err_linear = np.abs(linear.array - truth)[inner].max()
    err_spline = np.abs(spline.array - truth)[inner].max()
    assert err_spline < err_linear / 2 and err_spline < 0.5
