"""The scatter kernels as the synthesis reads them: pencil-beam kernels from the project's Monte Carlo
(`physics.montecarlo`), stored in KERNEL_FILE with their provenance (PROVENANCE_FILE), and their
superposition over a view.

A kernel K(r; t, kV, gap) is the scatter signal a CsI detector records per mm^2 at distance r (mm) from
where a pencil beam meets it, per unit of the pencil's own open-field signal, behind t cm of water whose
exit face lies `gap` cm before the detector, for a tungsten tube at kV behind 3 mm Al. A view's scatter is
the superposition of every pixel's pencil: S(x) = A sum_x' O(x') K(|x - x'|; t(x')), O the collimated
open-field signal and t the pixel's water-equivalent thickness (from its primary attenuation) -- done
per thickness node by FFT on a coarse grid. Unlike a kernel of fixed width, it keeps the Monte Carlo's
long tails, so the centre's scatter keeps rising with the irradiated field as real scatter does.

Behind an anti-scatter grid (`physics.grid`) the kernels are per unit of the pencil's open signal behind
the grid, for a lattice of grid ratios and line densities (GRID_RATIOS x GRID_LINES_PER_CM, lamellae and
interspace of `GRID_LAMELLA`); a view's grid is read between the nodes.

`physics.scatter_kernels` is the tool that makes the tables again from the Monte Carlo; this module only
reads them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft

from pipelines.physics.grid import Grid
from schemas.config import KERNEL_GRID_LAMELLA, KERNEL_GRID_LINES_PER_CM, KERNEL_GRID_RATIOS

DATA = Path(__file__).parent / "data"
KERNEL_FILE = DATA / "scatter_kernels.npz"
PROVENANCE_FILE = DATA / "scatter_kernels.json"
KV_NODES = (60, 80, 100, 120)
THICKNESS_NODES_CM = (1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0)
GAP_NODES_CM = (0.0, 2.0, 4.0, 7.0, 10.0, 14.0, 20.0, 30.0, 40.0)  # dense where the kernel changes fastest
FILTRATION_AL_MM = 3.0
RADII_EDGES_MM = np.concatenate([np.arange(0.0, 20.0, 4.0), np.arange(20.0, 100.0, 5.0),
                                 np.arange(100.0, 500.0 + 1e-9, 20.0)])
# Where a view's scatter comes from: the kernels are measured from where a pencil meets the detector, but
# a diverging beam's scatter starts inside the patient, nearer the axis. The pencils' sources are placed at
# m times their detector positions about the centre, m = 1 - k (1 - SOD / SDD), k the origin factor (0:
# the detector plane, 1: the isocentre plane), fitted by `scatter_kernels.main` to the Monte Carlo's full-field
# SPRs behind 10, 20 and 30 cm of water at FIT_GEOMETRY_CM, and stored with the kernels.
FIT_GEOMETRY_CM = {"sdd": 102.0, "sod": 85.0, "field": 20.48}
GRID_RATIOS, GRID_LINES_PER_CM = KERNEL_GRID_RATIOS, KERNEL_GRID_LINES_PER_CM
GRID_LAMELLA = Grid(strip_mm=KERNEL_GRID_LAMELLA[0], interspace=KERNEL_GRID_LAMELLA[1])  # every node's lamellae


def grid_nodes() -> tuple[Grid, ...]:
    """The grids the kernels are tallied behind, ratio-major."""
    return tuple(Grid(r, n, GRID_LAMELLA.strip_mm, GRID_LAMELLA.interspace) for r in GRID_RATIOS
                 for n in GRID_LINES_PER_CM)


@dataclass(frozen=True)
class Kernels:
    kv: np.ndarray  # (K,)
    thickness_cm: np.ndarray  # (T,)
    gap_cm: np.ndarray  # (G,)
    radii_mm: np.ndarray  # (R,) bin centres
    values: np.ndarray  # (K, T, G, R) per mm^2 per unit open signal
    origin_factor: float = 0.0  # k of `source_scale`
    destination_factor: float = 0.0  # c of `kernel_scatter`, per cm of water-equivalent thickness
    # behind the grids of `grid_nodes()`: (K, T, G, len(GRID_RATIOS), len(GRID_LINES_PER_CM), R), per mm^2
    # per unit of the pencil's open signal behind the same grid; None: tables made without grids
    grid_values: np.ndarray | None = None
    # k of `source_scale` behind a grid: a focused grid passes the scatter that travels near the source's
    # rays, which lands nearer its pencil's own primary than scatter in every direction does
    grid_origin_factor: float | None = None

    def check_grid(self, grid: Grid) -> None:
        if self.grid_values is None:
            raise ValueError("these scatter kernels have no grid tables: regenerate them with "
                             "python -m pipelines.physics.scatter_kernels")
        if (grid.strip_mm, grid.interspace) != (GRID_LAMELLA.strip_mm, GRID_LAMELLA.interspace):
            raise ValueError(f"the scatter kernels are tallied behind {GRID_LAMELLA.strip_mm} mm lead lamellae with "
                             f"{GRID_LAMELLA.interspace} interspace, not {grid.strip_mm} mm and {grid.interspace}")
        for name, value, nodes in (("ratio", grid.ratio, GRID_RATIOS), ("lines per cm", grid.lines_per_cm,
                                                                          GRID_LINES_PER_CM)):
            if not nodes[0] <= value <= nodes[-1]:
                raise ValueError(f"grid {name} {value:g} is outside the scatter kernels' {nodes[0]:g}-{nodes[-1]:g}")

    def source_scale(self, sod_mm: float, sdd_mm: float, grid: Grid | None = None) -> float:
        """m: the pencils' sources at m times their detector positions about the centre (behind `grid`,
        by the grid's own origin factor)."""
        k = self.origin_factor if grid is None or self.grid_origin_factor is None else self.grid_origin_factor
        return 1.0 - k * (1.0 - sod_mm / sdd_mm)

    def at(self, kv: float, gap_cm: float) -> np.ndarray:
        """(T, R): the kernels at one kV and gap, linear between nodes (held at the ends)."""
        return self.at_gaps(kv, np.full(len(self.thickness_cm), gap_cm))

    def at_gaps(self, kv: float, gaps_cm: np.ndarray, grid: Grid | None = None) -> np.ndarray:
        """(T, R): the kernels at one kV, thickness node t taken at its own gap `gaps_cm[t]`, behind
        `grid` (None: no grid; between the grid nodes, bilinear in ratio and line density)."""
        values = self.values
        if grid is not None:
            self.check_grid(grid)
            r, tr = _weights(np.array(GRID_RATIOS), grid.ratio)
            n, tn = _weights(np.array(GRID_LINES_PER_CM), grid.lines_per_cm)
            g = self.grid_values
            values = ((g[:, :, :, r, n] * (1 - tn) + g[:, :, :, r, n + 1] * tn) * (1 - tr)
                      + (g[:, :, :, r + 1, n] * (1 - tn) + g[:, :, :, r + 1, n + 1] * tn) * tr)
        i, ti = _weights(self.kv, kv)
        by_kv = values[i] * (1 - ti) + values[i + 1] * ti
        out = np.empty(by_kv[:, 0].shape)
        for t, gap in enumerate(gaps_cm):
            j, tj = _weights(self.gap_cm, gap)
            out[t] = by_kv[t, j] * (1 - tj) + by_kv[t, j + 1] * tj
        return out

    def grid_scatter_factor(self, kv: float, thickness_cm: float, gap_cm: float, grid: Grid) -> float:
        """A grid's scatter over its primary transmission, by the kernels: the scatter behind it (per unit
        of open signal behind it) over the scatter without it, over the whole kernel, for one thickness."""
        area = np.pi * np.diff(self._edges ** 2)
        gaps = np.full(len(self.thickness_cm), gap_cm)
        behind, without = (np.interp(thickness_cm, self.thickness_cm, self.at_gaps(kv, gaps, g) @ area)
                           for g in (grid, None))
        return float(behind / without)

    @property
    def _edges(self) -> np.ndarray:
        """The radial bins' edges (mm) from their centres (the first edge at 0)."""
        edges = [0.0]
        for c in self.radii_mm:
            edges.append(2 * c - edges[-1])
        return np.array(edges)

    def centred(self, kv: float, body_height_cm: float, grid: Grid | None = None) -> np.ndarray:
        """(T, R): the kernels at one kV for pencils through a body centred `body_height_cm` above the
        detector: thickness node t's water centred there, so its exit face t / 2 nearer (gap >= 0). Each
        pencil thus has the air gap of its own water-equivalent thickness: a thin column's scatter
        starts farther from the detector than a thick one's, as in a patient on the isocentre."""
        return self.at_gaps(kv, np.maximum(body_height_cm - self.thickness_cm / 2, 0.0), grid)


