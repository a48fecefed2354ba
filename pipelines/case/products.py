"""The products of one prepared case (crop, sample, render; docs/design.md, step 2): vertebra patches, X2CT patches
with X-rays, DRR pairs, and the whole resampled volume (for views rendered while training).

Each builder returns Sample records; nothing here touches files.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipelines.case.prepare import PreparedCase
from pipelines.ingest.labels import level_id
from pipelines.ops.attenuation import mu_of
from pipelines.ops.camera import base_camera
from pipelines.ops.crop import (
    bbox_centre,
    bounding_box,
    box_slices,
    centre_of_mass,
    crop_around,
    shifted_affine,
)
from pipelines.ops.drr import Renderer
from pipelines.ops.orient import Volume, axis_codes, craniocaudal_axis, voxel_to_world
from pipelines.ops.sampling import rng_for, sample_vertebra_pair
from pipelines.physics.draw import XRAY_DRAWS, noise_seeds
from pipelines.physics.realistic import RealisticRenderer
from pipelines.physics.render import Scene, Views, draw_xray, render_views, sample_poses
from schemas.config import BuildConfig
from schemas.detector import VIEWS, Geometry
from schemas.manifest import DRR, VERTEBRA, VOLUME, X2CT, SampleRow, sample_id
from schemas.shard_layout import (
    VIEW_NAME_DTYPE,
    Attr,
    Key,
    sample_datasets,
    volume_dims,
    xray_for,
)

Progress = Callable[[str], None]
POSE_CONVENTION = "x' = R (x - c) + t + c; params (rx, ry, rz) rad, (tx, ty, tz) mm"


@dataclass
class Sample:
    """One sample's HDF5 group (datasets in shard-layout order, attributes) and its manifest row."""

    row: SampleRow
    datasets: dict[str, np.ndarray]
    attrs: dict

    @property
    def sample_id(self) -> str:
        return self.row.sample_id

    @property
    def product(self) -> str:
        return self.row.product


def geometry_from(config: BuildConfig) -> Geometry:
    d = config.detector
    return Geometry(d.height, d.width, d.pixel_spacing_mm, d.sdd_mm, d.sod_mm, d.renderer,
                    d.samples_per_voxel, d.reverse_x_axis, d.error_budget)


def _geometry_attrs(volume_affine: np.ndarray) -> dict:
    spacing = np.linalg.norm(volume_affine[:3, :3], axis=0)
    return {Attr.AFFINE: volume_affine, Attr.SPACING: spacing, Attr.ORIENTATION: axis_codes(volume_affine)}


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
            SampleRow(sample_id(case.case_id, VERTEBRA, level), VERTEBRA, level=level, padded_fraction=padded,
                      cut_by_border=cut),
            sample_datasets(VERTEBRA, config, {Key.CT: ct, Key.MASK: labels == lid, Key.LABELS: labels}),
            {Attr.LEVEL: level, Attr.PADDED_FRACTION: padded, Attr.CUT_BY_BORDER: cut, Attr.CENTRE_MODE: cfg.centre,
             **_geometry_attrs(affine)},
        ))
    return out


