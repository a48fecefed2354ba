"""The one volume loader: one read gives hash, voxels, integrity and non-finite count."""
import gzip
import hashlib

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.errors import VolumeReadError
from pipelines.io.volumes import load_volume, read_image
from tests.conftest import make_affine, write_volume


def test_nifti_loads_like_simpleitk_with_its_hash(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(0, 100, (7, 5, 3)).astype(np.float32)
    path = write_volume(tmp_path / "v.nii.gz", array, make_affine((0.7, 0.8, 2.5), "LPS", (1, 2, 3)))
    loaded = load_volume(path)
    reference = read_image(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    np.testing.assert_array_equal(loaded.array_view(), sitk.GetArrayViewFromImage(reference))
    assert loaded.image.GetPixelID() == reference.GetPixelID()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(loaded.image, get)() == getattr(reference, get)()
    assert loaded.nonfinite == 0


def test_non_finite_voxels_are_counted_where_simpleitk_would_hide_them(tmp_path):
    array = np.zeros((4, 4, 4), np.float32)
    array[0, 0, :2] = np.nan
    array[1, 1, 1] = np.inf
    path = write_volume(tmp_path / "nan.nii.gz", array, make_affine())
    assert load_volume(path).nonfinite == 3


def test_truncated_and_missing_files_are_read_errors(tmp_path):
    path = write_volume(tmp_path / "t.nii.gz", np.ones((8, 8, 8), np.int16), make_affine())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="truncated or corrupt"):
        load_volume(path)
    with pytest.raises(VolumeReadError, match="no such file"):
        load_volume(tmp_path / "absent.nii.gz")


def test_scaled_nifti_gives_float_values(tmp_path):
    import nibabel as nib

    img = nib.Nifti1Image(np.arange(27, dtype=np.int16).reshape(3, 3, 3), np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    path.write_bytes(gzip.compress(img.to_bytes()))
    loaded = load_volume(path)
    assert loaded.array_view().dtype == np.float32
    assert float(loaded.array_view().min()) == -1024.0 and float(loaded.array_view().max()) == 26 * 2 - 1024
