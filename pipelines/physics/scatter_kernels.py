"""The tool that makes the scatter kernels (`physics.kernels`) from the project's Monte Carlo
(`physics.montecarlo`), fits their origin and destination factors, and checks them (`full_field_spr`,
`model_spr`).

What a kernel is and how the synthesis superposes them: `physics.kernels`.

Behind an anti-scatter grid (`physics.grid`) the same Monte Carlo runs weight every scattered photon by the
grid's exact transmission at its own energy and incidence angle, for a lattice of grid ratios and line
densities (GRID_RATIOS x GRID_LINES_PER_CM, lamellae and interspace of `GRID_LAMELLA`); those kernels are
per unit of the pencil's open signal behind the grid, and a view's grid is read between the nodes. They
are tallied with the lamellae in one orientation and averaged over the directions around the pencil.

`python -m pipelines.physics.scatter_kernels [--histories N]` regenerates the tables (KERNEL_FILE) and
their provenance (PROVENANCE_FILE) from the Monte Carlo; the synthesis only reads them. `--refit-origin`
and `--refit-destination` keep the stored kernels and fit their factors again. `off_axis_gains` checks
what the origin factors stand for, pencil by pencil (`benchmarks/scatter.py`).
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from importlib.metadata import version

import numpy as np

from pipelines.physics.grid import Grid
from pipelines.physics.kernels import (
    DATA,
    FAR_RADIUS_MM,
    FILTRATION_AL_MM,
    FIT_GEOMETRY_CM,
    GAP_NODES_CM,
    GRID_LAMELLA,
    GRID_LINES_PER_CM,
    GRID_RATIOS,
    KERNEL_FILE,
    KV_NODES,
    PROVENANCE_FILE,
    RADII_EDGES_MM,
    THICKNESS_NODES_CM,
    Kernels,
    grid_nodes,
    load,
    reference_attenuation,
)

SOURCE_TO_SLAB_CM = 60.0
TALLY_PIXEL_CM = 0.2
TALLY_PIXELS = 520  # 104 cm square: the kernels' 50 cm radius fits


def pencil_kernel(thickness_cm: float, kv: int, gap_cm: float, histories: int, seed: int = 0) -> np.ndarray:
    """(R,) one kernel from the Monte Carlo: scatter CsI signal per mm^2 in each radial bin, per unit of
    the pencil's open CsI signal."""
    return pencil_kernels(thickness_cm, kv, gap_cm, histories, seed)[0]


