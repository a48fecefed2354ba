"""`synthesis.synthesize` on a torch device: the training stream's realistic views made where its walks
are (`DRRStream(device=...)`), with no per-pixel work left on the CPU.

The same chain in the same order, each step the numpy one's arithmetic in torch (float64 where the
numpy step is float64, the Beer-Lambert sums in float64 too, so no TF32 setting can change them):
primary, anode heel, collimation, focal-spot blur, scatter, quantum and electronic noise, detector
blur, flat field and log. Three parts are shared with the CPU instead of twinned:

- scatter is computed on SCATTER_DOWNSAMPLE-coarser block sums (32 x 32 for 256^2 views): the blocks
  are summed on the device and only they cross to the CPU, where `synthesis.kernel_scatter_coarse` /
  `gaussian_scatter_coarse` (scipy FFTs and the kernels' resampling) make the coarse field, which
  comes back and is interpolated to the pixels on the device;
- the noise is drawn by numpy from the view's seed exactly as `synthesize` draws it (row bands, child
  generators), from the expected quanta brought to the CPU, so a view's noise is the same realisation
  on every device;
- the tables, detector model and scatter model are the numpy path's (`RealisticRenderer`).

The images agree with `synthesize`'s to float rounding (tests/physics/test_synthesis_torch.py: 1e-5
relative, noise included, on the CPU through this module).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.physics.kept import Kept
from pipelines.physics.synthesis import (
    SCATTER_DOWNSAMPLE,
    Detection,
    DetectorModel,
    ScatterModel,
    _bands,
    _noise,
    _upsample_rows,
    collimator,
    focal_sigma_mm,
    gaussian_scatter_coarse,
    heel_table_rows,
    kernel_scatter_coarse,
)
from pipelines.physics.synthesis import primary as primary_numpy
from pipelines.physics.tables import SPECTRUM_DISTANCE_CM, Tables
from pipelines.physics.units import MM_PER_CM

_ON_DEVICE: Kept = Kept(64)  # key -> tensors made once per device, a few dozen entries at most


def _cached(key: tuple, make):
    """What `make()` gives, made once per key (which names the device) and kept among the last 64."""
    return _ON_DEVICE.get(key, make)


def _table_tensors(tables: Tables, dev: torch.device) -> dict[str, torch.Tensor]:
    """The tables' arrays on the device, once per tables object (`tables.tables_for` caches those per
    spectrum; the object is kept beside its tensors, so its id is not reused while they are)."""
    def make():
        out = {"mu": torch.as_tensor(tables.mu_rho, dtype=torch.float64, device=dev),
               "weights": torch.as_tensor(np.stack([tables.fluence * tables.eta, tables.signal_weights], axis=1),
                                          dtype=torch.float64, device=dev)}
        if tables.heel_quanta is not None:
            out["heel_quanta"] = torch.as_tensor(tables.heel_quanta_f32, device=dev)
            out["heel_signal"] = torch.as_tensor(tables.heel_signal_f32, device=dev)
        return tables, out
    return _cached(("tables", id(tables), str(dev)), make)[1]


def primary(masses: torch.Tensor, tables: Tables, electron_ratios: np.ndarray | None = None):
    """`synthesis.primary` on masses' device: (Q, S[, E]) float32 per pixel, the exponent and the sums
    over the bins in float64."""
    t = _table_tensors(tables, masses.device)
    m = masses.reshape(-1, tables.mu_rho.shape[0]).to(torch.float64)
    out = torch.exp(-(m @ t["mu"])) @ t["weights"]
    q, s = out[:, 0].float(), out[:, 1].float()
    if electron_ratios is None:
        return q, s
    return q, s, (m @ torch.as_tensor(np.asarray(electron_ratios, dtype=np.float64), device=m.device)).float()


def apply_heel(q: torch.Tensor, s: torch.Tensor, s0: float, shape: tuple[int, int], detector: DetectorModel,
               tables: Tables) -> tuple[torch.Tensor, ...]:
    """`synthesis.apply_heel`: (q, s, open_q, open_s), each pixel under its own angle's spectrum, read
    bilinearly from the tables' heel grid by angle and attenuation -ln(S / S_open)."""
    dev = q.device
    t = _table_tensors(tables, dev)
    fq, fs = t["heel_quanta"], t["heel_signal"]
    index, frac = _cached(("heel", shape, detector.pixel_mm, detector.sdd_mm, detector.heel_direction_deg,
                           fq.shape[0], str(dev)),
                          lambda: tuple(torch.tensor(a, device=dev) for a in heel_table_rows(
                              tuple(shape), float(detector.pixel_mm), float(detector.sdd_mm),
                              float(detector.heel_direction_deg), fq.shape[0])))
    grid = tables.heel_attenuation
    n_grid = fq.shape[1]
    ratio = (s / np.float32(s0)).double()
    fx = (-torch.log(torch.clamp(ratio, min=1e-30)) / float(grid[1] - grid[0])).clamp(0.0, n_grid - 1.0)
    lo = torch.clamp(fx.long(), max=n_grid - 2)
    tx = fx - lo
    ta = frac

    def bilinear(table, lo, tx):
        hi = lo + 1
        return ((table[index, lo] * (1 - tx) + table[index, hi] * tx) * (1 - ta)
                + (table[index + 1, lo] * (1 - tx) + table[index + 1, hi] * tx) * ta)
    zero = torch.zeros_like(lo)
    open_q, open_s = bilinear(fq, zero, 0.0), bilinear(fs, zero, 0.0)
    return (q * bilinear(fq, lo, tx)).float(), (s * bilinear(fs, lo, tx)).float(), open_q.float(), open_s.float()


