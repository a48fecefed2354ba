"""Sample transforms for trainers: intensity conventions of the stored DRR views, and quantum noise."""
from __future__ import annotations

from collections.abc import Callable

import torch

from pipelines.ops.sampling import stable_hash
from schemas.manifest import Col
from schemas.shard_layout import EXACT_IMAGE_KEYS, IMAGE_KEYS


def _on_images(sample: dict, fn: Callable[[str, torch.Tensor], torch.Tensor], keys=IMAGE_KEYS) -> dict:
    return {k: fn(k, v) if k in keys else v for k, v in sample.items()}


def line_integral(sample: dict) -> dict:
    """Transform: the stored convention, unchanged. Pixel p = sum over the ray of mu * step (dimensionless),
    p = -ln(I / I0) for a monochromatic beam; 0 where the ray misses the patient."""
    return sample


def transmission(sample: dict) -> dict:
    """Transform: stored line integrals p -> transmitted intensity I / I0 = exp(-p), in (0, 1]."""
    return _on_images(sample, lambda _, v: torch.exp(-v))


def normalised(sample: dict) -> dict:
    """Transform: each DRR view scaled to [0, 1] by its own maximum, v / max(v) (for display, not physics)."""
    def scale(_, v):
        return v / v.flatten(-2).amax(-1).clamp(min=1e-12)[..., None, None]
    return _on_images(sample, scale)


def log_normalised(sample: dict, bits: int = 8) -> dict:
    """Transform: an X-ray detector's log image as 8-bit-like [0, 1] -- per view,
    v = round((p - min p) / (max p - min p) * (2^bits - 1)) / (2^bits - 1), bright = dense (bone white).
    p is the line integral, i.e. -ln(I / I0): the log of the transmitted intensity, min-max windowed."""
    levels = float(2 ** bits - 1)

    def window(_, v):
        flat = v.flatten(-2)
        lo, hi = flat.amin(-1)[..., None, None], flat.amax(-1)[..., None, None]
        return torch.round((v - lo) / (hi - lo).clamp(min=1e-12) * levels) / levels
    return _on_images(sample, window)


class PoissonNoise:
    """Transform: quantum noise of a detector receiving `photons` per pixel in air. Counts
    N ~ Poisson(photons * exp(-p)); the noisy line integral is -ln(max(N, 1) / photons) (same convention
    as stored). Seeded per (seed, sample_id, epoch): the same noise for a sample in any worker or rank,
    fresh noise each epoch after `set_epoch`. Applied to the exact line integrals only: the realistic
    views (`drr_xray`, ...) hold their own quantum noise."""

    def __init__(self, photons: float = 1e4, seed: int = 0):
        if photons <= 0:
            raise ValueError(f"photons must be positive, got {photons}")
        self.photons, self.seed, self.epoch = float(photons), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, sample: dict) -> dict:
        generator = torch.Generator().manual_seed(stable_hash(self.seed, sample.get(Col.SAMPLE_ID, ""), self.epoch))

        def noisy(_, v):
            expected = (self.photons * torch.exp(-v.double())).cpu()
            counts = torch.poisson(expected, generator=generator).clamp(min=1.0)
            return (-torch.log(counts / self.photons)).to(v.dtype)
        return _on_images(sample, noisy, EXACT_IMAGE_KEYS)
