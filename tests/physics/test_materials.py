"""Materials from one walk: exact mass thicknesses, the mono image unchanged, one continuous mapping."""
import numpy as np
import pytest
import torch

from pipelines.ops.attenuation import hu_to_mu
from pipelines.ops.traversal import traverse_hinges_numba, traverse_numba, traverse_torch
from pipelines.physics import materials
from pipelines.physics.tables import material_densities
from schemas.config import BuildConfig, XrayConfig

CFG = XrayConfig()
ANCHORS = np.array([m.hu for m in CFG.materials])
DENSITIES = material_densities(CFG.materials)
MU_WATER = 0.0193


def _rays(shape, n=400, seed=0):
    """Random rays from a source outside the volume to targets beyond it (voxel coordinates)."""
    rng = np.random.default_rng(seed)
    centre = (np.array(shape) - 1) / 2
    source = centre + np.array([-3.0 * shape[0], 0.3, -0.2])
    targets = centre + np.c_[np.full(n, 3.0 * shape[0]), rng.uniform(-0.6, 0.6, (n, 2)) * shape[1:]]
    return source, targets, np.linalg.norm(targets - source, axis=1)  # 1 mm voxels: length in mm


def _masses(hu, source, targets, lengths, labels=None, label=-1):
    mu = hu_to_mu(hu, MU_WATER)
    knots = materials.anchor_knots(ANCHORS, MU_WATER)
    whole, part, hinges = traverse_hinges_numba(mu, source, targets, lengths, 1, len(targets), knots, labels, label)
    coefficients = materials.hinge_coefficients(knots, DENSITIES)
    return mu, whole, part, hinges, materials.mass_thickness(whole, hinges, coefficients)


def test_water_phantom_gives_density_times_chord():
    hu = np.full((30, 24, 24), -1000.0, np.float32)
    hu[5:25] = 0.0  # a 20 mm slab of water along the rays' main axis
    source, targets, lengths = _rays(hu.shape)
    *_, mass = _masses(hu, source, targets, lengths)
    direction = (targets - source) / lengths[:, None]
    chord = 20.0 / np.abs(direction[:, 0])  # mm through the slab (every ray crosses both faces inside the box)
    rho_water = materials.density(np.array([0.0]), ANCHORS, DENSITIES)[0]
    air = DENSITIES[0] * (lengths * 0 + 30.0 / np.abs(direction[:, 0]) - chord) / 10.0  # the air around it
    np.testing.assert_allclose(mass.sum(axis=1) - air, rho_water * chord / 10.0, rtol=1e-3)
    assert rho_water == pytest.approx(1.0, abs=1e-3)  # 0 HU is water's density


def test_mass_thickness_is_the_hinge_expression_bit_for_bit_and_fills_a_column_slice():
    """The one-pass kernel gives numpy's whole-array expression's float64 values exactly (held at 0),
    and with `out` a column slice of a wider array (the view's channels) it writes there and nowhere else."""
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1100, 1800, (40, 20, 20)).astype(np.float32)
    hu[:, :, 10:] = -1000.0  # rays through air alone: no tissue, no bone
    source, targets, lengths = _rays(hu.shape, n=900)
    _, whole, _, hinges, mass = _masses(hu, source, targets, lengths)
    c = materials.hinge_coefficients(materials.anchor_knots(ANCHORS, MU_WATER), DENSITIES) / 10.0
    expected = np.stack([c[m, 0] * hinges[:, 0] + c[m, 1] * whole + c[m, 2] * hinges[:, 1] + c[m, 3] * hinges[:, 2]
                         for m in range(3)], axis=1)
    assert (expected <= 0).any() and (expected > 0).all(axis=1).any()  # both branches met
    expected = np.maximum(expected, 0.0)
    assert mass.dtype == np.float64 and np.array_equal(mass, expected)
    wide = np.full((len(whole), 5), 7.0)
    coefficients = materials.hinge_coefficients(materials.anchor_knots(ANCHORS, MU_WATER), DENSITIES)
    written = materials.mass_thickness(whole, hinges, coefficients, out=wide[:, 1:4])
    assert np.shares_memory(written, wide) and np.array_equal(wide[:, 1:4], expected)
    assert (wide[:, 0] == 7.0).all() and (wide[:, 4] == 7.0).all()
    with pytest.raises(ValueError, match="mass thickness out of shape"):
        materials.mass_thickness(whole, hinges, coefficients, out=wide[:10, :3])


def test_20_cm_of_0_hu_is_20_cm_of_water_through_the_walk_and_the_synthesis():
    """HU is defined by water: a 200 mm slab of 0 HU, walked and synthesised (90 kVp + 3 mm Al, CsI 0.6 mm,
    the config's energy bins), gives the -ln of a direct Beer-Lambert integral of water over the spectrum
    within 0.5 %."""
    from pipelines.physics import tables
    from pipelines.physics.synthesis import primary

    hu = np.full((220, 8, 8), -1000.0, np.float32)
    hu[10:210] = 0.0
    source = np.array([-500.0, 3.5, 3.5])
    targets = np.array([[800.0, 3.5, 3.5]])
    lengths = np.linalg.norm(targets - source, axis=1)
    *_, mass = _masses(hu, source, targets, lengths)
    assert mass[0, 1] == pytest.approx(20.0, rel=1e-4) and mass[0, 2] == 0.0  # g/cm^2 of water, no bone
    energies, fluence = tables.tube_spectrum(90, 12.0, 3.0)
    t = tables.make_tables(energies, fluence, CFG.materials, CFG.alloys, "Cesium Iodide", 0.6, CFG.energy_bins)
    masses = np.zeros((2, 3 + len(CFG.alloys)))  # air, water, bone, then the alloys
    masses[1, :3] = mass[0]
    masses[0, 0] = mass[0, 0]  # the same air, without the slab
    _, signal = primary(masses, t)
    eta, kept = tables.detector_response("Cesium Iodide", 0.6, energies)
    weights = fluence * eta * kept
    water = tables.compound_mu_rho("Water, Liquid", energies) * float(tables.nist("Water, Liquid")["density"])
    direct = -np.log(weights @ np.exp(-water * 20.0) / weights.sum())
    assert -np.log(signal[1] / signal[0]) == pytest.approx(direct, rel=0.005)


