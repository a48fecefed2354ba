"""Samples as the field's own libraries take them: TorchIO subjects, MONAI dictionaries, diffdrr poses.

Every sample carries the voxel -> RAS mm `affine` of its volume; these helpers hand it on, so a
library's spatial transforms keep world coordinates (a landmark stays where it is in the patient).
"""
from __future__ import annotations

import numpy as np
import torch

from pipelines.ops.attenuation import mu_of
from pipelines.ops.camera import camera_for_motion
from pipelines.ops.diffdrr_adapter import diffdrr_module
from schemas.detector import Geometry
from schemas.manifest import Col
from schemas.shard_layout import Attr, Key

LABEL_KEYS = (Key.MASK, Key.LABELS)  # integer volumes: TorchIO LabelMap, nearest-neighbour in MONAI
VOLUME_KEYS = (Key.CT, *LABEL_KEYS)


def _affine(sample: dict) -> np.ndarray:
    affine = sample.get(Attr.AFFINE)
    if affine is None:
        raise KeyError(f"sample has no {Attr.AFFINE!r}: pass a sample as the SpineForge datasets return it")
    return np.asarray(affine, dtype=np.float64)


def to_torchio(sample: dict):
    """A `torchio.Subject` of a vertebra or x2ct sample: `ct` as ScalarImage, `mask`/`labels` as LabelMap,
    each (1, I, J, K) with the sample's affine; other entries (ids, X-rays) ride along unchanged."""
    import torchio as tio

    affine = _affine(sample)
    fields = {}
    for key, value in sample.items():
        if key in VOLUME_KEYS:
            kind = tio.LabelMap if key in LABEL_KEYS else tio.ScalarImage
            tensor = torch.as_tensor(value)
            fields[key] = kind(tensor=(tensor.to(torch.uint8) if key == Key.MASK else tensor)[None], affine=affine)
        elif key != Attr.AFFINE:
            fields[key] = value
    return tio.Subject(fields)


def to_monai(sample: dict) -> dict:
    """A MONAI-style dictionary: volumes as channel-first `monai.data.MetaTensor`s carrying the affine
    (RAS, as MONAI's LoadImaged + EnsureChannelFirstd give), other entries unchanged. Needs MONAI
    (`pip install 'spineforge[monai]'`)."""
    try:
        from monai.data import MetaTensor
        from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys
    except ImportError as exc:  # optional extra
        raise ImportError("to_monai needs MONAI: pip install 'spineforge[monai]' (or pip install monai)") from exc
    affine = torch.as_tensor(_affine(sample))
    out = {}
    for key, value in sample.items():
        if key in VOLUME_KEYS:
            meta = {MetaKeys.AFFINE: affine.clone(), MetaKeys.ORIGINAL_AFFINE: affine.clone(),
                    MetaKeys.SPACE: SpaceKeys.RAS, ImageMetaKey.FILENAME_OR_OBJ: str(sample.get(Col.SAMPLE_ID, ""))}
            out[key] = MetaTensor(torch.as_tensor(value)[None], meta=meta)
        elif key != Attr.AFFINE:
            out[key] = value
    return out


def view_camera(sample: dict, view: int, geometry: Geometry) -> np.ndarray:
    """Camera extrinsic (4x4, world RAS mm) of view `view` of a drr sample: diffdrr's pose for that view."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in sample[Key.VIEW_NAMES]]
    motion = np.asarray(sample[Key.POSE_MATRICES][view], dtype=np.float64)
    centre = np.asarray(sample[Key.ROTATION_CENTER], dtype=np.float64)
    return camera_for_motion(names[view], geometry.sod_mm, centre, motion)


def diffdrr_pose(sample: dict, view: int, geometry: Geometry):
    """`diffdrr.pose.RigidTransform` that makes `diffdrr_drr(...)` render view `view` of a drr sample."""
    from diffdrr.pose import RigidTransform

    return RigidTransform(torch.as_tensor(view_camera(sample, view, geometry)[None], dtype=torch.float32))


def diffdrr_drr(ct_hu: np.ndarray, affine: np.ndarray, geometry: Geometry, attenuation,
                renderer: str = "siddon"):
    """`diffdrr.drr.DRR` over a 1 mm RAS CT (the build's resampled case volume, as `affine` says), with
    the version's detector and HU -> attenuation settings (`DRRDataset.geometry`, `.attenuation`), so
    pixels are line integrals like the stored views."""
    return diffdrr_module(mu_of(ct_hu, attenuation), affine, geometry, renderer)
