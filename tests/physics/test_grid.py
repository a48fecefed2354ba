"""The anti-scatter grid: its transmission by incidence angle against a brute-force average over entry
positions and against the absorbing-lamella geometry; the Monte Carlo's focused grid passes every primary
as the analytic focused transmission does; the tables fold the primary's transmission into the detector;
the records carry a drawn grid."""
import numpy as np
import pytest

from pipelines.physics.grid import Grid, lamella_transmission
from pipelines.physics.tables import grid_coefficients

PERIOD, STRIP = 0.25, 0.036  # mm: 40 lines per cm


def _brute_force(drift, path, mu_lead, mu_gap, entries=4000, samples=2001):
    """The mean over entry positions of exp(-mu L) with the lead share of each path counted point by point."""
    x0 = (np.arange(entries) + 0.5) / entries * PERIOD
    points = x0[:, None] + np.linspace(0.0, 1.0, samples)[None, :] * drift
    lead = ((points % PERIOD) < STRIP).mean(axis=1)
    return float(np.mean(np.exp(-path * (mu_gap + (mu_lead - mu_gap) * lead))))


@pytest.mark.parametrize("drift", [0.005, 0.06, 0.2, 0.25, 0.31, 0.9, 2.3])
@pytest.mark.parametrize("mu_lead", [0.5, 5.7, 60.0])
def test_the_exact_mean_over_entry_positions_matches_a_brute_force_average(drift, mu_lead):
    exact = lamella_transmission(drift, 2.14, mu_lead, 0.08, PERIOD, STRIP)
    assert exact == pytest.approx(_brute_force(drift, 2.14, mu_lead, 0.08), abs=2e-3)


@pytest.mark.parametrize("drift", [0.0, 0.05, 0.1, 0.2, 0.214, 0.3])
def test_opaque_lamellae_pass_the_open_share_of_the_period(drift):
    """Lamellae that stop everything: a photon passes only if its whole drift fits between two of them."""
    expected = max(0.0, 1.0 - (STRIP + drift) / PERIOD) * np.exp(-0.1 * 2.0)
    assert lamella_transmission(drift, 2.0, 1e6, 0.1, PERIOD, STRIP) == pytest.approx(expected, abs=1e-6)


def test_higher_ratio_and_denser_lines_stop_more_oblique_photons_and_a_grid_needs_room():
    lead, gap = grid_coefficients(Grid(), np.array([50.0]))
    oblique = [Grid(r, n).transmission(0.2, 1.02, lead, gap)[0] for r, n in ((6, 40), (10, 40), (16, 80))]
    assert oblique[0] > oblique[1] > oblique[2]
    primary = Grid().primary_transmission(lead, gap)[0]
    assert Grid().transmission(0.0, 1.0, lead, gap)[0] == pytest.approx(primary, rel=1e-12)
    assert 0.6 < primary < 0.8  # a 10:1 grid passes 0.6-0.75 of the primary
    with pytest.raises(ValueError, match="do not fit"):
        Grid(lines_per_cm=300.0)


def test_the_monte_carlos_focused_grid_passes_primaries_everywhere_as_the_analytic_transmission():
    """Every primary photon comes from the focus: across the whole field (edges included, 10 cm off the
    axis) its tallied transmission is the spectrum's focused transmission, so the focusing is right."""
    from pipelines.physics.montecarlo import Detector, Material, box_phantom, simulate
    from pipelines.physics.scatter_kernels import _tables
    from pipelines.physics.tables import tube_spectrum

    energies, fluence = tube_spectrum(90, 12.0, al_mm=3.0)
    tables = _tables(90.0)
    grid = Grid(12.0, 60.0)
    phantom = box_phantom((40.0, 40.0, 0.2), (0.0, 0.0, 85.0), 1.0, tables.materials[1].density)  # nearly air
    detector = Detector(102.0, (10, 10), 2.0, csi_thickness=0.06, grids=(grid,))
    result = simulate(tables, phantom, detector, 400_000, (10.0, 10.0), (energies, fluence), seed=3)
    csi = Material.nist("Cesium Iodide")
    absorbed = fluence * energies * (1 - np.exp(-csi.mass_coefficients(energies).sum(0) * 4.51 * 0.06))
    expected = np.sum(absorbed * grid.primary_transmission(*grid_coefficients(grid, energies))) / absorbed.sum()
    edges = result.grid_primary[0][[0, -1]].sum() / result.csi_primary[[0, -1]].sum()
    assert edges == pytest.approx(expected, rel=2e-3)
    assert result.grid_primary[0].sum() / result.csi_primary.sum() == pytest.approx(expected, rel=2e-3)
    # an unfocused tally (the focus term dropped) would pass the edges' primaries at 10 cm / 102 cm less
    tilted = Grid(12.0, 60.0).transmission(np.full(len(energies), 10.0 / 102.0), 1.0, *grid_coefficients(grid, energies))
    assert np.sum(absorbed * tilted) / absorbed.sum() < 0.5 * expected


