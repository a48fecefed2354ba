"""Walks of a batch of rays, each with its own source and part label: several views, even of several
samples, in one call (`walk_rays`). Every ray runs `traversal._walk_ray`, the numba walk's own per-ray
function: on the CPU's threads for numpy arrays, and on a GPU for CUDA tensors, where numba compiles
the same function for its CUDA target (it compiles the @njit functions a CUDA kernel calls), one thread
a ray, every view of a batch in one launch. The kernel is the two lines that pick a thread's ray; the
tests check `_walk_ray` on the CPU through `walk_rays`, and the launch where a GPU is present. The
kernel lives in `traversal_cuda`, imported only when a GPU walk is asked for (numba's CUDA target
takes ~0.1 s to import)."""
from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from pipelines.ops.traversal import _RAYS, MAX_KNOTS, Occupancy, _occupancy_arrays, _padded_knots

log = logging.getLogger("spineforge")


def walk_rays(volume, sources, targets, raylen, labels=None, ray_label=None, boxes=None, knots=None,
              occupied: Occupancy | None = None):
    """`traverse_numba` / `traverse_hinges_numba` of a batch of rays, each with its own source (N, 3)
    and part label (`ray_label`, (N,) int; -1: none; `boxes` (256, 6), each label's `label_box`, from
    `label_table`): several views, even of several samples, in one call. Torch CUDA tensors walk on
    that GPU, one thread a ray (`traversal_cuda`; results there, launched on torch's current stream);
    numpy arrays walk on the CPU's threads. Both run `_walk_ray`, the numba kernel's own per-ray
    function: on the CPU the same sums bit for bit, on a GPU up to its compiler's fused multiply-adds
    (float64 rounding). Returns float64 (whole, part) or, with `knots`, (whole, part, hinges)."""
    n = len(targets)
    padded = _padded_knots(knots)
    occ, occ_shape, shift = _occupancy_arrays(volume, occupied, padded)
    ray_label = np.full(n, -1, dtype=np.int64) if ray_label is None else ray_label
    labels = np.zeros(1, dtype=np.uint8) if labels is None else labels
    boxes = np.zeros((256, 6), dtype=np.int64) if boxes is None else boxes
    hinged = knots is not None
    shape = tuple(int(x) for x in volume.shape)
    if isinstance(volume, torch.Tensor) and volume.is_cuda:
        from pipelines.ops.traversal_cuda import launch

        return launch(volume, sources, targets, raylen, labels, ray_label, boxes, padded, occ, occ_shape, shift, hinged)
    out, out_label = np.empty(n), np.empty(n)
    out_hinges = np.zeros((n if hinged else 1, 1 + MAX_KNOTS))
    _RAYS[hinged](np.ascontiguousarray(volume, dtype=np.float32).reshape(-1), *shape,
                  np.ascontiguousarray(labels, dtype=np.uint8).reshape(-1), np.asarray(ray_label, dtype=np.int64),
                  np.asarray(boxes, dtype=np.int64), occ, *(int(x) for x in occ_shape), int(shift),
                  np.ascontiguousarray(sources, dtype=np.float64), np.ascontiguousarray(targets, dtype=np.float64),
                  np.ascontiguousarray(raylen, dtype=np.float64), padded, out, out_label, out_hinges)
    return (out, out_label, out_hinges) if hinged else (out, out_label)


@functools.lru_cache(maxsize=1)
def cuda_walk_available() -> bool:
    """Whether numba's CUDA target can compile and run a kernel here (a GPU, its driver and a numba
    CUDA target that works with this numpy). Checked once per process by running a one-thread kernel;
    where it cannot, the reason is logged and the torch walker is used."""
    try:
        from pipelines.ops.traversal_cuda import probe

        probe()
        return True
    except Exception as exc:  # no GPU, no driver, or a numba CUDA target broken against this numpy
        log.warning("numba's CUDA target is not usable here (%s: %s); GPU walks use the torch walker",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return False
