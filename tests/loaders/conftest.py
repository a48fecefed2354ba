"""One small published version with all three products, built once for the loader tests."""
import pytest

from tests.conftest import write_ctspine_case

N_CASES = 4


def training_config():
    from schemas.config import BuildConfig

    return BuildConfig.model_validate({
        "dataset": "train", "vertebra": {"size": 16, "levels": ["T11", "T12", "L1", "L2", "L3", "L4"]},
        "x2ct": {"size": 24, "z_offsets_mm": [0]}, "drr": {"pairs_per_case": 1, "poses_per_pair": 1},
        "detector": {"height": 32, "width": 32, "pixel_spacing_mm": 4.0, "samples_per_voxel": 2.0},
        "splits": {"train": 1.0, "val": 0.0, "test": 0.0}})


@pytest.fixture(scope="session")
def training_version(tmp_path_factory):
    from pipelines.builds.run import run_build

    root = tmp_path_factory.mktemp("training-inputs")
    for n in range(N_CASES):
        write_ctspine_case(root, f"t{n}", noise_seed=100 + n)
    out = tmp_path_factory.mktemp("training-out")
    run_build(training_config(), [str(root)], str(out))
    return out / "train" / "v1", root
