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
