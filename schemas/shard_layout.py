"""HDF5 shard layout: one group per sample, its datasets (keys, dtypes, shapes) and attributes.

Shapes depend on the build config (patch size, detector), so they are given as functions of it.
Products build their groups from these specs (`sample_datasets`), readers check against them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.config import BuildConfig
from schemas.manifest import DRR, VERTEBRA, VOLUME, X2CT


class Key:
    """Dataset names inside a sample group (x2ct's are the names X2CT-GAN reads)."""

    CT, MASK, LABELS = "ct", "mask", "labels"
    XRAY1, XRAY2, SPACING, ORI_SIZE = "xray1", "xray2", "spacing", "ori_size"
    DRR, DRR_VERTEBRA = "drr", "drr_vertebra"
    DRR_XRAY, INSTRUMENT_MASK, XRAY1_XRAY, XRAY2_XRAY = "drr_xray", "instrument_mask", "xray1_xray", "xray2_xray"
    INSTRUMENT_IDS = "instrument_ids"  # bit k: the ray crosses instrument k of the group's xray record
    POSE_PARAMS, POSE_MATRICES, VIEW_NAMES, ROTATION_CENTER = (
        "pose_params", "pose_matrices", "view_names", "rotation_center")
    LEVEL_IDS, VERTEBRA_BOXES, VERTEBRA_CENTRES = "level_ids", "vertebra_boxes", "vertebra_centres"
    CAMERAS = "cameras"  # views rendered while training: each view's camera (diffdrr's extrinsic)
    RADIOGRAPH, VALID = "real_image", "valid"  # a loaded real radiograph, and where it holds real image data


# Datasets holding X-ray images (single views or V x H x W stacks): exact line integrals, and the
# realistic (physics-based, noisy; -ln(I/I0) in radiograph polarity) views beside them.
EXACT_IMAGE_KEYS = (Key.XRAY1, Key.XRAY2, Key.DRR, Key.DRR_VERTEBRA)
REALISTIC_IMAGE_KEYS = (Key.DRR_XRAY, Key.XRAY1_XRAY, Key.XRAY2_XRAY)
IMAGE_KEYS = EXACT_IMAGE_KEYS + REALISTIC_IMAGE_KEYS
# Datasets stored one chunk per view.
VIEW_STACK_KEYS = (Key.DRR, Key.DRR_VERTEBRA, Key.DRR_XRAY, Key.INSTRUMENT_MASK, Key.INSTRUMENT_IDS)


class Attr:
    """Attribute names of a sample group."""

    SCHEMA_VERSION, PRODUCT, CASE_ID, SPLIT = "schema_version", "product", "case_id", "split"
    SPACING, ORIENTATION, AFFINE = "spacing", "orientation", "affine"
    LEVEL, PADDED_FRACTION, CUT_BY_BORDER, CENTRE_MODE = "level", "padded_fraction", "cut_by_border", "centre_mode"
    Z_OFFSET_MM, BODY_FRACTION, ISOCENTER = "z_offset_mm", "body_fraction", "isocenter"
    LEVELS, CUT_LEVELS = "levels", "cut_levels"  # volume: level names cranial -> caudal, those cut by the border
    DETECTOR, ATTENUATION = "detector", "attenuation"
    XRAY = "xray"  # physics record of the realistic views (JSON): drawn parameters, instruments, noise seeds
    REF_LEVEL, TARGET_LEVEL, EULER_CONVENTION, POSE_CONVENTION = (
        "ref_level", "target_level", "euler_convention", "pose_convention")


# Attributes every sample group carries.
GROUP_ATTRS = (Attr.SCHEMA_VERSION, Attr.PRODUCT, Attr.CASE_ID, Attr.SPLIT, Attr.SPACING, Attr.ORIENTATION,
               Attr.AFFINE)

# Product-specific group attributes.
PRODUCT_ATTRS = {
    X2CT: (Attr.Z_OFFSET_MM, Attr.PADDED_FRACTION, Attr.BODY_FRACTION, Attr.ATTENUATION, Attr.DETECTOR),
    VERTEBRA: (Attr.LEVEL, Attr.PADDED_FRACTION, Attr.CUT_BY_BORDER, Attr.CENTRE_MODE),
    DRR: (Attr.REF_LEVEL, Attr.TARGET_LEVEL, Attr.EULER_CONVENTION, Attr.DETECTOR, Attr.ATTENUATION,
          Attr.POSE_CONVENTION),
    VOLUME: (Attr.LEVELS, Attr.CUT_LEVELS, Attr.ATTENUATION),
}

class XrayField:
    """Fields of the xray attribute's JSON record (`pipelines.physics.draw.XrayRecord`): the drawn physics,
    the instruments, one noise seed per view and the name of the noise seeds' generator stream."""

    PHYSICS, INSTRUMENTS, NOISE_SEEDS, SEED_STREAM = "physics", "instruments", "noise_seeds", "seed_stream"


XRAY_RECORD_FIELDS = (XrayField.PHYSICS, XrayField.INSTRUMENTS, XrayField.NOISE_SEEDS, XrayField.SEED_STREAM)

VIEW_NAME_DTYPE = "S3"


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    dtype: str
    shape: tuple  # may contain "V" (views), "X", "Y", "Z" (the case's grid) and "L" (its vertebrae)


def xray_for(product: str, config: BuildConfig) -> bool:
    """Whether a product's samples carry realistic (physics-based) views under this config."""
    return config.xray.enabled and (product == DRR or (product == X2CT and config.xray.x2ct))


def product_attrs(product: str, config: BuildConfig) -> tuple[str, ...]:
    """The product-specific attributes a group must carry under this config."""
    return PRODUCT_ATTRS[product] + ((Attr.XRAY,) if xray_for(product, config) else ())


def product_datasets(product: str, config: BuildConfig) -> list[DatasetSpec]:
    """The datasets a group of `product` must hold, with dtypes and shapes."""
    det = (config.detector.height, config.detector.width)
    if product == X2CT:
        n = config.x2ct.size
        realistic = [DatasetSpec(Key.XRAY1_XRAY, "float32", det), DatasetSpec(Key.XRAY2_XRAY, "float32", det)]
        return [
            DatasetSpec(Key.CT, "int16", (n, n, n)),
            DatasetSpec(Key.XRAY1, "float32", det),  # AP
            DatasetSpec(Key.XRAY2, "float32", det),  # lateral
            DatasetSpec(Key.SPACING, "float64", (3,)),
            DatasetSpec(Key.ORI_SIZE, "int64", (3,)),
        ] + (realistic if xray_for(X2CT, config) else [])
    if product == VERTEBRA:
        n = config.vertebra.size
        return [
            DatasetSpec(Key.CT, "int16", (n, n, n)),
            DatasetSpec(Key.MASK, "uint8", (n, n, n)),
            DatasetSpec(Key.LABELS, "uint8", (n, n, n)),
        ]
    if product == DRR:
        return [
            DatasetSpec(Key.DRR, "float32", ("V", *det)),
            DatasetSpec(Key.DRR_VERTEBRA, "float32", ("V", *det)),
            DatasetSpec(Key.POSE_PARAMS, "float64", ("V", 6)),
            DatasetSpec(Key.POSE_MATRICES, "float64", ("V", 4, 4)),
            DatasetSpec(Key.VIEW_NAMES, VIEW_NAME_DTYPE, ("V",)),
            DatasetSpec(Key.ROTATION_CENTER, "float64", (3,)),
        ] + ([DatasetSpec(Key.DRR_XRAY, "float32", ("V", *det)), DatasetSpec(Key.INSTRUMENT_MASK, "uint8", ("V", *det)),
              DatasetSpec(Key.INSTRUMENT_IDS, "int32", ("V", *det))]
             if xray_for(DRR, config) else [])
    if product == VOLUME:
        return [
            DatasetSpec(Key.CT, "int16", ("X", "Y", "Z")),
            DatasetSpec(Key.LABELS, "uint8", ("X", "Y", "Z")),
            DatasetSpec(Key.LEVEL_IDS, "uint8", ("L",)),  # canonical ids, cranial -> caudal
            DatasetSpec(Key.VERTEBRA_BOXES, "int32", ("L", 2, 3)),  # voxel box per vertebra: first, last + 1
            DatasetSpec(Key.VERTEBRA_CENTRES, "float64", ("L", 3)),  # centre of mass, world mm (drr's centre)
        ]
    raise KeyError(f"unknown product {product!r}")


def expected_shape(spec: DatasetSpec, n_views: int, dims: dict | None = None) -> tuple:
    """A spec's shape with its symbols filled: V from `n_views`, X/Y/Z/L from `dims` (a volume's own)."""
    sizes = {"V": n_views, **(dims or {})}
    return tuple(sizes.get(s, s) if isinstance(s, str) else s for s in spec.shape)


def volume_dims(ct_shape: tuple, n_levels: int) -> dict:
    return {"X": ct_shape[0], "Y": ct_shape[1], "Z": ct_shape[2], "L": n_levels}


def sample_datasets(product: str, config: BuildConfig, arrays: dict, n_views: int = 0,
                    dims: dict | None = None) -> dict[str, np.ndarray]:
    """A sample group's datasets in spec order, each in its spec dtype; a missing, extra or
    misshapen array is a programming error and raises ValueError naming it."""
    specs = product_datasets(product, config)
    extra = set(arrays) - {s.key for s in specs}
    if extra:
        raise ValueError(f"{product}: datasets {sorted(extra)} are not in the shard layout")
    out = {}
    for spec in specs:
        if spec.key not in arrays:
            raise ValueError(f"{product}: dataset {spec.key!r} missing")
        array = np.asarray(arrays[spec.key]).astype(spec.dtype, copy=False)
        shape = expected_shape(spec, n_views, dims)
        if array.shape != shape:
            raise ValueError(f"{product}/{spec.key}: shape {array.shape}, layout says {shape}")
        out[spec.key] = array
    return out