def reference_attenuation(spectrum, materials: tuple, alloys: tuple) -> np.ndarray:
    """-ln(S / S_open) through water (`tables.HEEL_THICKNESS_G_CM2`) of the beam the kernels were tallied
    with at a view's kV, detector and grid: its `spectrum` (a `tables.SpectrumKey`) behind the kernels'
    filtration (FILTRATION_AL_MM, no copper)."""
    from dataclasses import replace

    from pipelines.physics.tables import tables_for

    return tables_for(replace(spectrum, filtration_al_mm=FILTRATION_AL_MM, filtration_cu_mm=0.0), materials,
                      alloys).water_attenuation


def _weights(nodes: np.ndarray, x: float) -> tuple[int, float]:
    """Linear interpolation between `nodes` (held at the ends): (lower node, weight of the upper)."""
    x = float(np.clip(x, nodes[0], nodes[-1]))
    i = int(np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2))
    return i, (x - nodes[i]) / (nodes[i + 1] - nodes[i])


@functools.lru_cache(maxsize=1)
def load() -> Kernels:
    if not KERNEL_FILE.is_file():
        raise FileNotFoundError(f"{KERNEL_FILE} is missing: make it with python -m pipelines.physics.scatter_kernels")
    with np.load(KERNEL_FILE) as d:
        grid_values = None
        if "grid_values" in d:
            if (tuple(d["grid_ratios"]), tuple(d["grid_lines_per_cm"])) != (GRID_RATIOS, GRID_LINES_PER_CM):
                raise ValueError(f"{KERNEL_FILE} holds other grid nodes than GRID_RATIOS x GRID_LINES_PER_CM: "
                                 "regenerate it with python -m pipelines.physics.scatter_kernels")
            grid_values = d["grid_values"].astype(np.float64)
        return Kernels(d["kv"], d["thickness_cm"], d["gap_cm"], d["radii_mm"], d["values"], float(d["origin_factor"]),
                       float(d["destination_factor"]) if "destination_factor" in d else 0.0, grid_values,
                       float(d["grid_origin_factor"]) if "grid_origin_factor" in d else None)


