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
    metal, mask, _ = instrument_channels(source, targets, [cylinder], [a.name for a in CFG.alloys], densities)
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


def test_electrons_per_gram_match_nists_published_z_over_a():
    """The scatter kernels' thickness counts electrons: each channel's Z/A over water's. NIST's material
    composition tables publish <Z/A> = 0.55508 (water), 0.49919 (dry air), 0.52130 (cortical bone,
    ICRP); water's is also 10 / 18.015 from its formula. A titanium alloy has fewer electrons per gram."""
    ratios = tables.electron_ratios(tuple(CFG.materials), tuple(CFG.alloys))
    names = [m.nist for m in CFG.materials]
    published = {"Air, Dry (near sea level)": 0.49919, "Water, Liquid": 0.55508, "Bone, Cortical (ICRP)": 0.52130}
    for name, z_over_a in published.items():
        assert ratios[names.index(name)] == pytest.approx(z_over_a / 0.55508, rel=1e-3), name
    assert 10 / (2 * 1.008 + 15.999) == pytest.approx(0.55508, rel=1e-3)
    ti = len(names) + [a.name for a in CFG.alloys].index("ti6al4v")
    assert 0.8 < ratios[ti] < 0.9 and not ratios.flags.writeable


def test_the_open_field_s_heel_is_a_pixel_s_heel_at_no_attenuation_and_kept_for_the_next_view():
    """`heel_open_field` gives, per pixel, the heel factors `apply_heel` applies to an unattenuated pixel
    (S = S_open) bit for bit; the next view of the same tables and detector reads the same read-only
    arrays, other tables get their own."""
    from pipelines.physics.synthesis import apply_heel, heel_open_field

    key = tables.SpectrumKey(90, 12.0, 3.0, 0.0, "Cesium Iodide", 0.6, CFG.energy_bins)
    t = tables.tables_for(key, tuple(CFG.materials), tuple(CFG.alloys))
    shape = (48, 64)
    ones = np.ones(shape[0] * shape[1], dtype=np.float32)  # signal over the open field's: attenuation 0
    q, s, open_q, open_s = apply_heel(ones, ones, 1.0, shape, 2.0, 1020.0, 30.0, t)
    assert np.array_equal(q, open_q) and np.array_equal(s, open_s)
    assert open_s.std() > 1e-3 and not open_q.flags.writeable and not open_s.flags.writeable
    again = heel_open_field(shape, 2.0, 1020.0, 30.0, t)
    assert again[0] is open_q and again[1] is open_s
    other = tables.tables_for(tables.SpectrumKey(70, 12.0, 3.0, 0.0, "Cesium Iodide", 0.6, CFG.energy_bins),
                              tuple(CFG.materials), tuple(CFG.alloys))
    assert not np.array_equal(heel_open_field(shape, 2.0, 1020.0, 30.0, other)[1], open_s)


