"""Mass thicknesses -> a detector image, as a C-arm with a flat panel makes it (docs/physics.md).

Order of the chain (each step a small pure function):
1. primary: per energy bin, Beer-Lambert through every channel's mass thickness; an anti-scatter grid
   passes the primary by its transmission at that energy (in the tables), the detector absorbs eta(E)
   of the photons and deposits their energy: expected quanta Q and signal S per pixel;
   fluence = spectrum (photons / cm^2 / mAs at 1 m) x mAs x inverse square x the pixel's solid angle;
2. collimation (rectangle or iris at the detector) blocks the primary outside the field;
3. focal-spot unsharpness: the expected primary blurred by the focal spot magnified to the detector
   at the isocentre, sigma = f / 2.355 x (SDD / SOD - 1);
4. scatter by kernel superposition (Ohnesorge et al., Med Phys 26:3, 1999; Sun & Star-Lack, Phys Med
   Biol 55:6695, 2010): the Monte Carlo's pencil kernels by each pixel's water-equivalent thickness
   (tallied behind the view's grid, each photon passed by its energy and incidence angle), or each
   pixel's primary adding amplitude x (mu_eff t)^exponent of itself, spread by a Gaussian whose width
   grows with the air gap (behind a grid, times the kernels' own scatter-over-primary transmission);
5. quantum noise: Poisson counts of the expected quanta, each carrying its pixel's mean energy;
6. detector blur (scintillator light spread, Gaussian PSF), then electronic noise (Gaussian);
7. flat-field correction by the noiseless open-field image (with the grid, as calibrated), and
   -ln (radiograph polarity, bone bright) or the transmission itself (fluoroscopy, bone dark).
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from scipy.ndimage import gaussian_filter

from pipelines.physics.kept import Kept
from pipelines.physics.kernels import kernel_scatter, linear_rows
from pipelines.physics.tables import HEEL_ANGLES_DEG, HEEL_STEP_DEG, HEEL_THICKNESS_G_CM2, SPECTRUM_DISTANCE_CM, Tables
from pipelines.physics.units import MM_PER_CM

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
SCATTER_DOWNSAMPLE = 8  # scatter is smooth: computed on a grid 8x coarser, then interpolated back
CHUNK_PIXELS = 1 << 15
NOISE_BANDS = 2  # noise is drawn in this many row bands, each from its own child generator (in threads)


@functools.lru_cache(maxsize=16)
def _bands(n_rows: int) -> tuple[slice, ...]:
    edges = np.linspace(0, n_rows, NOISE_BANDS + 1).astype(int)
    return tuple(slice(a, b) for a, b in zip(edges[:-1], edges[1:]))


_POOL: list[ThreadPoolExecutor] = []  # this process's noise threads, made on first use


def _forget_pool() -> None:  # a forked child has none of its parent's threads
    _POOL.clear()


os.register_at_fork(after_in_child=_forget_pool)


def _noise_pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(NOISE_BANDS, thread_name_prefix="spineforge-noise"))
    return _POOL[0]


def _noise(seed: int, fill) -> None:
    """Run fill(generator, band) for each row band with a child generator of `seed`: the same
    numbers whatever the thread count (numpy releases the GIL while it draws). The threads are kept
    for the process (starting two per image cost ~10 ms a view in a one-core DataLoader worker);
    `_noise_streams` says when they are used."""
    _noise_streams((seed,), lambda band, rng: fill(rng, band))


def _noise_streams(seeds: tuple[int, ...], fill) -> None:
    """Run fill(band, generator of seeds[0], generator of seeds[1], ...) for each row band, each generator
    the band's child of its seed (as `_noise` makes them): several streams' draws in one round of the
    threads (~0.15 ms a round). The threads follow numba's thread count, the cap a DataLoader worker
    (`loaders.stream.share_cores`) or a case task (`runtime.threads.thread_limit`) sets on this thread:
    at one, the bands are drawn here, one after the other (the same numbers; measured ~0.2 ms a 256^2
    view faster than the pool on a 2-core machine, and nothing left to share with in a one-core worker)."""
    children = [np.random.SeedSequence(seed).spawn(NOISE_BANDS) for seed in seeds]

    def band(i):
        fill(i, *(np.random.default_rng(c[i]) for c in children))
    if numba.get_num_threads() <= 1:
        for i in range(NOISE_BANDS):
            band(i)
        return
    list(_noise_pool().map(band, range(NOISE_BANDS)))


def heel_angles(shape: tuple[int, int], pixel_mm: float, sdd_mm: float, direction_deg: float) -> np.ndarray:
    """(H, W) each pixel's ray angle off the central ray towards the cathode (degrees), the anode-cathode
    axis pointing `direction_deg` on the detector (0: along +columns, 90: along +rows)."""
    h, w = shape
    rows = (np.arange(h) - (h - 1) / 2.0)[:, None] * pixel_mm
    cols = (np.arange(w) - (w - 1) / 2.0)[None, :] * pixel_mm
    a = np.deg2rad(direction_deg)
    return np.rad2deg(np.arctan((cols * np.cos(a) + rows * np.sin(a)) / sdd_mm))


def primary(masses: np.ndarray, tables: Tables, electron_ratios: np.ndarray | None = None):
    """(Q, S): expected absorbed quanta and deposited energy (keV) per unit fluence scale, for (P, C)
    mass thicknesses (g/cm^2) in the tables' channel order; an all-zero row gives the open field.
    float32 Beer-Lambert per bin and sums, a chunk of pixels at a time (numpy's SIMD exp and BLAS
    matmul: ~2.5x torch's CPU exp and its (P, 24) x (24, 2) product here, which it does not block well).
    With (C,) `electron_ratios`: (Q, S, E), E each pixel's electron-equivalent water thickness (cm),
    from the same pass over the masses."""
    m = np.ascontiguousarray(masses, dtype=np.float32).reshape(-1, tables.mu_rho.shape[0])
    minus_mu = -tables.mu_rho.astype(np.float32)  # the exponent's sign in the matmul (negation is exact)
    weights = np.stack([tables.fluence * tables.eta, tables.signal_weights], axis=1).astype(np.float32)
    out = np.empty((len(m), 2), dtype=np.float32)
    ratios = None if electron_ratios is None else np.array(electron_ratios, dtype=np.float32)
    electrons = np.empty(len(m) if ratios is not None else 0, dtype=np.float32)
    exponent = np.empty((min(CHUNK_PIXELS, len(m)), minus_mu.shape[1]), dtype=np.float32)
    for lo in range(0, len(m), CHUNK_PIXELS):
        chunk = m[lo:lo + CHUNK_PIXELS]
        if ratios is not None:  # while the chunk is in cache
            np.matmul(chunk, ratios, out=electrons[lo:lo + CHUNK_PIXELS])
        a = exponent[:len(chunk)]
        np.matmul(chunk, minus_mu, out=a)
        np.exp(a, out=a)
        np.matmul(a, weights, out=out[lo:lo + CHUNK_PIXELS])
    q, s = out.T
    if ratios is None:
        return q, s
    return q, s, electrons


@numba.njit(cache=True)
def _bilinear(table, i, ta, lo, hi, tx):
    return ((table[i, lo] * (1 - tx) + table[i, hi] * tx) * (1 - ta)
            + (table[i + 1, lo] * (1 - tx) + table[i + 1, hi] * tx) * ta)


@functools.lru_cache(maxsize=16)
def heel_table_rows(shape: tuple[int, int], pixel_mm: float, sdd_mm: float, direction_deg: float,
                n_angles: int) -> tuple[np.ndarray, np.ndarray]:
    """(angle row, weight of the next) per pixel of a detector for a heel direction: the same for every
    view of that detector and direction, so computed once (the table's angles are uniform: HEEL_ANGLES_DEG[0]
    + k HEEL_STEP_DEG, held at its ends)."""
    angles = heel_angles(shape, pixel_mm, sdd_mm, direction_deg).ravel()
    at = np.clip((angles - HEEL_ANGLES_DEG[0]) / HEEL_STEP_DEG, 0.0, n_angles - 1.0)
    index = np.minimum(at.astype(np.int64), n_angles - 2)
    frac = at - index
    index.setflags(write=False)
    frac.setflags(write=False)
    return index, frac


@numba.njit(cache=True, error_model="numpy")
def _signal_ratio(s, s0, out):
    """out (float64) = max(s / s0 (float32 division), 1e-30) per pixel, numpy's casts (a NaN kept)."""
    f0 = np.float32(s0)
    for p in range(len(s)):
        x = np.float64(s[p] / f0)
        out[p] = x if (x >= 1e-30 or x != x) else 1e-30


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _heel_kernel(q, s, log_ratio, step, index, frac, fq, fs):
    """In place: q, s (flat, float32) times their heel factors, read bilinearly by each pixel's angle
    (`index`, `frac`) and its attenuation -ln(S / S_open) (`log_ratio` the log, negated here) on the
    tables' uniform grid of `step`, held at its ends (`apply_heel`)."""
    n_grid = fq.shape[1]
    for p in numba.prange(len(q)):
        i, ta = index[p], frac[p]
        fx = min(max(-log_ratio[p] / step, 0.0), n_grid - 1.0)
        lo = min(int(fx), n_grid - 2)
        hi = lo + 1
        tx = fx - lo
        q[p] *= _bilinear(fq, i, ta, lo, hi, tx)
        s[p] *= _bilinear(fs, i, ta, lo, hi, tx)


@numba.njit(cache=True)
def _heel_open(index, frac, fq, fs, open_q, open_s):
    """The open field's heel factors (attenuation 0) per pixel, as `_heel_kernel` reads them."""
    for p in range(len(index)):
        open_q[p] = _bilinear(fq, index[p], frac[p], 0, 1, 0.0)
        open_s[p] = _bilinear(fs, index[p], frac[p], 0, 1, 0.0)


_HEEL_OPEN: Kept[tuple] = Kept(4)  # (id of the tables, detector) -> (tables, open_q, open_s): an item's views share them


def heel_open_field(shape: tuple[int, int], pixel_mm: float, sdd_mm: float, direction_deg: float,
                    tables: Tables) -> tuple[np.ndarray, np.ndarray]:
    """(open_q, open_s) flat float32, read-only: the open field's quanta and signal under each pixel's heel
    spectrum over the central ray's. They depend on the tables and the detector only, so every view of
    an item reads the ones made for its first (kept with the tables, so their id is not reused)."""
    key = (id(tables), tuple(shape), float(pixel_mm), float(sdd_mm), float(direction_deg))

    def make():
        index, frac = heel_table_rows(tuple(shape), float(pixel_mm), float(sdd_mm), float(direction_deg),
                                      tables.heel_quanta.shape[0])
        open_q, open_s = np.empty(len(index), dtype=np.float32), np.empty(len(index), dtype=np.float32)
        _heel_open(index, frac, tables.heel_quanta_f32, tables.heel_signal_f32, open_q, open_s)
        open_q.setflags(write=False)
        open_s.setflags(write=False)
        return tables, open_q, open_s
    return _HEEL_OPEN.get(key, make)[1:]


def apply_heel(q: np.ndarray, s: np.ndarray, s0: float, shape: tuple[int, int], pixel_mm: float, sdd_mm: float,
               direction_deg: float, tables: Tables) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(q, s, open_q, open_s): the primary quanta and signal (flat, per pixel, under the central ray's
    spectrum) each under its own pixel's heel spectrum (new arrays), and the open field's factors
    (`heel_open_field`: shared, read-only). A pixel's spectrum
    is spekpy's at its ray's angle towards the cathode (the axis at `direction_deg` on the detector),
    read bilinearly from the tables' heel grid by that angle and the pixel's attenuation -ln(S / S_open)
    (`heel_attenuation`, in the 0 HU anchor's material)."""
    grid = tables.heel_attenuation
    index, frac = heel_table_rows(tuple(shape), float(pixel_mm), float(sdd_mm), float(direction_deg),
                                  tables.heel_quanta.shape[0])
    # each pixel's attenuation -ln(S / S_open) on the uniform grid (every grid[1] - grid[0]), held at its
    # ends: numpy's SIMD log over the image, then the tables read per pixel (~1/3 less than a scalar log)
    # new contiguous arrays (the primary's are strided views: read so, the heel's pass took ~30 % longer)
    q, s = np.array(q, dtype=np.float32, order="C"), np.array(s, dtype=np.float32, order="C")
    log_ratio = np.empty(len(s))
    _signal_ratio(s, s0, log_ratio)
    np.log(log_ratio, out=log_ratio)
    _heel_kernel(q, s, log_ratio, float(grid[1] - grid[0]), index, frac, tables.heel_quanta_f32, tables.heel_signal_f32)
    return (q, s, *heel_open_field(shape, pixel_mm, sdd_mm, direction_deg, tables))


@numba.njit(cache=True, error_model="numpy")
def _open_fields(raylen_mm, mas, area_cm2, sdd_cm, q0, s0, open_q, open_s, open_field, q, s,
                 flat_q, flat_s, gated_q, gated_s):
    """One pass per pixel of `synthesize`'s element-wise steps before the focal blur, each the same
    arithmetic as numpy's array expressions (float64, then float32 where numpy casts): the fluence scale,
    mAs x (1 m / distance)^2 x pixel area (cm^2) x cos(obliquity) (spectrum fluence, per cm^2 at 1 m, to
    photons reaching the pixel; `area_cm2` the pixel's area, `sdd_cm` / distance its cosine), the open
    field's quanta and signal (times the heel's factors when `open_q` has the pixels' length), and the
    primary quanta and signal gated by the collimator (`open_field` of the pixels' length; empty: all
    open)."""
    heel, collimated = len(open_q) == len(q), len(open_field) == len(q)
    for p in range(len(q)):
        r_cm = np.float64(raylen_mm[p]) / MM_PER_CM
        a = SPECTRUM_DISTANCE_CM / r_cm
        scale = mas * (a * a) * area_cm2 * sdd_cm / r_cm
        fq, fs = q0 * scale, s0 * scale
        if heel:
            fq, fs = fq * np.float64(open_q[p]), fs * np.float64(open_s[p])
        flat_q[p], flat_s[p] = fq, fs
        gate = np.float32(scale * np.float64(open_field[p])) if collimated else np.float32(scale)
        gated_q[p], gated_s[p] = q[p] * gate, s[p] * gate


@numba.njit(cache=True, error_model="numpy")
def _quanta_totals(q, s, scatter_s, mean_energy, q_total, s_total, per_quantum):
    """Per pixel (float32, as numpy's): quanta and signal with the scatter's, and the signal a quantum
    carries (the mean energy where no quanta are expected)."""
    me = np.float32(mean_energy)
    for p in range(len(q)):
        qt = q[p] + scatter_s[p] / me
        st = s[p] + scatter_s[p]
        q_total[p], s_total[p] = qt, st
        per_quantum[p] = st / qt if qt > 0 else me


@numba.njit(cache=True, error_model="numpy")
def _transmission(signal, electronic, flat_s, flat_q, flat, out):
    """Per pixel: the signal (plus the readout's, when `electronic` has the pixels' length) over the open
    field's (float32), held at one quantum's share of it; `flat` the open field's signal as float32.
    numpy's steps and casts, a NaN kept as np.maximum keeps it."""
    readout = len(electronic) == len(signal)
    for p in range(len(signal)):
        x = signal[p] + electronic[p] if readout else signal[p]
        f = np.float32(flat_s[p])
        flat[p] = f
        floor = np.float32(1.0 / max(flat_q[p], 1.0))
        t = x / f
        out[p] = t if (t >= floor or t != t) else floor


def collimator(shape: tuple[int, int], kind: str, fraction: float, aspect: float = 1.0) -> np.ndarray:
    """Open-field mask (bool): 'none', a centred rectangle of `fraction` of the field's width
    (x `aspect` of its height), or a centred iris of `fraction` of its width in diameter."""
    h, w = shape
    if kind == "none":
        return np.ones(shape, bool)
    y = (np.arange(h) - (h - 1) / 2.0)[:, None] / (h / 2.0)
    x = (np.arange(w) - (w - 1) / 2.0)[None, :] / (w / 2.0)
    if kind == "rectangle":
        return (np.abs(x) <= fraction) & (np.abs(y) <= fraction * aspect)
    if kind == "iris":
        return x ** 2 + y ** 2 <= fraction ** 2
    raise ValueError(f"unknown collimation {kind!r}")


@functools.lru_cache(maxsize=16)
def _collimated(h: int, w: int, kind: str, fraction: float, aspect: float) -> tuple[np.ndarray, bool]:
    """(`collimator`'s mask, read-only; whether every pixel is open), made once per detector and field."""
    mask = collimator((h, w), kind, fraction, aspect)
    mask.setflags(write=False)
    return mask, bool(mask.all())


def focal_sigma_mm(focal_spot_mm: float, sdd_mm: float, sod_mm: float) -> float:
    """Gaussian sigma (mm, at the detector) of a focal spot of nominal size (FWHM) for an object at the isocentre."""
    return focal_spot_mm / FWHM_PER_SIGMA * (sdd_mm / sod_mm - 1.0)


GAUSS_TRUNCATE = 4.0  # Gaussian kernels reach this many sigma (scipy's radius: int(truncate x sigma + 0.5))


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian blur of sigma_px pixels, its kernel cut at GAUSS_TRUNCATE sigma. A kernel of radius 0
    (sigma below 1 / (2 x GAUSS_TRUNCATE) pixel, as a focal spot's usually is at the detector) is the single
    weight 1: the image itself, returned without the filter's pass (the same values bit for bit)."""
    if sigma_px <= 0 or int(GAUSS_TRUNCATE * sigma_px + 0.5) == 0:
        return image
    return gaussian_filter(image, sigma_px, mode="nearest", truncate=GAUSS_TRUNCATE)


@dataclass(frozen=True)
class ScatterModel:
    amplitude: float
    exponent: float
    sigma_mm: float  # kernel width at the detector
    # the Gaussian model's scatter behind a grid, over the primary's transmission (the kernels' own ratio
    # at the view's central thickness, `kernels.Kernels.grid_scatter_factor`); 1 without a grid.
    # The primary's transmission is in the tables, the kernels are tallied behind the grid.
    grid_scatter: float
    # the Monte Carlo's pencil kernels at this view's kV and air gap (`physics.kernels`), (T, R)
    # over `kernel_thickness_cm` and `kernel_radii_mm`; None: the Gaussian model of amplitude and exponent
    kernels: np.ndarray | None = None
    kernel_thickness_cm: np.ndarray | None = None
    kernel_radii_mm: np.ndarray | None = None
    # the pencils' sources drawn towards the centre, one m or (near, far) (kernels.Kernels.source_scale)
    source_scale: float | tuple[float, float] = 1.0
    destination: float = 0.0  # the kernels' asymmetry per cm of thickness (kernels.kernel_scatter)
    # -ln(S / S_open) through HEEL_THICKNESS_G_CM2 of water for the beam the kernels were tallied with
    # (the view's kV, detector and grid behind the kernels' filtration): see `kernel_scatter_signal`
    reference_attenuation: np.ndarray | None = None
    # (C,) each mass channel's electrons per gram over water's (`tables.electron_ratios`): the kernel a
    # pencil takes is the one of the water thickness holding its electrons; None: the water thickness
    # its primary attenuation gives (right for water alone)
    electron_ratios: np.ndarray | None = None


def scatter_sigma_mm(min_sigma_mm: float, spread_deg: float, air_gap_mm: float) -> float:
    """Kernel width at the detector: the width leaving the patient, widened by the scatter's angular
    spread over the air gap (scattered photons diverge; a wider kernel puts fewer on the field)."""
    return float(np.hypot(min_sigma_mm, max(air_gap_mm, 0.0) * np.tan(np.deg2rad(spread_deg))))


def scatter_signal(primary_signal: np.ndarray, open_signal: np.ndarray, model: ScatterModel,
                   pixel_mm: float) -> np.ndarray:
    """Scatter signal on the detector (before a grid's scatter factor) from the collimated primary signal (H, W):
    each pixel's primary times amplitude x (mu_eff t)^exponent, mu_eff t = -ln(primary / open field),
    spread by the Gaussian kernel, zero beyond the detector's edges; on a grid SCATTER_DOWNSAMPLE
    times coarser (block sums), interpolated back."""
    f = SCATTER_DOWNSAMPLE
    h, w = primary_signal.shape
    p, p_open = _block_sums(primary_signal, f), _block_sums(np.broadcast_to(open_signal, primary_signal.shape), f)
    return upsample(gaussian_scatter_coarse(p, p_open, model, pixel_mm), h, w)


def gaussian_scatter_coarse(p: np.ndarray, p_open: np.ndarray, model: ScatterModel, pixel_mm: float) -> np.ndarray:
    """`scatter_signal` on its coarse grid, from the block sums of the primary and open-field signals."""
    f = SCATTER_DOWNSAMPLE
    thickness_mu = -np.log(np.clip(p / np.maximum(p_open, 1e-300), 1e-12, 1.0))
    source = p * model.amplitude * np.power(thickness_mu, model.exponent)
    return gaussian_filter(source, model.sigma_mm / (pixel_mm * f), mode="constant", truncate=4.0) / (f * f)


def upsample(coarse: np.ndarray, h: int, w: int) -> np.ndarray:
    """A coarse scatter field (block centres of SCATTER_DOWNSAMPLE pixels) interpolated to (h, w) pixels."""
    f = SCATTER_DOWNSAMPLE
    return _upsampler(coarse.shape[0], f, h) @ coarse @ _upsampler(coarse.shape[1], f, w).T


@functools.lru_cache(maxsize=8)
def _upsampler(n: int, f: int, out: int) -> np.ndarray:
    """`_upsample_rows`, made once per size (read-only: every view of a detector shares it)."""
    m = _upsample_rows(n, f, out)
    m.setflags(write=False)
    return m


def kernel_scatter_signal(primary_signal: np.ndarray, open_signal: np.ndarray, model: ScatterModel,
                          pixel_mm: float, tables: Tables, electron_cm: np.ndarray | None = None) -> np.ndarray:
    """Scatter signal on the detector (behind the kernels' grid) by the Monte Carlo's pencil kernels: every
    pixel's collimated open-field signal `open_signal` is a pencil through a water-equivalent thickness:
    the water holding as many electrons as its ray crosses (`electron_cm`, (H, W) cm: Compton scattering
    goes with the electrons, so bone, which absorbs more per electron, does not count as the thicker
    water its attenuation matches), or without it the water thickness of its primary attenuation (the
    beam's own hardening curve, `tables.water_attenuation`; the same for water); on a grid
    SCATTER_DOWNSAMPLE times coarser, interpolated back. Each pencil is weighted by its own primary
    transmission over that of its thickness of water (`reference_attenuation`), so what bone absorbs
    does not scatter."""
    f = SCATTER_DOWNSAMPLE
    h, w = primary_signal.shape
    p, p_open = _block_sums(primary_signal, f), _block_sums(open_signal, f)
    electrons = None if electron_cm is None else _block_means(electron_cm, f)
    return upsample(kernel_scatter_coarse(p, p_open, model, pixel_mm, tables, electrons), h, w)


def kernel_scatter_coarse(p: np.ndarray, p_open: np.ndarray, model: ScatterModel, pixel_mm: float, tables: Tables,
                          electron_cm: np.ndarray | None = None) -> np.ndarray:
    """`kernel_scatter_signal` on its coarse grid, from the block sums of the primary and open-field
    signals and the block means of the electron-equivalent thickness (None: from the attenuation)."""
    f = SCATTER_DOWNSAMPLE
    transmitted = np.clip(p / np.maximum(p_open, 1e-300), 1e-12, 1.0)
    if electron_cm is None:
        thickness = np.interp(-np.log(transmitted), tables.water_attenuation, HEEL_THICKNESS_G_CM2)  # g/cm^2 = cm
    else:
        thickness = electron_cm
    sources = p_open
    if model.reference_attenuation is not None:
        # the kernels give scatter per unit of open signal for their own beam; a view's beam filtered
        # otherwise scatters as much per unit of *primary* (the SPR hardly depends on filtration; the
        # Monte Carlo: 2.19 at 110 kV behind 4 mm Al + 0.3 mm Cu, 2.20 at 120 kV behind 3 mm Al), so
        # each pencil is weighted by its primary over the kernels' beam's transmission at its thickness
        reference = np.exp(-np.interp(thickness, HEEL_THICKNESS_G_CM2, model.reference_attenuation))
        sources = p_open * (transmitted / reference)
    return kernel_scatter(sources, thickness, model.kernels, model.kernel_thickness_cm, model.kernel_radii_mm,
                          pixel_mm, pixel_mm * f, model.source_scale, model.destination)


def _block_sums(a: np.ndarray, f: int) -> np.ndarray:
    """(ceil(H/f), ceil(W/f)) float64 sums of f x f blocks (the last ones zero-padded)."""
    h, w = a.shape
    if h % f == 0 and w % f == 0:  # the usual detector: one pass, no padded float64 copy
        out = np.zeros((h // f, w // f))
        _add_blocks(np.ascontiguousarray(a), f, out)
        return out
    hc, wc = -(-h // f), -(-w // f)
    padded = np.zeros((hc * f, wc * f))
    padded[:h, :w] = a
    return padded.reshape(hc, f, wc, f).sum(axis=(1, 3))


@numba.njit(cache=True)
def _add_blocks(a, f, out):
    """out[i // f, j // f] += a[i, j] in float64, each row's f pixels of a block summed, then added (the
    image's H and W multiples of f)."""
    for i in range(a.shape[0]):
        row = out[i // f]
        for b in range(out.shape[1]):
            total = 0.0
            for k in range(b * f, (b + 1) * f):
                total += a[i, k]
            row[b] += total


def _block_means(a: np.ndarray, f: int) -> np.ndarray:
    """(ceil(H/f), ceil(W/f)) means of f x f blocks (the last ones over the pixels they hold)."""
    h, w = a.shape
    if h % f == 0 and w % f == 0:  # the usual detector: the block sums over the block's pixels
        return _block_sums(a, f) / (f * f)
    rows = np.minimum(f, h - np.arange(0, h, f))
    cols = np.minimum(f, w - np.arange(0, w, f))
    return _block_sums(a, f) / np.outer(rows, cols)


def _upsample_rows(n: int, f: int, out: int) -> np.ndarray:
    """(out, n) linear interpolation from n block centres (blocks of f pixels) to pixel centres, held flat at the ends."""
    return linear_rows((np.arange(out) + 0.5) / f - 0.5, n)  # pixel centres in block-index units


@dataclass(frozen=True)
class DetectorModel:
    pixel_mm: float
    sdd_mm: float
    sod_mm: float
    mas: float
    focal_spot_mm: float
    psf_sigma_mm: float
    electronic_quanta: float
    collimation: str = "none"
    collimation_fraction: float = 1.0
    collimation_aspect: float = 1.0
    polarity: str = "radiograph"
    heel_direction_deg: float | None = None  # anode -> cathode on the detector (0: +columns); None: no heel


@dataclass(frozen=True)
class Detection:
    """One view's detector image with its parts kept apart. `image` is the processed image (H, W);
    `primary` and `scatter` are the expected (noiseless) primary and scatter signals the detector
    records behind the grid, before its own blur, each over the open field's signal there (the flat
    field the image is corrected by) -- so primary is the transmission, and scatter / primary the
    scatter-to-primary ratio (SPR); `open_quanta` the open field's expected quanta per pixel."""

    image: np.ndarray
    primary_signal: np.ndarray  # (H, W) float32, behind the grid
    scatter_signal: np.ndarray  # (H, W) float32, behind the grid
    flat_signal: np.ndarray  # (H, W) float32, the open field behind the grid
    open_quanta: np.ndarray  # (H, W)

    @property
    def primary(self) -> np.ndarray:
        return self.primary_signal / self.flat_signal

    @property
    def scatter(self) -> np.ndarray:
        return self.scatter_signal / self.flat_signal

    def spr_centre(self) -> float:
        h, w = self.image.shape
        return float(self.scatter_signal[h // 2, w // 2] / max(float(self.primary_signal[h // 2, w // 2]), 1e-300))


def synthesize(masses: np.ndarray, raylen_mm: np.ndarray, tables: Tables, detector: DetectorModel,
               scatter: ScatterModel | None, seed: int | None) -> Detection:
    """A detector image from (H, W, C) mass thicknesses (g/cm^2) and the rays' lengths (mm): the
    processed image (H, W) float32 with its primary and scatter apart (`Detection`). `seed` None: the
    expected (noiseless) image."""
    h, w = masses.shape[:2]
    ratios = scatter.electron_ratios if scatter is not None and scatter.kernels is not None else None
    q, s, *electrons = primary(masses.reshape(h * w, -1), tables, ratios)
    electron_cm = electrons[0].reshape(h, w) if electrons else None
    q0, s0 = (float(x[0]) for x in primary(np.zeros((1, masses.shape[-1])), tables))  # the central ray's
    none = np.empty(0, dtype=np.float32)
    open_q = open_s = none
    if detector.heel_direction_deg is not None and tables.heel_quanta is not None:
        q, s, open_q, open_s = apply_heel(q, s, s0, (h, w), detector.pixel_mm, detector.sdd_mm,
                                          detector.heel_direction_deg, tables)
    open_field, all_open = _collimated(h, w, detector.collimation, detector.collimation_fraction,
                                       detector.collimation_aspect)
    # the open field's quanta and signal (float64) and the primary's, each pixel's fluence scale times its
    # collimator (an open detector: x 1 is x itself, skipped), in one pass (`_open_fields`)
    flat_q, flat_s = np.empty(h * w), np.empty(h * w)
    gated_q, gated_s = np.empty(h * w, dtype=np.float32), np.empty(h * w, dtype=np.float32)
    _open_fields(np.ascontiguousarray(raylen_mm).reshape(-1), float(detector.mas), (detector.pixel_mm / MM_PER_CM) ** 2,
                 detector.sdd_mm / MM_PER_CM, q0, s0, open_q, open_s,
                 np.empty(0, dtype=bool) if all_open else open_field.reshape(-1), q, s,
                 flat_q, flat_s, gated_q, gated_s)
    flat_q, flat_s = flat_q.reshape(h, w), flat_s.reshape(h, w)
    focal_px = focal_sigma_mm(detector.focal_spot_mm, detector.sdd_mm, detector.sod_mm) / detector.pixel_mm
    q = blur(gated_q.reshape(h, w), focal_px)
    s = blur(gated_s.reshape(h, w), focal_px)
    mean_energy = s0 / q0
    if scatter is not None and scatter.kernels is not None:
        scatter_s = kernel_scatter_signal(s, flat_s if all_open else flat_s * open_field, scatter, detector.pixel_mm, tables,
                                          electron_cm).astype(np.float32)
    elif scatter is not None and scatter.amplitude > 0:
        scatter_s = (scatter_signal(s, flat_s, scatter, detector.pixel_mm) * scatter.grid_scatter).astype(np.float32)
    else:
        scatter_s = np.zeros_like(s)
    if seed is None:
        signal = s + scatter_s
        electronic = None
    else:
        q_total, s_total, per_quantum = (np.empty_like(s) for _ in range(3))
        _quanta_totals(np.ascontiguousarray(q).reshape(-1), np.ascontiguousarray(s).reshape(-1), scatter_s.reshape(-1),
                       mean_energy, q_total.reshape(-1), s_total.reshape(-1), per_quantum.reshape(-1))
        signal = np.empty_like(s_total)
        # the quanta's Poisson draws (stream `seed`) and the readout's Gaussian ones (stream seed + 1, added
        # after the detector's blur), drawn in one round of the noise threads
        electronic = np.empty_like(s_total) if detector.electronic_quanta > 0 else None
        sigma = detector.electronic_quanta * mean_energy
        bands = _bands(h)

        def draws(i, quanta_rng, readout_rng=None):
            b = bands[i]
            # counts (int64) times the quantum's signal: numpy's float64 product, stored as float32
            np.multiply(quanta_rng.poisson(q_total[b]), per_quantum[b], out=signal[b], casting="unsafe")
            if readout_rng is not None:
                electronic[b] = readout_rng.normal(0.0, sigma, signal[b].shape)
        _noise_streams((seed, seed + 1) if electronic is not None else (seed,), draws)
    signal = np.ascontiguousarray(blur(signal, detector.psf_sigma_mm / detector.pixel_mm))
    flat = np.empty((h, w), dtype=np.float32)
    out = np.empty((h, w), dtype=np.float32)
    # with the readout's noise, over the open field, held at one quantum (`_transmission`)
    _transmission(signal.reshape(-1), none if electronic is None else electronic.reshape(-1), flat_s.reshape(-1),
                  flat_q.reshape(-1), flat.reshape(-1), out.reshape(-1))
    if detector.polarity == "radiograph":
        np.log(out, out=out)
        np.negative(out, out=out)
    return Detection(out, s, scatter_s, flat, flat_q)
