"""The documentation's worked example of a naming rule file, taken from docs/inputs.md itself and run."""
import re
from pathlib import Path

import numpy as np
import yaml

from pipelines.ingest.discover import discover
from pipelines.ingest.naming import load_rules
from tests.conftest import synthetic_spine, write_dicom_series, write_volume

INPUTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "inputs.md"


def test_the_documented_rule_file_example_classifies_a_dicom_export_with_no_code_change(tmp_path):
    text = INPUTS_DOC.read_text(encoding="utf-8")
    block = re.search(r"Save as\s+`schemas/naming/(?P<name>[^`]+)`.*?```yaml\n(?P<yaml>.*?)```", text, re.S)
    assert block, "the rule-file example of docs/inputs.md is missing"
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / block["name"]).write_text(block["yaml"])
    assert yaml.safe_load(block["yaml"])["convention"] == "hospital"
    ct, mask, affine = synthetic_spine()
    root = tmp_path / "in"
    write_dicom_series(root / "export" / "0042" / "series_ct", ct.transpose(2, 1, 0).astype(np.int16), (1.5, 1.5, 2.0))
    write_volume(root / "export" / "0042" / "labels.nii.gz", mask, affine)
    (root / "export" / "0042" / "notes.txt").write_text("scanner log")
    found = discover([root], load_rules(extra_dirs=[rules_dir]))
    assert [c.case_id for c in found.cases] == ["hosp-0042"]
    assert found.cases[0].relative() == {"ct": "export/0042/series_ct", "mask": "export/0042/labels.nii.gz"}
    assert found.unmatched == ["export/0042/notes.txt"]
