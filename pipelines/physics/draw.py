"""A view's X-ray physics as a record: parameters drawn from the config (domain randomisation),
rounded as recorded, with the instruments and one noise seed per view.

The record is self-contained: besides the drawn values it repeats the config's fixed ones (anode
angle, detector material, scatter model, grid transmissions, polarity, energy bins), so a stored
view re-renders from its record alone even after the config's defaults change.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from pipelines.ops.sampling import stable_hash
from pipelines.physics.grid import Grid
from pipelines.physics.implants import MeshImplant
from pipelines.physics.instruments import Instrument, implant_from_record
from pipelines.physics.tables import SpectrumKey
from schemas.config import XrayConfig
from schemas.shard_layout import XrayField

NOISE_STREAM = "xray-noise"  # generator stream of the views' noise seeds
XRAY_DRAWS = "xray-draws"  # generator stream of a stored sample's physics and instruments (beside its poses')
RECORD_DIGITS = 6  # drawn values are rounded to 6 significant digits, and rendered as recorded
COLLIMATION_ASPECT = (0.7, 1.0)  # a rectangle's height over its width


def _round(x: float) -> float:
    return float(f"{x:.{RECORD_DIGITS}g}")


def _uniform(rng: np.random.Generator, r) -> float:
    return _round(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


@dataclass(frozen=True)
class PhysicsDraw:
    """One sample's tube, detector, scatter and collimation parameters, as recorded (field order = record order)."""

    kv: int  # tube voltage, kVp
    anode_angle_deg: float
    filtration_al_mm: float
    filtration_cu_mm: float
    mas: float  # tube current-time product per image
    detector_material: str  # xraylib NIST name of the scintillator
    detector_thickness_mm: float
    psf_sigma_mm: float  # detector blur
    focal_spot_mm: float  # nominal focal spot (FWHM)
    electronic_noise_quanta: float
    collimation: str  # none, rectangle or iris
    collimation_fraction: float
    collimation_aspect: float
    scatter: bool
    scatter_amplitude: float
    scatter_exponent: float
    scatter_spread_deg: float
    scatter_min_sigma_mm: float
    grid: bool
    grid_ratio: float  # a focused linear grid's (physics.grid); 0 without a grid
    grid_lines_per_cm: float  # 0 without a grid
    grid_lamella_mm: float  # lead lamella thickness; 0 without a grid
    grid_interspace: str  # "" without a grid
    polarity: str  # radiograph (-ln, bone bright) or fluoroscopy (I/I0)
    energy_bins: int
    heel_direction_deg: float | None = None  # anode -> cathode on the detector (0: +columns, 90: +rows); None: no heel
    scatter_model: str = "gaussian"  # 'kernels' (the Monte Carlo's pencil kernels) or 'gaussian' (amplitude, exponent)

    @property
    def spectrum(self) -> SpectrumKey:
        return SpectrumKey(*(getattr(self, f.name) for f in fields(SpectrumKey)))

    @property
    def anti_scatter_grid(self) -> Grid | None:
        """The view's grid (None without one): the same the spectrum's tables pass the primary through."""
        return self.spectrum.grid

    def record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> PhysicsDraw:
        known = {f.name for f in fields(cls)}
        if set(record) - known:
            raise ValueError(f"a physics record with fields {sorted(set(record) - known)} is from another schema "
                             "version (schema 1.1 records a grid by ratio and line density)")
        draw = cls(**record)
        if draw.grid != (draw.grid_ratio > 0):
            raise ValueError(f"a physics record with grid {draw.grid} and grid_ratio {draw.grid_ratio}: a grid needs a "
                             "positive ratio, no grid a ratio of 0")
        return draw


