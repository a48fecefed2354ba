"""The detector image against physics: noise statistics, blur, scatter behaviour, reproducibility."""
import numpy as np
import pytest
from scipy.special import erf

from pipelines.physics import tables
from pipelines.physics.synthesis import (
    DetectorModel,
    ScatterModel,
    focal_sigma_mm,
    scatter_sigma_mm,
    scatter_signal,
    synthesize,
)
from schemas.config import XrayConfig

CFG = XrayConfig()
E, F = tables.tube_spectrum(80, 12.0, 3.0, 0.1)
TABLES = tables.make_tables(E, F, CFG.materials, CFG.alloys, "Cesium Iodide", 0.6, CFG.energy_bins)


def _detector(**kw):
    base = dict(pixel_mm=0.2, sdd_mm=1020.0, sod_mm=850.0, mas=0.5, focal_spot_mm=0.0, psf_sigma_mm=0.0,
                electronic_quanta=0.0, polarity="fluoroscopy")
    return DetectorModel(**{**base, **kw})


def _slab(tissue_g_cm2, shape=(128, 128)):
    m = np.zeros((*shape, 5))
    m[..., 1] = tissue_g_cm2
    return m


def test_flat_field_relative_variance_falls_as_one_over_the_photon_count():
    raylen = np.full(128 * 128, 1020.0)
    counts, variances = [], []
    for mas in (0.01, 0.03, 0.1, 0.3, 1.0):
        detected = synthesize(_slab(0.0), raylen, TABLES, _detector(mas=mas), None, 7)
        image = detected.image
        counts.append(float(detected.open_quanta[64, 64]))
        variances.append(np.var(image) / np.mean(image) ** 2)
    slope = np.polyfit(np.log(counts), np.log(variances), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.05)


def _edge_sigma_px(image_row):
    x = np.arange(len(image_row)) - (len(image_row) - 1) / 2
    lo, hi = image_row[:10].mean(), image_row[-10:].mean()
    best = min((np.sum((lo + (hi - lo) * 0.5 * (1 + erf((x - c) / (s * np.sqrt(2)))) - image_row) ** 2), s)
                for s in np.linspace(0.3, 6.0, 571) for c in (-0.5, 0.0, 0.5))
    return best[1]


def test_an_edge_spreads_as_the_configured_detector_psf_and_focal_spot():
    m = _slab(0.0, (64, 128))
    m[:, 64:, 1] = 10.0  # a tissue edge at the isocentre
    raylen = np.full(64 * 128, 1020.0)
    for focal, psf in ((1.2, 0.0), (0.0, 0.3), (0.8, 0.25)):  # magnification 1.7: resolvable on 0.2 mm pixels
        detector = _detector(focal_spot_mm=focal, psf_sigma_mm=psf, sod_mm=600.0)
        image = synthesize(m, raylen, TABLES, detector, None, None).image
        expected = np.hypot(focal_sigma_mm(focal, 1020.0, 600.0), psf) / 0.2
        assert _edge_sigma_px(image[32]) == pytest.approx(expected, rel=0.05)