def test_materials_sum_to_the_total_mass_projection_and_each_is_exact():
    rng = np.random.default_rng(1)
    hu = rng.uniform(-1100.0, 2500.0, (20, 18, 16)).astype(np.float32)
    source, targets, lengths = _rays(hu.shape, seed=2)
    *_, mass = _masses(hu, source, targets, lengths)
    fractions = materials.volume_fractions(hu, ANCHORS) * DENSITIES  # partial densities per voxel
    for m in range(3):
        direct, _ = traverse_numba(np.ascontiguousarray(fractions[..., m], dtype=np.float32), source, targets, lengths,
                                   1, len(targets))
        np.testing.assert_allclose(mass[:, m], direct / 10.0, rtol=1e-5, atol=1e-9)
    total, _ = traverse_numba(materials.density(hu, ANCHORS, DENSITIES).astype(np.float32), source, targets, lengths,
                              1, len(targets))
    np.testing.assert_allclose(mass.sum(axis=1), total / 10.0, rtol=1e-5)


def test_the_walk_keeps_the_mono_and_vertebra_images_bit_for_bit_and_torch_agrees():
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1000.0, 1800.0, (16, 14, 12)).astype(np.float32)
    labels = (hu > 900).astype(np.uint8) * 7
    source, targets, lengths = _rays(hu.shape, seed=4)
    mu, whole, part, hinges, _ = _masses(hu, source, targets, lengths, labels, 7)
    mono, vertebra = traverse_numba(mu, source, targets, lengths, 1, len(targets), labels, 7)
    assert np.array_equal(whole, mono) and np.array_equal(part, vertebra)
    knots = materials.anchor_knots(ANCHORS, MU_WATER)
    t = traverse_torch(torch.as_tensor(mu), torch.as_tensor(source), torch.as_tensor(targets), torch.as_tensor(lengths),
                       torch.as_tensor(labels), 7, knots=knots)
    assert np.array_equal(t[0].numpy(), mono)
    np.testing.assert_allclose(t[2].numpy(), hinges, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_walk_agrees_with_the_cpu_walk():
    rng = np.random.default_rng(5)
    hu = rng.uniform(-1000.0, 1800.0, (40, 36, 30)).astype(np.float32)
    labels = (hu > 900).astype(np.uint8) * 3
    source, targets, lengths = _rays(hu.shape, n=5000, seed=6)
    mu, whole, part, hinges, _ = _masses(hu, source, targets, lengths, labels, 3)
    knots = materials.anchor_knots(ANCHORS, MU_WATER)
    dev = torch.device("cuda")
    t = traverse_torch(torch.as_tensor(mu, device=dev), torch.as_tensor(source, device=dev),
                       torch.as_tensor(targets, device=dev), torch.as_tensor(lengths, device=dev),
                       torch.as_tensor(labels, device=dev), 3, knots=knots)
    np.testing.assert_allclose(t[0].cpu().numpy(), whole, rtol=1e-12)
    np.testing.assert_allclose(t[1].cpu().numpy(), part, rtol=1e-12)
    np.testing.assert_allclose(t[2].cpu().numpy(), hinges, rtol=1e-10, atol=1e-10)


def test_mapping_is_continuous_and_fractions_are_a_partition_below_the_bone_anchor():
    hu = np.linspace(-1200, 3000, 42001)
    rho = materials.density(hu, ANCHORS, DENSITIES)
    steepest = max(DENSITIES[1] / (ANCHORS[1] - ANCHORS[0]), DENSITIES[2] / (ANCHORS[2] - ANCHORS[1]))
    assert np.max(np.abs(np.diff(rho))) <= 0.1 * steepest * (1 + 1e-9)  # no jumps: at most the steepest slope x 0.1 HU
    assert np.all(np.diff(rho) >= -1e-12)  # denser with HU
    f = materials.volume_fractions(hu, ANCHORS)
    below = hu <= ANCHORS[2]
    np.testing.assert_allclose(f[below].sum(axis=1), 1.0, atol=1e-12)
    assert np.all(f >= 0)
    np.testing.assert_allclose(materials.density(ANCHORS, ANCHORS, DENSITIES), DENSITIES)


def test_config_refuses_what_the_physics_cannot_honour():
    with pytest.raises(ValueError, match="traversal"):
        BuildConfig.model_validate({"detector": {"renderer": "siddon"}})
    with pytest.raises(ValueError, match="bone_multiplier"):
        BuildConfig.model_validate({"attenuation": {"bone_multiplier": 2.0}})
    with pytest.raises(ValueError, match="alloys"):
        XrayConfig.model_validate({"instruments": {"screw_material": "gold"}})
    with pytest.raises(ValueError, match="three anchors"):
        XrayConfig.model_validate({"materials": [m.model_dump() for m in CFG.materials[:2]]})
    assert BuildConfig.model_validate({"detector": {"renderer": "siddon"}, "xray": {"enabled": False}})
