"""Digitally reconstructed radiographs of one volume, in SpineForge's world frame (`ops.camera`).

Intensities: the caller passes linear attenuation (1/mm), never diffdrr's per-volume min-max
normalisation, so a pixel is the dimensionless line integral of mu along its ray.

Renderers (all use diffdrr's detector rays and calibration, `ops.diffdrr_adapter`):
- 'traversal' (default): the exact integral of the voxel-constant volume - Siddon's model - by one
  fused voxel walk per ray (`ops.traversal`: numba on CPU, the same float64 arithmetic in torch on
  CUDA); it also gives the vertebra-only image from the same walk (`render_labelled`), and the
  material hinge integrals of realistic views (`walk`).
- 'clipped_trilinear' (`ops.trilinear`): each ray clipped to the volume's box and sampled with
  border-clamped trilinear interpolation; its sampling density is `samples_per_voxel` when given,
  otherwise the cheapest density whose error against the exact integral stays within `error_budget`
  on calibration rays (`calibrate_sampling`). The density used is recorded, so a stored view
  re-renders exactly.
- diffdrr's own 'siddon' and 'trilinear' (fixed sample count over the whole batch).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numba
import numpy as np
import torch
from diffdrr.pose import RigidTransform
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from pipelines.ops.camera import AP_REORIENT, base_camera
from pipelines.ops.crop import bounding_box, box_slices, shifted_affine
from pipelines.ops.diffdrr_adapter import (
    default_device,
    detector_calibration,
    detector_grid,
    diffdrr_module,
    module_affine,
)
from pipelines.ops.ray_batch import cuda_walk_available, walk_rays
from pipelines.ops.traversal import (
    label_boxes,
    label_table,
    occupancy,
    traverse_hinges_numba,
    traverse_numba,
    traverse_torch,
)
from pipelines.ops.trilinear import CHUNK_RAYS_CPU, CHUNK_RAYS_GPU, integrate_clipped
from schemas.detector import RENDERERS, VIEWS, Geometry

# the traversal's kernels: CPU numba; its per-ray function compiled for the GPU by numba ('cuda'); its
# float64 torch twin (any device)
WALKERS = ("numba", "cuda", "torch")
SAMPLING_LADDER = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)  # samples per voxel tried by calibration, cheapest first

CHUNK_WALK_GPU, CHUNK_WALK_CPU = 1 << 21, 1 << 16  # rays per torch walk step on CUDA / on the CPU
CALIBRATION_STRIDE = 8  # calibration rays: every 8th detector row and column of the base AP and LAT views



@dataclass(frozen=True)
class Walk:
    """One view's traversal with material hinge integrals (`Renderer.walk`)."""

    whole: np.ndarray  # (H, W) float32: the exact image, as `render_labelled` gives it
    part: np.ndarray  # (H, W) float32: the labelled part's image (zeros without a label)
    line: np.ndarray  # (H*W,) float64: the whole image before rounding
    hinges: np.ndarray | None  # (H*W, 1 + knots) float64: length in the volume (mm) and hinge integrals
    source: np.ndarray  # (3,) world mm
    targets: np.ndarray  # (H*W, 3) world mm: detector pixel centres
    raylen: np.ndarray  # (H*W,) mm: source to pixel
    # (line, hinges, raylen) as tensors where the walk ran ('cuda' and 'torch' walkers), for synthesis
    # there (`RealisticRenderer` on a device); None from the numba walker
    on_device: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None


def default_walker(device: torch.device) -> str:
    """'cuda' on a CUDA device where numba's CUDA target runs, else 'torch' there; 'numba' on the CPU."""
    if device.type == "cpu":
        return "numba"
    return "cuda" if device.type == "cuda" and cuda_walk_available() else "torch"


