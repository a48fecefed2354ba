"""Realistic views of one volume: each view's walk gives the tissue materials' mass thicknesses
(`materials`), the instruments add theirs (`instruments`), and `synthesis` turns them into a detector
image under a recorded `PhysicsDraw`; the same record gives the same image, every time."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.ops.drr import Renderer, Walk
from pipelines.physics import materials, tables
from pipelines.physics.draw import PhysicsDraw
from pipelines.physics.implants import MeshImplant
from pipelines.physics.instruments import Instrument, instrument_channels
from pipelines.physics.kernels import Kernels, reference_attenuation
from pipelines.physics.kernels import load as load_kernels
from pipelines.physics.materials import TISSUE_CHANNELS
from pipelines.physics.synthesis import Detection, DetectorModel, ScatterModel, scatter_sigma_mm, synthesize
from pipelines.physics.synthesis_torch import synthesize as synthesize_torch
from pipelines.physics.units import MM_PER_CM
from schemas.config import AttenuationConfig, XrayConfig


@dataclass(frozen=True)
class RealisticView:
    """One camera's images: exact (`whole`, `part`), the detector's (`detection`: the processed image,
    its primary and its scatter apart), and the instrument mask's kind bits."""

    whole: np.ndarray  # (H, W) float32: the attenuation line integral
    part: np.ndarray | None  # (H, W) float32: the labelled part's line integral (None without a label)
    detection: Detection
    instrument_bits: np.ndarray  # (H, W) uint8: kind bits
    instrument_ids: np.ndarray  # (H, W) int32: bit k where the ray crosses the record's instrument k

    @property
    def realistic(self) -> np.ndarray:
        """(H, W) float32: the processed detector image."""
        return self.detection.image

    @property
    def primary(self) -> np.ndarray:
        return self.detection.primary

    @property
    def scatter(self) -> np.ndarray:
        return self.detection.scatter


