"""One small version published to the session's S3 server (tests/conftest.py) by
`spineforge build --out s3://...`."""
from __future__ import annotations

import pytest
import yaml

from tests.conftest import S3_BUCKET as BUCKET
from tests.conftest import write_ctspine_case

N_CASES = 6


def store_config() -> dict:
    return {"dataset": "store", "vertebra": {"size": 16, "levels": ["T11", "T12", "L1", "L2", "L3", "L4"]},
            "x2ct": {"size": 24, "z_offsets_mm": [0]}, "drr": {"pairs_per_case": 1, "poses_per_pair": 1},
            "detector": {"height": 32, "width": 32, "pixel_spacing_mm": 4.0, "samples_per_voxel": 2.0},
            "splits": {"train": 1.0, "val": 0.0, "test": 0.0}}


@pytest.fixture(scope="session")
def published(s3_server, tmp_path_factory):
    """(s3 URL of the version, its local twin in the work folder, the build's output) of one
    `spineforge build --out s3://spineforge/team --work W`."""
    from pipelines.cli import main

    root = tmp_path_factory.mktemp("store-inputs")
    for n in range(N_CASES):
        write_ctspine_case(root, f"s{n}", noise_seed=300 + n)
    config = root.parent / "store-config.yaml"
    config.write_text(yaml.safe_dump(store_config()))
    work, manifests = tmp_path_factory.mktemp("store-work"), tmp_path_factory.mktemp("store-manifests")
    assert main(["build", "--config", str(config), "--input", str(root), "--out", f"s3://{BUCKET}/team",
                 "--work", str(work), "--manifests", str(manifests)]) == 0
    return {"url": f"s3://{BUCKET}/team/store/v1", "local": work / "store" / "v1", "config": config,
            "inputs": root, "work": work, "manifests": manifests}