def support_box(mu: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Index box of the non-zero voxels plus a zero margin; None when it would not save 10 %.

    Cutting a volume to it is exact for line integrals: rays are clipped to the box, so air around
    the body costs nothing, and the margin keeps a layer of zeros at the faces (border clamping of
    the trilinear path adds nothing there).
    """
    box = bounding_box(mu != 0)
    if box is None:
        return None
    slices = box_slices(box, margin, mu.shape)
    if np.prod([s.stop - s.start for s in slices]) > 0.9 * mu.size:
        return None
    return slices


class Renderer:
    """One volume, rendered from any number of cameras; diffdrr's DRR module supplies rays and calibration.

    `labels` (same grid as `mu`, uint8) lets the 'traversal' renderer give a labelled part's image
    from the same walk as the whole image (`render_labelled`).

    `walker` picks the traversal's kernel: 'numba' (the CPU kernel, one view at a time, each ray clipped
    to its occupied blocks), 'cuda' (the same per-ray function compiled by numba for the GPU of a CUDA
    `device`, one thread a ray, every view of a call in one launch) or 'torch' (its float64
    twin on `device`, every view of a call in one batch of rays: the same images on the CPU, bit for
    bit). Default: 'cuda' on CUDA (`default_walker`), 'numba' otherwise.
    """

    def __init__(self, mu: np.ndarray, affine: np.ndarray, geometry: Geometry,
                 device: torch.device | str | None = None, labels: np.ndarray | None = None,
                 walker: str | None = None):
        if geometry.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, got {geometry.renderer!r}")
        self.device = torch.device(device) if device is not None else default_device()
        self.walker = walker or default_walker(self.device)
        if self.walker not in WALKERS:
            raise ValueError(f"walker must be one of {WALKERS}, got {self.walker!r}")
        if self.walker == "numba" and self.device.type != "cpu":
            raise ValueError(f"the numba walker runs on the CPU; on {self.device} use walker='cuda' or 'torch'")
        if self.walker == "cuda" and (self.device.type != "cuda" or not cuda_walk_available()):
            raise ValueError(f"the 'cuda' walker needs a CUDA device that numba's CUDA target can use, not "
                             f"{self.device}; use walker='numba' on the CPU or 'torch'")
        self.labels = None
        if geometry.renderer in ("traversal", "clipped_trilinear"):
            box = support_box(mu)
            if box is not None:
                mu, affine = mu[box], shifted_affine(affine, [b.start for b in box])
                labels = labels[box] if labels is not None else None
            self.labels = None if labels is None else np.ascontiguousarray(labels, dtype=np.uint8)
        # the label volume where the traversal runs (moved to the GPU once per volume, not per view)
        self._labels_on_device = (torch.as_tensor(self.labels, device=self.device)
                                  if self.labels is not None and self.walker != "numba" else self.labels)
        self.drr = diffdrr_module(mu, affine, geometry,
                                  "siddon" if geometry.renderer == "siddon" else "trilinear").to(self.device)
        self._boxes = label_boxes(self.labels) if self.labels is not None else {}  # one pass, not one per view
        self._grid: torch.Tensor | None = None  # `_rays`' detector points
        self._box_table = (torch.as_tensor(label_table(self._boxes), device=self.device)
                           if self.walker == "cuda" else None)
        # the numba walks stop after the last blocks near non-zero voxels (air clipped to mu = 0): the same images,
        # fewer reads. `occupancy` is the volume's grid; `occupied` what the walks use: on the CPU only where
        # wide air makes it pay (`Occupancy.pays_on_cpu`), on CUDA always (the one-ray walk, not measured there)
        self.occupancy = (occupancy(self.drr.density.cpu().numpy())
                          if geometry.renderer == "traversal" and self.walker in ("numba", "cuda") else None)
        self.occupied = (self.occupancy if self.occupancy is not None
                         and (self.walker == "cuda" or self.occupancy.pays_on_cpu) else None)
        diagonal_vox = float(np.linalg.norm(np.array(mu.shape, dtype=float)))
        self.calibrated_error: float | None = None
        if geometry.renderer == "clipped_trilinear" and geometry.samples_per_voxel is None:
            self.geometry = geometry
            density, self.calibrated_error = self.calibrate_sampling()
            geometry = replace(geometry, samples_per_voxel=density)
        self.geometry = geometry
        self.n_points = int(np.ceil(diagonal_vox * (geometry.samples_per_voxel or 1.0))) + 2

    def record(self) -> dict:
        """The detector attribute of the views this renderer makes (sampling as actually used)."""
        out = self.geometry.record()
        if self.calibrated_error is not None:
            out["calibrated_error"] = self.calibrated_error
        return out

    @torch.no_grad()
    def render(self, cameras: np.ndarray, batch: int = 1) -> np.ndarray:
        """(V, 4, 4) camera extrinsics -> (V, H, W) float32 line integrals of mu.

        `batch` views go to diffdrr per call ('siddon'/'trilinear'); the other renderers take
        one view at a time, in bounded ray chunks whatever the detector size.
        """
        cameras = np.asarray(cameras, dtype=np.float32).reshape(-1, 4, 4)
        if self.geometry.renderer == "traversal":
            return self._render_traversal(cameras, -1)[0]
        if self.geometry.renderer == "clipped_trilinear":
            return self._render_clipped(cameras)
        kwargs = {"n_points": self.n_points} if self.geometry.renderer == "trilinear" else {}
        out = []
        for lo in range(0, len(cameras), batch):
            pose = RigidTransform(torch.as_tensor(cameras[lo:lo + batch], device=self.device))
            img = self.drr(pose, **kwargs)
            out.append(img[:, 0].float().cpu().numpy())
        return np.concatenate(out, axis=0)

    @torch.no_grad()
    def render_labelled(self, cameras: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
        """(whole, part) images, (V, H, W) each: the volume, and only its voxels labelled `label`,
        from one traversal ('traversal' renderer with `labels` only)."""
        if self.geometry.renderer != "traversal" or self.labels is None:
            raise ValueError("render_labelled needs the 'traversal' renderer and a label volume")
        return self._render_traversal(np.asarray(cameras, dtype=np.float32).reshape(-1, 4, 4), int(label))

    def _render_traversal(self, cameras: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
        walks = self.walks(cameras, [label] * len(cameras))
        return np.stack([w.whole for w in walks]), np.stack([w.part for w in walks])

    def _box(self, label: int) -> np.ndarray | None:
        """The label's voxel box (`ops.traversal.label_box`), kept from the renderer's one pass."""
        if label < 0 or self.labels is None:
            return None
        box = self._boxes.get(int(label))
        return box if box is not None else np.zeros(6, dtype=np.int64)  # as label_box gives for an absent label

    @torch.no_grad()
    def walk(self, camera: np.ndarray, label: int, knots) -> Walk:
        """One view's walk ('traversal' only) with the hinge integrals of `knots`
        (`ops.traversal.traverse_hinges_numba`) and its rays in world mm; `label` -1: no part image."""
        return self.walks(np.asarray(camera).reshape(1, 4, 4), [label], knots)[0]

    @torch.no_grad()
    def walks(self, cameras: np.ndarray, labels, knots=None) -> list[Walk]:
        """The walk of every camera, `labels[v]` the part label of view v (-1: none), with the hinge
        integrals of `knots` (None: the exact images only, `Walk.hinges` None). The 'torch' walker takes
        all the views' rays in one batch, the 'numba' one walks them one after another; a view's Walk is
        the same whichever views share the call."""
        if self.geometry.renderer != "traversal":
            raise ValueError("walk needs the 'traversal' renderer")
        cameras = np.asarray(cameras, dtype=np.float32).reshape(-1, 4, 4)
        labels = [int(x) for x in labels]
        if len(labels) != len(cameras):
            raise ValueError(f"{len(labels)} labels for {len(cameras)} cameras")
        if not len(cameras):
            return []
        height, width = self.geometry.height, self.geometry.width
        n = height * width
        world: list = []
        if self.walker != "numba":
            source, targets, raylen = self._batch_rays(cameras, world)
            per_ray = torch.as_tensor(np.repeat(labels, n), device=self.device)
            with_labels = self._labels_on_device if max(labels) >= 0 else None
            if self.walker == "cuda":
                out = walk_rays(self.drr.density, source, targets, raylen, with_labels, per_ray, self._box_table,
                                knots, self.occupied)
            else:
                out = traverse_torch(self.drr.density, source, targets, raylen, with_labels, per_ray, knots=knots,
                                     chunk=self._chunk())
            w, p = out[0].cpu().numpy(), out[1].cpu().numpy()
            h = out[2].cpu().numpy() if knots is not None else None
            lengths = raylen.cpu().numpy()
            parts = [(w[v * n:(v + 1) * n], p[v * n:(v + 1) * n], None if h is None else h[v * n:(v + 1) * n],
                      lengths[v * n:(v + 1) * n]) for v in range(len(cameras))]
            device = [(out[0][v * n:(v + 1) * n], None if knots is None else out[2][v * n:(v + 1) * n],
                       raylen[v * n:(v + 1) * n]) for v in range(len(cameras))]
        else:
            parts = []
            volume = self.drr.density.numpy()
            for v, label in enumerate(labels):  # one view's rays at a time: memory does not grow with the views
                source, targets, raylen = (x[0] for x in self._rays(cameras[v:v + 1], world=world))
                args = (volume, source[0].numpy(), targets.numpy(), raylen.numpy(), height, width)
                box = self._box(label)
                lab = self._labels_on_device if label >= 0 else None
                if knots is None:
                    w, p = traverse_numba(*args, lab, label, self.occupied, box)
                    h = None
                else:
                    w, p, h = traverse_hinges_numba(*args, knots, lab, label, self.occupied, box)
                parts.append((w, p, h, raylen.numpy()))
            device = [None] * len(parts)
        return [Walk(w.reshape(height, width).astype(np.float32), p.reshape(height, width).astype(np.float32), w, h,
                     world[v][0], world[v][1], lengths, device[v]) for v, (w, p, h, lengths) in enumerate(parts)]

    def _batch_rays(self, cameras: np.ndarray, world: list | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every camera's rays as one batch on the device: per-ray sources (N, 3), targets (N, 3) and
        lengths (N,), views one after another."""
        source, targets, raylen = self._rays(cameras, world=world)
        views, rays = targets.shape[:2]
        dev = self.device
        return (source.expand(-1, rays, -1).reshape(-1, 3).to(dev), targets.reshape(-1, 3).to(dev),
                raylen.reshape(-1).to(dev))

    def _chunk(self) -> int:
        """Rays per torch walk step: bounded memory (~0.2 KB a ray) on the GPU, cache-sized on the CPU."""
        return CHUNK_WALK_GPU if self.device.type == "cuda" else CHUNK_WALK_CPU

    def world_rays(self, camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source (3,), detector pixel centres (H*W, 3)) of one camera in world mm, as `_rays` makes them."""
        world: list = []
        self._rays(np.asarray(camera, dtype=np.float32).reshape(1, 4, 4), world=world)
        return world[0]

    def _render_clipped(self, cameras: np.ndarray) -> np.ndarray:
        source, targets, raylen = (x.float() for x in self._rays(cameras))
        views, rays = targets.shape[:2]
        out = integrate_clipped(self.drr.density, source.expand(-1, rays, -1).reshape(-1, 3),
                                targets.reshape(-1, 3), raylen.reshape(-1),
                                step_vox=1.0 / self.geometry.samples_per_voxel,
                                chunk=CHUNK_RAYS_GPU if self.device.type == "cuda" else CHUNK_RAYS_CPU)
        return out.view(views, self.geometry.height, self.geometry.width).float().cpu().numpy()

    def calibrate_sampling(self) -> tuple[float, float]:
        """(samples_per_voxel, error): the cheapest density of SAMPLING_LADDER whose trilinear images of
        the calibration rays stay within `error_budget` (relative L2, worst view) of the exact integral;
        the densest one, and its error, when none does (interpolation itself differs from
        voxel-constant integration by a volume-dependent amount)."""
        g = self.geometry
        centre = module_affine(self.drr) @ np.r_[(np.array(self.drr.density.shape) - 1) / 2, 1.0]
        cameras = np.stack([base_camera(v, g.sod_mm, centre[:3]) for v in VIEWS]).astype(np.float32)
        keep = self._calibration_rays()
        source, targets, raylen = self._rays(cameras, keep)
        volume = self.drr.density.cpu().numpy()
        exact = [traverse_numba(volume, source[v, 0].cpu().numpy(), targets[v].cpu().numpy(),
                                raylen[v].cpu().numpy(), 1, len(keep))[0] for v in range(len(cameras))]
        error = float("inf")
        for density in SAMPLING_LADDER:
            error = 0.0
            for v, reference in enumerate(exact):
                image = integrate_clipped(self.drr.density, source[v, 0].float(), targets[v].float(),
                                          raylen[v].float(), step_vox=1.0 / density).double().cpu().numpy()
                error = max(error, float(np.linalg.norm(image - reference) / max(np.linalg.norm(reference), 1e-30)))
            if error <= g.error_budget:
                return density, error
        return SAMPLING_LADDER[-1], error

    def _calibration_rays(self) -> torch.Tensor:
        g = self.geometry
        rows = torch.arange(CALIBRATION_STRIDE // 2, g.height, CALIBRATION_STRIDE)
        cols = torch.arange(CALIBRATION_STRIDE // 2, g.width, CALIBRATION_STRIDE)
        if len(rows) == 0 or len(cols) == 0:
            rows, cols = torch.arange(g.height), torch.arange(g.width)
        return (rows[:, None] * g.width + cols[None, :]).reshape(-1)

    def _rays(self, cameras: np.ndarray, pixels: torch.Tensor | None = None,
              world: list | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Source and detector points in voxel coordinates, and ray lengths in mm (float64), of every
        detector pixel or of the flat indices `pixels`; `world`, when given, gets each camera's
        (source, targets) in world mm as numpy arrays.

        Uses diffdrr's detector points and calibration, composed with each camera as one float64
        4x4 and applied elementwise (no BLAS), so the rays are bit-identical in every process: on the
        CPU in one compiled pass per view (`_camera_rays`), elsewhere by torch operations.
        """
        if self._grid is None:  # (N, 3) unit-focal detector grid, float64: made once, not once a view
            self._grid = detector_grid(self.drr)
        points = self._grid
        if pixels is not None:
            points = points[pixels.to(points.device)]
        calibration = detector_calibration(self.drr)
        to_voxel = np.linalg.inv(module_affine(self.drr))
        on_cpu = points.device.type == "cpu"
        grid = points.contiguous().numpy() if on_cpu else None
        sources, targets, lengths = [], [], []
        world_out = world
        for camera in np.asarray(cameras, dtype=np.float64):
            world = camera @ AP_REORIENT  # camera frame -> world
            src_world = torch.as_tensor(world[:3, 3], device=points.device)
            if on_cpu:  # one compiled pass: the same bits as the torch operations below
                tgt_world, tgt_voxel, length = _camera_rays(world @ calibration, to_voxel @ world @ calibration,
                                                            world[:3, 3].copy(), grid)
                targets.append(torch.from_numpy(tgt_voxel))
                lengths.append(torch.from_numpy(length))
            else:
                tgt_world = _transform_points(world @ calibration, points)
                lengths.append((tgt_world - src_world).norm(dim=-1))
                targets.append(_transform_points(to_voxel @ world @ calibration, points))
            if world_out is not None:
                world_out.append((src_world.cpu().numpy(), tgt_world if on_cpu else tgt_world.cpu().numpy()))
            sources.append(_transform_points(to_voxel, src_world[None]))
        return _stacked(sources), _stacked(targets), _stacked(lengths)


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, without its copy for one tensor (one view's rays at a time: ~0.2 ms a 256^2 view)."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's fma: the hardware's instruction, or a correctly rounded libm call)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d])), args)
    return sig, codegen


def _camera_rays(to_world: np.ndarray, to_voxel: np.ndarray, source: np.ndarray, points: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(targets in world mm (N, 3), targets in voxels (N, 3), source-to-target lengths (N,)) of the (N, 3)
    float64 detector `points` under two float64 4x4 affines, `source` (3,) in world mm."""
    n = len(points)
    out = np.empty((n, 3)), np.empty((n, 3)), np.empty(n)
    _camera_rays_kernel(np.ascontiguousarray(to_world), np.ascontiguousarray(to_voxel), source, points, *out)
    return out


@numba.njit(cache=True, nogil=True)
def _camera_rays_kernel(mw, mv, source, points, world, voxel, lengths):
    """`_transform_points`' arithmetic for both affines, and each length as torch's CPU norm of the
    difference rounds it: sqrt(fma(z, z, fma(y, y, x * x))) (its reduction is compiled with fused
    multiply-adds), so lengths and images keep the bits they had from the torch operations."""
    sx, sy, sz = source[0], source[1], source[2]
    for n in range(points.shape[0]):
        x, y, z = points[n, 0], points[n, 1], points[n, 2]
        for r in range(3):
            world[n, r] = _affine_row(mw, r, x, y, z)
            voxel[n, r] = _affine_row(mv, r, x, y, z)
        dx, dy, dz = world[n, 0] - sx, world[n, 1] - sy, world[n, 2] - sz
        lengths[n] = np.sqrt(_fma(dz, dz, _fma(dy, dy, dx * dx)))


def _transform_points(matrix: np.ndarray, points: torch.Tensor) -> torch.Tensor:
    """4x4 affine applied to (N, 3) float64 points with elementwise float64 operations only, each
    coordinate ((x m0 + y m1) + z m2) + m3: in one compiled pass on the CPU (`_affine_points`; seven
    torch operations over (N, 3) temporaries took ~2 ms for a 256^2 detector), as torch operations
    elsewhere; the same bits either way."""
    m = np.ascontiguousarray(matrix, dtype=np.float64)
    if points.device.type == "cpu" and points.dtype == torch.float64:
        out = torch.empty((len(points), 3), dtype=torch.float64)
        _affine_points(m, points.contiguous().numpy(), out.numpy())
        return out
    m = torch.as_tensor(m, device=points.device)
    x, y, z = points[:, 0:1], points[:, 1:2], points[:, 2:3]
    return x * m[:3, 0] + y * m[:3, 1] + z * m[:3, 2] + m[:3, 3]


@numba.njit(inline="always")
def _affine_row(m, r, x, y, z):
    """Row r of the 4x4 affine `m` applied to (x, y, z): ((x m0 + y m1) + z m2) + m3, as the torch operations."""
    return x * m[r, 0] + y * m[r, 1] + z * m[r, 2] + m[r, 3]


@numba.njit(cache=True, nogil=True)
def _affine_points(m, points, out):
    for n in range(points.shape[0]):
        x, y, z = points[n, 0], points[n, 1], points[n, 2]
        for r in range(3):
            out[n, r] = _affine_row(m, r, x, y, z)

