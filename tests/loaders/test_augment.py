"""Image augmentations: each operation against a hand-computed result, and the seeded composition."""
import math

import pytest
import torch

from pipelines.loaders import augment as A
from pipelines.loaders import image_ops as I

IMG = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0], [12.0, 13.0, 14.0, 15.0]])


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


def test_invert_multiply_and_the_window_contrasts():
    assert close(I.invert(IMG), 15.0 - IMG)
    assert close(I.multiply(IMG, 0.5), IMG / 2)
    u = IMG / 15.0  # the window of a 0..15 image
    assert close(I.gamma(IMG, 2.0), 15.0 * u ** 2)
    assert close(I.linear_contrast(IMG, 2.0), 15.0 * (0.5 + 2.0 * (u - 0.5)))
    assert close(I.log_contrast(IMG, 1.0), 15.0 * torch.log2(1 + u))
    assert close(I.sigmoid_contrast(IMG, 10.0, 0.5), 15.0 / (1 + torch.exp(10.0 * (0.5 - u))))
    shifted = IMG + 100.0  # the window is the view's own range: an offset image maps the same way
    assert close(I.gamma(shifted, 2.0) - 100.0, 15.0 * u ** 2, 1e-4)
    assert I.gamma(IMG, 2.0)[0, 0] == 0.0 and I.gamma(IMG, 2.0)[-1, -1] == 15.0  # the range is kept


def test_gaussian_noise_is_sigma_of_the_range():
    noise = torch.ones_like(IMG)
    assert close(I.gaussian_noise(IMG, 0.01, noise), IMG + 0.15)  # 0.01 of the 15-wide window


def test_blurs_and_pooling():
    flat = torch.full((5, 5), 3.0)
    assert close(I.box_blur(flat, 3), flat) and close(I.gaussian_blur(flat, 1.5), flat)
    spike = torch.zeros(5, 5)
    spike[2, 2] = 9.0
    assert close(I.box_blur(spike, 3)[1:4, 1:4], torch.ones(3, 3)) and I.box_blur(spike, 3)[0, 0] == 0
    g = I.gaussian_blur(spike, 1.0)
    k = torch.exp(-0.5 * torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]) ** 2)
    k = k[:, None] * k[None, :]
    # truncated at 3 sigma: a 7x7 kernel normalised over itself; its central 5x5 is what lands here
    full = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    assert close(g, 9.0 * k / (full.sum() ** 2))
    assert close(I.average_pool(IMG, 2), torch.tensor([[2.5, 2.5, 4.5, 4.5], [2.5, 2.5, 4.5, 4.5],
                                                       [10.5, 10.5, 12.5, 12.5], [10.5, 10.5, 12.5, 12.5]]))
    odd = torch.arange(9.0).reshape(3, 3)
    assert close(I.average_pool(odd, 2)[2, 2], 8.0) and close(I.average_pool(odd, 2)[0, 2], 3.5)


def test_sharpen_and_emboss_kernels():
    flat = torch.full((4, 4), 2.0)
    assert close(I.sharpen(flat, 1.0, 1.5), flat * 1.5)  # K sums to the lightness
    assert close(I.sharpen(flat, 0.5, 1.5), flat * (0.5 + 0.5 * 1.5))
    assert close(I.emboss(flat, 1.0, 2.0), flat)  # the emboss kernel sums to 1
    spike = torch.zeros(5, 5)
    spike[2, 2] = 1.0
    out = I.sharpen(spike, 1.0, 1.0)
    assert close(out[2, 2], 9.0) and close(out[1, 1], -1.0) and close(out[2, 3], -1.0)
    e = I.emboss(spike, 1.0, 1.0)  # correlation: out[r, c] = sum K[i, j] in[r + i - 1, c + j - 1]
    assert close(e[3, 3], -2.0) and close(e[1, 1], 2.0) and close(e[2, 2], 1.0) and close(e[3, 1], 0.0)


