"""Preprocessing options and flags: label modes, label loss, border cuts, air patches, DICOM order."""

import numpy as np
import pytest

from pipelines.case.prepare import load_and_prepare
from pipelines.case.process import process_case
from pipelines.ingest.discover import discover
from pipelines.io.volumes import read_image
from pipelines.ops.orient import Volume, sitk_from_volume, volume_from_sitk, voxel_to_world
from pipelines.ops.resample import resample_labels, target_grid
from tests.conftest import make_affine, synthetic_spine, write_ctspine_case, write_dicom_series, write_volume


def test_linear_argmax_keeps_every_label_and_agrees_with_nearest_in_the_interior():
    _, mask, affine = synthetic_spine(spacing=(0.8, 0.8, 2.5))
    img = sitk_from_volume(Volume(mask, affine))
    grid, shape = target_grid(affine, img.GetSize(), 1.0, "RAS")
    nearest = volume_from_sitk(resample_labels(img, grid, shape, "nearest")).array
    smooth = volume_from_sitk(resample_labels(img, grid, shape, "linear_argmax")).array
    assert set(np.unique(smooth)) == set(np.unique(mask))
    assert np.mean(nearest == smooth) > 0.97


def test_a_label_thinner_than_the_output_voxel_is_quarantined_not_lost(tmp_path, tiny_config):
    ct, mask, _ = synthetic_spine()
    affine = make_affine((1.5, 1.5, 0.3), "RAS")
    mask[:, :, 2] = np.where(mask[:, :, 2] == 0, 28, mask[:, :, 2])  # one 0.3 mm slice of T13
    mask[mask == 18] = 0
    write_volume(tmp_path / "c1.nii.gz", ct, affine)
    write_volume(tmp_path / "c1_seg.nii.gz", mask, affine)
    result = process_case(discover([tmp_path]).cases[0], tiny_config, "train", tmp_path / "stage")
    assert result.qc_reason == "label_lost" and "T13" in result.qc_message


def test_vertebrae_cut_by_the_border_are_flagged_or_skipped(tmp_path, tiny_config):
    ct, mask, affine = synthetic_spine()
    mask[:, :, -1] = mask[:, :, -2]  # the cranial vertebra (T11) reaches the last slice
    write_volume(tmp_path / "c1.nii.gz", ct, affine)
    write_volume(tmp_path / "c1_seg.nii.gz", mask, affine)
    case = discover([tmp_path]).cases[0]
    assert load_and_prepare(case, tiny_config).cut_levels == frozenset({"T11"})
    cfg = tiny_config.model_copy(update={"vertebra": tiny_config.vertebra.model_copy(update={"levels": ["T11", "L1"]})})
    kept = process_case(case, cfg, "train", tmp_path / "a")
    flags = {r.level: r.cut_by_border for r in kept.samples if r.product == "vertebra"}
    assert flags == {"T11": True, "L1": False}
    skip = cfg.model_copy(update={"vertebra": cfg.vertebra.model_copy(update={"border_policy": "skip"})})
    skipped = process_case(case, skip, "train", tmp_path / "b")
    assert [r.level for r in skipped.samples if r.product == "vertebra"] == ["L1"]
    assert "vertebra T11: cut by the scan border" in skipped.skipped


def test_x2ct_offsets_that_leave_mostly_air_are_skipped_and_recorded(tmp_path, tiny_config):
    write_ctspine_case(tmp_path, "c1")
    cfg = tiny_config.model_copy(update={"x2ct": tiny_config.x2ct.model_copy(update={"z_offsets_mm": [0, 400]})})
    result = process_case(discover([tmp_path]).cases[0], cfg, "train", tmp_path / "stage")
    assert [r.z_offset_mm for r in result.samples if r.product == "x2ct"] == [0]
    assert any(s.startswith("x2ct z+400") for s in result.skipped)


def test_the_same_case_gives_identical_samples_every_time(tmp_path, tiny_config):
    import h5py

    write_ctspine_case(tmp_path / "in", "c1")
    case = discover([tmp_path / "in"]).cases[0]
    a = process_case(case, tiny_config, "train", tmp_path / "a")
    b = process_case(case, tiny_config, "train", tmp_path / "b")
    assert a.staging_files.keys() == b.staging_files.keys() == {"vertebra", "x2ct", "drr", "volume"}
    for product in a.staging_files:
        with h5py.File(a.staging_files[product]) as fa, h5py.File(b.staging_files[product]) as fb:
            assert list(fa) == list(fb)
            for key in fa:
                for name in fa[key]:
                    np.testing.assert_array_equal(fa[key][name][()], fb[key][name][()])


def test_a_dicom_series_with_reversed_file_order_reads_in_world_order(tmp_path):
    vol = np.zeros((6, 8, 8), np.int16)  # (slices, rows, columns)
    vol[1, 2, 3] = 1000  # a marker in the second slice (z = 2.5 mm)
    write_dicom_series(tmp_path / "fwd", vol, (0.5, 0.5, 2.5), reverse_names=False)
    write_dicom_series(tmp_path / "rev", vol, (0.5, 0.5, 2.5), reverse_names=True)
    worlds = []
    for name in ("fwd", "rev"):
        v = volume_from_sitk(read_image(tmp_path / name))
        worlds.append(voxel_to_world(v.affine, np.argwhere(v.array == 1000))[0])
    np.testing.assert_allclose(worlds[0], worlds[1])
    assert worlds[0][2] == pytest.approx(2.5)  # superior coordinate from ImagePositionPatient
