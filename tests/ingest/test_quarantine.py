"""A table of bad inputs: each becomes a quarantine row with its reason code, never a crash."""
import gzip
import json

import numpy as np
import pytest

from pipelines.case.prepare import load_and_prepare
from pipelines.case.process import process_case
from pipelines.ingest.cases import ingest_inputs
from pipelines.ingest.discover import discover
from tests.conftest import synthetic_spine, write_ctspine_case, write_volume


def _only_case(root):
    (case,) = discover([root]).cases
    return case


def _bad_case(root, kind):
    ct, mask, affine = synthetic_spine()
    if kind == "truncated":
        write_ctspine_case(root, "c1")
        data = (root / "c1.nii.gz").read_bytes()
        (root / "c1.nii.gz").write_bytes(data[: len(data) // 3])
    elif kind == "not_an_image":
        root.mkdir(parents=True)
        (root / "c1.nii.gz").write_bytes(gzip.compress(b"this is not a nifti file" * 10))
        write_volume(root / "c1_seg.nii.gz", mask, affine)
    elif kind == "non_finite":
        ct[3, 3, 3] = np.nan
        write_volume(root / "c1.nii.gz", ct, affine)
        write_volume(root / "c1_seg.nii.gz", mask, affine)
    elif kind == "implausible_hu":
        write_volume(root / "c1.nii.gz", (ct + 1000) / 4000, affine)  # normalised, not HU
        write_volume(root / "c1_seg.nii.gz", mask, affine)
    elif kind == "empty_mask":
        write_volume(root / "c1.nii.gz", ct, affine)
        write_volume(root / "c1_seg.nii.gz", np.zeros_like(mask), affine)
    elif kind == "too_few":
        write_volume(root / "c1.nii.gz", ct, affine)
        write_volume(root / "c1_seg.nii.gz", np.where(mask >= 22, mask, 0).astype(np.uint8), affine)
    elif kind == "no_overlap":
        write_volume(root / "c1.nii.gz", ct, affine)
        far = affine.copy()
        far[:3, 3] += 1000.0
        write_volume(root / "c1_seg.nii.gz", mask, far)
    elif kind == "unknown_labels":
        write_volume(root / "c1.nii.gz", ct, affine)
        write_volume(root / "c1_seg.nii.gz", np.where(mask == 18, 99, mask).astype(np.uint8), affine)
    elif kind == "zero_spacing":  # a header whose slice spacing is 0 (both readers would take 1 mm)
        import struct

        write_volume(root / "c1.nii.gz", ct, affine)
        write_volume(root / "c1_seg.nii.gz", mask, affine)
        raw = bytearray(gzip.decompress((root / "c1.nii.gz").read_bytes()))
        struct.pack_into("<f", raw, 76 + 3 * 4, 0.0)  # pixdim[3], at byte 76 + 4 * 3 of the NIfTI-1 header
        (root / "c1.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    elif kind == "huge_spacing":
        write_volume(root / "c1.nii.gz", ct, affine)
        write_volume(root / "c1_seg.nii.gz", mask, affine)
        import nibabel as nib  # write a header SimpleITK would refuse to create

        img = nib.load(root / "c1.nii.gz")
        hdr = img.header.copy()
        hdr["pixdim"][1] = 50.0
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, hdr), root / "c1.nii.gz")
    return root


@pytest.mark.parametrize("kind,reason", [
    ("truncated", "unreadable"),
    ("not_an_image", "unreadable"),
    ("non_finite", "non_finite"),
    ("implausible_hu", "implausible_hu"),
    ("empty_mask", "empty_mask"),
    ("too_few", "too_few_vertebrae"),
    ("no_overlap", "grid_mismatch"),
    ("unknown_labels", "unknown_labels"),
    ("huge_spacing", "implausible_spacing"),
    ("zero_spacing", "degenerate_geometry"),
])
def test_bad_input_is_quarantined_with_reason(tmp_path, tiny_config, kind, reason):
    case = _only_case(_bad_case(tmp_path / "in", kind))
    result = process_case(case, tiny_config, "train", tmp_path / "stage")
    assert (result.qc_status, result.qc_reason) == ("quarantined", reason), result.qc_message
    assert result.qc_message
    if kind == "zero_spacing":
        assert "pixdim[3] = 0" in result.qc_message  # the value that is wrong is named
    assert not (tmp_path / "stage" / "c1.h5").exists()


def test_mask_in_another_voxel_order_is_handled_not_flagged(tmp_path, tiny_config):
    """The same labels stored P-I-R instead of RAS: resampled by world position, nothing lost."""
    ct, mask, affine = synthetic_spine()
    write_volume(tmp_path / "c1.nii.gz", ct, affine)
    # RAS [i, j, k] -> PIR: new axes (P = -y, I = -z, R = +x)
    pir = np.ascontiguousarray(mask[:, ::-1, ::-1].transpose(1, 2, 0))
    ny, nz = mask.shape[1], mask.shape[2]
    pir_affine = np.zeros((4, 4))
    pir_affine[:3, 0] = -affine[:3, 1]
    pir_affine[:3, 1] = -affine[:3, 2]
    pir_affine[:3, 2] = affine[:3, 0]
    pir_affine[:3, 3] = affine[:3, :3] @ [0, ny - 1, nz - 1] + affine[:3, 3]
    pir_affine[3, 3] = 1
    write_volume(tmp_path / "c1_seg.nii.gz", pir.astype(np.float64), pir_affine)  # VerSe stores float64
    prepared = load_and_prepare(_only_case(tmp_path), tiny_config)
    assert prepared.levels == ["T11", "T12", "L1", "L2", "L3", "L4"]
    reference = load_and_prepare(_only_case(_reference(tmp_path / "ref")), tiny_config)
    np.testing.assert_array_equal(prepared.labels.array, reference.labels.array)


def _reference(root):
    write_ctspine_case(root, "c1")
    return root


def test_missing_mask_and_duplicates_are_rows_not_crashes(tmp_path, tiny_config):
    write_ctspine_case(tmp_path, "a")
    write_ctspine_case(tmp_path, "b")  # identical content under another name
    ct, _, affine = synthetic_spine()
    write_volume(tmp_path / "lonely.nii.gz", ct + 1, affine)
    (tmp_path / "notes.txt").write_text("not data")
    result = ingest_inputs([tmp_path], tiny_config)
    rows = result.rows
    assert [j.case.case_id for j in result.jobs] == ["a"]
    assert rows["b"].qc_reason == "duplicate" and "a" in rows["b"].qc_message
    assert rows["lonely"].qc_reason == "missing_role"
    assert result.discovery.unmatched == ["notes.txt"]
    assert json.loads(rows["a"].source_paths) == {"ct": "a.nii.gz", "mask": "a_seg.nii.gz"}


def test_symlink_leaving_the_root_is_reported_not_followed(tmp_path):
    outside = tmp_path / "outside"
    write_ctspine_case(outside, "x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "x.nii.gz").symlink_to(outside / "x.nii.gz")
    found = discover([root])
    assert found.cases == []
    assert found.problems[0][:2] == ("x.nii.gz", "symlink_outside_root")