@pytest.mark.parametrize("water_cm", [0.0, 20.0])
def test_the_heel_at_the_field_edges_is_spekpys_own_spectrum_there(water_cm):
    """A 1024 x 0.2 mm detector at SDD 1020 mm, anode -> cathode along +columns: the signal at the anode
    and cathode edges over the centre's, open and behind 20 cm water, is what spekpy's own spectra at
    those rays' angles give (x = z tan(angle), no oblique filtration, inverse square taken out) within 2 %."""
    from pipelines.physics.synthesis import apply_heel, heel_angles

    kv, al = 90, 3.0
    key = tables.SpectrumKey(kv, 12.0, al, 0.0, "Cesium Iodide", 0.6, CFG.energy_bins)
    t = tables.tables_for(key, tuple(CFG.materials), tuple(CFG.alloys))
    angles = heel_angles((1, 1024), 0.2, 1020.0, 0.0)[0, [0, 512, 1023]]
    assert angles[0] == pytest.approx(-5.73, abs=0.01)  # the anode edge, between the table's angles
    masses = np.zeros((3, len(t.channels)))
    masses[:, 1] = water_cm
    quanta, signal = primary(masses, t)
    _, open_signal = primary(np.zeros((1, len(t.channels))), t)
    # the three pixels as one row: the two edges of a 1024-pixel detector and a pixel at its centre
    row_q, row_s = np.repeat(quanta[1], 1024), np.repeat(signal[1], 1024)
    row_q[[0, 1023]], row_s[[0, 1023]] = quanta[[0, 2]], signal[[0, 2]]
    _, row_s, _, open_s = apply_heel(row_q, row_s, float(open_signal[0]), (1, 1024), 0.2, 1020.0, 0.0, t)
    signal = row_s[[0, 512, 1023]]
    assert open_s[512] == pytest.approx(1.0, abs=0.01) and open_s[0] < 0.95  # the open field's own heel
    eta, kept = tables.detector_response("Cesium Iodide", 0.6, t_energies := tables.tube_spectrum(kv, 12.0, al)[0])
    water = tables.compound_mu_rho("Water, Liquid", t_energies)

    def direct(angle):
        s = spekpy.Spek(kvp=kv, th=12.0, dk=tables.FINE_BIN_KEV, x=100 * np.tan(np.deg2rad(angle)), z=100, obli=False)
        energies, fluence = s.get_spectrum()
        fluence = dict(zip(energies, fluence / np.cos(np.deg2rad(angle)) ** 2))
        f = np.array([fluence.get(e, 0.0) for e in t_energies]) * tables.filter_transmission(t_energies, al, 0.0)
        return float(np.sum(f * eta * kept * np.exp(-water * water_cm)))

    expected = np.array([direct(a) for a in angles])
    np.testing.assert_allclose(signal / signal[1], expected / expected[1], rtol=0.02)
    assert signal[0] < signal[1] < signal[2]  # less on the anode side


def test_interpolating_every_column_at_once_is_np_interp_bit_for_bit():
    """`tables.interp_rows` (the heel grid's resampling by angle, all attenuations at once) gives what
    np.interp gives column by column, to the bit: at and between the nodes, and held beyond the ends."""
    from pipelines.physics.tables import interp_rows

    rng = np.random.default_rng(3)
    xp = np.array([-10.0, -7.5, -5.0, -2.5, 0.0, 5.0, 10.0])
    for _ in range(50):
        fp = rng.uniform(0.5, 1.5, (len(xp), 64)) * 10 ** rng.uniform(-3, 3)
        x = np.r_[xp, rng.uniform(-13.0, 13.0, 40), np.arange(-10.0, 10.1, 2.5)]
        expected = np.stack([np.interp(x, xp, column) for column in fp.T], axis=1)
        np.testing.assert_array_equal(interp_rows(x, xp, fp), expected)

def test_an_item_s_tables_and_its_kernels_reference_beam_share_one_transmission_matrix():
    """The water curve, the heel grid and the scatter kernels' reference beam of one kV each cross the
    0 HU anchor's material at every fine energy: that matrix is made once, and every curve is the
    one computed from it directly."""
    from pipelines.physics.kernels import FILTRATION_AL_MM, reference_attenuation

    key = tables.SpectrumKey(97, 12.0, 3.1, 0.05, "Cesium Iodide", 0.55, CFG.energy_bins)
    materials, alloys = tuple(CFG.materials), tuple(CFG.alloys)
    tables._through_kept.cache_clear()
    tables.water_attenuation_for.cache_clear()
    t = tables.tables_for.__wrapped__(key, materials, alloys)
    reference = reference_attenuation(key, materials, alloys)
    assert tables._through_kept.cache_info().misses == 1 and tables._through_kept.cache_info().hits >= 1
    energies, fluence = tables.tube_spectrum(97, 12.0, 3.1, 0.05)
    through = np.exp(-np.outer(tables.HEEL_THICKNESS_G_CM2, tables.compound_mu_rho(materials[1].nist, energies)))
    eta, kept = tables.detector_response("Cesium Iodide", 0.55, energies)
    weight = fluence * eta * kept
    assert np.array_equal(t.water_attenuation, -np.log(through @ weight / weight.sum()))
    ref_fluence = tables.tube_spectrum(97, 12.0, FILTRATION_AL_MM, 0.0)[1]
    assert np.array_equal(reference, -np.log(through @ (ref_fluence * eta * kept) / (ref_fluence * eta * kept).sum()))
