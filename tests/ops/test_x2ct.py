"""X2CT-GAN conventions on an asymmetric phantom: axis order, values, X-ray axes relative to the CT."""
import json

import numpy as np
import pytest

from pipelines.ops.camera import base_camera
from pipelines.ops.drr import Renderer
from pipelines.ops.x2ct import resize_volume, scanner_values, to_uint8_by_max, to_x2ct_order
from pipelines.tools.export import x2ct_arrays
from schemas.detector import Geometry
from schemas.shard_layout import Attr, Key
from tests.conftest import make_affine
from tests.x2ct_gan import agreement_by_orientation, prepare, projections


def test_ras_volume_is_reordered_to_d_superior_h_posterior_w_left():
    vol = np.zeros((4, 5, 6), np.int16)  # RAS: i -> right, j -> anterior, k -> superior
    vol[3, 0, 5] = 7  # the most right, most posterior, most superior voxel
    affine = make_affine((1.0, 2.0, 3.0), "RAS", (10.0, 20.0, 30.0))
    out, out_affine = to_x2ct_order(vol, affine)
    assert out.shape == (6, 5, 4)
    assert out[5, 4, 0] == 7  # D last (superior), H last (posterior), W first (right)
    world = affine @ [3, 0, 5, 1]
    assert np.allclose(out_affine @ [5, 4, 0, 1], world)  # the affine follows the voxels
    lps = make_affine((1.0, 1.0, 1.0), "LPS")  # already L, P, S: only the axis order changes
    assert to_x2ct_order(vol, lps)[0][5, 0, 3] == 7


def test_scanner_values_and_8bit_scaling_follow_ct2xray():
    hu = np.array([-3024, -1024, -1000, 0, 1476, 65000], np.int32)
    assert scanner_values(hu).tolist() == [0, 0, 24, 1024, 2500, 65535]
    assert scanner_values(hu).dtype == np.uint16
    image = np.array([[0.0, 1.0], [2.0, 4.0]])
    assert to_uint8_by_max(image).tolist() == [[0, 63], [127, 255]]  # floor(255 * v / max)
    assert to_uint8_by_max(np.zeros((2, 2))).max() == 0


def test_resize_keeps_end_voxel_centres_in_the_affine():
    vol = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out, affine = resize_volume(vol, np.eye(4), 5)
    assert out.shape == (5, 5, 5) and out[0, 0, 0] == vol[0, 0, 0] and out[-1, -1, -1] == vol[-1, -1, -1]
    assert np.allclose(affine @ [4, 4, 4, 1], [2, 2, 2, 1])


def _phantom(n=48):
    """An L-shaped bone in RAS: a rod along S at the patient's right-anterior, a foot toward the left at the
    bottom, and a block posterior-superior -- no flip or rotation of any view maps it onto itself."""
    hu = np.full((n, n, n), -1000, np.int16)
    hu[30:36, 28:34, 6:42] = 1200  # rod along S, right (high i) and anterior (high j)
    hu[8:36, 28:34, 6:12] = 1200  # foot toward the left at the inferior end
    hu[14:22, 8:16, 30:40] = 800  # block: left of centre, posterior, superior
    return hu


@pytest.mark.parametrize("sizes", [(None, None), (32, 40)])
def test_exported_views_agree_with_the_ct_projection_only_as_stored(sizes):
    n = 48
    hu = _phantom(n)
    affine = make_affine((1.0, 1.0, 1.0), "RAS", (-(n - 1) / 2,) * 3)
    geometry = Geometry(height=64, width=64, pixel_spacing_mm=1.2, sdd_mm=1020.0, sod_mm=850.0)
    mu = np.where(hu > -1000, 0.02 * (1 + hu / 1000.0), 0).astype(np.float32)
    iso = np.zeros(3)
    views = Renderer(mu, affine, geometry).render(np.stack([base_camera(v, geometry.sod_mm, iso) for v in ("AP", "LAT")]))
    attrs = {Attr.AFFINE: affine, Attr.DETECTOR: json.dumps(geometry.record()), Attr.ISOCENTER: iso}
    arrays, _ = x2ct_arrays(hu, views, attrs, *sizes)
    n_ct = sizes[0] or n
    assert arrays[Key.CT].shape == (n_ct,) * 3 and arrays[Key.XRAY1].shape == (sizes[1] or n_ct,) * 2
    assert arrays[Key.XRAY1].dtype == np.uint8 and arrays[Key.XRAY1].max() == 255
    ct, x1, x2 = prepare(arrays[Key.CT], arrays[Key.XRAY1], arrays[Key.XRAY2], fine_size=32, ct_channel=32)
    front, side = projections(ct)
    for projection, view in ((front, x1), (side, x2)):
        scores = agreement_by_orientation(projection, view)
        assert scores["rot0"] > 0.9, scores
        assert scores["rot0"] - max(v for k, v in scores.items() if k != "rot0") > 0.1, scores
