"""The stored scatter kernels are the Monte Carlo's (re-checked at one node with fewer histories), and the
synthesis's kernel model gives the Monte Carlo's full-field scatter-to-primary ratio within 10 %."""
import json

import numpy as np
import pytest

from benchmarks.scatter import model_spr, water_slab_spr
from pipelines.physics import scatter_kernels


def test_a_stored_kernel_is_what_the_monte_carlo_gives_again():
    k = scatter_kernels.load()
    provenance = json.loads(scatter_kernels.PROVENANCE_FILE.read_text())
    assert provenance["kv"] == list(scatter_kernels.KV_NODES) and provenance["histories_per_kernel"] >= 1_000_000
    a, b, c = 1, scatter_kernels.THICKNESS_NODES_CM.index(20.0), scatter_kernels.GAP_NODES_CM.index(10.0)
    fresh = scatter_kernels.pencil_kernel(20.0, scatter_kernels.KV_NODES[a], 10.0, 400_000, seed=99)
    edges = scatter_kernels.RADII_EDGES_MM
    area = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    near = k.radii_mm < 100.0  # the scatter within 10 cm of the pencil: well sampled at this count
    stored, again = (k.values[a, b, c] * area)[near].sum(), (fresh * area)[near].sum()
    assert again == pytest.approx(stored, rel=0.05)
    # thicker water scatters more into a wide field, and a longer air gap spreads it wider
    wide = (k.values[a, :, c] * area).sum(axis=1)
    assert wide[b] > wide[0]
    narrow_gap, wide_gap = (k.values[a, b, 0] * area)[near].sum(), (k.values[a, b, -1] * area)[near].sum()
    assert narrow_gap > wide_gap


def test_the_kernel_model_gives_the_monte_carlos_spr_within_ten_percent():
    mc = water_slab_spr(20.0, 3_000_000, seed=7)
    assert model_spr(20.0, model="kernels") == pytest.approx(mc["spr"], rel=0.10 + 3 * mc["spr_se"] / mc["spr"])
    assert model_spr(20.0, model="gaussian") < 0.9 * mc["spr"]  # the fixed-width model falls short here


def test_kernel_superposition_is_the_direct_sum_over_the_pencils():
    """The FFT superposition (one quadrant of each kernel mirrored, float32 transforms) against the sum
    written out: S(x) = sum over pencils x' of O(x') K_t(x')(|x - x'|), each pencil's kernel interpolated
    between its two thickness nodes, with the destination factor's asymmetry."""
    import numpy as np

    from pipelines.physics.kernels import kernel_scatter, load

    k = load()
    table = k.centred(90, 17.0, None)
    rng = np.random.default_rng(4)
    hc, wc, cell, pixel, c = 9, 13, 12.0, 0.8, 0.025
    sources, thickness = rng.random((hc, wc)), rng.uniform(0.5, 45.0, (hc, wc))
    got = kernel_scatter(sources, thickness, table, k.thickness_cm, k.radii_mm, pixel, cell, 1.0, c)
    nodes = k.thickness_cm
    t = np.clip(thickness, nodes[0], nodes[-1])
    want = np.zeros((hc, wc))
    for y, x in np.ndindex(hc, wc):
        for ys, xs in np.ndindex(hc, wc):
            r = np.hypot(y - ys, x - xs) * cell
            by_node = [np.interp(r, k.radii_mm, table[n], right=0.0) for n in range(len(nodes))]
            kernel = np.interp(t[ys, xs], nodes, by_node) * pixel * pixel
            want[y, x] += sources[ys, xs] * kernel * np.exp(-c * (t[y, x] - t[ys, xs]))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * want.max())


def test_the_near_and_far_parts_draw_their_sources_in_by_their_own_factor():
    """With (m near, m far), the kernels' part within FAR_RADIUS_MM reaches the centre from a pencil at x'
    as K(m_near |x'|), the part beyond as K(m_far |x'|): at the centre cell (which maps onto itself) the
    FFT superposition is the sum written out."""
    from pipelines.physics.kernels import FAR_RADIUS_MM, kernel_scatter, load

    k = load()
    table = k.centred(90, 17.0, None)
    rng = np.random.default_rng(5)
    hc, wc, cell, pixel = 21, 25, 8.0, 0.8
    sources, thickness = rng.random((hc, wc)), rng.uniform(5.0, 30.0, (hc, wc))
    nodes = k.thickness_cm
    t = np.clip(thickness, nodes[0], nodes[-1])
    cy, cx = (hc - 1) // 2, (wc - 1) // 2

    def direct(near, far):
        total = 0.0
        for ys, xs in np.ndindex(hc, wc):
            r = np.hypot(ys - cy, xs - cx) * cell
            for m, inside in ((near, lambda d: d < FAR_RADIUS_MM), (far, lambda d: d >= FAR_RADIUS_MM)):
                if inside(m * r):
                    by_node = [np.interp(m * r, k.radii_mm, table[n], right=0.0) for n in range(len(nodes))]
                    total += sources[ys, xs] * np.interp(t[ys, xs], nodes, by_node) * pixel * pixel
        return total
    both = kernel_scatter(sources, thickness, table, nodes, k.radii_mm, pixel, cell, (0.9, 0.75))[cy, cx]
    assert both == pytest.approx(direct(0.9, 0.75), rel=2e-5)
    one = kernel_scatter(sources, thickness, table, nodes, k.radii_mm, pixel, cell, 0.9)
    np.testing.assert_allclose(kernel_scatter(sources, thickness, table, nodes, k.radii_mm, pixel, cell, (0.9, 0.9)), one)
    # under a wide uniform field (40 cm) of 20 cm water, the far part drawn in harder brings more scatter
    # to the centre
    flat = np.ones((51, 51))
    harder, same = (kernel_scatter(flat, np.full(flat.shape, 20.0), table, nodes, k.radii_mm, pixel, cell, m)[25, 25]
                    for m in ((0.9, 0.75), (0.9, 0.9)))
    assert harder > 1.05 * same


