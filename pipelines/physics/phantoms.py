"""Phantoms in HU for the physics API and its checks: boxes of water with inserts of other HU (bone,
lung), on a voxel grid centred on the world origin (RAS mm), so a view about the origin sees them as a
CT. The same phantom goes to the renderer (`render.scene_of`) and, through the same material mapping
(`materials.volume_fractions`), to the Monte Carlo (`montecarlo.phantom_from_hu`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUNG_HU = -740.0  # inflated lung, ~0.26 g/cm^3 of water-like tissue by the default mapping
BONE_HU = 1500.0  # the default bone anchor: ICRP cortical bone at its own density


@dataclass(frozen=True)
class Insert:
    """A box of one HU inside the phantom: its lower and upper corners, mm about the phantom's centre
    along the volume's axes (x: right-left, y: anterior-posterior, z: inferior-superior)."""

    hu: float
    lo_mm: tuple[float, float, float]
    hi_mm: tuple[float, float, float]


def box_hu(size_mm: tuple[float, float, float], voxel_mm: float, hu: float = 0.0,
           inserts: tuple[Insert, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume (X, Y, Z) float32, its affine): a box of `hu` (water: 0) with `inserts`, the later ones
    over the earlier, each voxel taking the insert its centre lies in."""
    shape = tuple(int(round(s / voxel_mm)) for s in size_mm)
    if min(shape) < 1 or not np.allclose(np.array(shape) * voxel_mm, size_mm):
        raise ValueError(f"size {size_mm} mm is not a whole number of {voxel_mm} mm voxels")
    hu_volume = np.full(shape, np.float32(hu))
    centres = [(np.arange(n) + 0.5) * voxel_mm - s / 2 for n, s in zip(shape, size_mm)]
    for insert in inserts:
        inside = [(c >= lo) & (c < hi) for c, lo, hi in zip(centres, insert.lo_mm, insert.hi_mm)]
        hu_volume[np.ix_(*inside)] = insert.hu
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [-s / 2 + voxel_mm / 2 for s in size_mm]  # voxel centres about the origin
    return hu_volume, affine


def spine_slab(voxel_mm: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """The heterogeneous check's phantom: 400 x 200 x 400 mm of water (200 mm along the AP beam) with a
    lung block of 80 mm depth on the patient's right and a 30 mm cortical-bone column on the left, both
    centred in depth -- so across the field the water-equivalent thickness falls to ~14 cm and rises to
    ~25 cm, and bone, which scatters less per water-equivalent centimetre, sits beside water."""
    inserts = (Insert(LUNG_HU, (-90.0, -40.0, -200.0), (-20.0, 40.0, 200.0)),
               Insert(BONE_HU, (20.0, -15.0, -200.0), (60.0, 15.0, 200.0)))
    return box_hu((400.0, 200.0, 400.0), voxel_mm, 0.0, inserts)


def chest_slab(voxel_mm: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """A second heterogeneous phantom, laid out as an AP chest: 400 x 250 x 400 mm of water (250 mm along
    the beam) with two lung blocks of 150 mm depth beside a 40 mm wide, 40 mm deep cortical-bone column
    on the midline (the spine), behind it in depth."""
    inserts = (Insert(LUNG_HU, (-170.0, -90.0, -200.0), (-30.0, 60.0, 200.0)),
               Insert(LUNG_HU, (30.0, -90.0, -200.0), (170.0, 60.0, 200.0)),
               Insert(BONE_HU, (-20.0, 60.0, -200.0), (20.0, 100.0, 200.0)))
    return box_hu((400.0, 250.0, 400.0), voxel_mm, 0.0, inserts)
