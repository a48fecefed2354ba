"""Image operations for augmentation, pure: an image (..., H, W) float tensor and explicit parameters in,
an image out (`loaders.augment` draws the parameters). Intensity operations that need a range work on
the view min-max windowed to u in [0, 1] and map the result back: v' = lo + (hi - lo) f(u)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _window(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lo = v.flatten(-2).amin(-1)[..., None, None]
    hi = v.flatten(-2).amax(-1)[..., None, None]
    return (v - lo) / (hi - lo).clamp(min=1e-12), lo, hi

def in_window(v: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """v' = lo + (hi - lo) f((v - lo) / (hi - lo)), lo and hi the view's own minimum and maximum."""
    u, lo, hi = _window(v)
    return lo + (hi - lo) * f(u)

def invert(v: torch.Tensor) -> torch.Tensor:
    """v' = max(v) - v (bone dark <-> bone bright)."""
    return v.flatten(-2).amax(-1)[..., None, None] - v

def gaussian_noise(v: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """In the window: u' = u + sigma n, n ~ N(0, 1) (`noise`, the image's shape)."""
    return in_window(v, lambda u: u + sigma * noise)

def gamma(v: torch.Tensor, g: float) -> torch.Tensor:
    """In the window: u' = u^g."""
    return in_window(v, lambda u: u.pow(g))

def linear_contrast(v: torch.Tensor, alpha: float) -> torch.Tensor:
    """In the window: u' = 0.5 + alpha (u - 0.5)."""
    return in_window(v, lambda u: 0.5 + alpha * (u - 0.5))

def log_contrast(v: torch.Tensor, gain: float) -> torch.Tensor:
    """In the window: u' = gain log2(1 + u)."""
    return in_window(v, lambda u: gain * torch.log2(1.0 + u))

def sigmoid_contrast(v: torch.Tensor, gain: float, cutoff: float) -> torch.Tensor:
    """In the window: u' = 1 / (1 + exp(gain (cutoff - u)))."""
    return in_window(v, lambda u: torch.sigmoid(gain * (u - cutoff)))

def multiply(v: torch.Tensor, m: float) -> torch.Tensor:
    """v' = m v."""
    return v * m

def _convolve(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2D correlation of each image with `kernel` (odd square), edges replicated."""
    shape = v.shape
    x = v.reshape(-1, 1, *shape[-2:])
    k = kernel.to(v.dtype)
    r = k.shape[-1] // 2
    x = F.pad(x, (r, r, r, r), mode="replicate")
    return F.conv2d(x, k[None, None]).reshape(shape)

def box_blur(v: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a size x size neighbourhood (odd size; edges replicated)."""
    return _convolve(v, torch.full((size, size), 1.0 / size ** 2))

def gaussian_blur(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian of `sigma` pixels, truncated at 3 sigma, normalised to sum 1 (edges replicated)."""
    if sigma <= 0:
        return v
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return _convolve(v, (g[:, None] * g[None, :]).float())

def sharpen(v: torch.Tensor, alpha: float, lightness: float) -> torch.Tensor:
    """Blend of the image and its sharpened self: kernel (1 - alpha) delta + alpha K, K = -1 around
    8 + lightness at the centre (a constant image c becomes ((1 - alpha) + alpha lightness) c)."""
    k = -torch.ones(3, 3)
    k[1, 1] = 8.0 + lightness
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1.0
    return _convolve(v, (1 - alpha) * delta + alpha * k)

def emboss(v: torch.Tensor, alpha: float, strength: float) -> torch.Tensor:
    """Blend with an emboss: K = [[-1-s, -s, 0], [-s, 1, s], [0, s, 1+s]] (sums to 1: constants kept)."""
    s = strength
    k = torch.tensor([[-1 - s, -s, 0.0], [-s, 1.0, s], [0.0, s, 1 + s]])
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1.0
    return _convolve(v, (1 - alpha) * delta + alpha * k)

def average_pool(v: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over size x size blocks, each block's pixels set to its mean (the size kept; a partial last
    block averages what it holds)."""
    shape = v.shape
    x = v.reshape(-1, 1, *shape[-2:])
    pooled = F.avg_pool2d(x, size, ceil_mode=True, count_include_pad=False)
    up = pooled.repeat_interleave(size, -2).repeat_interleave(size, -1)[..., :shape[-2], :shape[-1]]
    return up.reshape(shape)

def impulse_noise(v: torch.Tensor, hit: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
    """Pixels where `hit` is set become the view's maximum (where `salt`) or minimum."""
    lo = v.flatten(-2).amin(-1)[..., None, None].expand_as(v)
    hi = v.flatten(-2).amax(-1)[..., None, None].expand_as(v)
    return torch.where(hit, torch.where(salt, hi, lo), v)

def dropout(v: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Pixels where `drop` is set become the view's minimum (no signal)."""
    lo = v.flatten(-2).amin(-1)[..., None, None].expand_as(v)
    return torch.where(drop, lo, v)

def noisy_boxes(v: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]], noise: torch.Tensor) -> torch.Tensor:
    """Each box (row, col, height, width) gets Gaussian noise of 0.2 x its own value range: v' = v + 0.2
    (max_box - min_box) n, n from `noise` (the image's shape)."""
    out = v.clone()
    for r, c, h, w in boxes:
        box = out[..., r:r + h, c:c + w]
        spread = box.flatten(-2).amax(-1) - box.flatten(-2).amin(-1)
        box += 0.2 * spread[..., None, None] * noise[..., r:r + h, c:c + w]
    return out

def erase(v: torch.Tensor, box: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """The box (row, col, height, width) set to `value`."""
    out = v.clone()
    r, c, h, w = box
    out[..., r:r + h, c:c + w] = value
    return out

def collimate(v: torch.Tensor, border: int, value: float = 0.0) -> torch.Tensor:
    """A centred field: a border of `border` pixels on every side set to `value` (a collimator's shadow)."""
    if border <= 0:
        return v
    out = torch.full_like(v, value)
    out[..., border:-border, border:-border] = v[..., border:-border, border:-border]
    return out

def warp(v: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling at `grid` ((H, W, 2) in [-1, 1], x then y; align_corners) with reflected edges."""
    shape = v.shape
    x = v.reshape(-1, 1, *shape[-2:])
    g = grid.to(v.dtype)[None].expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, g, mode="bilinear", padding_mode="reflection", align_corners=True).reshape(shape)

def affine_grid(shape: tuple[int, int], rotation_deg: float, translation_px: tuple[float, float], scale: float,
                shear_deg: tuple[float, float]) -> torch.Tensor:
    """Sampling grid of an affine about the image centre: output pixel p reads input A^-1 (p - c - t) + c,
    A = R(rotation) Shear(x, y) scale, in pixels (translation (x, y) moves content right / down)."""
    h, w = shape
    a = math.radians(rotation_deg)
    sx, sy = (math.tan(math.radians(s)) for s in shear_deg)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    shear = torch.tensor([[1.0, sx], [sy, 1.0]], dtype=torch.float64)
    inverse = torch.linalg.inv(rot @ shear * scale)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    c = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float64)
    p = torch.stack([xs, ys], -1) - c - torch.tensor(translation_px, dtype=torch.float64)
    src = p @ inverse.T + c
    return torch.stack([src[..., 0] / (w - 1) * 2 - 1, src[..., 1] / (h - 1) * 2 - 1], -1)

def elastic_grid(displacement: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Sampling grid of an elastic warp: `displacement` (2, H, W) uniform in [-1, 1], smoothed by a
    Gaussian of `sigma` pixels and scaled by `alpha` pixels (alpha 0: the identity)."""
    _, h, w = displacement.shape
    d = gaussian_blur(displacement.float(), sigma).double() * alpha
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([(xs + d[0]) / (w - 1) * 2 - 1, (ys + d[1]) / (h - 1) * 2 - 1], -1)