def x2ct_samples(case: PreparedCase, config: BuildConfig, progress: Progress, skipped: list[str]) -> list[Sample]:
    size = config.x2ct.size
    geometry = geometry_from(config)
    axis, sign = craniocaudal_axis(case.ct.affine)
    spacing = case.ct.spacing
    realistic = xray_for(X2CT, config)  # realistic views beside the exact ones (no instruments in x2ct)
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
        renderer = Renderer(mu_of(ct, config.attenuation), affine, geometry)
        scene = Scene(renderer, RealisticRenderer(renderer, config.xray, config.attenuation) if realistic else None)
        cameras = np.stack([base_camera(v, geometry.sod_mm, iso) for v in VIEWS])
        sid = sample_id(case.case_id, X2CT, f"z{offset:+.0f}")
        xray = (draw_xray(rng_for(config.seed, case.case_id, f"{XRAY_DRAWS}-{X2CT}", n), config.xray,
                          noise_seeds(config.seed, sid, len(cameras))) if realistic else None)
        views = render_views(scene, cameras, xray=xray)
        arrays, attrs = {}, {}
        if xray is not None:
            arrays = {Key.XRAY1_XRAY: views.realistic[0], Key.XRAY2_XRAY: views.realistic[1]}
            attrs = {Attr.XRAY: xray.record()}
        progress(f"x2ct {n + 1}/{len(config.x2ct.z_offsets_mm)} (z {offset:+.0f} mm)")
        out.append(Sample(
            SampleRow(sid, X2CT, z_offset_mm=float(offset), padded_fraction=padded, n_views=2),
            sample_datasets(X2CT, config, {Key.CT: ct, Key.XRAY1: views.whole[0], Key.XRAY2: views.whole[1],
                                           Key.SPACING: spacing, Key.ORI_SIZE: case.ct.array.shape, **arrays}),
            {Attr.Z_OFFSET_MM: float(offset), Attr.PADDED_FRACTION: padded, Attr.BODY_FRACTION: body,
             Attr.ISOCENTER: iso, Attr.DETECTOR: renderer.record(), Attr.ATTENUATION: config.attenuation.model_dump(),
             **attrs, **_geometry_attrs(affine)},
        ))
    return out


def _vertebra_only(case: PreparedCase, config: BuildConfig, level: str) -> Volume:
    """Attenuation of one vertebra alone, cut to its bounding box plus a zero margin."""
    lid = level_id(level)
    mask = case.labels.array == lid
    box = box_slices(bounding_box(mask), config.drr.vertebra_margin_vox, mask.shape)
    mu = np.where(mask[box], mu_of(case.ct.array[box], config.attenuation), np.float32(0))
    return Volume(mu, shifted_affine(case.ct.affine, np.array([s.start for s in box])))


def drr_scene(case: PreparedCase, config: BuildConfig) -> Scene:
    """The whole case as its drr views see it: one 'traversal' walk gives whole, vertebra-only and
    realistic images; other renderers make the exact images only."""
    geometry = geometry_from(config)
    one_walk = geometry.renderer == "traversal"
    renderer = Renderer(mu_of(case.ct.array, config.attenuation), case.ct.affine, geometry,
                        labels=case.labels.array if one_walk else None)
    realistic = RealisticRenderer(renderer, config.xray, config.attenuation) if xray_for(DRR, config) else None
    return Scene(renderer, realistic, case.labels.array, case.ct.affine, tuple(level_id(lv) for lv in case.levels))


def _exact_views(scene: Scene, case: PreparedCase, config: BuildConfig, cameras: np.ndarray, target: str) -> Views:
    """The exact views of a renderer that cannot walk labels: the whole volume, and the vertebra alone."""
    vert = _vertebra_only(case, config, target)
    return Views(scene.renderer.render(cameras),
                 Renderer(vert.array, vert.affine, scene.renderer.geometry).render(cameras))


