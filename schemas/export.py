"""The record `spineforge export x2ct` writes beside its files (OUT/export.json)."""
from __future__ import annotations

from schemas.layout import X2CT_LIST_SUFFIX
from schemas.shard_layout import Key

# The ranges of X2CT-GAN's multiview2500 experiment config, for which the export is made.
X2CT_GAN_CONFIG = {"CT_MIN_MAX": [0, 2500], "XRAY1_MIN_MAX": [0, 255], "XRAY2_MIN_MAX": [0, 255],
                   "CT_MEAN_STD": [0.0, 1.0], "XRAY1_MEAN_STD": [0.0, 1.0], "XRAY2_MEAN_STD": [0.0, 1.0]}


def x2ct_export_record(source: dict, shapes: dict, lists: dict) -> dict:
    """export.json of `spineforge export x2ct`: what was written, in which conventions, from which version."""
    return {
        "format": "X2CT-GAN ct_xray_data.h5 (kylekma/X2CT, 3DGAN/lib/dataset)",
        "source": source,
        "lists": {f"{k}{X2CT_LIST_SUFFIX}": v for k, v in lists.items()},
        Key.CT: {"shape": shapes[Key.CT], "dtype": "uint16",
                 "values": "HU + 1024, rounded; below -1024 HU stored as 0",
                 "axes": {"D": "index increases toward S (inferior -> superior)", "H": "toward P (anterior -> posterior)",
                          "W": "toward L (patient right -> left)"},
                 "spacing": "the `spacing` dataset, mm per (D, H, W) voxel"},
        Key.XRAY1: {"shape": shapes[Key.XRAY1], "dtype": "uint8", "view": "frontal (source anterior)",
                    "projects_over": "H", "rows": "D", "columns": "W", "values": "floor(255 * v / max(v))"},
        Key.XRAY2: {"shape": shapes[Key.XRAY2], "dtype": "uint8", "view": "lateral (source at patient right)",
                    "projects_over": "W", "rows": "D", "columns": "H", "values": "floor(255 * v / max(v))"},
        "x2ct_gan_config": X2CT_GAN_CONFIG,
        "x2ct_gan_resize": "its loader resizes ct to (ct_channel, fine_size, fine_size) and each X-ray to "
                           "(fine_size, fine_size) (128 in its multiview2500 config; resize_size 150 when it "
                           "random-crops): the exported sizes need not match them",
        "notes": "X-ray pixels sample each stored perspective view at the projections of the CT's mid-plane "
                 "voxel grid, so CT columns and X-ray pixels share indices. Rows run inferior to superior: "
                 "flip rows (np.flipud) to display a view upright.",
    }
