import numpy as np
import pytest

from pipelines.ops.xray import crop_or_pad_axis, field_pixels, fit_xray


def test_larger_field_is_cropped_to_the_central_683_pixels():
    # 1000 px at 0.3 mm = 300 mm > 204.8 mm: keep 204.8 / 0.3 = 682.7 -> 683 central pixels
    assert field_pixels(204.8, 0.3) == 683
    image = np.tile(np.arange(1000, dtype=np.float32), (1000, 1))  # value = column index
    out, valid, steps = fit_xray(image, (0.3, 0.3))
    assert out.shape == valid.shape == (1024, 1024)
    assert steps["axis1"] == {"from": 1000, "to": 683, "action": "crop"}
    assert valid.all()
    # the kept columns are 158 .. 840 (central 683): the output spans them end to end
    assert out[0, 0] == pytest.approx(158, abs=0.5) and out[0, -1] == pytest.approx(840, abs=0.5)


def test_smaller_field_is_padded_to_1365_pixels_and_the_mask_marks_real_data():
    # 1000 px at 0.15 mm = 150 mm < 204.8 mm: pad to 204.8 / 0.15 = 1365.3 -> 1365 pixels
    assert field_pixels(204.8, 0.15) == 1365
    out, valid, steps = fit_xray(np.ones((1000, 1000), np.float32), (0.15, 0.15), pad_value=0.0)
    assert steps["axis0"] == {"from": 1000, "to": 1365, "action": "pad"}
    # the real data covers 150 mm of the 204.8 mm field: 1000/1365 of each axis
    assert valid.mean() == pytest.approx((1000 / 1365) ** 2, rel=0.01)  # border pixels excluded
    assert np.all(out[valid] > 0.99)
    centre_row = valid[512]
    assert not centre_row[0] and centre_row[512] and not centre_row[-1]


def test_anisotropic_spacing_is_fitted_per_axis():
    # rows: 500 x 0.5 mm = 250 mm -> crop to 410; columns: 800 x 0.2 mm = 160 mm -> pad to 1024
    out, valid, steps = fit_xray(np.ones((500, 800), np.float32), (0.5, 0.2))
    assert steps["axis0"] == {"from": 500, "to": 410, "action": "crop"}
    assert steps["axis1"] == {"from": 800, "to": 1024, "action": "pad"}
    assert out.shape == (1024, 1024)


def test_crop_or_pad_axis_keeps_the_centre():
    a = np.arange(10)[None].repeat(2, 0)
    cropped, _ = crop_or_pad_axis(a, np.ones_like(a, bool), 1, 4, -1)
    assert cropped[0].tolist() == [3, 4, 5, 6]
    padded, valid = crop_or_pad_axis(a, np.ones_like(a, bool), 1, 14, -1)
    assert padded[0].tolist() == [-1, -1] + list(range(10)) + [-1, -1]
    assert valid[0].sum() == 10