def kernel_scatter(open_coarse: np.ndarray, thickness_cm: np.ndarray, kernels_tr: np.ndarray,
                   thickness_nodes: np.ndarray, radii_mm: np.ndarray, pixel_mm: float, cell_mm: float,
                   scale: float = 1.0, destination: float = 0.0) -> np.ndarray:
    """Scatter signal per detector pixel at the centres of a coarse grid of `cell_mm` cells, from each
    cell's summed collimated open-field signal (hc, wc) and its water-equivalent thickness (cm): per
    thickness node, the cells' open signal weighted by their share of that node, convolved with the
    node's kernel times the pixel area -- one FFT product summed over the nodes. With the sources drawn
    together about the centre by `scale` = m (`source_scale`), S(x) = sum O(x') K(|x - m x'|): the
    convolution with K(m r) read at x / m (the smooth scatter field is what gets interpolated).

    `destination` = c makes the kernels asymmetric: a pencil's scatter reaching x is weighted by
    exp(-c (t(x) - t(x'))), so scatter leaving through a thicker column than its pencil's is attenuated
    more, through a thinner one less (in water of one thickness the factor is 1); it factorises, so
    the sources carry exp(c t(x')) and the result exp(-c t(x))."""
    hc, wc = open_coarse.shape
    t = np.clip(thickness_cm, thickness_nodes[0], thickness_nodes[-1])
    if destination:
        open_coarse = open_coarse * np.exp(destination * t)
    i = np.clip(np.searchsorted(thickness_nodes, t, side="right") - 1, 0, len(thickness_nodes) - 2)
    frac = (t - thickness_nodes[i]) / (thickness_nodes[i + 1] - thickness_nodes[i])
    shape = (2 * hc, 2 * wc)  # zero-padded: no wrap-around
    # a kernel is even in dy and dx: read on one quadrant of distances, then mirrored into the padded
    # (wrap-around) layout; float32 transforms (the scatter field is smooth: ~1e-7 relative)
    r = np.hypot(np.arange(hc + 1)[:, None] * cell_mm, np.arange(wc + 1)[None, :] * cell_mm) * scale
    mirror = np.ix_(np.r_[np.arange(hc + 1), np.arange(hc - 1, 0, -1)], np.r_[np.arange(wc + 1), np.arange(wc - 1, 0, -1)])
    source, kernel = np.zeros(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
    total = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex64)
    for k in range(len(thickness_nodes)):
        share = np.where(i == k, 1 - frac, 0.0) + np.where(i == k - 1, frac, 0.0)
        if not share.any():
            continue
        kernel[:] = (np.interp(r, radii_mm, kernels_tr[k], right=0.0) * (pixel_mm * pixel_mm))[mirror]
        source[:hc, :wc] = open_coarse * share
        total += scipy.fft.rfft2(source) * scipy.fft.rfft2(kernel)
    out = scipy.fft.irfft2(total, shape)[:hc, :wc].astype(np.float64)
    if scale != 1.0:
        from scipy.ndimage import affine_transform

        c = (np.array(out.shape) - 1) / 2.0
        out = affine_transform(out, np.full(2, 1.0 / scale), offset=c - c / scale, order=1, mode="nearest")
    return out * np.exp(-destination * t) if destination else out