def test_the_tables_pass_the_primary_by_the_grids_transmission_per_energy():
    from pipelines.physics.synthesis import primary
    from pipelines.physics.tables import SpectrumKey, tables_for
    from schemas.config import XrayConfig

    cfg = XrayConfig()
    plain = tables_for(SpectrumKey(90, 12.0, 3.0, 0.0, "Cesium Iodide", 0.6, 24), tuple(cfg.materials), tuple(cfg.alloys))
    behind = tables_for(SpectrumKey(90, 12.0, 3.0, 0.0, "Cesium Iodide", 0.6, 24, 10.0, 40.0, 0.036, "Al"),
                        tuple(cfg.materials), tuple(cfg.alloys))
    masses = np.zeros((2, len(plain.channels)))
    masses[1, 1] = 20.0  # 20 g/cm^2 of the 0 HU material
    (_, s0), (_, s1) = primary(masses, plain), primary(masses, behind)
    open_ratio, through_ratio = s1[0] / s0[0], s1[1] / s0[1]
    assert 0.6 < open_ratio < 0.8
    assert through_ratio > open_ratio  # the interspace hardens: it passes a hardened beam's primary more


def test_a_drawn_grid_is_recorded_and_an_old_record_is_refused_by_name():
    from dataclasses import replace

    from pipelines.physics.draw import PhysicsDraw, draw_physics
    from schemas.config import XrayConfig

    cfg = XrayConfig()
    cfg = cfg.model_copy(update={"scatter": cfg.scatter.model_copy(update={"grid_probability": 1.0})})
    drawn = draw_physics(np.random.default_rng(0), cfg)
    assert drawn.grid and 8.0 <= drawn.grid_ratio <= 12.0 and 40.0 <= drawn.grid_lines_per_cm <= 80.0
    assert drawn.anti_scatter_grid == Grid(drawn.grid_ratio, drawn.grid_lines_per_cm, 0.036, "Al")
    assert drawn.spectrum.grid == drawn.anti_scatter_grid
    assert PhysicsDraw.from_record(drawn.record()) == drawn
    none = replace(drawn, grid=False, grid_ratio=0.0, grid_lines_per_cm=0.0, grid_lamella_mm=0.0, grid_interspace="")
    assert none.anti_scatter_grid is None and PhysicsDraw.from_record(none.record()) == none
    with pytest.raises(ValueError, match="grid False and grid_ratio 1"):  # one flag, one ratio: never at odds
        PhysicsDraw.from_record(replace(drawn, grid=False).record())
    old = {k: v for k, v in drawn.record().items() if not k.startswith("grid_")}
    old.update(grid_primary_transmission=0.7, grid_scatter_transmission=0.15)
    with pytest.raises(ValueError, match="grid_primary_transmission.*another schema"):
        PhysicsDraw.from_record(old)


def test_the_config_keeps_grids_within_the_kernels_nodes():
    from pydantic import ValidationError

    from schemas.config import ScatterConfig

    with pytest.raises(ValidationError, match="grid_ratio must lie within"):
        ScatterConfig(grid_ratio=(8.0, 20.0))
    with pytest.raises(ValidationError, match="tallied behind 0.036 mm"):
        ScatterConfig(grid_lamella_mm=0.05)
    assert ScatterConfig(model="gaussian", grid_lamella_mm=0.05).grid_lamella_mm == 0.05
