"""The torch twin of the synthesis (`physics.synthesis_torch`, the training stream's realistic views on its
device) against `physics.synthesis.synthesize`, run here on the CPU through torch: the same images to float
rounding, for every branch a physics draw can take."""
import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from pipelines.ops.camera import base_camera
from pipelines.ops.drr import Renderer
from pipelines.physics import phantoms, synthesis_torch
from pipelines.physics.draw import draw_physics
from pipelines.physics.realistic import RealisticRenderer
from schemas.config import AttenuationConfig, XrayConfig
from schemas.detector import Geometry

CFG = XrayConfig()
SOD = 850.0


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def renderers(request):
    """One renderer of the spine slab walking on the device (the torch walker on the CPU, the default,
    numba's CUDA kernel, on a GPU), with a numpy and a torch synthesis on top."""
    from pipelines.ops.attenuation import mu_of

    hu, affine = phantoms.spine_slab(5.0)
    att = AttenuationConfig()
    r = Renderer(mu_of(hu.astype(np.float32), att), affine, Geometry(64, 72, 3.0, 1020.0, SOD, "traversal"),
                 device=request.param, walker="torch" if request.param == "cpu" else None)
    return RealisticRenderer(r, CFG, att), RealisticRenderer(r, CFG, att, on_device=True)


def _physics():
    """Draws from the default ranges (collimation, grids, heel, kV, filtration, blur vary), plus the
    Gaussian scatter model, fluoroscopy polarity and a view without scatter."""
    rng = np.random.default_rng(4)
    drawn = [draw_physics(rng, CFG) for _ in range(6)]
    return drawn + [dataclasses.replace(drawn[0], scatter_model="gaussian"),
                    dataclasses.replace(drawn[1], polarity="fluoroscopy", heel_direction_deg=None),
                    dataclasses.replace(drawn[2], scatter=False)]


@pytest.mark.parametrize("k", range(9))
def test_the_torch_twin_makes_the_numpy_synthesis_images(renderers, k):
    numpy_side, torch_side = renderers
    physics = _physics()[k]
    walk = numpy_side.renderer.walk(base_camera("AP" if k % 2 else "LAT", SOD), -1, numpy_side.knots)
    expected = numpy_side.from_walk(walk, -1, physics, (), None).detection
    got = torch_side.from_walk(walk, -1, physics, (), None).detection
    for name in ("image", "primary_signal", "scatter_signal", "flat_signal", "open_quanta"):
        a, b = getattr(got, name), np.asarray(getattr(expected, name), dtype=np.float64)
        assert isinstance(a, torch.Tensor)
        np.testing.assert_allclose(a.double().cpu().numpy(), b, rtol=0, atol=1e-5 * np.abs(b).max(), err_msg=name)
    noisy = [torch_side.from_walk(walk, -1, physics, (), 11).realistic for _ in range(2)]
    reference = numpy_side.from_walk(walk, -1, physics, (), 11).realistic
    assert torch.equal(noisy[0], noisy[1])  # the same seed, the same realisation
    spread = float((noisy[0] - got.image).std())
    assert spread == pytest.approx(float(np.std(reference - expected.image)), rel=0.1) and spread > 0
    assert noisy[0].device == walk.on_device[0].device


@pytest.mark.parametrize("sigma", [0.4, 1.7, 6.0])
def test_blur_is_scipys_gaussian_filter_with_edges_held(sigma):
    image = np.random.default_rng(1).uniform(0, 1, (20, 33)).astype(np.float32)
    got = synthesis_torch.blur(torch.as_tensor(image), sigma).numpy()
    np.testing.assert_allclose(got, gaussian_filter(image, sigma, mode="nearest", truncate=4.0), rtol=0, atol=2e-7)
    assert torch.equal(synthesis_torch.blur(torch.as_tensor(image), 0.0), torch.as_tensor(image))
