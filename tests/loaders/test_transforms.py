"""Loader transforms on hand-computed values."""
import math

import torch

from pipelines.loaders import normalised, transmission


def test_transmission_is_exp_minus_the_line_integral_on_image_keys_only():
    sample = {"drr": torch.tensor([[[0.0, 1.0], [2.0, math.log(4)]]]), "ct": torch.tensor([1.0])}
    out = transmission(sample)
    torch.testing.assert_close(out["drr"], torch.tensor([[[1.0, math.exp(-1)], [math.exp(-2), 0.25]]]))
    assert out["ct"] is sample["ct"]


def test_normalised_scales_each_view_by_its_own_maximum():
    views = torch.tensor([[[1.0, 2.0], [4.0, 0.0]], [[0.5, 0.5], [0.25, 0.0]]])
    out = normalised({"drr": views, "xray1": torch.tensor([[3.0, 6.0]])})
    torch.testing.assert_close(out["drr"][0], torch.tensor([[0.25, 0.5], [1.0, 0.0]]))
    torch.testing.assert_close(out["drr"][1], torch.tensor([[1.0, 1.0], [0.5, 0.0]]))
    torch.testing.assert_close(out["xray1"], torch.tensor([[0.5, 1.0]]))
