"""A sample's X-ray physics: parameters drawn from the config (domain randomisation at build time),
recorded, and the realistic views rendered from that record alone (with the volume), so a stored view
re-renders bit-identically: noise is seeded by (seed, sample, view) and stored in the record.
"""
from __future__ import annotations

import functools
import json
import math

import numpy as np

from pipelines.ops.drr import Geometry, Renderer
from pipelines.ops.sampling import stable_hash
from pipelines.physics import materials, tables
from pipelines.physics.instruments import instrument_channels
from pipelines.physics.synthesis import DetectorModel, ScatterModel, scatter_sigma_mm, synthesize
from schemas.config import AttenuationConfig, XrayConfig

NOISE_STREAM = "xray-noise"
XRAY_DRAWS = "xray-draws"  # the generator stream of a sample's physics and instruments (beside its poses')


RECORD_DIGITS = 6  # drawn values are rounded to 6 significant digits, and rendered as recorded


def _round(x: float) -> float:
    return float(f"{x:.{RECORD_DIGITS}g}")


def _uniform(rng: np.random.Generator, r) -> float:
    return _round(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def draw_physics(rng: np.random.Generator, cfg: XrayConfig) -> dict:
    """One sample's tube, detector, scatter and collimation parameters (plain values)."""
    shapes = sorted(cfg.collimation)
    weights = np.array([cfg.collimation[k] for k in shapes], dtype=float)
    shape = shapes[int(rng.choice(len(shapes), p=weights / weights.sum()))]
    lo, hi = math.log(cfg.mas[0]), math.log(cfg.mas[1])
    grid = bool(rng.random() < cfg.scatter.grid_probability)
    return {
        "kv": int(rng.integers(cfg.kv[0], cfg.kv[1] + 1)),
        "anode_angle_deg": cfg.anode_angle_deg,
        "filtration_al_mm": _uniform(rng, cfg.filtration_al_mm),
        "filtration_cu_mm": _uniform(rng, cfg.filtration_cu_mm),
        "mas": _round(math.exp(rng.uniform(lo, hi))) if hi > lo else cfg.mas[0],
        "detector_material": cfg.detector_material,
        "detector_thickness_mm": _uniform(rng, cfg.detector_thickness_mm),
        "psf_sigma_mm": _uniform(rng, cfg.psf_sigma_mm),
        "focal_spot_mm": _uniform(rng, cfg.focal_spot_mm),
        "electronic_noise_quanta": _uniform(rng, cfg.electronic_noise_quanta),
        "collimation": shape,
        "collimation_fraction": _uniform(rng, cfg.collimation_fraction),
        "collimation_aspect": _round(rng.uniform(0.7, 1.0)),
        "scatter": cfg.scatter.enabled,
        "scatter_amplitude": cfg.scatter.amplitude,
        "scatter_exponent": cfg.scatter.exponent,
        "scatter_spread_deg": cfg.scatter.spread_deg,
        "scatter_min_sigma_mm": cfg.scatter.min_sigma_mm,
        "grid": grid,
        "grid_primary_transmission": cfg.scatter.grid_primary_transmission if grid else 1.0,
        "grid_scatter_transmission": cfg.scatter.grid_scatter_transmission if grid else 1.0,
        "polarity": cfg.polarity,
        "energy_bins": cfg.energy_bins,
    }


def xray_record(physics: dict, instruments: list[dict], seeds: list[int]) -> dict:
    """The `xray` attribute: everything `XraySynth.views` needs, besides the volume and the cameras."""
    return {"physics": physics, "instruments": instruments, "noise_seeds": [int(s) for s in seeds],
            "seed_stream": NOISE_STREAM}


def noise_seeds(seed: int, sample_id: str, n_views: int) -> list[int]:
    return [stable_hash(seed, sample_id, view, NOISE_STREAM) for view in range(n_views)]


@functools.lru_cache(maxsize=32)
def _tables(key: str) -> tables.Tables:
    k = json.loads(key)
    energies, fluence = tables.tube_spectrum(k["kv"], k["anode_angle_deg"], k["filtration_al_mm"], k["filtration_cu_mm"])
    cfg = XrayConfig.model_validate({"materials": k["materials"], "alloys": k["alloys"]})
    return tables.make_tables(energies, fluence, cfg.materials, cfg.alloys, k["detector_material"],
                              k["detector_thickness_mm"], k["energy_bins"])


def tables_for(physics: dict, cfg: XrayConfig) -> tables.Tables:
    key = {k: physics[k] for k in ("kv", "anode_angle_deg", "filtration_al_mm", "filtration_cu_mm",
                                   "detector_material", "detector_thickness_mm", "energy_bins")}
    key["materials"] = [m.model_dump() for m in cfg.materials]
    key["alloys"] = [a.model_dump() for a in cfg.alloys]
    return _tables(json.dumps(key, sort_keys=True))


class XraySynth:
    """Realistic views of one volume (a 'traversal' Renderer of its attenuation) under one config."""

    def __init__(self, renderer: Renderer, cfg: XrayConfig, attenuation: AttenuationConfig):
        self.renderer, self.cfg = renderer, cfg
        anchor_hu = np.array([m.hu for m in cfg.materials])
        self.knots = materials.anchor_knots(anchor_hu, attenuation.mu_water_per_mm)
        self.coefficients = materials.hinge_coefficients(self.knots, tables.material_densities(cfg.materials))
        self.alloys = [a.name for a in cfg.alloys]
        self.alloy_densities = np.array([tables.alloy_density(a) for a in cfg.alloys])

    def masses(self, walk: dict, instruments: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, channels) g/cm^2 and (H, W) instrument mask of one walked view."""
        g = self.renderer.geometry
        tissue = materials.mass_thickness(walk["line"], walk["hinges"], self.coefficients)
        metal, mask = instrument_channels(walk["source"], walk["targets"], instruments, self.alloys, self.alloy_densities)
        return np.concatenate([tissue, metal], axis=1).reshape(g.height, g.width, -1), mask.reshape(g.height, g.width)

    def image(self, masses: np.ndarray, raylen: np.ndarray, physics: dict, seed: int | None,
              diagnostics: dict | None = None) -> np.ndarray:
        g: Geometry = self.renderer.geometry
        detector = DetectorModel(g.pixel_spacing_mm, g.sdd_mm, g.sod_mm, physics["mas"], physics["focal_spot_mm"],
                                 physics["psf_sigma_mm"], physics["electronic_noise_quanta"], physics["collimation"],
                                 physics["collimation_fraction"], physics["collimation_aspect"], physics["polarity"])
        scatter = None
        if physics["scatter"]:
            centre = masses[g.height // 2, g.width // 2, 1:3].sum()  # ~cm of unit-density tissue on the central ray
            gap = g.sdd_mm - g.sod_mm - 0.5 * centre * materials.MM_PER_CM
            scatter = ScatterModel(physics["scatter_amplitude"], physics["scatter_exponent"],
                                   scatter_sigma_mm(physics["scatter_min_sigma_mm"], physics["scatter_spread_deg"], gap),
                                   physics["grid_primary_transmission"], physics["grid_scatter_transmission"])
        return synthesize(masses, raylen, tables_for(physics, self.cfg), detector, scatter, seed, diagnostics)

    def views(self, cameras: np.ndarray, label: int, physics: dict, instruments: list[dict],
              seeds: list[int]) -> dict[str, np.ndarray]:
        """Exact and realistic images of every camera: 'whole', 'part', 'realistic' (V, H, W) float32,
        'instrument_bits' (V, H, W) uint8; the same arrays from the same record, every time."""
        out = {"whole": [], "part": [], "realistic": [], "instrument_bits": []}
        for v, camera in enumerate(cameras):
            walk = self.renderer.walk_hinges(camera, label, self.knots)
            masses, mask = self.masses(walk, instruments)
            out["whole"].append(walk["whole"])
            out["part"].append(walk["part"])
            out["instrument_bits"].append(mask)
            out["realistic"].append(self.image(masses, walk["raylen"], physics, seeds[v]))
        return {k: np.stack(v) for k, v in out.items()}
