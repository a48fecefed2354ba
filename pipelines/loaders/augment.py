"""Image-level augmentations for X-ray views and real radiographs (domain randomisation).

Each augmentation is a small pure function of an image (..., H, W) float tensor and explicit
parameters; `Augment` draws the parameters in documented ranges and applies a chosen set to a sample's
images, seeded by (seed, sample id, epoch, view): the same augmented sample in any worker or rank,
fresh draws after `set_epoch`. Every view of a key gets its own draws; every key of a view the same
ones (an item's `drr` and `drr_xray` move together).

Intensity operations that need a range work on the view min-max windowed to u in [0, 1] and map the
result back to the view's range: v' = lo + (hi - lo) f(u). Two presets:

- `SYNTHEX`: the strong set of SyntheX (Gao et al., Nat Mach Intell 2023): inversion, Gaussian noise,
  gamma, linear / log / sigmoid contrast, small affine, random noisy boxes, impulse noise, Gaussian and
  box blur, pixel dropout, sharpen, emboss, average pooling, multiply, elastic warp;
- `XVR`: xvr's set (Gopalakrishnan et al., 2025): box blur, Gaussian noise, inversion (at p/5),
  sharpness, erasing, and collimation (a border of random width blanked).

Geometric operations (affine_warp, elastic, collimation) move pixels: they keep an image's content but
break the pixel-exact link to a view's pose. Pass `ops` without them for pose regression; they are
listed in `GEOMETRIC`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pipelines.loaders.image_ops import (
    affine_grid,
    average_pool,
    box_blur,
    collimate,
    dropout,
    elastic_grid,
    emboss,
    erase,
    gamma,
    gaussian_blur,
    gaussian_noise,
    impulse_noise,
    invert,
    linear_contrast,
    log_contrast,
    multiply,
    noisy_boxes,
    sharpen,
    sigmoid_contrast,
    warp,
)
from pipelines.ops.sampling import stable_hash
from schemas.manifest import Col
from schemas.shard_layout import Key

AUGMENT_STREAM = "augment"
# Keys augmented by default: the whole-image views (exact and realistic) and loaded radiographs.
DEFAULT_KEYS = (Key.DRR, Key.DRR_XRAY, Key.XRAY1, Key.XRAY2, Key.XRAY1_XRAY, Key.XRAY2_XRAY, Key.RADIOGRAPH)


@dataclass(frozen=True)
class Ranges:
    """The ranges each operation's parameters are drawn from (uniformly; integer ranges inclusive).
    SyntheX's strong set (its imgaug pipeline) and xvr's set, as their papers and code give them."""

    noise_sigma: tuple[float, float] = (0.005, 0.01)  # Gaussian noise, in window units
    gamma: tuple[float, float] = (0.7, 1.3)
    linear_contrast: tuple[float, float] = (0.5, 2.0)
    gamma_contrast: tuple[float, float] = (0.5, 2.0)
    log_contrast: tuple[float, float] = (0.6, 1.4)
    sigmoid_gain: tuple[float, float] = (3.0, 10.0)
    sigmoid_cutoff: tuple[float, float] = (0.4, 0.6)
    shift_px: tuple[float, float] = (0.0, 20.0)  # affine: translation length, any direction
    rotation_deg: tuple[float, float] = (-5.0, 5.0)
    scale: tuple[float, float] = (0.9, 1.1)
    shear_deg: tuple[float, float] = (-2.0, 2.0)
    impulse_fraction: float = 0.1  # pixels set to the minimum or maximum
    blur_sigma_px: tuple[float, float] = (0.0, 3.0)
    box_half_width: tuple[int, int] = (1, 3)  # box blur of 3, 5 or 7 pixels
    xvr_box: int = 3
    dropout_fraction: tuple[float, float] = (0.1, 0.15)
    dropout_cell: tuple[float, float] = (0.1, 0.15)  # coarse cells, x the image's smaller side
    sharpen_alpha: tuple[float, float] = (0.5, 1.0)
    sharpen_lightness: tuple[float, float] = (1.0, 1.5)
    sharpness_alpha: tuple[float, float] = (0.0, 0.5)  # xvr's milder sharpen blend
    emboss_alpha: tuple[float, float] = (0.5, 1.0)
    emboss_strength: tuple[float, float] = (1.0, 2.0)
    pool_half: tuple[int, int] = (1, 2)  # average pooling over 2 or 4 pixels
    multiply: tuple[float, float] = (0.5, 1.5)
    elastic_alpha_px: tuple[float, float] = (0.5, 3.5)
    elastic_sigma_px: float = 0.25
    collimation_fraction: float = 0.1  # at most this share of the smaller side blanked on every side
    boxes: tuple[int, int] = (1, 5)  # noisy boxes per image
    box_size: float = 0.15  # box sides ~ N(size, size) x the image's, kept inside it
    erase_area: tuple[float, float] = (0.02, 0.33)  # x the image's area
    erase_aspect: tuple[float, float] = (0.3, 3.3)  # drawn log-uniformly


RANGES = Ranges()




# --- random draws ----------------------------------------------------------------------------------

def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _int(gen: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def _random_boxes(gen, h, w) -> list[tuple[int, int, int, int]]:
    boxes = []
    size = RANGES.box_size
    for _ in range(_int(gen, *RANGES.boxes)):
        while True:
            bh, bw = (round(float(torch.randn((), generator=gen)) * size * n + size * n) for n in (h, w))
            if 0 < bh <= h and 0 < bw <= w:
                break
        boxes.append((_int(gen, 0, h - bh), _int(gen, 0, w - bw), bh, bw))
    return boxes


def _erase_box(gen, h, w) -> tuple[int, int, int, int]:
    """A box of drawn area and aspect (`Ranges.erase_*`), clipped to fit."""
    area = _u(gen, *RANGES.erase_area) * h * w
    aspect = math.exp(_u(gen, *(math.log(a) for a in RANGES.erase_aspect)))
    bh, bw = min(h, max(1, round(math.sqrt(area * aspect)))), min(w, max(1, round(math.sqrt(area / aspect))))
    return _int(gen, 0, h - bh), _int(gen, 0, w - bw), bh, bw


def _draw(name: str, gen: torch.Generator, v: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Parameters for one operation, drawn in its documented range; returns the op bound to them."""
    h, w = v.shape[-2:]
    R = RANGES
    if name == "invert":
        return invert
    if name == "gaussian_noise":
        sigma = _u(gen, *R.noise_sigma)
        noise = torch.randn(v.shape, generator=gen, dtype=v.dtype)
        return lambda x: gaussian_noise(x, sigma, noise)
    if name == "gamma":
        g = _u(gen, *R.gamma)
        return lambda x: gamma(x, g)
    if name == "contrast":  # one of linear, gamma, log, sigmoid
        kind = _int(gen, 0, 3)
        if kind == 0:
            a = _u(gen, *R.linear_contrast)
            return lambda x: linear_contrast(x, a)
        if kind == 1:
            g = _u(gen, *R.gamma_contrast)
            return lambda x: gamma(x, g)
        if kind == 2:
            g = _u(gen, *R.log_contrast)
            return lambda x: log_contrast(x, g)
        g, c = _u(gen, *R.sigmoid_gain), _u(gen, *R.sigmoid_cutoff)
        return lambda x: sigmoid_contrast(x, g, c)
    if name == "affine_warp":
        direction = _u(gen, 0.0, 2 * math.pi)
        length = _u(gen, *R.shift_px)
        grid = affine_grid((h, w), _u(gen, *R.rotation_deg), (length * math.cos(direction), length * math.sin(direction)),
                           _u(gen, *R.scale), (_u(gen, *R.shear_deg), _u(gen, *R.shear_deg)))
        return lambda x: warp(x, grid)
    if name == "noisy_boxes":
        boxes = _random_boxes(gen, h, w)
        noise = torch.randn(v.shape, generator=gen, dtype=v.dtype)
        return lambda x: noisy_boxes(x, boxes, noise)
    if name == "impulse_noise":  # pixels to the minimum or maximum
        hit = torch.rand(v.shape, generator=gen) < R.impulse_fraction
        salt = torch.rand(v.shape, generator=gen) < 0.5
        return lambda x: impulse_noise(x, hit, salt)
    if name == "blur":  # Gaussian, or a box
        if _int(gen, 0, 1) == 0:
            s = _u(gen, *R.blur_sigma_px)
            return lambda x: gaussian_blur(x, s)
        k = 2 * _int(gen, *R.box_half_width) + 1
        return lambda x: box_blur(x, k)
    if name == "box_blur":
        return lambda x: box_blur(x, R.xvr_box)
    if name == "dropout":  # pixels, singly or in coarse cells
        q = _u(gen, *R.dropout_fraction)
        if _int(gen, 0, 1) == 0:
            drop = torch.rand(v.shape, generator=gen) < q
        else:
            cell = max(1, round(_u(gen, *R.dropout_cell) * min(h, w)))
            coarse = torch.rand((*v.shape[:-2], -(-h // cell), -(-w // cell)), generator=gen) < q
            drop = coarse.repeat_interleave(cell, -2).repeat_interleave(cell, -1)[..., :h, :w]
        return lambda x: dropout(x, drop)
    if name == "sharpen":
        a, light = _u(gen, *R.sharpen_alpha), _u(gen, *R.sharpen_lightness)
        return lambda x: sharpen(x, a, light)
    if name == "sharpness":  # xvr / kornia-like: a milder sharpen blend
        a = _u(gen, *R.sharpness_alpha)
        return lambda x: sharpen(x, a, 1.0)
    if name == "emboss":
        a, s = _u(gen, *R.emboss_alpha), _u(gen, *R.emboss_strength)
        return lambda x: emboss(x, a, s)
    if name == "average_pool":
        k = 2 * _int(gen, *R.pool_half)
        return lambda x: average_pool(x, k)
    if name == "multiply":
        m = _u(gen, *R.multiply)
        return lambda x: multiply(x, m)
    if name == "elastic":
        grid = elastic_grid(torch.rand((2, h, w), generator=gen, dtype=torch.float64) * 2 - 1, _u(gen, *R.elastic_alpha_px),
                            R.elastic_sigma_px)
        return lambda x: warp(x, grid)
    if name == "erase":
        box = _erase_box(gen, h, w)
        return lambda x: erase(x, box)
    if name == "collimation":
        border = _int(gen, 0, max(0, int(min(h, w) * R.collimation_fraction)))
        return lambda x: collimate(x, border)
    raise KeyError(f"unknown augmentation {name!r}; known: {sorted(ALL_OPS)}")


ALL_OPS = ("invert", "gaussian_noise", "gamma", "contrast", "affine_warp", "noisy_boxes", "impulse_noise", "blur",
           "box_blur", "dropout", "sharpen", "sharpness", "emboss", "average_pool", "multiply", "elastic", "erase",
           "collimation")
GEOMETRIC = ("affine_warp", "elastic", "collimation")
# (operation, probability) in application order
SYNTHEX = (("invert", 0.5), ("gaussian_noise", 0.5), ("gamma", 0.5), ("contrast", 0.5), ("affine_warp", 0.5),
           ("noisy_boxes", 0.25), ("impulse_noise", 0.2), ("blur", 0.25), ("dropout", 0.25), ("sharpen", 0.125),
           ("emboss", 0.125), ("average_pool", 0.125), ("multiply", 0.25), ("elastic", 0.25))
XVR = (("box_blur", 0.5), ("gaussian_noise", 0.5), ("invert", 0.1), ("sharpness", 0.5), ("erase", 0.5),
       ("collimation", 0.5))
PRESETS = {"synthex": SYNTHEX, "xvr": XVR}


@dataclass
class Augment:
    """Transform: image augmentations applied to a sample's views, each op with its probability.

    `ops` is a preset name ('synthex', 'xvr') or (name, probability) pairs, applied in that order;
    `keys` the images it touches (default: whole-image views and radiographs). Seeded by (seed,
    sample id, epoch, view); call `set_epoch` each epoch (DRRStream.set_epoch does)."""

    ops: str | Sequence[tuple[str, float]] = "synthex"
    seed: int = 0
    keys: Sequence[str] = DEFAULT_KEYS
    epoch: int = 0

    def __post_init__(self):
        ops = PRESETS[self.ops] if isinstance(self.ops, str) and self.ops in PRESETS else self.ops
        if isinstance(ops, str):
            raise ValueError(f"unknown preset {ops!r}; presets: {sorted(PRESETS)}")
        self.ops = tuple((str(n), float(p)) for n, p in ops)
        for name, p in self.ops:
            if name not in ALL_OPS:
                raise ValueError(f"unknown augmentation {name!r}; known: {list(ALL_OPS)}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}: probability must lie in [0, 1], got {p}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def view(self, image: torch.Tensor, sample_id: str, view: int) -> torch.Tensor:
        """One (H, W) image augmented with the draws of (seed, sample id, epoch, view)."""
        gen = torch.Generator().manual_seed(stable_hash(self.seed, AUGMENT_STREAM, sample_id, self.epoch, view)
                                            & (2 ** 63 - 1))
        out = image.float()
        for name, p in self.ops:
            chosen = float(torch.rand((), generator=gen, dtype=torch.float64)) < p
            op = _draw(name, gen, out)  # drawn whether chosen or not: the draws of later ops stay put
            if chosen:
                out = op(out)
        return out.to(image.dtype)

    def __call__(self, sample: dict) -> dict:
        sid = str(sample.get(Col.SAMPLE_ID, ""))
        out = dict(sample)
        for key in self.keys:
            if key in sample and isinstance(sample[key], torch.Tensor):
                images = sample[key]
                flat = images.reshape(-1, *images.shape[-2:])
                out[key] = torch.stack([self.view(x, sid, v) for v, x in enumerate(flat)]).reshape(images.shape)
        return out
