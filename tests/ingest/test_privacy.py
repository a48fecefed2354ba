"""DICOM inputs with identifying tags: the series is used, no identifier reaches any output or log."""
import logging
import re

import numpy as np
import SimpleITK as sitk

from pipelines.builds.run import run_build
from pipelines.io.volumes import read_image
from tests.conftest import synthetic_spine, write_dicom_series

IDENTIFIERS = {"0010|0010": "Doe^Jane", "0010|0020": "PID-4711", "0010|0030": "19700101",
               "0008|0080": "St Elsewhere Hospital", "0008|0090": "Dr^Who"}


def test_dicom_identifiers_never_reach_outputs_or_logs(tmp_path, tiny_config, caplog):
    ct, mask, _ = synthetic_spine()
    series = write_dicom_series(tmp_path / "in" / "CT" / "Patient_009", ct.transpose(2, 1, 0), (1.5, 1.5, 2.0),
                                tags=IDENTIFIERS)
    mask_img = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
    mask_img.CopyInformation(read_image(series))
    (tmp_path / "in" / "Mask").mkdir()
    sitk.WriteImage(mask_img, str(tmp_path / "in" / "Mask" / "patient009-mask.nii.gz"))

    with caplog.at_level(logging.DEBUG):
        summary = run_build(tiny_config, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert summary.published and not summary.quarantined  # the DICOM series really was used
    import pandas as pd

    cases = pd.read_parquet(tmp_path / "out" / "tiny" / "v1" / "cases.parquet")
    assert cases.case_id.tolist() == ["patient-009"]
    assert '"ct": "CT/Patient_009"' in cases.source_paths.iloc[0]  # the series folder itself

    needles = [v.encode() for v in IDENTIFIERS.values()] + [b"Doe", b"Jane"]
    # the patient number on its own, not as digits inside a longer number (recorded floats hold any digits)
    number = re.compile(rb"(?<![0-9.])4711(?![0-9])")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles) and not number.search(data), f"an identifier leaked into {path}"
    logs = caplog.text.encode()
    assert not any(n in logs for n in needles) and not number.search(logs)
