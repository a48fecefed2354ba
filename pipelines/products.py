"""Steps 5-7 for one prepared case: vertebra patches, X2CT patches with X-rays, DRR pairs.

Each builder returns Sample records; nothing here touches files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pipelines.ingest.labels import level_id
from pipelines.ops.attenuation import hu_to_mu
from pipelines.ops.crop import bbox_centre, bounding_box, centre_of_mass, crop_around, shifted_affine
from pipelines.ops.drr import Geometry, Renderer, base_camera, camera_for_motion
from pipelines.ops.orient import Volume, axis_codes, craniocaudal_axis, voxel_to_world
from pipelines.ops.sampling import pose_to_matrix, rng_for, sample_pose, sample_vertebra_pair
from pipelines.preprocess import PreparedCase
from schemas.config import BuildConfig
from schemas.shard_layout import VIEW_AP, VIEW_LAT

Progress = Callable[[str], None]


@dataclass
class Sample:
    sample_id: str
    product: str
    datasets: dict[str, np.ndarray]
    attrs: dict
    row: dict = field(default_factory=dict)  # product-specific manifest fields
    view_stacks: tuple[str, ...] = ()


def sample_id(case_id: str, product: str, tag: str) -> str:
    return f"{case_id}__{product}__{tag}"


def geometry_from(config: BuildConfig) -> Geometry:
    d = config.detector
    return Geometry(d.height, d.width, d.pixel_spacing_mm, d.sdd_mm, d.sod_mm, d.renderer,
                    d.samples_per_voxel, d.reverse_x_axis)


def _mu(config: BuildConfig, hu: np.ndarray) -> np.ndarray:
    a = config.attenuation
    return hu_to_mu(hu, a.mu_water_per_mm, a.bone_threshold_hu, a.bone_multiplier)


def _geometry_attrs(volume_affine: np.ndarray) -> dict:
    spacing = np.linalg.norm(volume_affine[:3, :3], axis=0)
    return {"affine": volume_affine, "spacing": spacing, "orientation": axis_codes(volume_affine)}


def vertebra_samples(case: PreparedCase, config: BuildConfig, skipped: list[str]) -> list[Sample]:
    cfg = config.vertebra
    centre_of = bbox_centre if cfg.centre == "bbox" else centre_of_mass
    out = []
    for level in cfg.levels:
        if level not in case.levels:
            continue
        cut = level in case.cut_levels
        if cut and cfg.border_policy == "skip":
            skipped.append(f"vertebra {level}: cut by the scan border")
            continue
        lid = level_id(level)
        centre = centre_of(case.labels.array == lid)
        ct, start, padded = crop_around(case.ct.array, centre, cfg.size, config.resample.ct_pad_hu)
        labels, _, _ = crop_around(case.labels.array, centre, cfg.size, 0)
        affine = shifted_affine(case.ct.affine, start)
        out.append(Sample(
            sample_id(case.case_id, "vertebra", level), "vertebra",
            {"ct": ct.astype(np.int16), "mask": (labels == lid).astype(np.uint8), "labels": labels},
            {"level": level, "padded_fraction": padded, "cut_by_border": cut, "centre_mode": cfg.centre,
             **_geometry_attrs(affine)},
            {"level": level, "padded_fraction": padded, "cut_by_border": cut},
        ))
    return out


def x2ct_samples(case: PreparedCase, config: BuildConfig, progress: Progress, skipped: list[str]) -> list[Sample]:
    size = config.x2ct.size
    geometry = geometry_from(config)
    axis, sign = craniocaudal_axis(case.ct.affine)
    spacing = case.ct.spacing
    out = []
    for n, offset in enumerate(config.x2ct.z_offsets_mm):
        centre = (np.array(case.ct.array.shape) - 1) / 2.0
        centre[axis] += sign * offset / spacing[axis]
        ct, start, padded = crop_around(case.ct.array, centre, size, config.resample.ct_pad_hu)
        body = float(np.mean(ct > config.x2ct.body_threshold_hu))
        if body < config.x2ct.min_body_fraction:
            skipped.append(f"x2ct z{offset:+.0f}: {body:.1%} body voxels < {config.x2ct.min_body_fraction:.0%}")
            progress(f"skipped {skipped[-1]}")
            continue
        affine = shifted_affine(case.ct.affine, start)
        iso = voxel_to_world(affine, (np.array(ct.shape) - 1) / 2.0)[0]
        renderer = Renderer(_mu(config, ct), affine, geometry)
        views = renderer.render(np.stack([base_camera(v, geometry.sod_mm, iso) for v in ("AP", "LAT")]))
        progress(f"x2ct {n + 1}/{len(config.x2ct.z_offsets_mm)} (z {offset:+.0f} mm)")
        out.append(Sample(
            sample_id(case.case_id, "x2ct", f"z{offset:+.0f}"), "x2ct",
            {"ct": ct.astype(np.int16), "xray1": views[0], "xray2": views[1],
             "spacing": spacing.astype(np.float64), "ori_size": np.array(case.ct.array.shape, np.int64)},
            {"z_offset_mm": float(offset), "padded_fraction": padded, "body_fraction": body, "isocenter": iso,
             "detector": geometry.record(), "attenuation": config.attenuation.model_dump(),
             **_geometry_attrs(affine)},
            {"z_offset_mm": float(offset), "padded_fraction": padded, "n_views": 2},
        ))
    return out


def _vertebra_only(case: PreparedCase, config: BuildConfig, level: str) -> Volume:
    """Attenuation of one vertebra alone, cut to its bounding box plus a zero margin."""
    lid = level_id(level)
    mask = case.labels.array == lid
    lo, hi = bounding_box(mask)
    margin = config.drr.vertebra_margin_vox
    lo = np.maximum(lo - margin, 0)
    hi = np.minimum(hi + margin + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    mu = np.where(mask[box], _mu(config, case.ct.array[box]), np.float32(0))
    return Volume(mu, shifted_affine(case.ct.affine, lo))


def drr_samples(case: PreparedCase, config: BuildConfig, progress: Progress, skipped: list[str]) -> list[Sample]:
    cfg = config.drr
    geometry = geometry_from(config)
    whole = Renderer(_mu(config, case.ct.array), case.ct.affine, geometry)
    rot_range = np.deg2rad(cfg.rotation_range_deg)
    out = []
    for p in range(cfg.pairs_per_case):
        rng = rng_for(config.seed, case.case_id, "drr", p)
        pair = sample_vertebra_pair(case.levels, cfg.level_offsets, rng)
        if pair is None:
            skipped.append(f"drr pair {p}: no valid reference/offset among {len(case.levels)} vertebrae")
            continue
        ref, target = pair
        centre = voxel_to_world(case.ct.affine, centre_of_mass(case.labels.array == level_id(ref)))[0]
        params, matrices, cameras, names = [], [], [], []
        for _ in range(cfg.poses_per_pair):
            theta = sample_pose(rng, rot_range, cfg.translation_range_mm)
            motion = pose_to_matrix(theta, centre, cfg.euler_convention)
            for view, name in (("AP", VIEW_AP), ("LAT", VIEW_LAT)):
                params.append(theta)
                matrices.append(motion)
                cameras.append(camera_for_motion(view, geometry.sod_mm, centre, motion))
                names.append(name)
        cameras = np.stack(cameras)
        drr = whole.render(cameras)
        vert = _vertebra_only(case, config, target)
        drr_vertebra = Renderer(vert.array, vert.affine, geometry).render(cameras)
        progress(f"drr pair {p + 1}/{cfg.pairs_per_case} ({ref} -> {target}, {len(cameras)} views)")
        out.append(Sample(
            sample_id(case.case_id, "drr", f"{p:03d}"), "drr",
            {"drr": drr, "drr_vertebra": drr_vertebra, "pose_params": np.stack(params),
             "pose_matrices": np.stack(matrices), "view_names": np.array(names, dtype="S3"),
             "rotation_center": centre},
            {"ref_level": ref, "target_level": target, "euler_convention": cfg.euler_convention,
             "pose_convention": "x' = R (x - c) + t + c; params (rx, ry, rz) rad, (tx, ty, tz) mm",
             "detector": geometry.record(), "attenuation": config.attenuation.model_dump(),
             **_geometry_attrs(case.ct.affine)},
            {"ref_level": ref, "target_level": target, "n_views": len(cameras)},
            view_stacks=("drr", "drr_vertebra"),
        ))
    return out
