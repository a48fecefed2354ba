"""Scatter across the field, the Monte Carlo against the physics API, on one HU phantom.

Both see the same phantom (`phantoms`), through the same material mapping, at the default C-arm
geometry of the kernels' fit (SDD 1020 mm, SOD 850 mm, a 204.8 mm square detector filled by the beam,
CsI 0.6 mm, no grid) with a tungsten tube at kV + 3 mm Al, the AP beam through the phantom's y axis.
The profile is the scatter-to-primary ratio (SPR) of the CsI signal in 20 mm bands across the
detector's columns, over its central 40 mm of rows: the Monte Carlo's from its own primary and scatter
tallies, the model's from `render.render_xray`'s primary and scatter (noiseless). A tool for
`benchmarks/scatter.py` and the tests, not a build step.
"""
from __future__ import annotations

import time

import numpy as np

from pipelines.physics.kernels import FILTRATION_AL_MM, FIT_GEOMETRY_CM

BAND_MM = 20.0
BANDS = 10  # 10 bands of 20 mm: the central 200 mm of the 204.8 mm detector
ROWS_MM = 40.0  # the profile's height about the centre row
MC_PIXEL_CM = 0.4
MC_PIXELS = 52
DETECTOR_PIXELS, DETECTOR_PIXEL_MM = 256, 0.8


def band_edges_mm() -> np.ndarray:
    return (np.arange(BANDS + 1) - BANDS / 2) * BAND_MM


def _band_sums(image: np.ndarray, pixel_mm: float) -> np.ndarray:
    """(BANDS,) sums of a (rows, columns) image over the profile's bands (pixel centres inside)."""
    rows, cols = image.shape
    y = (np.arange(rows) - (rows - 1) / 2) * pixel_mm
    x = (np.arange(cols) - (cols - 1) / 2) * pixel_mm
    central = image[np.abs(y) < ROWS_MM / 2]
    band = np.digitize(x, band_edges_mm()) - 1
    return np.array([central[:, band == b].sum() for b in range(BANDS)])


def physics_for(kv: int, scatter_model: str = "kernels"):
    """The profile's noiseless PhysicsDraw: kV + 3 mm Al, CsI 0.6 mm, no grid, no blur, no heel."""
    from pipelines.physics.draw import PhysicsDraw
    from schemas.config import XrayConfig

    cfg = XrayConfig()
    s = cfg.scatter
    return PhysicsDraw(kv=kv, anode_angle_deg=cfg.anode_angle_deg, filtration_al_mm=FILTRATION_AL_MM,
                       filtration_cu_mm=0.0, mas=1.0, detector_material="Cesium Iodide", detector_thickness_mm=0.6,
                       psf_sigma_mm=0.0, focal_spot_mm=0.0, electronic_noise_quanta=0.0, collimation="none",
                       collimation_fraction=1.0, collimation_aspect=1.0, scatter=True,
                       scatter_amplitude=s.amplitude, scatter_exponent=s.exponent, scatter_spread_deg=s.spread_deg,
                       scatter_min_sigma_mm=s.min_sigma_mm, grid=False, grid_ratio=0.0,
                       grid_lines_per_cm=0.0, grid_lamella_mm=0.0, grid_interspace="", polarity="radiograph", energy_bins=cfg.energy_bins,
                       heel_direction_deg=None, scatter_model=scatter_model)


def model_profile(hu: np.ndarray, affine: np.ndarray, kv: int = 90, scatter_model: str = "kernels",
                  kernels=None) -> dict:
    """SPR and primary transmission per band by `render_xray` (AP view about the origin; `kernels`
    replaces the stored ones)."""
    from pipelines.ops.camera import base_camera
    from pipelines.physics.render import render_xray, scene_of
    from schemas.detector import Geometry

    sdd, sod = FIT_GEOMETRY_CM["sdd"] * 10, FIT_GEOMETRY_CM["sod"] * 10
    geometry = Geometry(DETECTOR_PIXELS, DETECTOR_PIXELS, DETECTOR_PIXEL_MM, sdd, sod)
    view = render_xray(scene_of(hu, affine, geometry, kernels=kernels), base_camera("AP", sod),
                       physics_for(kv, scatter_model))
    d = view.detection
    p, s, flat = (_band_sums(a, DETECTOR_PIXEL_MM) for a in (d.primary_signal, d.scatter_signal, d.flat_signal))
    order = slice(None, None, -1) if geometry.reverse_x_axis else slice(None)  # the bands along the phantom's +x
    return {"spr": (s / p)[order], "primary": (p / flat)[order]}