def drr_samples(case: PreparedCase, config: BuildConfig, progress: Progress, skipped: list[str]) -> list[Sample]:
    cfg = config.drr
    scene = drr_scene(case, config)
    geometry = scene.renderer.geometry
    rot_range = np.deg2rad(cfg.rotation_range_deg)
    out = []
    for p in range(cfg.pairs_per_case):
        rng = rng_for(config.seed, case.case_id, DRR, p)
        pair = sample_vertebra_pair(case.levels, cfg.level_offsets, rng)
        if pair is None:
            skipped.append(f"drr pair {p}: no valid reference/offset among {len(case.levels)} vertebrae")
            continue
        ref, target = pair
        centre = voxel_to_world(case.ct.affine, centre_of_mass(case.labels.array == level_id(ref)))[0]
        poses = sample_poses(rng, cfg.poses_per_pair, VIEWS, centre, geometry.sod_mm, rot_range,
                             cfg.translation_range_mm, cfg.euler_convention)
        sid = sample_id(case.case_id, DRR, f"{p:03d}")
        xray = None
        if scene.realistic is not None:
            xray = draw_xray(rng_for(config.seed, case.case_id, f"{XRAY_DRAWS}-{DRR}", p), config.xray,
                             noise_seeds(config.seed, sid, len(poses)), scene, level_id(target))
        if geometry.renderer == "traversal":
            views = render_views(scene, poses.cameras, level_id(target), xray)
        else:
            views = _exact_views(scene, case, config, poses.cameras, target)
        arrays, attrs = {}, {}
        if xray is not None:
            arrays = {Key.DRR_XRAY: views.realistic, Key.INSTRUMENT_MASK: views.instrument_mask,
                      Key.INSTRUMENT_IDS: views.instrument_ids}
            attrs = {Attr.XRAY: xray.record()}
        progress(f"drr pair {p + 1}/{cfg.pairs_per_case} ({ref} -> {target}, {len(poses)} views)")
        out.append(Sample(
            SampleRow(sid, DRR, ref_level=ref, target_level=target, n_views=len(poses)),
            sample_datasets(DRR, config, {Key.DRR: views.whole, Key.DRR_VERTEBRA: views.part,
                                          Key.POSE_PARAMS: poses.params, Key.POSE_MATRICES: poses.matrices,
                                          Key.VIEW_NAMES: np.array(poses.names, dtype=VIEW_NAME_DTYPE),
                                          Key.ROTATION_CENTER: centre, **arrays}, n_views=len(poses)),
            {Attr.REF_LEVEL: ref, Attr.TARGET_LEVEL: target, Attr.EULER_CONVENTION: cfg.euler_convention,
             Attr.POSE_CONVENTION: POSE_CONVENTION, Attr.DETECTOR: scene.renderer.record(),
             Attr.ATTENUATION: config.attenuation.model_dump(), **attrs, **_geometry_attrs(case.ct.affine)},
        ))
    return out


def vertebra_boxes(labels: np.ndarray, level_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per level id: the voxel box (2, 3: first, last + 1) and the centre of mass (voxel index)."""
    found = ndimage.find_objects(labels, max_label=max(level_ids, default=0))
    boxes, centres = [], []
    for lid in level_ids:
        box = found[lid - 1]
        lo = np.array([b.start for b in box])
        boxes.append([lo, [b.stop for b in box]])
        centres.append(np.argwhere(labels[box] == lid).mean(axis=0) + lo)
    return np.array(boxes, dtype=np.int32).reshape(-1, 2, 3), np.array(centres, dtype=np.float64).reshape(-1, 3)


def volume_samples(case: PreparedCase, config: BuildConfig) -> list[Sample]:
    """The case's whole canonical-grid CT and label map, with its vertebrae's boxes and centres."""
    ids = [level_id(level) for level in case.levels]
    boxes, centres = vertebra_boxes(case.labels.array, ids)
    return [Sample(
        SampleRow(sample_id(case.case_id, VOLUME, "whole"), VOLUME),
        sample_datasets(VOLUME, config, {Key.CT: case.ct.array, Key.LABELS: case.labels.array,
                                         Key.LEVEL_IDS: np.array(ids, dtype=np.uint8), Key.VERTEBRA_BOXES: boxes,
                                         Key.VERTEBRA_CENTRES: voxel_to_world(case.ct.affine, centres)},
                        dims=volume_dims(case.ct.array.shape, len(ids))),
        {Attr.LEVELS: list(case.levels), Attr.CUT_LEVELS: sorted(case.cut_levels),
         Attr.ATTENUATION: config.attenuation.model_dump(), **_geometry_attrs(case.ct.affine)},
    )]
