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
from pipelines.physics.kept import Kept
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
# m times their detector positions about the centre, m = 1 - k (1 - SOD / SDD), k an origin factor (0:
# the detector plane, 1: the isocentre plane). Off-axis pencils in the Monte Carlo show that the pull
# grows with distance: scatter reaching a few centimetres comes mostly from near the exit face, scatter
# reaching 10-20 cm from deep inside. So each kernel has two parts, nearer and farther than
# FAR_RADIUS_MM, each with its own origin factor, fitted by `scatter_kernels.main` to the Monte Carlo's
# full-field SPRs (scatter_kernels.ORIGIN_FIT_CASES) without and behind a grid, and stored with the kernels.
FIT_GEOMETRY_CM = {"sdd": 102.0, "sod": 85.0, "field": 20.48}
FAR_RADIUS_MM = 60.0
GRID_RATIOS, GRID_LINES_PER_CM = KERNEL_GRID_RATIOS, KERNEL_GRID_LINES_PER_CM
KERNEL_TABLES_IN_MEMORY = 16  # kernels at a view's kV, gap and grid, and their transforms: an item's views share them
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
    origin_factor: float = 0.0  # k of `source_scale`, for the kernels' part within FAR_RADIUS_MM
    destination_factor: float = 0.0  # c of `kernel_scatter`, per cm of water-equivalent thickness
    # behind the grids of `grid_nodes()`: (K, T, G, len(GRID_RATIOS), len(GRID_LINES_PER_CM), R), per mm^2
    # per unit of the pencil's open signal behind the same grid; None: tables made without grids
    grid_values: np.ndarray | None = None
    # k of `source_scale` behind a grid: a focused grid passes the near scatter that travels near the
    # source's rays, which lands nearer its pencil's own primary than scatter in every direction does
    grid_origin_factor: float | None = None
    # k for the parts beyond FAR_RADIUS_MM, without and behind a grid (None: the near part's k)
    far_origin_factor: float | None = None
    grid_far_origin_factor: float | None = None

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

    def source_scale(self, sod_mm: float, sdd_mm: float, grid: Grid | None = None) -> tuple[float, float]:
        """(m near, m far): the pencils' sources at m times their detector positions about the centre, for
        the kernels' parts within and beyond FAR_RADIUS_MM (behind `grid`, by the grid's own factors)."""
        near, far = self.origin_factor, self.far_origin_factor
        if grid is not None and self.grid_origin_factor is not None:
            near, far = self.grid_origin_factor, self.grid_far_origin_factor
        far = near if far is None else far
        return tuple(1.0 - k * (1.0 - sod_mm / sdd_mm) for k in (near, far))

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
        starts farther from the detector than a thick one's, as in a patient on the isocentre. Read-only:
        kept for the next call with the same kV, height and grid."""
        def make():
            table = self.at_gaps(kv, np.maximum(body_height_cm - self.thickness_cm / 2, 0.0), grid)
            table.setflags(write=False)
            return table
        return self._centred.get((float(kv), float(body_height_cm), grid), make)

    @functools.cached_property
    def _centred(self) -> Kept[np.ndarray]:
        """`centred`'s tables, kept: every view of an item (one kV, one geometry, one grid) reads the same."""
        return Kept(KERNEL_TABLES_IN_MEMORY)


def reference_attenuation(spectrum, materials: tuple, alloys: tuple) -> np.ndarray:
    """-ln(S / S_open) through water (`tables.HEEL_THICKNESS_G_CM2`) of the beam the kernels were tallied
    with at a view's kV, detector and grid: its `spectrum` (a `tables.SpectrumKey`) behind the kernels'
    filtration (FILTRATION_AL_MM, no copper), through the 0 HU anchor's material (`materials[1]`, as in
    `tables_for`; the alloys do not enter)."""
    from dataclasses import replace

    from pipelines.physics.tables import water_attenuation_for

    return water_attenuation_for(replace(spectrum, filtration_al_mm=FILTRATION_AL_MM, filtration_cu_mm=0.0),
                                 materials[1])


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
        def optional(name):
            return float(d[name]) if name in d else None
        return Kernels(d["kv"], d["thickness_cm"], d["gap_cm"], d["radii_mm"], d["values"], float(d["origin_factor"]),
                       optional("destination_factor") or 0.0, grid_values, optional("grid_origin_factor"),
                       optional("far_origin_factor"), optional("grid_far_origin_factor"))