def test_impulse_dropout_boxes_erase_and_collimation():
    hit = torch.zeros(4, 4, dtype=torch.bool)
    hit[0, 1] = hit[3, 2] = True
    salt = torch.zeros_like(hit)
    salt[0, 1] = True
    out = I.impulse_noise(IMG, hit, salt)
    assert out[0, 1] == 15.0 and out[3, 2] == 0.0 and (out[~hit] == IMG[~hit]).all()
    assert I.dropout(IMG + 1, hit)[0, 1] == 1.0 and I.dropout(IMG + 1, hit)[3, 2] == 1.0
    boxed = I.noisy_boxes(IMG, [(1, 1, 2, 2)], torch.ones_like(IMG))
    assert close(boxed[1:3, 1:3], IMG[1:3, 1:3] + 0.2 * (10.0 - 5.0)) and (boxed[0] == IMG[0]).all()
    erased = I.erase(IMG, (0, 2, 2, 2), value=-1.0)
    assert (erased[0:2, 2:4] == -1.0).all() and erased[2, 2] == 10.0
    c = I.collimate(IMG, 1)
    assert (c[1:3, 1:3] == IMG[1:3, 1:3]).all() and c[0].abs().sum() == 0 and c[:, 0].abs().sum() == 0
    assert torch.equal(I.collimate(IMG, 0), IMG)


def test_affine_and_elastic_grids():
    img = torch.arange(64.0).reshape(8, 8)
    identity = I.affine_grid((8, 8), 0.0, (0.0, 0.0), 1.0, (0.0, 0.0))
    assert close(I.warp(img, identity), img, 1e-4)
    shifted = I.warp(img, I.affine_grid((8, 8), 0.0, (2.0, 1.0), 1.0, (0.0, 0.0)))  # content right 2, down 1
    assert close(shifted[1:, 2:], img[:-1, :-2], 1e-4)
    quarter = I.warp(img, I.affine_grid((8, 8), 90.0, (0.0, 0.0), 1.0, (0.0, 0.0)))
    assert close(quarter, torch.rot90(img, -1), 1e-3)  # +90 deg: clockwise on screen (y down)
    assert close(I.warp(img, I.elastic_grid(torch.rand(2, 8, 8) * 2 - 1, 0.0, 0.25)), img, 1e-4)
    moved = I.warp(img, I.elastic_grid(torch.ones(2, 8, 8), 1.0, 0.25))  # a uniform 1 px displacement
    assert close(moved[:-1, :-1], img[1:, 1:], 1e-4)


def test_augment_is_seeded_by_sample_and_epoch_and_shared_across_keys():
    views = torch.rand(3, 16, 16)
    sample = {"sample_id": "c1__drr__000", "drr": views, "drr_xray": views.clone(), "drr_vertebra": views.clone()}
    aug = A.Augment("synthex", seed=5)
    one, two = aug(sample), aug(sample)
    assert torch.equal(one["drr"], two["drr"]) and torch.equal(one["drr"], one["drr_xray"])
    assert torch.equal(one["drr_vertebra"], views)  # not a default key
    assert not torch.equal(one["drr"][0], one["drr"][1])  # each view its own draws
    assert not torch.equal(one["drr"], views)
    aug.set_epoch(1)
    assert not torch.equal(aug(sample)["drr"], one["drr"])
    other = A.Augment("synthex", seed=5)(dict(sample, sample_id="c2__drr__000"))
    assert not torch.equal(other["drr"], one["drr"])
    never = A.Augment([(name, 0.0) for name in A.ALL_OPS])(sample)
    assert torch.equal(never["drr"], views)
    inv = A.Augment([("invert", 1.0)])(sample)
    assert close(inv["drr"], views.flatten(-2).amax(-1)[:, None, None] - views)


def test_presets_run_on_every_view_and_bad_ops_are_refused():
    views = torch.rand(2, 32, 32) * 3
    for preset in ("synthex", "xvr"):
        out = A.Augment(preset, seed=1)({"sample_id": "x", "drr": views, "real_image": views[:1]})
        assert out["drr"].shape == views.shape and torch.isfinite(out["drr"]).all()
        assert out["real_image"].shape == (1, 32, 32)
    with pytest.raises(ValueError, match="unknown augmentation 'swirl'"):
        A.Augment([("swirl", 0.5)])
    with pytest.raises(ValueError, match="probability"):
        A.Augment([("invert", 1.5)])
    with pytest.raises(ValueError, match="unknown preset"):
        A.Augment("strong")
    assert set(A.GEOMETRIC) <= set(A.ALL_OPS) and math.isclose(dict(A.XVR)["invert"], dict(A.XVR)["erase"] / 5)
