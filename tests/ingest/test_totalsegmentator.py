"""TotalSegmentator collections: one binary mask per structure, or one multi-label file (v1/v2 ids)."""
import numpy as np
import pytest

from pipelines.case.prepare import load_and_prepare
from pipelines.errors import QCError
from pipelines.ingest.discover import discover
from pipelines.ingest.labels import source_lookup, translate
from tests.conftest import SYNTH_LEVELS, synthetic_spine, write_volume

V2_IDS = {"T11": 33, "T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28}  # TotalSegmentator v2 "total" ids


def _per_structure_case(root, reorient_one=True):
    ct, mask, affine = synthetic_spine()
    write_volume(root / "s0001" / "ct.nii.gz", ct, affine)
    seg = root / "s0001" / "segmentations"
    for level, vid in SYNTH_LEVELS:
        binary = (mask == vid).astype(np.uint8)
        if level == "L2" and reorient_one:  # stored with reversed axes: must be resampled, not flagged
            flipped = np.ascontiguousarray(binary[::-1, ::-1, :])
            flip_affine = affine.copy()
            flip_affine[:3, 0] *= -1
            flip_affine[:3, 1] *= -1
            flip_affine[:3, 3] = affine[:3, :3] @ [binary.shape[0] - 1, binary.shape[1] - 1, 0] + affine[:3, 3]
            write_volume(seg / f"vertebrae_{level}.nii.gz", flipped, flip_affine)
        else:
            write_volume(seg / f"vertebrae_{level}.nii.gz", binary, affine)
    write_volume(seg / "liver.nii.gz", (ct > 0).astype(np.uint8), affine)  # a non-vertebra structure
    return mask


def test_per_structure_masks_merge_into_canonical_levels(tmp_path, tiny_config):
    mask = _per_structure_case(tmp_path)
    (case,) = discover([tmp_path]).cases
    assert case.convention == "totalsegmentator" and "ct" in case.files
    assert set(case.keyed("structure_mask")) == {f"vertebrae_{lv}" for lv, _ in SYNTH_LEVELS} | {"liver"}
    prepared = load_and_prepare(case, tiny_config)
    assert prepared.levels == [lv for lv, _ in SYNTH_LEVELS]
    # the merged map equals the original multi-label mask (ids are canonical VerSe ids), incl. the flipped L2
    reference = load_and_prepare(_multilabel_reference(tmp_path / "ref", mask), tiny_config)
    np.testing.assert_array_equal(prepared.labels.array, reference.labels.array)


def _multilabel_reference(root, mask):
    ct, _, affine = synthetic_spine()
    write_volume(root / "c.nii.gz", ct, affine)
    write_volume(root / "c_seg.nii.gz", mask, affine)
    return discover([root]).cases[0]


def test_multilabel_v2_file_is_translated_and_organs_ignored(tmp_path, tiny_config):
    ct, mask, affine = synthetic_spine()
    v2 = np.zeros_like(mask)
    for level, vid in SYNTH_LEVELS:
        v2[mask == vid] = V2_IDS[level]
    v2[(ct > 0) & (mask == 0)] = 5  # liver, present in the same file
    write_volume(tmp_path / "s0002" / "ct.nii.gz", ct, affine)
    write_volume(tmp_path / "s0002" / "segmentations.nii.gz", v2, affine)
    (case,) = discover([tmp_path]).cases
    assert case.labels == "totalsegmentator_v2"
    assert load_and_prepare(case, tiny_config).levels == [lv for lv, _ in SYNTH_LEVELS]
    v2[0, 0, 0] = 200  # not a TotalSegmentator v2 id
    write_volume(tmp_path / "s0002" / "segmentations.nii.gz", v2, affine)
    with pytest.raises(QCError) as err:
        load_and_prepare(discover([tmp_path]).cases[0], tiny_config)
    assert err.value.reason == "unknown_labels"


@pytest.mark.parametrize("table,ids,levels", [
    ("totalsegmentator_v1", [18, 22, 23, 34, 35, 41, 92, 5], ["L5", "L1", "T12", "T1", "C7", "C1", "sacrum", None]),
    ("totalsegmentator_v2", [25, 26, 27, 31, 32, 43, 44, 50, 5], ["sacrum", "S1", "L5", "L1", "T12", "T1", "C7", "C1", None]),
])
def test_totalsegmentator_id_tables(table, ids, levels):
    from pipelines.ingest.labels import id_to_level

    lut, ignored = source_lookup(table)
    out, unknown = translate(np.array(ids), lut, ignored)
    names = id_to_level()
    assert [names.get(int(i)) for i in out] == levels and unknown == set()
