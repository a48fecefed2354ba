"""The physics API (`render.render_xray`) on a phantom: the image is made of the primary and the scatter it
returns, the primary is Beer-Lambert over the spectrum, the scatter is the kernel model's, and builds and
the stream make their views through it."""
import numpy as np
import pytest
import xraylib

from pipelines.ops.camera import base_camera
from pipelines.physics import phantoms, render
from pipelines.physics.scatter_kernels import model_spr
from pipelines.physics.scatter_profiles import physics_for
from pipelines.physics.tables import detector_response, tube_spectrum
from schemas.detector import Geometry

SDD, SOD = 1020.0, 850.0


@pytest.fixture(scope="module")
def water_view():
    hu, affine = phantoms.box_hu((400.0, 200.0, 400.0), 10.0)  # 20 cm of water along the AP beam
    scene = render.scene_of(hu, affine, Geometry(128, 128, 1.6, SDD, SOD))
    return render.render_xray(scene, base_camera("AP", SOD), physics_for(90))


def test_the_image_is_minus_log_of_primary_plus_scatter_and_the_primary_is_beer_lambert(water_view):
    view = water_view
    assert np.allclose(view.realistic, -np.log(view.primary + view.scatter), rtol=0, atol=2e-5)  # noiseless, no blur
    energies, fluence = tube_spectrum(90, 12.0, 3.0)
    eta, deposit = detector_response("Cesium Iodide", 0.6, energies)
    mu = np.array([xraylib.CS_Total_CP("Water, Liquid", float(e)) for e in energies])  # cm^2/g, density 1
    weight = fluence * eta * deposit
    expected = float(np.sum(weight * np.exp(-mu * 20.0)) / np.sum(weight))
    assert view.primary[64, 64] == pytest.approx(expected, rel=0.005)
    assert view.detection.spr_centre() == pytest.approx(view.scatter[64, 64] / view.primary[64, 64], rel=1e-6)


def test_the_scatter_is_the_kernel_models_at_the_centre(water_view):
    """The same slab by the benchmark's model path (`scatter_kernels.model_spr`, which the docs' SPR table
    checks against the Monte Carlo): the API gives its SPR."""
    assert water_view.detection.spr_centre() == pytest.approx(model_spr(20.0, 90), rel=0.03)


def test_a_noisy_view_keeps_the_same_expected_parts_and_builds_render_through_the_api(water_view):
    hu, affine = phantoms.box_hu((400.0, 200.0, 400.0), 10.0)
    scene = render.scene_of(hu, affine, Geometry(128, 128, 1.6, SDD, SOD))
    noisy = render.render_xray(scene, base_camera("AP", SOD), physics_for(90), seed=3)
    assert np.array_equal(noisy.primary, water_view.primary) and not np.array_equal(noisy.realistic,
                                                                                     water_view.realistic)
    from pipelines.physics.draw import XrayRecord

    # a build's views (render_views) are the API's views, bit for bit, each with its own seed
    cameras = np.stack([base_camera("AP", SOD), base_camera("LAT", SOD)])
    views = render.render_views(scene, cameras, xray=XrayRecord(physics_for(90), (), (3, 4)))
    alone = [render.render_xray(scene, c, physics_for(90), seed=s) for c, s in zip(cameras, (3, 4))]
    assert views.realistic.shape == (2, 128, 128) and np.array_equal(views.realistic[0], noisy.realistic)
    assert all(np.array_equal(views.realistic[v], alone[v].realistic) for v in range(2))
    assert all(np.array_equal(views.whole[v], alone[v].whole) for v in range(2))


def test_a_phantom_that_mixes_tissue_and_bone_is_refused_by_the_monte_carlo():
    from pipelines.physics.montecarlo import phantom_from_hu

    hu, _ = phantoms.box_hu((40.0, 40.0, 40.0), 10.0, hu=700.0)
    with pytest.raises(ValueError, match="64 voxels mix tissue and bone"):
        phantom_from_hu(hu, 1.0, (0.0, 0.0, 85.0), [-1000.0, 0.0, 1500.0], [0.0012, 1.0, 1.92])
    lung, _ = phantoms.box_hu((40.0, 40.0, 40.0), 10.0, hu=phantoms.LUNG_HU)
    p = phantom_from_hu(lung, 1.0, (0.0, 0.0, 85.0), [-1000.0, 0.0, 1500.0], [0.0012, 1.0, 1.92])
    assert np.all(p.index == 1) and np.allclose(p.density, 0.26)


def test_the_pencils_count_electrons_which_in_water_is_its_attenuation_thickness():
    """The kernels' thickness is the water holding a pencil's electrons; through water alone that is the
    thickness its primary attenuation gives (the beam's hardening curve), so both give one scatter; through
    bone the electron thickness is the smaller (bone absorbs more per electron), and so is its scatter."""
    from dataclasses import replace

    from pipelines.physics import tables
    from pipelines.physics.synthesis import _block_means, synthesize

    def both(hu_value):
        hu, affine = phantoms.box_hu((400.0, 200.0, 400.0), 10.0, hu_value)
        scene = render.scene_of(hu, affine, Geometry(128, 128, 1.6, SDD, SOD))
        r, physics = scene.realistic, physics_for(90)
        walk = r.renderer.walk(base_camera("AP", SOD), -1, r.knots)
        masses, *_ = r.masses(walk, ())
        model, lookup = r.scatter(masses, physics), tables.tables_for(physics.spectrum, r.materials, r.alloys)
        assert model.electron_ratios is not None
        return [synthesize(masses, walk.raylen, lookup, r.detector(physics), m, None).scatter_signal[64, 64]
                for m in (model, replace(model, electron_ratios=None))]

    electrons, attenuation = both(0.0)
    assert electrons == pytest.approx(attenuation, rel=0.01)
    electrons, attenuation = both(1500.0)  # 20 cm of cortical bone
    assert electrons < 0.9 * attenuation
    a = np.arange(7 * 10, dtype=float).reshape(7, 10)  # block means over the pixels a block holds
    assert np.allclose(_block_means(a, 4), [[a[:4, :4].mean(), a[:4, 4:8].mean(), a[:4, 8:].mean()],
                                            [a[4:, :4].mean(), a[4:, 4:8].mean(), a[4:, 8:].mean()]])
    assert np.array_equal(_block_means(a[:4, :8], 4), [[a[:4, :4].mean(), a[:4, 4:8].mean()]])