def pencil_kernels(thickness_cm: float, kv: int, gap_cm: float, histories: int, seed: int = 0,
                   grids: tuple[Grid, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """One Monte Carlo pencil: its kernel without a grid (R,), and behind each of `grids` (len(grids), R),
    each per unit of the pencil's open CsI signal (behind that grid)."""
    from pipelines.physics.montecarlo import Detector, Material, box_phantom, simulate
    from pipelines.physics.tables import grid_coefficients, tube_spectrum

    energies, fluence = tube_spectrum(kv, 12.0, al_mm=FILTRATION_AL_MM)
    tables = _tables(float(kv))
    slab_centre = SOURCE_TO_SLAB_CM + thickness_cm / 2
    distance = SOURCE_TO_SLAB_CM + thickness_cm + gap_cm
    phantom = box_phantom((120.0, 120.0, thickness_cm), (0.0, 0.0, slab_centre), 2.0, tables.materials[1].density)
    detector = Detector(distance, (TALLY_PIXELS, TALLY_PIXELS), TALLY_PIXEL_CM, grids=tuple(grids))
    half = 0.01  # cm at the detector: a pencil
    result = simulate(tables, phantom, detector, histories, (half, half), (energies, fluence), seed)
    csi = Material.nist("Cesium Iodide")
    mu = csi.mass_coefficients(energies).sum(0) * detector.csi_density
    absorbed = fluence * energies * (1 - np.exp(-mu * detector.csi_thickness))
    open_signal = float(absorbed.sum() / fluence.sum())
    centres = (np.arange(TALLY_PIXELS) - TALLY_PIXELS / 2 + 0.5) * TALLY_PIXEL_CM * 10.0  # mm
    r = np.hypot(*np.meshgrid(centres, centres))
    area = np.histogram(r, RADII_EDGES_MM)[0] * (TALLY_PIXEL_CM * 10.0) ** 2

    def radial(image, signal):
        binned = np.histogram(r, RADII_EDGES_MM, weights=image)[0]
        return np.where(area > 0, binned / np.maximum(area, 1e-300), 0.0) / signal
    behind = [radial(result.grid_scatter[g], float(np.sum(absorbed * grid.primary_transmission(
        *grid_coefficients(grid, energies))) / fluence.sum())) for g, grid in enumerate(grids)]
    return radial(result.csi_scatter, open_signal), np.array(behind).reshape(len(grids), len(area))


@functools.lru_cache(maxsize=8)
def _tables(max_energy: float):
    from pipelines.physics.montecarlo import Material, Tables

    return Tables((Material.nist("Air, Dry (near sea level)"), Material.nist("Water, Liquid")), max_energy + 1.0)


def generate(histories: int, progress=print) -> Kernels:
    nodes = grid_nodes()
    values = np.zeros((len(KV_NODES), len(THICKNESS_NODES_CM), len(GAP_NODES_CM), len(RADII_EDGES_MM) - 1))
    grid_values = np.zeros((*values.shape[:3], len(GRID_RATIOS), len(GRID_LINES_PER_CM), values.shape[-1]))
    total, n = values[..., 0].size, 0
    for a, kv in enumerate(KV_NODES):
        for b, t in enumerate(THICKNESS_NODES_CM):
            for c, g in enumerate(GAP_NODES_CM):
                values[a, b, c], behind = pencil_kernels(t, kv, g, histories, seed=1000 * a + 100 * b + c, grids=nodes)
                grid_values[a, b, c] = behind.reshape(grid_values.shape[3:])
                n += 1
                progress(f"scatter kernels: {n}/{total} (kV {kv}, {t:g} cm water, gap {g:g} cm)")
    radii = (RADII_EDGES_MM[1:] + RADII_EDGES_MM[:-1]) / 2
    return Kernels(np.array(KV_NODES, float), np.array(THICKNESS_NODES_CM), np.array(GAP_NODES_CM), radii, values,
                   grid_values=grid_values)


def full_field_spr(thickness_cm: float, histories: int, kv: int = 90, al_mm: float = FILTRATION_AL_MM,
                   seed: int = 0, batches: int = 32, field_cm: float = FIT_GEOMETRY_CM["field"],
                   grids: tuple[Grid, ...] = (), cu_mm: float = 0.0, sdd_cm: float = FIT_GEOMETRY_CM["sdd"],
                   sod_cm: float = FIT_GEOMETRY_CM["sod"]) -> dict:
    """The Monte Carlo's SPR of the CsI signal at the centre of a square field (at the detector) behind a
    40 x 40 cm water slab centred on the isocentre (SOD), no grid, by default at the default geometry;
    with `grids`, also behind each of them (`grid_spr`, `grid_spr_se`: lists, one per grid, from the same
    photons)."""
    from pipelines.physics.montecarlo import Detector, box_phantom, simulate, standard_error
    from pipelines.physics.tables import tube_spectrum

    sdd, sod = sdd_cm, sod_cm
    if sod + thickness_cm / 2 > sdd:
        raise ValueError(f"{thickness_cm:g} cm of water centred {sod:g} cm from the source does not fit before {sdd:g} cm")
    energies, weights = tube_spectrum(kv, 12.0, al_mm=al_mm, cu_mm=cu_mm)
    tables = _tables(float(kv))
    phantom = box_phantom((40.0, 40.0, thickness_cm), (0.0, 0.0, sod), 1.0, tables.materials[1].density)
    n = 52 if field_cm <= 20.8 else 104  # 0.4 cm pixels: the field and a margin
    detector = Detector(sdd, (n, n), 0.4, csi_thickness=0.06, grids=tuple(grids))
    start = time.perf_counter()
    result = simulate(tables, phantom, detector, histories, (field_cm / 2, field_cm / 2), (energies, weights), seed,
                      batches)
    seconds = time.perf_counter() - start
    centre = slice(n // 2 - 3, n // 2 + 3) if field_cm < 15 else slice(n // 2 - 5, n // 2 + 5)  # the central 2.4 or 4 cm
    spr = result.csi_scatter[centre, centre].sum() / result.csi_primary[centre, centre].sum()
    counts = np.array([b[0] for b in result.batches])

    def ratio_se(primary_of, scatter_of):
        primaries = np.array([primary_of(b)[centre, centre].sum() for b in result.batches])
        ratios = [scatter_of(b)[centre, centre].sum() / p for b, p in zip(result.batches, primaries) if p > 0]
        return standard_error(ratios, counts[primaries > 0]) if len(ratios) > 1 else float("nan")
    spr_se = ratio_se(lambda b: b[2], lambda b: b[3])
    grid_spr = [float(result.grid_scatter[g][centre, centre].sum() / result.grid_primary[g][centre, centre].sum())
                for g in range(len(grids))]
    grid_se = [ratio_se(lambda b, g=g: b[4][g], lambda b, g=g: b[5][g]) for g in range(len(grids))]
    pixel_mm = 4.0

    def bands_se(primary_of, scatter_of):  # each band's standard error over the batches that saw a primary there
        with np.errstate(divide="ignore", invalid="ignore"):
            per_batch = np.array([band_spr(primary_of(b), scatter_of(b), pixel_mm, field_cm) for b in result.batches])
        out = []
        for k in range(per_batch.shape[1]):
            seen = np.isfinite(per_batch[:, k])
            out.append(standard_error(per_batch[seen, k], counts[seen]) if seen.sum() > 1 else float("nan"))
        return np.array(out)
    profile = band_spr(result.csi_primary, result.csi_scatter, pixel_mm, field_cm)
    grid_profiles = [band_spr(result.grid_primary[g], result.grid_scatter[g], pixel_mm, field_cm)
                     for g in range(len(grids))]
    return {"thickness_cm": thickness_cm, "spr": float(spr), "spr_se": spr_se, "seconds": seconds,
            "histories": histories, "grid_spr": grid_spr, "grid_spr_se": grid_se, "profile": profile,
            "profile_se": bands_se(lambda b: b[2], lambda b: b[3]), "grid_profiles": grid_profiles,
            "grid_profiles_se": [bands_se(lambda b, g=g: b[4][g], lambda b, g=g: b[5][g]) for g in range(len(grids))]}


OFF_AXIS_CM = (5.0, 10.0, 15.0)  # the off-axis pencils' distances from the axis at the detector
OFF_AXIS_WATER_CM, OFF_AXIS_KV, OFF_AXIS_REGION_CM = 20.0, 90, 4.0


def off_axis_gains(histories: int, seed: int = 0, grid: Grid = Grid(10.0, 40.0)) -> dict:
    """How a diverging beam draws scatter in, by the Monte Carlo: pencils aimed at OFF_AXIS_CM from the axis
    (along the detector's columns, across the grid's lamellae, and along its rows) through
    OFF_AXIS_WATER_CM of water centred on the isocentre (FIT_GEOMETRY_CM's SDD and SOD, the 40 x 40 cm
    slab of `full_field_spr`), at OFF_AXIS_KV. A pencil's gain is the scatter it brings to the central
    OFF_AXIS_REGION_CM square, over what the on-axis pencil brings to the same square as far away, each
    per unit of its own open signal: 1 if scatter landed where it would from a pencil at the axis.
    Without and behind `grid`; each gain with its standard error over the Monte Carlo's batches."""
    from pipelines.physics.montecarlo import Detector, box_phantom, simulate, standard_error
    from pipelines.physics.tables import tube_spectrum

    sdd, sod = FIT_GEOMETRY_CM["sdd"], FIT_GEOMETRY_CM["sod"]
    energies, weights = tube_spectrum(OFF_AXIS_KV, 12.0, al_mm=FILTRATION_AL_MM)
    tables = _tables(float(OFF_AXIS_KV))
    detector = Detector(sdd, (104, 104), 0.4, grids=(grid,))
    half = int(round(OFF_AXIS_REGION_CM / 2 / detector.pitch))

    def region(image, x_cm, y_cm):
        row, col = (int(round(detector.shape[0] / 2 + v / detector.pitch)) for v in (y_cm, x_cm))
        return image[..., row - half:row + half, col - half:col + half].sum(axis=(-2, -1))

    def pencil(aim, density):
        phantom = box_phantom((40.0, 40.0, OFF_AXIS_WATER_CM), (0.0, 0.0, sod), 1.0, density)
        return simulate(tables, phantom, detector, histories if density > 1e-3 else histories // 100, (0.01, 0.01),
                        (energies, weights), seed, aim_cm=aim)

    def per_batch(result, x_cm, y_cm, open_signal, scatter_of):  # (scatter in the region per open signal, s.e.)
        values = np.array([region(scatter_of(b), x_cm, y_cm) for b in result.batches])
        counts = np.array([b[0] for b in result.batches])
        return float(np.sum(values * counts) / counts.sum()) / open_signal, standard_error(values, counts) / open_signal

    water = tables.materials[1].density
    aims = [(d, 0.0) for d in OFF_AXIS_CM] + [(0.0, d) for d in OFF_AXIS_CM]
    results = {aim: (pencil(aim, water), pencil(aim, 1e-9)) for aim in [(1e-6, 0.0)] + aims}
    out = {"aims_cm": aims, "gain": [], "gain_se": [], "grid_gain": [], "grid_gain_se": [], "histories": histories}
    # a batch is (histories, imparted, csi_primary, csi_scatter, grid_primary, grid_scatter) (`montecarlo.Result`)
    for name, scatter_of, open_of in (("", lambda b: b[3], lambda r: r.csi_primary.sum()),
                                      ("grid_", lambda b: b[5][0], lambda r: r.grid_primary[0].sum())):
        axis, axis_open = results[(1e-6, 0.0)]
        for aim in aims:
            run, empty = results[aim]
            s, s_se = per_batch(run, 0.0, 0.0, open_of(empty), scatter_of)
            ref, ref_se = per_batch(axis, -aim[0], -aim[1], open_of(axis_open), scatter_of)
            out[name + "gain"].append(s / ref)
            out[name + "gain_se"].append(s / ref * float(np.hypot(s_se / s, ref_se / ref)))
    return out


def model_off_axis_gain(aim_cm: tuple[float, float], kernels: Kernels | None = None, grid: Grid | None = None) -> float:
    """The kernel model's gain (`off_axis_gains`) for a pencil aimed at `aim_cm`: its parts reach a point x
    from where they are drawn in (K_near(|x - m_near x'|) within FAR_RADIUS_MM, K_far(|x - m_far x'|)
    beyond, `kernels.kernel_scatter`), against the kernel reaching as far from an on-axis pencil."""
    k = kernels or load()
    sdd_mm, sod_mm = FIT_GEOMETRY_CM["sdd"] * 10, FIT_GEOMETRY_CM["sod"] * 10
    table = k.centred(OFF_AXIS_KV, (sdd_mm - sod_mm) / 10, grid)[list(k.thickness_cm).index(OFF_AXIS_WATER_CM)]
    pitch = 4.0
    centres = (np.arange(int(OFF_AXIS_REGION_CM * 10 / pitch)) + 0.5) * pitch - OFF_AXIS_REGION_CM * 10 / 2
    y, x = np.meshgrid(centres, centres, indexing="ij")
    ax, ay = aim_cm[0] * 10, aim_cm[1] * 10
    m_near, m_far = k.source_scale(sod_mm, sdd_mm, grid)
    near = np.hypot(x - m_near * ax, y - m_near * ay)
    far = np.hypot(x - m_far * ax, y - m_far * ay)
    drawn = np.interp(near, k.radii_mm, table, right=0.0) * (near < FAR_RADIUS_MM) + \
        np.interp(far, k.radii_mm, table, right=0.0) * (far >= FAR_RADIUS_MM)
    axis = np.interp(np.hypot(x - ax, y - ay), k.radii_mm, table, right=0.0)
    return float(drawn.sum() / axis.sum())


PROFILE_BAND_MM, PROFILE_ROWS_MM = 20.0, 40.0


def profile_bands_mm(field_cm: float) -> np.ndarray:
    """Centres (mm, at the detector) of the 20 mm bands across a square field that lie wholly inside it."""
    half = field_cm * 10 / 2
    centres = np.arange(PROFILE_BAND_MM / 2, half, PROFILE_BAND_MM)
    centres = centres[centres + PROFILE_BAND_MM / 2 <= half + 1e-9]
    return np.concatenate([-centres[::-1], centres])


def band_spr(primary: np.ndarray, scatter: np.ndarray, pixel_mm: float, field_cm: float) -> np.ndarray:
    """The SPR in each of `profile_bands_mm`'s bands along the detector's columns, over its central 40 mm
    of rows (a pixel counts where its centre lies), from (rows, columns) primary and scatter images."""
    rows, cols = primary.shape
    y = (np.arange(rows) - (rows - 1) / 2) * pixel_mm
    x = (np.arange(cols) - (cols - 1) / 2) * pixel_mm
    central = np.abs(y) < PROFILE_ROWS_MM / 2
    out = []
    for c in profile_bands_mm(field_cm):
        band = np.abs(x - c) < PROFILE_BAND_MM / 2
        out.append(scatter[np.ix_(central, band)].sum() / primary[np.ix_(central, band)].sum())
    return np.array(out)


def model_spr(thickness_cm: float, kv: int = 90, al_mm: float = FILTRATION_AL_MM, model: str = "kernels",
              field_cm: float = FIT_GEOMETRY_CM["field"], kernels: Kernels | None = None,
              grid: Grid | None = None, cu_mm: float = 0.0, sdd_cm: float = FIT_GEOMETRY_CM["sdd"],
              sod_cm: float = FIT_GEOMETRY_CM["sod"], profile: bool = False) -> float | np.ndarray:
    """A synthesis scatter model's SPR at the field centre for `full_field_spr`'s slab, beam and detector,
    through `physics.synthesis`'s own functions (the air gap from the slab's mid-depth), behind `grid`;
    with `profile`, its SPR in `band_spr`'s bands across the field instead."""
    from pipelines.physics.synthesis import ScatterModel, kernel_scatter_signal, scatter_sigma_mm, scatter_signal
    from pipelines.physics.tables import HEEL_THICKNESS_G_CM2, SpectrumKey, tables_for
    from schemas.config import ScatterConfig, XrayConfig

    cfg = XrayConfig()
    on = (grid.ratio, grid.lines_per_cm, grid.strip_mm, grid.interspace) if grid else ()
    key = SpectrumKey(kv, 12.0, al_mm, cu_mm, "Cesium Iodide", 0.6, cfg.energy_bins, *on)
    tables = tables_for(key, tuple(cfg.materials), tuple(cfg.alloys))
    transmitted = float(np.exp(-np.interp(thickness_cm, HEEL_THICKNESS_G_CM2, tables.water_attenuation)))
    sdd_mm, sod_mm = sdd_cm * 10, sod_cm * 10
    gap_mm = sdd_mm - sod_mm - thickness_cm * 10 / 2
    pixel_mm, n = 0.8, 256 if field_cm <= 20.48 else 512  # the detector: 204.8 or 409.6 mm
    open_field = np.zeros((n, n))
    half = int(round(field_cm * 10 / pixel_mm / 2))
    open_field[n // 2 - half:n // 2 + half, n // 2 - half:n // 2 + half] = 1.0
    primary = transmitted * open_field
    k = kernels or load()
    if model == "kernels":
        m = ScatterModel(0.0, 0.0, 0.0, 1.0, k.centred(kv, (sdd_mm - sod_mm) / 10, grid), k.thickness_cm, k.radii_mm,
                         k.source_scale(sod_mm, sdd_mm, grid), k.destination_factor,
                         reference_attenuation(key, tuple(cfg.materials), tuple(cfg.alloys)))
        scatter = kernel_scatter_signal(primary, open_field, m, pixel_mm, tables)
    else:
        s = ScatterConfig()
        factor = k.grid_scatter_factor(kv, thickness_cm, gap_mm / 10, grid) if grid else 1.0
        m = ScatterModel(s.amplitude, s.exponent, scatter_sigma_mm(s.min_sigma_mm, s.spread_deg, gap_mm), factor)
        scatter = scatter_signal(primary, np.ones((n, n)), m, pixel_mm) * factor
    if profile:
        return band_spr(primary, scatter, pixel_mm, field_cm)
    return float(scatter[n // 2, n // 2] / transmitted)


# the origin factors' fit, (water cm, SDD cm, SOD cm, field cm) at 90 kV, without and behind the default
# 10:1, 40 lines/cm grid: 10, 20 and 30 cm at the default geometry, 20 cm against the detector, 40 cm before
# it and in a 40 cm field -- the gaps and fields the checks span (a seed the benchmark does not use)
ORIGIN_FIT_CASES = ((20.0, 102.0, 85.0, 20.48), (10.0, 102.0, 85.0, 20.48), (30.0, 102.0, 85.0, 20.48),
                    (20.0, 102.0, 92.0, 20.48), (20.0, 130.0, 80.0, 20.48), (20.0, 102.0, 85.0, 40.0))
GRID_FIT_GRID = Grid(10.0, 40.0)
ORIGIN_FIT_SEED = 5
ORIGIN_FACTORS = np.round(np.arange(0.0, 1.0001, 0.02), 2)  # the fit's candidates for every k


def origin_references(histories: int) -> dict[tuple, tuple[float, float]]:
    """The Monte Carlo's SPR at the field centre for each of ORIGIN_FIT_CASES: (without, behind GRID_FIT_GRID)."""
    out = {}
    for t, sdd, sod, field in ORIGIN_FIT_CASES:
        mc = full_field_spr(t, histories, seed=ORIGIN_FIT_SEED, grids=(GRID_FIT_GRID,), sdd_cm=sdd, sod_cm=sod,
                            field_cm=field)
        out[(t, sdd, sod, field)] = (mc["spr"], mc["grid_spr"][0])
    return out


def fit_origin_factors(kernels: Kernels, references: dict[tuple, tuple[float, float]], grid: bool) -> tuple[float, float, dict]:
    """The origin factors (near, far; 0 to 1, every 0.02) whose model SPRs are nearest the Monte Carlo's
    `references` (`origin_references`) over ORIGIN_FIT_CASES, rms log: without a grid, or behind
    GRID_FIT_GRID. Searched on every 0.1 first, then every 0.02 about the best."""
    from dataclasses import replace

    def error(near, far):
        trial = replace(kernels, grid_origin_factor=float(near), grid_far_origin_factor=float(far)) if grid else \
            replace(kernels, origin_factor=float(near), far_origin_factor=float(far))
        return float(np.sqrt(np.mean([np.log(model_spr(t, kernels=trial, grid=GRID_FIT_GRID if grid else None, sdd_cm=sdd,
                                                       sod_cm=sod, field_cm=field) / spr[int(grid)]) ** 2
                                      for (t, sdd, sod, field), spr in references.items()])))
    errors = {}
    coarse = ORIGIN_FACTORS[::5]
    for near in coarse:
        for far in coarse:
            errors[(near, far)] = error(near, far)
    best = min(errors, key=errors.get)
    for near in ORIGIN_FACTORS[np.abs(ORIGIN_FACTORS - best[0]) <= 0.1 + 1e-9]:
        for far in ORIGIN_FACTORS[np.abs(ORIGIN_FACTORS - best[1]) <= 0.1 + 1e-9]:
            if (near, far) not in errors:
                errors[(near, far)] = error(near, far)
    near, far = min(errors, key=errors.get)
    return float(near), float(far), {
        "rms_log_error": round(errors[(near, far)], 4), "rms_log_error_one_factor": {
            f"{k:g}": round(errors[(k, k)], 4) for k in coarse},
        "fit_cases": [{"water_cm": t, "sdd_cm": sdd, "sod_cm": sod, "field_cm": field,
                       "monte_carlo_spr": round(spr[int(grid)], 4)} for (t, sdd, sod, field), spr in references.items()],
        "kv": 90, "monte_carlo_seed": ORIGIN_FIT_SEED, "far_radius_mm": FAR_RADIUS_MM,
        **({"grid": {"ratio": GRID_FIT_GRID.ratio, "lines_per_cm": GRID_FIT_GRID.lines_per_cm}} if grid else {})}


DESTINATION_GRID = np.round(np.arange(0.0, 0.0501, 0.005), 3)  # c per cm, the fit's candidates
FIT_PROFILE_HISTORIES = 40_000_000


def fit_destination_factor(kernels: Kernels, histories: int = FIT_PROFILE_HISTORIES) -> tuple[float, dict]:
    """The destination factor c (`kernel_scatter`) whose SPR profiles across the heterogeneous phantoms
    (`phantoms.spine_slab`, `phantoms.chest_slab`) are nearest the Monte Carlo's (rms log over every band)."""
    from dataclasses import replace

    from pipelines.physics import phantoms, scatter_profiles

    cases = {"spine": phantoms.spine_slab(), "chest": phantoms.chest_slab()}
    references = {name: scatter_profiles.compare(hu, affine, histories, seed=7, kernels=kernels)
                  for name, (hu, affine) in cases.items()}

    def error(c):
        trial = replace(kernels, destination_factor=float(c))
        ratios = np.concatenate([scatter_profiles.refit(references[n], *cases[n], trial) for n in cases])
        return float(np.sqrt(np.mean(np.log(ratios) ** 2)))
    errors = {float(c): error(c) for c in DESTINATION_GRID}
    best = min(errors, key=errors.get)
    return best, {"rms_log_error": {f"{c:g}": round(e, 4) for c, e in errors.items()}, "histories": histories,
                  "phantoms": list(cases), "kv": 90}


def save(kernels: Kernels, histories: int, seconds: float, fit: dict, destination_fit: dict,
         grid_fit: dict | None = None) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    factors = {name: getattr(kernels, name) for name in ("grid_origin_factor", "far_origin_factor",
                                                           "grid_far_origin_factor") if getattr(kernels, name) is not None}
    np.savez_compressed(KERNEL_FILE, kv=kernels.kv, thickness_cm=kernels.thickness_cm, gap_cm=kernels.gap_cm,
                        radii_mm=kernels.radii_mm, values=kernels.values, origin_factor=kernels.origin_factor,
                        destination_factor=kernels.destination_factor, grid_values=kernels.grid_values.astype(np.float32),
                        grid_ratios=np.array(GRID_RATIOS), grid_lines_per_cm=np.array(GRID_LINES_PER_CM), **factors)
    PROVENANCE_FILE.write_text(json.dumps({
        "origin_factor": kernels.origin_factor, "far_origin_factor": kernels.far_origin_factor, "origin_factor_fit": fit,
        "destination_factor": kernels.destination_factor, "destination_factor_fit": destination_fit,
        "grid_origin_factor": kernels.grid_origin_factor, "grid_far_origin_factor": kernels.grid_far_origin_factor,
        "grid_origin_factor_fit": grid_fit, "far_radius_mm": FAR_RADIUS_MM,
        "made_by": "python -m pipelines.physics.scatter_kernels", "histories_per_kernel": histories,
        "seconds": round(seconds, 1), "monte_carlo": "pipelines/physics/montecarlo.py (checked: benchmarks/tg195.py)",
        "beam": f"tungsten, 12 deg anode, {FILTRATION_AL_MM} mm Al (spekpy)", "phantom": "water slabs, 120 cm square",
        "scintillator": "CsI 0.6 mm, energy absorbed", "source_to_slab_cm": SOURCE_TO_SLAB_CM,
        "kv": list(KV_NODES), "thickness_cm": list(THICKNESS_NODES_CM), "gap_cm": list(GAP_NODES_CM),
        "grids": {"ratio": list(GRID_RATIOS), "lines_per_cm": list(GRID_LINES_PER_CM),
                  "lamella_mm": GRID_LAMELLA.strip_mm, "lamella": "Pb", "interspace": GRID_LAMELLA.interspace,
                  "focused": "on the source", "tallied": "lamellae in planes of constant column; kernels radial"},
        "radii_edges_mm": RADII_EDGES_MM.tolist(),
        "versions": {p: version(p) for p in ("xraylib", "spekpy", "numba", "numpy")},
    }, indent=2) + "\n", encoding="utf-8")


def refit_origin(kernels: Kernels, histories: int) -> tuple[Kernels, dict, dict]:
    """`kernels` with their four origin factors fitted (`fit_origin_factors`), and the two fits' records."""
    from dataclasses import replace

    references = origin_references(histories)
    near, far, fit = fit_origin_factors(kernels, references, grid=False)
    grid_near, grid_far, grid_fit = fit_origin_factors(kernels, references, grid=True)
    for record in (fit, grid_fit):
        record["histories"] = histories
    print(f"origin factors {near:g} near, {far:g} far: rms log error {fit['rms_log_error']}; behind the grid "
          f"{grid_near:g} near, {grid_far:g} far: {grid_fit['rms_log_error']}")
    return replace(kernels, origin_factor=near, far_origin_factor=far, grid_origin_factor=grid_near,
                   grid_far_origin_factor=grid_far), fit, grid_fit


def main() -> None:
    parser = argparse.ArgumentParser(description="regenerate the scatter kernels from the Monte Carlo")
    parser.add_argument("--histories", type=int, default=2_000_000, help="per kernel (default: %(default)s)")
    parser.add_argument("--fit-histories", type=int, default=20_000_000,
                        help="per full-field Monte Carlo the origin factors are fitted to (default: %(default)s)")
    parser.add_argument("--refit-origin", action="store_true",
                        help="keep the stored kernels and destination factor; fit the origin factors again "
                             "(without and behind a grid)")
    parser.add_argument("--refit-destination", action="store_true",
                        help="keep the stored kernels (and origin factors, unless --refit-origin); fit the "
                             "destination factor again")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.refit_origin or args.refit_destination:
        from dataclasses import replace

        stored = load()
        before = json.loads(PROVENANCE_FILE.read_text(encoding="utf-8"))
        fit, destination_fit, grid_fit = (before[k] for k in ("origin_factor_fit", "destination_factor_fit",
                                                              "grid_origin_factor_fit"))
        if args.refit_origin:
            stored, fit, grid_fit = refit_origin(stored, args.fit_histories)
        if args.refit_destination:
            c, destination_fit = fit_destination_factor(stored)
            stored = replace(stored, destination_factor=c)
            print(f"destination factor {c:g} per cm: rms log error {destination_fit['rms_log_error']}")
        save(stored, before["histories_per_kernel"], before["seconds"], fit, destination_fit, grid_fit)
        return
    kernels = generate(args.histories)
    np.savez_compressed(DATA / "scatter_kernels.unfitted.npz", values=kernels.values, grid_values=kernels.grid_values)
    kernels, fit, grid_fit = refit_origin(kernels, args.fit_histories)
    from dataclasses import replace

    c, destination_fit = fit_destination_factor(kernels)
    kernels = replace(kernels, destination_factor=c)
    print(f"destination factor {c:g} per cm: rms log error {destination_fit['rms_log_error']}")
    save(kernels, args.histories, time.perf_counter() - start, fit, destination_fit, grid_fit)
    (DATA / "scatter_kernels.unfitted.npz").unlink()
    print(f"wrote {KERNEL_FILE} and {PROVENANCE_FILE} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
