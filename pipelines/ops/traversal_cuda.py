"""The traversal on a GPU: `traversal._walk_ray` (the CPU kernel's per-ray function) compiled for numba's
CUDA target -- numba compiles the @njit functions a CUDA kernel calls for the GPU -- one thread a ray,
every view of a batch in one launch. Imported by `ray_batch.walk_rays` only for CUDA tensors (numba's
CUDA target takes ~0.1 s to import). The kernel is the two lines that pick a thread's ray; the tests
check `_walk_ray` on the CPU through the same `walk_rays`, and this launch where a GPU is present."""
from __future__ import annotations

import torch
from numba import cuda

from pipelines.ops.traversal import MAX_KNOTS, _walk_ray

THREADS = 128  # rays per thread block: consecutive detector pixels of a row, which share cache lines
_KERNELS: dict[bool, object] = {}


def _kernel(hinged: bool):
    if hinged not in _KERNELS:
        @cuda.jit
        def walk(flat, n_i, n_j, n_k, labels, ray_label, boxes, occ, nb_i, nb_j, nb_k, shift, sources, targets,
                 raylen, knots, out, out_label, out_hinges):
            r = cuda.grid(1)
            if r < targets.shape[0]:
                _walk_ray(r, flat, n_i, n_j, n_k, labels, ray_label, boxes, occ, nb_i, nb_j, nb_k, shift, sources,
                          targets, raylen, knots, hinged, out, out_label, out_hinges)

        _KERNELS[hinged] = walk
    return _KERNELS[hinged]


@cuda.jit
def _probe(out):
    out[0] = 1


def probe() -> None:
    """Compile and run a one-thread kernel: raises where numba's CUDA target cannot (see
    `ray_batch.cuda_walk_available`)."""
    import numpy as np

    out = cuda.to_device(np.zeros(1, dtype=np.int32))
    _probe[1, 1](out)
    if out.copy_to_host()[0] != 1:
        raise RuntimeError("a probe kernel ran but wrote nothing")


def launch(volume: torch.Tensor, sources, targets, raylen, labels, ray_label, boxes, knots, occ, occ_shape, shift,
           hinged: bool):
    """`walk_rays` on the GPU holding `volume`: arguments moved there once (the volume and labels
    normally live there already), outputs allocated there, the kernel queued on torch's current stream."""
    dev = volume.device
    n = len(targets)
    kept = []  # what the kernel reads, alive until it is queued (torch's allocator is stream-ordered)

    def on_gpu(x, dtype):
        kept.append(torch.as_tensor(x, device=dev).to(dtype).contiguous())
        return cuda.as_cuda_array(kept[-1])

    out = torch.empty(n, dtype=torch.float64, device=dev)
    out_label = torch.empty(n, dtype=torch.float64, device=dev)
    out_hinges = torch.zeros((n if hinged else 1, 1 + MAX_KNOTS), dtype=torch.float64, device=dev)
    if n:
        stream = cuda.external_stream(torch.cuda.current_stream(dev).cuda_stream)
        _kernel(hinged)[(n + THREADS - 1) // THREADS, THREADS, stream](
            on_gpu(volume.reshape(-1), torch.float32), *(int(x) for x in volume.shape),
            on_gpu(labels.reshape(-1), torch.uint8), on_gpu(ray_label, torch.int64), on_gpu(boxes, torch.int64),
            on_gpu(occ, torch.uint8), *(int(x) for x in occ_shape), int(shift),
            on_gpu(sources, torch.float64), on_gpu(targets, torch.float64), on_gpu(raylen, torch.float64),
            on_gpu(knots, torch.float32), cuda.as_cuda_array(out), cuda.as_cuda_array(out_label),
            cuda.as_cuda_array(out_hinges))
    return (out, out_label, out_hinges) if hinged else (out, out_label)