def test_the_same_seed_gives_the_same_image_and_another_seed_another():
    raylen = np.full(128 * 128, 1020.0)
    d = _detector(electronic_quanta=2.0, psf_sigma_mm=0.1, polarity="radiograph")
    a, b, c = (synthesize(_slab(10.0), raylen, TABLES, d, None, s).image for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(a > 0)  # radiograph polarity: -ln(I/I0) of tissue is positive


def _spr(tissue, fraction=0.9, grid_scatter=1.0, gap_mm=150.0, shape=(256, 256)):
    model = ScatterModel(CFG.scatter.amplitude, CFG.scatter.exponent,
                         scatter_sigma_mm(CFG.scatter.min_sigma_mm, CFG.scatter.spread_deg, gap_mm), grid_scatter)
    d = _detector(collimation="rectangle", collimation_fraction=fraction, pixel_mm=0.8)
    return synthesize(_slab(tissue, shape), np.full(shape[0] * shape[1], 1020.0), TABLES, d, model, None).spr_centre()


def test_scatter_to_primary_rises_with_thickness_and_field_and_falls_with_grid_and_air_gap():
    thick = [_spr(t) for t in (5.0, 10.0, 20.0, 30.0)]
    assert np.all(np.diff(thick) > 0)
    fields = [_spr(20.0, f) for f in (0.2, 0.5, 0.9)]
    assert np.all(np.diff(fields) > 0)
    assert _spr(20.0, grid_scatter=0.2) == pytest.approx(0.2 * _spr(20.0), rel=1e-5)
    assert _spr(20.0, gap_mm=400.0) < _spr(20.0, gap_mm=50.0)


def test_scatter_is_low_frequency():
    rng = np.random.default_rng(3)
    primary = np.zeros((512, 512))
    primary[64:448, 64:448] = rng.uniform(0.5, 1.0, (384, 384))  # a sharp field edge and pixel-scale detail
    model = ScatterModel(0.1, 1.3, scatter_sigma_mm(20.0, 25.0, 150.0), 1.0)
    s = scatter_signal(primary, np.full(primary.shape, 1.0) * 20.0, model, 0.2)
    power = np.abs(np.fft.fft2(s - s.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(512, 0.2), np.fft.fftfreq(512, 0.2), indexing="ij"))
    assert power[f < 0.1].sum() >= 0.95 * power.sum()


def test_a_blur_narrower_than_its_kernel_s_first_tap_is_the_image_itself_without_a_pass():
    """The focal spot's blur at the detector is ~0.05 pixel: scipy's kernel then has radius 0, one weight
    of 1, so `blur` returns the image unfiltered -- equal bit for bit to the filter's output -- and filters
    from the first sigma whose kernel has a neighbour."""
    from scipy.ndimage import gaussian_filter

    from pipelines.physics.synthesis import GAUSS_TRUNCATE, blur

    image = np.random.default_rng(3).gamma(2.0, 500.0, (48, 40)).astype(np.float32)
    edge = 0.5 / GAUSS_TRUNCATE  # the first sigma with radius 1
    for sigma in (0.01, 0.05, 0.99 * edge):
        assert blur(image, sigma) is image
        assert np.array_equal(gaussian_filter(image, sigma, mode="nearest", truncate=GAUSS_TRUNCATE), image)
    assert blur(image, edge) is not image  # radius 1 (its outer weights ~1e-14: filtered all the same)
    wider = blur(image, 0.3)
    assert not np.array_equal(wider, image)
    assert np.array_equal(wider, gaussian_filter(image, 0.3, mode="nearest", truncate=GAUSS_TRUNCATE))


def test_block_sums_and_means_are_the_padded_float64_sums():
    """The scatter grid's block sums (one pass for a detector of whole blocks, a zero-padded copy
    otherwise) are the float64 sums of each f x f block; the means divide by the pixels a block holds."""
    from pipelines.physics.synthesis import _block_means, _block_sums

    rng = np.random.default_rng(8)
    for shape in ((64, 48), (61, 50)):
        a = (rng.random(shape) * 1e3).astype(np.float32)
        f = 8
        hc, wc = -(-shape[0] // f), -(-shape[1] // f)
        padded = np.zeros((hc * f, wc * f))
        padded[:shape[0], :shape[1]] = a
        want = np.array([[padded[i * f:(i + 1) * f, j * f:(j + 1) * f].sum() for j in range(wc)] for i in range(hc)])
        np.testing.assert_allclose(_block_sums(a, f), want, rtol=1e-12)
        counts = np.array([[min(f, shape[0] - i * f) * min(f, shape[1] - j * f) for j in range(wc)] for i in range(hc)])
        np.testing.assert_allclose(_block_means(a, f), want / counts, rtol=1e-12)


def test_the_collimated_field_is_made_once_and_says_when_every_pixel_is_open():
    """`_collimated`: the collimator's mask, read-only and the same array for the next view; `all_open`
    exactly when no pixel is blocked (then the synthesis skips its multiplications by 1)."""
    from pipelines.physics.synthesis import _collimated, collimator

    mask, all_open = _collimated(32, 48, "iris", 0.7, 1.0)
    assert np.array_equal(mask, collimator((32, 48), "iris", 0.7)) and not all_open and not mask.flags.writeable
    assert _collimated(32, 48, "iris", 0.7, 1.0)[0] is mask
    assert _collimated(32, 48, "none", 1.0, 1.0)[1] and _collimated(32, 48, "rectangle", 1.0, 1.0)[1]
    assert not _collimated(32, 48, "rectangle", 0.9, 1.0)[1]


def test_the_element_wise_passes_are_numpy_s_array_expressions_to_the_bit():
    """`synthesize`'s fused per-pixel passes against the numpy expressions they replace, on random
    values with a heel, a collimator, pixels of no quanta and a NaN: the same bits."""
    from pipelines.physics import synthesis as syn

    rng = np.random.default_rng(11)
    n = 4096
    raylen = rng.uniform(1000.0, 1100.0, n).astype(np.float32)
    q, s = rng.uniform(0.0, 5.0, n).astype(np.float32), rng.uniform(0.0, 200.0, n).astype(np.float32)
    open_q, open_s = rng.uniform(0.8, 1.2, n).astype(np.float32), rng.uniform(0.8, 1.2, n).astype(np.float32)
    open_field = rng.random(n) < 0.7
    mas, pixel_mm, sdd_mm, q0, s0 = 2.7, 0.8, 1020.0, 3.3, 117.0
    r_cm = raylen.astype(np.float64) / 10.0  # the fluence scale as numpy's whole-array expression gives it
    scale = mas * (100.0 / r_cm) ** 2 * (pixel_mm / 10.0) ** 2 * (sdd_mm / 10.0) / r_cm
    for heel, collimated in ((False, False), (True, True), (True, False)):
        flat_q, flat_s = np.empty(n), np.empty(n)
        gated_q, gated_s = np.empty(n, np.float32), np.empty(n, np.float32)
        none = np.empty(0, np.float32)
        syn._open_fields(raylen, mas, (pixel_mm / 10.0) ** 2, sdd_mm / 10.0, q0, s0, open_q if heel else none,
                         open_s if heel else none, open_field if collimated else np.empty(0, bool), q, s,
                         flat_q, flat_s, gated_q, gated_s)
        want_q, want_s = (q0 * scale * open_q, s0 * scale * open_s) if heel else (q0 * scale, s0 * scale)
        gate = (scale * open_field if collimated else scale).astype(np.float32)
        for got, want in ((flat_q, want_q), (flat_s, want_s), (gated_q, q * gate), (gated_s, s * gate)):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    ratio, signal = np.empty(n), s.copy()
    signal[:5] = (0.0, np.nan, 1e-40, -1.0, np.inf)
    syn._signal_ratio(signal, s0, ratio)  # the heel's S / S_open before its log
    with np.errstate(invalid="ignore"):
        assert ratio.tobytes() == np.maximum((signal / np.float32(s0)).astype(np.float64), 1e-30).tobytes()
    scatter_s = rng.uniform(0.0, 50.0, n).astype(np.float32)
    q[:50], scatter_s[:50] = 0.0, 0.0  # no quanta: the mean energy
    totals = [np.empty(n, np.float32) for _ in range(3)]
    syn._quanta_totals(q, s, scatter_s, 41.7, *totals)
    q_total, s_total = q + scatter_s / np.float32(41.7), s + scatter_s
    per_quantum = np.divide(s_total, q_total, out=np.full_like(s_total, 41.7), where=q_total > 0)
    for got, want in zip(totals, (q_total, s_total, per_quantum)):
        assert got.tobytes() == want.tobytes()
    signal, electronic = s_total.copy(), rng.normal(0.0, 3.0, n).astype(np.float32)
    signal[7] = np.nan
    flat_q[:20] = 0.3  # under one quantum: the floor holds the transmission at 1 / max(q, 1)
    for readout in (electronic, none):
        flat, out = np.empty(n, np.float32), np.empty(n, np.float32)
        syn._transmission(signal, readout, flat_s, flat_q, flat, out)
        with np.errstate(invalid="ignore"):
            want = np.maximum((signal + readout if len(readout) else signal) / flat_s.astype(np.float32),
                              (1.0 / np.maximum(flat_q, 1.0)).astype(np.float32))
        assert flat.tobytes() == flat_s.astype(np.float32).tobytes() and out.tobytes() == want.tobytes()
        assert np.isnan(out[7])


def test_the_noise_follows_the_thread_cap_and_draws_the_same_numbers_either_way():
    """At one numba thread (a one-core DataLoader worker's share) the noise bands are drawn in the calling
    thread; at two, on the noise threads; the image is the same to the bit."""
    import threading

    import numba

    from pipelines.physics import synthesis as syn

    detector = _detector(mas=0.3, electronic_quanta=2.0, psf_sigma_mm=0.3, polarity="radiograph")
    masses = _slab(4.0, shape=(64, 48))
    raylen = np.full(64 * 48, 1020.0)
    callers = []
    fill = syn._noise_streams
    before = numba.get_num_threads()
    images = {}
    try:
        for threads in (1, 2) if numba.config.NUMBA_NUM_THREADS >= 2 else (1,):
            numba.set_num_threads(threads)
            callers.clear()
            def recording(seeds, f):
                fill(seeds, lambda *a: callers.append(threading.current_thread()) or f(*a))
            syn._noise_streams = recording
            images[threads] = synthesize(masses, raylen, TABLES, detector, None, seed=123).image
            syn._noise_streams = fill
            on_pool = [t.name.startswith("spineforge-noise") for t in callers]
            assert len(callers) == syn.NOISE_BANDS and all(on_pool) == (threads > 1) and any(on_pool) == (threads > 1)
    finally:
        syn._noise_streams = fill
        numba.set_num_threads(before)
    assert all(image.tobytes() == images[1].tobytes() for image in images.values())
