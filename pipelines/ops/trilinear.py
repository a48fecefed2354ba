"""The 'clipped_trilinear' integrator: each ray clipped to the volume's box and sampled uniformly with
border-clamped trilinear interpolation (torch's grid_sample), in bounded chunks of rays."""
from __future__ import annotations

import torch

CHUNK_RAYS_CPU = 1 << 11  # rays per grid_sample call: measured fastest on a 2-core CPU (cache-sized)

CHUNK_RAYS_GPU = 1 << 18

GRID_SPLIT = 8  # grid_sample parallelises over its batch dimension: split each chunk this many ways


def ray_box_interval(source: torch.Tensor, target: torch.Tensor,
                     dims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit (as fractions of source -> target) of rays through the voxel box.

    Voxel coordinates: centres at 0 .. n-1, faces at -0.5 and n - 0.5 (slab method). A ray that
    misses the box gets entry >= exit.
    """
    d = target - source
    d = torch.where(d.abs() < 1e-8, torch.full_like(d, 1e-8), d)
    lo = (-0.5 - source) / d
    hi = (dims - 0.5 - source) / d
    entry = torch.minimum(lo, hi).amax(-1).clamp(min=0.0)
    exit_ = torch.maximum(lo, hi).amin(-1).clamp(max=1.0)
    return entry, exit_


def integrate_clipped(density: torch.Tensor, source: torch.Tensor, targets: torch.Tensor,
                      raylen_mm: torch.Tensor, step_vox: float = 1.0, chunk: int = CHUNK_RAYS_CPU,
                      split: int = GRID_SPLIT) -> torch.Tensor:
    """Line integrals of `density` (i, j, k) along rays from `source` ((3,) or (N, 3)) to `targets` (N, 3).

    Coordinates are voxel indices; `raylen_mm` (N,) converts a ray fraction to millimetres. Each
    ray is sampled uniformly between its own entry and exit (trapezoid rule), no sample is spent
    outside the volume, and rays that miss it stay 0.
    """
    dims = torch.tensor(density.shape, dtype=source.dtype, device=source.device)
    volume = density.permute(2, 1, 0)[None, None]  # grid_sample wants (N, C, D, H, W) with xyz grids
    source = source.expand_as(targets)
    entry, exit_ = ray_box_interval(source, targets, dims)
    hit = torch.nonzero(exit_ > entry).squeeze(-1)
    chord_vox = (targets - source).norm(dim=-1)
    out = torch.zeros(len(targets), dtype=density.dtype, device=density.device)
    unit = torch.zeros(0, device=source.device)  # sample positions 0..1, rebuilt when n changes
    for lo in range(0, len(hit), chunk):
        idx = hit[lo:lo + chunk]
        a0, a1 = entry[idx, None], exit_[idx, None]
        n = int(torch.ceil(((a1 - a0)[:, 0] * chord_vox[idx]).max() / step_vox).item()) + 1
        n = -(-n // 16) * 16  # rows of 16k float32 samples: 64-byte aligned, so each row sums in a fixed order
        if len(unit) != n:
            unit = torch.linspace(0, 1, n, device=source.device)
        # grid coordinates of each ray's entry and the step to its exit, in grid_sample's [-1, 1]
        to_grid = 2.0 / dims
        direction = targets[idx] - source[idx]
        first = (source[idx] + a0 * direction + 0.5) * to_grid - 1
        span = (a1 - a0) * direction * to_grid
        grid = torch.addcmul(first[:, None, :], unit[None, :, None], span[:, None, :])  # (R, n, 3)
        rays = len(idx)
        parts = min(split, rays)
        pad = (-rays) % parts
        if pad:
            grid = torch.cat([grid, grid[:pad]])
        samples = torch.nn.functional.grid_sample(
            volume.expand(parts, -1, -1, -1, -1), grid.view(parts, 1, -1, n, 3),
            mode="bilinear", padding_mode="border", align_corners=False,
        ).reshape(-1, n)[:rays]
        step_mm = (a1 - a0)[:, 0] * raylen_mm[idx] / max(n - 1, 1)
        # aligned rows reduce in the same order in every process and run: bit-identical images
        out[idx] = (samples.sum(-1) - 0.5 * (samples[:, 0] + samples[:, -1])) * step_mm
    return out