def monte_carlo_profile(hu: np.ndarray, voxel_mm: float, histories: int, kv: int = 90, seed: int = 0,
                        batches: int = 16) -> dict:
    """SPR (with its standard error) and primary transmission per band by the Monte Carlo (the open
    field from a run through the phantom's box of air), the AP beam along the phantom's -y axis and its
    centre on the isocentre."""
    from pipelines.physics import montecarlo as mc
    from pipelines.physics.tables import material_densities, tube_spectrum
    from schemas.config import XrayConfig

    cfg = XrayConfig()
    anchors = [m.hu for m in cfg.materials]
    tables = mc.Tables(tuple(mc.Material.nist(m.nist) for m in cfg.materials), float(kv) + 1.0)
    # (x, z, -y): the AP view's source is on the anterior (+y) side, the Monte Carlo's beam runs along +z
    beam_along_z = np.ascontiguousarray(np.transpose(hu, (0, 2, 1))[:, :, ::-1])
    phantom = mc.phantom_from_hu(beam_along_z, voxel_mm / 10, (0.0, 0.0, FIT_GEOMETRY_CM["sod"]), anchors,
                                 material_densities(cfg.materials))
    detector = mc.Detector(FIT_GEOMETRY_CM["sdd"], (MC_PIXELS, MC_PIXELS), MC_PIXEL_CM, csi_thickness=0.06)
    half = DETECTOR_PIXELS * DETECTOR_PIXEL_MM / 20
    spectrum = tube_spectrum(kv, cfg.anode_angle_deg, FILTRATION_AL_MM)  # the beam physics_for renders
    start = time.perf_counter()
    result = mc.simulate(tables, phantom, detector, histories, (half, half), spectrum, seed, batches)
    seconds = time.perf_counter() - start
    air = mc.Phantom(np.zeros_like(phantom.index), np.full(phantom.index.shape, tables.materials[0].density),
                     phantom.origin, phantom.spacing)  # the open field: the phantom's box of air
    open_field = mc.simulate(tables, air, detector, max(histories // 10, 1_000_000), (half, half), spectrum,
                             seed + 1, batches)
    pixel_mm = MC_PIXEL_CM * 10
    primary, scatter = _band_sums(result.csi_primary, pixel_mm), _band_sums(result.csi_scatter, pixel_mm)
    transmission = primary / _band_sums(open_field.csi_primary, pixel_mm)
    counts = np.array([b[0] for b in result.batches])
    per_batch = np.array([_band_sums(b[3], pixel_mm) / _band_sums(b[2], pixel_mm) for b in result.batches])
    se = np.array([mc.standard_error(per_batch[:, k], counts) for k in range(BANDS)])
    return {"spr": scatter / primary, "spr_se": se, "transmission": transmission, "seconds": seconds,
            "histories": histories}


def compare(hu: np.ndarray, affine: np.ndarray, histories: int, kv: int = 90, seed: int = 0,
            kernels=None) -> dict:
    """Both profiles along the phantom's +x, the SPRs' ratio (model / Monte Carlo) and the primaries'
    worst relative difference."""
    voxel_mm = float(affine[0, 0])
    mc = monte_carlo_profile(hu, voxel_mm, histories, kv, seed)
    model = model_profile(hu, affine, kv, kernels=kernels)
    return {"x_mm": (band_edges_mm()[1:] + band_edges_mm()[:-1]) / 2, "mc": mc, "model": model,
            "ratio": model["spr"] / mc["spr"],
            "primary_error": float(np.max(np.abs(model["primary"] / mc["transmission"] - 1)))}


def refit(result: dict, hu: np.ndarray, affine: np.ndarray, kernels, kv: int = 90) -> np.ndarray:
    """`compare`'s SPR ratios again for other kernels, against the same Monte Carlo profile."""
    return model_profile(hu, affine, kv, kernels=kernels)["spr"] / result["mc"]["spr"]