class RealisticRenderer:
    """Realistic views of the volume a 'traversal' Renderer holds, with the config's materials and alloys."""

    def __init__(self, renderer: Renderer, cfg: XrayConfig, attenuation: AttenuationConfig,
                 kernels: Kernels | None = None, on_device: bool = False):
        self.renderer = renderer
        self.kernels = kernels  # the scatter kernels; None: the stored ones (`kernels.load`)
        # True: synthesis where the walks are (`synthesis_torch`, the renderer's torch or cuda walker);
        # False: `synthesis.synthesize` on the CPU (builds: their images keep their bytes)
        if on_device and renderer.walker == "numba":
            raise ValueError("synthesis on a device needs a renderer with the 'cuda' or 'torch' walker")
        self.on_device = on_device
        self.materials, self.alloys = tuple(cfg.materials), tuple(cfg.alloys)
        anchor_hu = np.array([m.hu for m in cfg.materials])
        self.knots = materials.anchor_knots(anchor_hu, attenuation.mu_water_per_mm)
        self.coefficients = materials.hinge_coefficients(self.knots, tables.material_densities(cfg.materials))
        self.alloy_names = [a.name for a in cfg.alloys]
        self.alloy_densities = np.array([tables.alloy_density(a) for a in cfg.alloys])

    def masses(self, walk: Walk, instruments: tuple[Instrument | MeshImplant, ...]):
        """(H, W, channels) g/cm^2, (H, W) instrument kind bits and (H, W) instrument id bits of one walked
        view. The masses are a numpy array, or with `on_device` a float64 tensor on the walk's device (the
        instruments' chords are made on the CPU from the world rays and joined there)."""
        g = self.renderer.geometry
        shape = (g.height, g.width)
        if self.on_device:
            if walk.on_device is None:
                raise ValueError("synthesis on a device needs walks with their tensors (the 'cuda' or 'torch' walker)")
            metal, mask, ids = instrument_channels(walk.source, walk.targets, list(instruments), self.alloy_names,
                                                   self.alloy_densities, shape)
            line, hinges, _ = walk.on_device
            tissue = materials.mass_thickness_torch(line, hinges, self.coefficients)
            masses = torch.cat([tissue, torch.as_tensor(metal, device=line.device)], dim=1)
        else:  # tissue then alloy channels, each written in place into the view's one array
            masses = np.empty((shape[0] * shape[1], TISSUE_CHANNELS + len(self.alloy_names)))
            _, mask, ids = instrument_channels(walk.source, walk.targets, list(instruments), self.alloy_names,
                                               self.alloy_densities, shape, out=masses[:, TISSUE_CHANNELS:])
            materials.mass_thickness(walk.line, walk.hinges, self.coefficients, out=masses[:, :TISSUE_CHANNELS])
        return masses.reshape(*shape, -1), mask.reshape(shape), ids.reshape(shape)

    def detector(self, physics: PhysicsDraw) -> DetectorModel:
        g = self.renderer.geometry
        return DetectorModel(g.pixel_spacing_mm, g.sdd_mm, g.sod_mm, physics.mas, physics.focal_spot_mm,
                             physics.psf_sigma_mm, physics.electronic_noise_quanta, physics.collimation,
                             physics.collimation_fraction, physics.collimation_aspect, physics.polarity,
                             physics.heel_direction_deg)

    def scatter(self, masses: np.ndarray, physics: PhysicsDraw) -> ScatterModel | None:
        if not physics.scatter:
            return None
        g = self.renderer.geometry
        grid = physics.anti_scatter_grid
        k = self.kernels or load_kernels() if (physics.scatter_model == "kernels" or grid) else None
        height_cm = (g.sdd_mm - g.sod_mm) / MM_PER_CM
        if physics.scatter_model == "kernels":  # each pencil's gap from its own thickness, centred on the isocentre
            return ScatterModel(physics.scatter_amplitude, physics.scatter_exponent, 0.0, 1.0,
                                k.centred(physics.kv, height_cm, grid), k.thickness_cm,
                                k.radii_mm, k.source_scale(g.sod_mm, g.sdd_mm, grid), k.destination_factor,
                                reference_attenuation(physics.spectrum, self.materials, self.alloys),
                                tables.electron_ratios(self.materials, self.alloys))
        centre = float(masses[g.height // 2, g.width // 2, 1:3].sum())  # ~cm of unit-density tissue on the central ray
        gap = g.sdd_mm - g.sod_mm - 0.5 * centre * MM_PER_CM  # the Gaussian model's one gap, from the central ray
        return ScatterModel(physics.scatter_amplitude, physics.scatter_exponent,
                            scatter_sigma_mm(physics.scatter_min_sigma_mm, physics.scatter_spread_deg, gap),
                            k.grid_scatter_factor(physics.kv, float(centre), gap / MM_PER_CM, grid) if grid else 1.0)

    def image(self, masses, raylen, physics: PhysicsDraw, seed: int | None) -> Detection:
        """The detector image of one view's mass thicknesses (`seed` None: noiseless), parts apart: numpy
        arrays by `synthesis.synthesize`, or tensors by `synthesis_torch.synthesize` on their device."""
        lookup = tables.tables_for(physics.spectrum, self.materials, self.alloys)
        model = self.scatter(masses, physics)
        if isinstance(masses, torch.Tensor):
            return synthesize_torch(masses, raylen, lookup, self.detector(physics), model, seed)
        return synthesize(masses, raylen, lookup, self.detector(physics), model, seed)

    def view(self, camera: np.ndarray, label: int, physics: PhysicsDraw, instruments: tuple[Instrument | MeshImplant, ...],
             seed: int | None) -> RealisticView:
        """One camera's exact and realistic images from one walk (`label` -1: no part image)."""
        return self.from_walk(self.renderer.walk(camera, label, self.knots), label, physics, instruments, seed)

    def from_walk(self, walk: Walk, label: int, physics: PhysicsDraw,
                  instruments: tuple[Instrument | MeshImplant, ...], seed: int | None) -> RealisticView:
        """The view of a walk taken with this renderer's knots (`Renderer.walks`, several views at once)."""
        masses, mask, ids = self.masses(walk, instruments)
        raylen = walk.on_device[2] if self.on_device else walk.raylen
        return RealisticView(walk.whole, walk.part if label >= 0 else None,
                             self.image(masses, raylen, physics, seed), mask, ids)