def draw_physics(rng: np.random.Generator, cfg: XrayConfig) -> PhysicsDraw:
    """Draw one sample's physics from the config's ranges (the draws' order is part of the record's meaning)."""
    shapes = sorted(cfg.collimation)
    weights = np.array([cfg.collimation[k] for k in shapes], dtype=float)
    shape = shapes[int(rng.choice(len(shapes), p=weights / weights.sum()))]
    lo, hi = math.log(cfg.mas[0]), math.log(cfg.mas[1])
    grid = bool(rng.random() < cfg.scatter.grid_probability)
    scatter = cfg.scatter
    draw = PhysicsDraw(
        kv=int(rng.integers(cfg.kv[0], cfg.kv[1] + 1)),
        anode_angle_deg=cfg.anode_angle_deg,
        filtration_al_mm=_uniform(rng, cfg.filtration_al_mm),
        filtration_cu_mm=_uniform(rng, cfg.filtration_cu_mm),
        mas=_round(math.exp(rng.uniform(lo, hi))) if hi > lo else cfg.mas[0],
        detector_material=cfg.detector_material,
        detector_thickness_mm=_uniform(rng, cfg.detector_thickness_mm),
        psf_sigma_mm=_uniform(rng, cfg.psf_sigma_mm),
        focal_spot_mm=_uniform(rng, cfg.focal_spot_mm),
        electronic_noise_quanta=_uniform(rng, cfg.electronic_noise_quanta),
        collimation=shape,
        collimation_fraction=_uniform(rng, cfg.collimation_fraction),
        collimation_aspect=_round(rng.uniform(*COLLIMATION_ASPECT)),
        scatter=scatter.enabled,
        scatter_amplitude=scatter.amplitude,
        scatter_exponent=scatter.exponent,
        scatter_spread_deg=scatter.spread_deg,
        scatter_min_sigma_mm=scatter.min_sigma_mm,
        grid=grid,
        grid_ratio=0.0,
        grid_lines_per_cm=0.0,
        grid_lamella_mm=0.0,
        grid_interspace="",
        polarity=cfg.polarity,
        energy_bins=cfg.energy_bins,
        heel_direction_deg=(float(cfg.heel_directions_deg[int(rng.integers(len(cfg.heel_directions_deg)))])
                            if cfg.heel_directions_deg else None),
        scatter_model=scatter.model,
    )
    if not grid:
        return draw
    return replace(draw, grid_ratio=_uniform(rng, scatter.grid_ratio), grid_lines_per_cm=_uniform(rng, scatter.grid_lines_per_cm),
                   grid_lamella_mm=scatter.grid_lamella_mm, grid_interspace=scatter.grid_interspace)


def noise_seeds(seed: int, sample_id: str, n_views: int) -> tuple[int, ...]:
    """The one seeding rule of realistic views' noise: by (seed, sample id, view), for stored and streamed views alike."""
    return tuple(stable_hash(seed, sample_id, view, NOISE_STREAM) for view in range(n_views))


@dataclass(frozen=True)
class XrayRecord:
    """The `xray` attribute: everything the realistic views need besides the volume and the cameras."""

    physics: PhysicsDraw
    instruments: tuple[Instrument | MeshImplant, ...]
    noise_seeds: tuple[int, ...]
    seed_stream: str = NOISE_STREAM

    def record(self) -> dict:
        return {XrayField.PHYSICS: self.physics.record(),
                XrayField.INSTRUMENTS: [i.record() for i in self.instruments],
                XrayField.NOISE_SEEDS: [int(s) for s in self.noise_seeds],
                XrayField.SEED_STREAM: self.seed_stream}

    def to_json(self) -> str:
        return json.dumps(self.record(), sort_keys=True)

    @classmethod
    def from_record(cls, record: dict) -> XrayRecord:
        return cls(PhysicsDraw.from_record(record[XrayField.PHYSICS]),
                   tuple(implant_from_record(i) for i in record[XrayField.INSTRUMENTS]),
                   tuple(int(s) for s in record[XrayField.NOISE_SEEDS]), record[XrayField.SEED_STREAM])

    @classmethod
    def from_json(cls, text: str) -> XrayRecord:
        return cls.from_record(json.loads(text))

    def view(self, v: int) -> XrayRecord:
        """The record of view v alone (its noise seed only)."""
        return XrayRecord(self.physics, self.instruments, self.noise_seeds[v:v + 1], self.seed_stream)