def _gaussian_weights(sigma: float, dev: torch.device) -> torch.Tensor:
    """scipy.ndimage's Gaussian kernel (truncate 4): radius int(4 sigma + 0.5), normalised, float64."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return torch.as_tensor(w / w.sum(), device=dev)


def blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """`synthesis.blur` (scipy's gaussian_filter, mode 'nearest', truncate 4): separable, edges held,
    summed in float64, float32 out."""
    if sigma_px <= 0:
        return image
    w = _gaussian_weights(float(sigma_px), image.device)
    r = (len(w) - 1) // 2
    x = image.double()[None, None]
    h, wd = image.shape
    rows = torch.cat([x[..., :1, :].expand(-1, -1, r, -1), x, x[..., -1:, :].expand(-1, -1, r, -1)], dim=2)
    x = F.conv2d(rows, w.view(1, 1, -1, 1))
    cols = torch.cat([x[..., :1].expand(-1, -1, -1, r), x, x[..., -1:].expand(-1, -1, -1, r)], dim=3)
    x = F.conv2d(cols, w.view(1, 1, 1, -1))
    return x[0, 0, :h, :wd].float()


def _block(a: torch.Tensor, f: int, mean: bool = False) -> np.ndarray:
    """`synthesis._block_sums` / `_block_means` on the device, the (H/f, W/f) result on the CPU."""
    h, w = a.shape
    hc, wc = -(-h // f), -(-w // f)
    padded = torch.zeros((hc * f, wc * f), dtype=torch.float64, device=a.device)
    padded[:h, :w] = a
    sums = padded.reshape(hc, f, wc, f).sum(dim=(1, 3))
    if mean:
        counts = np.outer(np.minimum(f, h - np.arange(0, h, f)), np.minimum(f, w - np.arange(0, w, f)))
        return sums.cpu().numpy() / counts
    return sums.cpu().numpy()


def _upsample(coarse: np.ndarray, h: int, w: int, dev: torch.device) -> torch.Tensor:
    """`synthesis.upsample` of a coarse field made on the CPU, done on the device (float64)."""
    f = SCATTER_DOWNSAMPLE
    rows, cols = _cached(("upsample", coarse.shape, h, w, str(dev)), lambda: (
        torch.as_tensor(_upsample_rows(coarse.shape[0], f, h), device=dev),
        torch.as_tensor(_upsample_rows(coarse.shape[1], f, w), device=dev)))
    return rows @ torch.as_tensor(coarse, device=dev) @ cols.T


def _drawn(seed: int, fill, shape: tuple[int, int], dtype) -> np.ndarray:
    """numpy draws of `synthesize`'s noise, by its row bands and child generators."""
    out = np.empty(shape, dtype=dtype)
    _noise(seed, lambda rng, i: fill(rng, _bands(shape[0])[i], out))
    return out


def synthesize(masses: torch.Tensor, raylen_mm: torch.Tensor, tables: Tables, detector: DetectorModel,
               scatter: ScatterModel | None, seed: int | None) -> Detection:
    """`synthesis.synthesize` on the device of `masses` ((H, W, C) g/cm^2) and `raylen_mm` ((H*W,) mm):
    a Detection whose arrays are tensors on that device."""
    dev = masses.device
    h, w = masses.shape[:2]
    r_cm = raylen_mm.to(torch.float64).reshape(h, w) / MM_PER_CM
    scale = (detector.mas * (SPECTRUM_DISTANCE_CM / r_cm) ** 2 * (detector.pixel_mm / MM_PER_CM) ** 2
             * (detector.sdd_mm / MM_PER_CM) / r_cm)
    ratios = scatter.electron_ratios if scatter is not None and scatter.kernels is not None else None
    q, s, *electrons = primary(masses.reshape(h * w, -1), tables, ratios)
    q0, s0 = (float(x[0]) for x in primary_numpy(np.zeros((1, masses.shape[-1])), tables))  # the central ray's
    flat_q, flat_s = q0 * scale, s0 * scale
    if detector.heel_direction_deg is not None and tables.heel_quanta is not None:
        q, s, open_q, open_s = apply_heel(q, s, s0, (h, w), detector, tables)
        flat_q, flat_s = flat_q * open_q.reshape(h, w), flat_s * open_s.reshape(h, w)
    open_field = _cached(("collimator", (h, w), detector.collimation, detector.collimation_fraction,
                          detector.collimation_aspect, str(dev)),
                         lambda: torch.as_tensor(collimator((h, w), detector.collimation, detector.collimation_fraction,
                                                            detector.collimation_aspect), device=dev))
    focal_px = focal_sigma_mm(detector.focal_spot_mm, detector.sdd_mm, detector.sod_mm) / detector.pixel_mm
    gate = (scale * open_field).float()
    q = blur(q.reshape(h, w) * gate, focal_px)
    s = blur(s.reshape(h, w) * gate, focal_px)
    mean_energy = s0 / q0
    scatter_s = torch.zeros_like(s)
    f = SCATTER_DOWNSAMPLE
    if scatter is not None and scatter.kernels is not None:
        electron_cm = _block(electrons[0].reshape(h, w), f, mean=True) if electrons else None
        coarse = kernel_scatter_coarse(_block(s, f), _block(flat_s * open_field, f), scatter, detector.pixel_mm,
                                       tables, electron_cm)
        scatter_s = _upsample(coarse, h, w, dev).float()
    elif scatter is not None and scatter.amplitude > 0:
        coarse = gaussian_scatter_coarse(_block(s, f), _block(flat_s, f), scatter, detector.pixel_mm)
        scatter_s = (_upsample(coarse, h, w, dev) * scatter.grid_scatter).float()
    q_total = q + scatter_s / np.float32(mean_energy)
    s_total = s + scatter_s
    if seed is None:
        signal = s_total
    else:
        per_quantum = torch.where(q_total > 0, s_total / q_total, torch.full_like(s_total, np.float32(mean_energy)))
        expected = q_total.cpu().numpy()
        counts = _drawn(seed, lambda rng, b, out: out.__setitem__(b, rng.poisson(expected[b])), (h, w), np.int64)
        signal = torch.as_tensor(counts, device=dev) * per_quantum
    signal = blur(signal, detector.psf_sigma_mm / detector.pixel_mm)
    if seed is not None and detector.electronic_quanta > 0:
        sigma = detector.electronic_quanta * mean_energy
        noise = _drawn(seed + 1, lambda rng, b, out: out.__setitem__(
            b, rng.normal(0.0, sigma, out[b].shape).astype(np.float32)), (h, w), np.float32)
        signal = signal + torch.as_tensor(noise, device=dev)
    flat = flat_s.float()
    floor = (1.0 / torch.clamp(flat_q, min=1.0)).float()
    transmission = torch.maximum(signal / flat, floor)
    out = -torch.log(transmission) if detector.polarity == "radiograph" else transmission
    return Detection(out.float(), s, scatter_s, flat, flat_q)