def test_an_item_s_views_transform_its_kernels_once_and_other_kernels_anew(monkeypatch):
    """The kernel transforms are kept by the table's values and the grid: a second view of the same table
    makes no DCT and gives the same bits as the first; a table with other values (or another cell size)
    is transformed anew, not served what was kept. `centred` gives the one read-only table per kV,
    height and grid."""
    import scipy.fft

    from pipelines.physics import kernels

    k = kernels.load()
    table = k.centred(90, 17.0, None)
    assert k.centred(90, 17.0, None) is table and not table.flags.writeable
    assert k.centred(90, 16.0, None) is not table
    calls = []
    dctn = scipy.fft.dctn
    monkeypatch.setattr(scipy.fft, "dctn", lambda *a, **kw: calls.append(1) or dctn(*a, **kw))
    kernels._TRANSFORMS.clear()
    rng = np.random.default_rng(6)
    sources, thickness = rng.random((16, 20)), rng.uniform(2.0, 35.0, (16, 20))
    args = (table, k.thickness_cm, k.radii_mm, 0.8, 6.4, (0.9, 0.8), 0.02)
    first = kernels.kernel_scatter(sources, thickness, *args)
    assert len(calls) == 2  # one per part (near, far)
    again = kernels.kernel_scatter(sources * 2.0, thickness, *args)
    assert len(calls) == 2 and np.array_equal(again, kernels.kernel_scatter(sources * 2.0, thickness, *args))
    np.testing.assert_allclose(again, 2.0 * first, rtol=1e-6)
    other = np.array(table) * 1.5
    scaled = kernels.kernel_scatter(sources, thickness, other, *args[1:])
    assert len(calls) == 4
    np.testing.assert_allclose(scaled, 1.5 * first, rtol=1e-5)
    kernels.kernel_scatter(sources, thickness, table, k.thickness_cm, k.radii_mm, 0.8, 8.0, (0.9, 0.8), 0.02)
    assert len(calls) == 6
    kernels._TRANSFORMS.clear()
    assert np.array_equal(kernels.kernel_scatter(sources * 2.0, thickness, *args), again)  # made again: same bits


def test_the_zoom_about_the_centre_is_scipys_linear_affine_transform():
    """`_zoom_rows` reads a coarse field at c + (x - c) / m per axis, linear and held at the edges: what
    scipy.ndimage.affine_transform (order 1, mode 'nearest') gives, drawn in (m < 1) and out (m > 1)."""
    from scipy.ndimage import affine_transform

    from pipelines.physics.kernels import _zoom_rows

    rng = np.random.default_rng(9)
    for shape, m in (((32, 32), 0.9), ((9, 13), 0.75), ((31, 40), 1.2), ((1, 7), 0.8)):
        field = rng.random(shape)
        c = (np.array(shape) - 1) / 2.0
        want = affine_transform(field, np.full(2, 1.0 / m), offset=c - c / m, order=1, mode="nearest")
        np.testing.assert_allclose(_zoom_rows(shape[0], m) @ field @ _zoom_rows(shape[1], m).T, want,
                                   rtol=0, atol=1e-13)


def test_the_stored_origin_factors_are_what_the_fit_gives_on_the_stored_monte_carlo_references():
    """`scatter_kernels --refit-origin` stored four origin factors with the Monte Carlo's SPRs it fitted
    them to: fitting again on those SPRs (no Monte Carlo needed) gives the stored factors, each better than
    the best single factor over the same cases."""
    from pipelines.physics.kernels import load

    k = load()
    provenance = json.loads(scatter_kernels.PROVENANCE_FILE.read_text())
    for grid, near, far, record in ((False, k.origin_factor, k.far_origin_factor, provenance["origin_factor_fit"]),
                                    (True, k.grid_origin_factor, k.grid_far_origin_factor,
                                     provenance["grid_origin_factor_fit"])):
        cases = [(c["water_cm"], c["sdd_cm"], c["sod_cm"], c["field_cm"]) for c in record["fit_cases"]]
        assert cases == list(scatter_kernels.ORIGIN_FIT_CASES) and record["far_radius_mm"] == scatter_kernels.FAR_RADIUS_MM
        spr = [c["monte_carlo_spr"] for c in record["fit_cases"]]
        references = {case: (s, s) for case, s in zip(cases, spr)}  # the column the fit does not read is unused
        got_near, got_far, fit = scatter_kernels.fit_origin_factors(k, references, grid=grid)
        assert (got_near, got_far) == (near, far), grid
        assert fit["rms_log_error"] == pytest.approx(record["rms_log_error"], abs=2e-4)
        assert fit["rms_log_error"] < 0.8 * min(record["rms_log_error_one_factor"].values())
