"""HDF5 shard layout: one group per sample, keys and dtypes per product.

Shapes depend on the build config (patch size, detector), so they are given as functions of it.
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas.config import BuildConfig

# Attributes every sample group carries.
GROUP_ATTRS = ("schema_version", "product", "case_id", "split", "spacing", "orientation", "affine")


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    dtype: str
    shape: tuple  # may contain "V" for the number of views


def product_datasets(product: str, config: BuildConfig) -> list[DatasetSpec]:
    """The datasets a group of `product` must hold, with dtypes and shapes."""
    det = (config.detector.height, config.detector.width)
    if product == "x2ct":
        n = config.x2ct.size
        return [
            DatasetSpec("ct", "int16", (n, n, n)),
            DatasetSpec("xray1", "float32", det),  # AP
            DatasetSpec("xray2", "float32", det),  # lateral
            DatasetSpec("spacing", "float64", (3,)),
            DatasetSpec("ori_size", "int64", (3,)),
        ]
    if product == "vertebra":
        n = config.vertebra.size
        return [
            DatasetSpec("ct", "int16", (n, n, n)),
            DatasetSpec("mask", "uint8", (n, n, n)),
            DatasetSpec("labels", "uint8", (n, n, n)),
        ]
    if product == "drr":
        return [
            DatasetSpec("drr", "float32", ("V", *det)),
            DatasetSpec("drr_vertebra", "float32", ("V", *det)),
            DatasetSpec("pose_params", "float64", ("V", 6)),
            DatasetSpec("pose_matrices", "float64", ("V", 4, 4)),
            DatasetSpec("view_names", "S3", ("V",)),
            DatasetSpec("rotation_center", "float64", (3,)),
        ]
    raise KeyError(f"unknown product {product!r}")


# Product-specific group attributes.
PRODUCT_ATTRS = {
    "x2ct": ("z_offset_mm", "padded_fraction", "body_fraction", "attenuation", "detector"),
    "vertebra": ("level", "padded_fraction", "cut_by_border", "centre_mode"),
    "drr": ("ref_level", "target_level", "euler_convention", "detector", "attenuation", "pose_convention"),
}

VIEW_AP = b"AP"
VIEW_LAT = b"LAT"
