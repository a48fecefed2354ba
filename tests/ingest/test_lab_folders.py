"""Lab folders CT/ Mask/ Vertebra/ VerteData/ with free-form names and levels in any spelling."""
import json

import numpy as np
import pytest

from pipelines.case.prepare import load_and_prepare
from pipelines.ingest.cases import ingest_inputs
from pipelines.ingest.discover import discover
from pipelines.ingest.naming import canonical_level
from pipelines.ops.crop import crop_around, shifted_affine
from tests.conftest import synthetic_spine, write_volume


@pytest.mark.parametrize("raw,level", [("L1", "L1"), ("l2", "L2"), ("L-3", "L3"), ("Lumbar3", "L3"), ("T12", "T12"),
                                       ("t13", "T13"), ("thoracic_4", "T4"), ("C7", "C7"), ("S1", "S1"),
                                       ("C8", None), ("L7", None), ("S2", None), ("X1", None)])
def test_levels_in_any_spelling(raw, level):
    assert canonical_level(raw) == level


def _crop(volume, affine, centre, size=12):
    patch, start, _ = crop_around(volume, np.array(centre, float), size, 0)
    return patch, shifted_affine(affine, start)


def _lab_tree(root):
    ct, mask, affine = synthetic_spine()
    write_volume(root / "CT" / "Patient_007.nii.gz", ct, affine)
    write_volume(root / "Mask" / "patient007-mask.nii.gz", mask, affine)
    for name, centre in (("Patient007_L1.nii.gz", (19, 19, 45)), ("P007-T12.mha", (19, 19, 57)),
                         ("P007_Lumbar3.nii.gz", (19, 19, 21))):
        patch, a = _crop(ct, affine, centre)
        write_volume(root / "Vertebra" / name, patch, a)
    patch, a = _crop(mask, affine, (19, 19, 33))
    write_volume(root / "VerteData" / "patient_007_l2.nii", patch, a)
    # patient 8: its crop was cut from somewhere else entirely
    ct8 = ct + np.float32(1)
    write_volume(root / "CT" / "Patient_008.nii.gz", ct8, affine)
    write_volume(root / "Mask" / "patient008_seg.nii.gz", mask, affine)
    far = affine.copy()
    far[:3, 3] += 500
    write_volume(root / "Vertebra" / "Patient008_L1.nii.gz", _crop(ct8, affine, (19, 19, 45))[0], far)
    (root / "Vertebra" / "Patient007_X9.nii.gz").write_bytes(b"")  # no readable level: unmatched
    return root


def test_lab_tree_groups_by_patient_and_level(tmp_path, tiny_config):
    root = _lab_tree(tmp_path)
    found = discover([root])
    cases = {c.case_id: c for c in found.cases}
    assert set(cases) == {"patient-007", "patient-008"}
    p7 = cases["patient-007"]
    assert set(p7.files) == {"ct", "mask", "vertebra_ct:L1", "vertebra_ct:T12", "vertebra_ct:L3", "vertebra_mask:L2"}
    assert p7.convention == "lab" and found.unmatched == ["Vertebra/Patient007_X9.nii.gz"]
    assert load_and_prepare(p7, tiny_config).levels == ["T11", "T12", "L1", "L2", "L3", "L4"]


def test_a_vertebra_crop_outside_its_case_is_quarantined(tmp_path, tiny_config):
    from pipelines.case.process import process_case

    root = _lab_tree(tmp_path)
    ingest = ingest_inputs([root], tiny_config)
    job = next(j for j in ingest.jobs if j.case.case_id == "patient-008")
    result = process_case(job.case, tiny_config, job.split, tmp_path / "stage")
    assert result.qc_reason == "vertebra_mismatch" and "Patient008_L1" in result.qc_message
    assert json.loads(ingest.rows["patient-007"].source_paths)["vertebra_ct:L3"] == "Vertebra/P007_Lumbar3.nii.gz"


def test_salted_case_ids_hide_names_and_are_stable(tmp_path, tiny_config, monkeypatch):
    from pipelines.errors import InputError
    from pipelines.ingest.cases import salted_case_id

    root = _lab_tree(tmp_path)
    cfg = tiny_config.model_copy(update={"ingest": tiny_config.ingest.model_copy(update={"case_ids": "salted_hash"})})
    with pytest.raises(InputError, match="SPINEFORGE_CASE_SALT"):
        ingest_inputs([root], cfg)
    monkeypatch.setenv("SPINEFORGE_CASE_SALT", "s3cret")
    ids = sorted(ingest_inputs([root], cfg).rows)
    assert ids == sorted(salted_case_id(n, "s3cret") for n in ("patient-007", "patient-008"))
    assert all(i.startswith("case-") and "patient" not in i for i in ids)
    assert ids == sorted(ingest_inputs([root], cfg).rows)  # stable
    assert salted_case_id("patient-007", "other") not in ids


def test_ingest_materializes_a_canonical_tree(tmp_path):
    from pipelines.ingest.run import run_ingest

    root = _lab_tree(tmp_path / "in")
    summary = run_ingest([root], tmp_path / "out", materialize_dir=tmp_path / "tree")
    assert summary.accepted == 1 and summary.quarantined == 1  # patient-008: vertebra_mismatch
    tree = tmp_path / "tree" / "patient-007"
    assert sorted(p.name for p in tree.iterdir()) == [
        "ct.nii.gz", "mask.nii.gz", "vertebra_ct_L1.nii.gz", "vertebra_ct_L3.nii.gz", "vertebra_ct_T12.mha",
        "vertebra_mask_L2.nii"]
    assert (tree / "ct.nii.gz").resolve() == (root / "CT" / "Patient_007.nii.gz").resolve()
    assert not (tmp_path / "tree" / "patient-008").exists()
    assert (tmp_path / "out" / "cases.parquet").is_file()
