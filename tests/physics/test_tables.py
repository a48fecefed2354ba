"""Physics tables against the data libraries' own figures: HVL, Beer-Lambert, beam hardening, titanium."""
import numpy as np
import pytest
import spekpy

import pipelines
from pipelines.physics import tables
from pipelines.physics.instruments import SCREW, Instrument, instrument_channels
from pipelines.physics.synthesis import primary
from schemas.config import XrayConfig

CFG = XrayConfig()
DETECTOR = ("Cesium Iodide", 0.6)


@pytest.mark.parametrize("kv, al, cu", [(60, 2.5, 0.0), (90, 3.0, 0.1), (120, 4.0, 0.3)])
def test_half_value_layer_from_our_tables_matches_spekpys_own(kv, al, cu):
    energies, fluence = tables.tube_spectrum(kv, 12.0, al, cu)
    reference = spekpy.Spek(kvp=kv, th=12.0, dk=tables.FINE_BIN_KEV)
    reference.multi_filter([("Al", al), ("Cu", cu)] if cu else [("Al", al)])
    assert tables.hvl_mm_al(energies, fluence) == pytest.approx(reference.get_hvl1(), rel=0.02)


def direct_signal(energies: np.ndarray, fluence: np.ndarray, mu_linear_fine: np.ndarray, detector_material: str,
                  detector_mm: float) -> np.ndarray:
    """Reference: detected signal through absorbers given per fine bin (mu x t summed, (..., E_fine)),
    integrated bin by bin with no synthesis binning (what `Tables` approximates)."""
    eta, kept = tables.detector_response(detector_material, detector_mm, energies)
    return np.exp(-np.asarray(mu_linear_fine)) @ (fluence * eta * kept)


def _transmission(t: tables.Tables, masses: np.ndarray) -> np.ndarray:
    _, signal = primary(masses, t)
    _, open_field = primary(np.zeros((1, masses.shape[1])), t)
    return signal / open_field[0]


def test_a_one_line_spectrum_is_beer_lambert():
    energy = np.array([60.0])
    t = tables.make_tables(energy, np.array([1e6]), CFG.materials, CFG.alloys, *DETECTOR, 24)
    mu = tables.channel_mu_rho(CFG.materials, CFG.alloys, energy)[:, 0]
    masses = np.zeros((4, 5))
    masses[0, 1], masses[1, 2], masses[2, 3], masses[3, [1, 2]] = 20.0, 3.0, 0.5, (15.0, 2.0)
    np.testing.assert_allclose(_transmission(t, masses), np.exp(-masses @ mu), rtol=1e-4)


def test_water_hardens_the_beam_and_binning_matches_direct_integration():
    energies, fluence = tables.tube_spectrum(90, 12.0, 3.0, 0.1)
    t = tables.make_tables(energies, fluence, CFG.materials, CFG.alloys, *DETECTOR, CFG.energy_bins)
    water = tables.compound_mu_rho("Water, Liquid", energies)  # rho = 1: g/cm^2 = cm
    tissue_channel = tables.channel_mu_rho(CFG.materials, CFG.alloys, energies)[1]
    np.testing.assert_allclose(tissue_channel, water, rtol=1e-12)  # the 0 HU anchor is water itself
    cm = np.array([1.0, 5.0, 10.0, 20.0, 30.0])
    masses = np.zeros((len(cm), 5))
    masses[:, 1] = cm
    effective = -np.log(_transmission(t, masses)) / cm
    assert np.all(np.diff(effective) < 0)  # beam hardening: the effective attenuation falls with thickness
    direct = direct_signal(energies, fluence, np.outer(cm, tissue_channel), *DETECTOR)
    direct /= direct_signal(energies, fluence, np.zeros((1, len(energies))), *DETECTOR)[0]
    np.testing.assert_allclose(effective, -np.log(direct) / cm, rtol=0.005)


def test_transmission_through_a_titanium_cylinder_matches_table_integration():
    alloy = next(a for a in CFG.alloys if a.name == "ti6al4v")
    radius = 3.0
    cylinder = Instrument(SCREW, (0.0, -50.0, 0.0), (0.0, 50.0, 0.0), radius, alloy.name)
    offsets = np.array([0.0, 1.0, 2.0, 2.9])  # rays crossing z = 0 this far from the axis
    source = np.array([0.0, 0.0, -500.0])
    targets = np.c_[offsets * 2.0, np.zeros(4), np.full(4, 500.0)]  # the rays cross z = 0 at x = offsets
    densities = np.array([tables.alloy_density(a) for a in CFG.alloys])
    metal, mask = instrument_channels(source, targets, [cylinder], [a.name for a in CFG.alloys], densities)
    distance = offsets * 1000.0 / np.linalg.norm(targets - source, axis=1)  # from the axis to each (tilted) ray
    chord_mm = 2 * np.sqrt(radius ** 2 - distance ** 2)
    np.testing.assert_allclose(metal[:, 0] * 10.0 / densities[0], chord_mm, rtol=1e-6)
    assert np.all(mask == 1)
    energies, fluence = tables.tube_spectrum(100, 12.0, 3.0, 0.2)
    t = tables.make_tables(energies, fluence, CFG.materials, CFG.alloys, *DETECTOR, CFG.energy_bins)
    masses = np.c_[np.zeros((4, 3)), metal]
    mu_ti = tables.alloy_mu_rho(alloy, energies)
    direct = direct_signal(energies, fluence, np.outer(metal[:, 0], mu_ti), *DETECTOR)
    direct /= direct_signal(energies, fluence, np.zeros((1, len(energies))), *DETECTOR)[0]
    np.testing.assert_allclose(_transmission(t, masses), direct, rtol=0.005)


def test_alloy_densities_and_versions_come_from_the_libraries():
    ti = tables.alloy_density(next(a for a in CFG.alloys if a.name == "ti6al4v"))
    steel = tables.alloy_density(next(a for a in CFG.alloys if a.name == "ss316l"))
    assert 4.3 < ti < 4.5 and 7.8 < steel < 8.1  # handbook figures: 4.43 and 8.0 g/cm^3
    assert set(pipelines.physics_data_versions()) == {"spekpy", "xraylib"}
    with pytest.raises(ValueError, match="NIST"):
        tables.nist("unobtainium")