def kernel_scatter(open_coarse: np.ndarray, thickness_cm: np.ndarray, kernels_tr: np.ndarray,
                   thickness_nodes: np.ndarray, radii_mm: np.ndarray, pixel_mm: float, cell_mm: float,
                   scale: float | tuple[float, float] = 1.0, destination: float = 0.0) -> np.ndarray:
    """Scatter signal per detector pixel at the centres of a coarse grid of `cell_mm` cells, from each
    cell's summed collimated open-field signal (hc, wc) and its water-equivalent thickness (cm): per
    thickness node, the cells' open signal weighted by their share of that node, convolved with the
    node's kernel times the pixel area -- one FFT product summed over the nodes. With the sources drawn
    together about the centre by `scale` = m (`source_scale`), S(x) = sum O(x') K(|x - m x'|): the
    convolution with K(m r) read at x / m (the smooth scatter field is what gets interpolated). A pair
    (m near, m far) draws the kernels' parts within and beyond FAR_RADIUS_MM by their own m: each part
    is its own product, sharing the sources' transforms.

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
    scales = (scale, scale) if np.isscalar(scale) else tuple(scale)
    # the parts: (m, lower and upper kernel distance); one part where both m are equal
    parts = [(scales[0], 0.0, np.inf)] if scales[0] == scales[1] else \
        [(scales[0], 0.0, FAR_RADIUS_MM), (scales[1], FAR_RADIUS_MM, np.inf)]
    # each cell's open signal split between its two thickness nodes; the nodes no cell uses are left out
    lower, upper = frac < 1, frac > 0
    used = np.zeros(len(thickness_nodes), dtype=bool)
    used[i[lower]] = True
    used[i[upper] + 1] = True
    nodes = np.flatnonzero(used)
    slot = np.cumsum(used) - 1  # a node's place among the used ones
    sources = np.zeros((len(nodes), *shape), dtype=np.float32)
    rows, cols = np.indices((hc, wc))
    sources[slot[i[lower]], rows[lower], cols[lower]] = (open_coarse * (1 - frac))[lower]
    sources[slot[i[upper] + 1], rows[upper], cols[upper]] = (open_coarse * frac)[upper]
    sources_ft = scipy.fft.rfft2(sources)  # (nodes, 2 hc, wc + 1)
    # per part, the used nodes' kernel transforms (`_kernel_transforms`, kept for the item's next views)
    totals = [(sources_ft * _kernel_transforms(kernels_tr, radii_mm, hc, wc, cell_mm, pixel_mm, m, lo, hi)[nodes])
              .sum(axis=0) for m, lo, hi in parts]
    out = np.zeros((hc, wc))
    for (m, _, _), total in zip(parts, totals):
        part = scipy.fft.irfft2(total, shape)[:hc, :wc].astype(np.float64)
        if m != 1.0:  # read at x / m about the centre: linear between cells, held at the edges
            part = _zoom_rows(hc, m) @ part @ _zoom_rows(wc, m).T
        out += part
    return out * np.exp(-destination * t) if destination else out


def linear_rows(at: np.ndarray, n: int) -> np.ndarray:
    """(len(at), n) weights reading n samples at the fractional indices `at`: linear between the two
    samples around each, held at the first and the last beyond the ends (so a row times the samples
    interpolates them)."""
    at = np.clip(np.asarray(at, dtype=np.float64), 0.0, n - 1.0)
    lo = np.minimum(np.floor(at).astype(int), max(n - 2, 0))
    t = at - lo
    rows = np.zeros((len(at), n))
    rows[np.arange(len(at)), lo] += 1.0 - t
    if n > 1:
        rows[np.arange(len(at)), lo + 1] += t
    return rows


@functools.lru_cache(maxsize=32)
def _zoom_rows(n: int, m: float) -> np.ndarray:
    """(n, n) `linear_rows` reading n cells at c + (x - c) / m, c the centre, x each cell: a field zoomed by
    m about its centre, one axis at a time (read-only; made once per size and m)."""
    c = (n - 1) / 2.0
    rows = linear_rows(c + (np.arange(n) - c) / m, n)
    rows.setflags(write=False)
    return rows


_TRANSFORMS: Kept[np.ndarray] = Kept(KERNEL_TABLES_IN_MEMORY)


def _kernel_transforms(kernels_tr: np.ndarray, radii_mm: np.ndarray, hc: int, wc: int, cell_mm: float,
                       pixel_mm: float, m: float, lo: float, hi: float) -> np.ndarray:
    """(T, 2 hc, wc + 1) float32, read-only: every thickness node's kernel (rows of `kernels_tr`, (T, R)
    over `radii_mm`) drawn in by `m`, within [lo, hi) mm, as `kernel_scatter`'s padded grid of (hc, wc)
    cells of `cell_mm` transforms it, times the pixel area. Kept by the table's values and the grid, so
    every view of an item (one kV, gap and grid: one table) makes them once.

    A kernel is even in dy and dx, so its transform in the padded (wrap-around) layout is real: the
    type-1 DCT of one quadrant of distances (0..hc, 0..wc), its rows mirrored beyond hc. Float32
    transforms (the scatter field is smooth: ~1e-7 relative)."""
    table = np.ascontiguousarray(kernels_tr, dtype=np.float64)
    radii = np.ascontiguousarray(radii_mm, dtype=np.float64)
    key = (table.shape, table.tobytes(), radii.tobytes(), hc, wc, float(cell_mm), float(pixel_mm), float(m),
           float(lo), float(hi))

    def make():
        r = np.hypot(np.arange(hc + 1)[:, None] * cell_mm, np.arange(wc + 1)[None, :] * cell_mm)
        rows = np.r_[np.arange(hc + 1), np.arange(hc - 1, 0, -1)]
        # every node's kernel at these distances, linear between the radii (held below the first, 0
        # beyond the last), times the pixel area, 0 outside the part
        at = r * m
        j = np.clip(np.searchsorted(radii, at, side="right") - 1, 0, len(radii) - 2)
        w = np.clip((at - radii[j]) / (radii[j + 1] - radii[j]), 0.0, 1.0).astype(np.float32)
        keep = ((at >= lo) & (at < hi) & (at <= radii[-1])) * (pixel_mm * pixel_mm)
        single = table.astype(np.float32)
        quadrant = (single[:, j] * (1 - w) + single[:, j + 1] * w) * keep.astype(np.float32)
        transforms = np.ascontiguousarray(scipy.fft.dctn(quadrant, type=1, axes=(-2, -1))[:, rows, :])
        transforms.setflags(write=False)
        return transforms
    return _TRANSFORMS.get(key, make)
