"""Surgical instruments as analytic solids: pedicle screws, rods and K-wires, each a union of finite
cylinders of one alloy. Their chords along every detector ray are exact (no voxelisation), so they
are their own mass-thickness channels beside the tissue materials, and their 2-D masks are exact.

Placement (seeded, near the target vertebra; world RAS mm): the vertebra's mask gives its centroid
and its extent across (x: right-left) and along (y: posterior-anterior) the body at the centroid's
level. A screw runs anteriorly and converges medially by a drawn angle, its tip in the anterior
third of the vertebral body beside the midline, its shaft back through the pedicle region (about a
fifth of the vertebra's width from the midline at the posterior body wall), its head (tulip) behind
it. Levels below the target get their own screw pairs; rods join the heads of each side. K-wires
enter posterolaterally at a drawn angle towards the vertebral body. This is a geometric model of
where such implants lie, not a surgical plan: pedicles are not segmented.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from pipelines.ops.orient import voxel_to_world
from schemas.config import InstrumentConfig

SCREW, ROD, KWIRE = 1, 2, 4  # bits of the instrument mask
HEAD_DIAMETER_FACTOR = 1.8  # tulip head: wider and short, behind the shaft
HEAD_LENGTH_MM = 12.0


def _uniform(rng: np.random.Generator, r) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def vertebra_frame(labels: np.ndarray, affine: np.ndarray, level_id: int) -> dict | None:
    """Centroid (world mm), width (x extent) and depth (y extent) of one vertebra at its centroid's level."""
    idx = np.argwhere(labels == level_id)
    if len(idx) == 0:
        return None
    world = voxel_to_world(affine, idx.astype(float))
    centre = world.mean(axis=0)
    slab = world[np.abs(world[:, 2] - centre[2]) <= 3.0]
    slab = slab if len(slab) else world
    return {"centre": centre, "x": (float(slab[:, 0].min()), float(slab[:, 0].max())),
            "y": (float(slab[:, 1].min()), float(slab[:, 1].max())), "z": (float(world[:, 2].min()), float(world[:, 2].max()))}


def _screw(frame: dict, side: int, rng: np.random.Generator, cfg: InstrumentConfig) -> list[dict]:
    cx, cy, cz = frame["centre"]
    width = frame["x"][1] - frame["x"][0]
    y_post, y_ant = frame["y"]
    depth = y_ant - y_post
    diameter = _uniform(rng, cfg.screw_diameter_mm)
    length = _uniform(rng, cfg.screw_length_mm)
    angle = math.radians(_uniform(rng, cfg.screw_convergence_deg))
    tilt = math.radians(rng.uniform(-5.0, 5.0))
    tip = np.array([cx + side * rng.uniform(0.02, 0.06) * width, y_ant - rng.uniform(0.08, 0.15) * depth, cz])
    # from the tip back towards the posterior, diverging laterally by the convergence angle
    back = np.array([side * math.sin(angle), -math.cos(angle) * math.cos(tilt), math.sin(tilt)])
    entry = tip + back * length
    head_end = entry + back * HEAD_LENGTH_MM
    return [{"kind": SCREW, "p0": tip, "p1": entry, "radius": diameter / 2, "material": cfg.screw_material},
            {"kind": SCREW, "p0": entry, "p1": head_end, "radius": diameter * HEAD_DIAMETER_FACTOR / 2,
             "material": cfg.screw_material}]


def _kwire(frame: dict, rng: np.random.Generator, cfg: InstrumentConfig) -> dict:
    cx, cy, cz = frame["centre"]
    width = frame["x"][1] - frame["x"][0]
    side = 1 if rng.random() < 0.5 else -1
    target = np.array([cx + side * rng.uniform(0.0, 0.2) * width, frame["y"][1] - rng.uniform(0.2, 0.5) *
                       (frame["y"][1] - frame["y"][0]), cz + rng.uniform(-10.0, 10.0)])
    angle = math.radians(rng.uniform(0.0, 35.0))
    tilt = math.radians(rng.uniform(-25.0, 25.0))
    back = np.array([side * math.sin(angle), -math.cos(angle) * math.cos(tilt), math.sin(tilt)])
    length = _uniform(rng, cfg.kwire_length_mm)
    return {"kind": KWIRE, "p0": target, "p1": target + back * length,
            "radius": _uniform(rng, cfg.kwire_diameter_mm) / 2, "material": cfg.kwire_material}


def place_instruments(rng: np.random.Generator, labels: np.ndarray, affine: np.ndarray, level_ids: list[int],
                      cfg: InstrumentConfig) -> list[dict]:
    """Instruments of one sample: screw pairs in the first of `level_ids` (the target) and the next
    drawn number of them, rods joining each side's heads, drawn K-wires; [] with probability
    1 - cfg.probability. Each: kind bit, end points p0/p1 (world mm), radius (mm), material."""
    if rng.random() >= cfg.probability:
        return []
    n_levels = int(rng.integers(cfg.screw_levels[0], cfg.screw_levels[1] + 1))
    frames = [f for f in (vertebra_frame(labels, affine, lid) for lid in level_ids[:max(n_levels, 1)]) if f is not None]
    out: list[dict] = []
    heads = {-1: [], 1: []}
    for frame in frames[:n_levels]:
        for side in (-1, 1):
            parts = _screw(frame, side, rng, cfg)
            out += parts
            heads[side].append(parts[1]["p1"] * 0.5 + parts[1]["p0"] * 0.5)
    if len(heads[1]) >= 2 and rng.random() < cfg.rod_probability:
        radius = _uniform(rng, cfg.rod_diameter_mm) / 2
        for side in (-1, 1):
            ends = np.array(heads[side])
            axis = ends[-1] - ends[0]
            extend = axis / max(np.linalg.norm(axis), 1e-9) * 8.0
            out.append({"kind": ROD, "p0": ends[0] - extend, "p1": ends[-1] + extend, "radius": radius,
                        "material": cfg.rod_material})
    if frames:
        for _ in range(int(rng.integers(cfg.kwires[0], cfg.kwires[1] + 1))):
            out.append(_kwire(frames[0], rng, cfg))
    # recorded (and rendered) to 1 um: the record is the instrument
    return [{**p, "p0": [round(float(v), 3) for v in p["p0"]], "p1": [round(float(v), 3) for v in p["p1"]],
             "radius": round(float(p["radius"]), 4)} for p in out]


@numba.njit(inline="always")
def _chord(sx, sy, sz, dx, dy, dz, cyl, n):
    """Length (mm) of the segment source + [0, 1] x d inside cylinder n of `cyl`: rows
    (p0 xyz, p1 xyz, radius, unit axis xyz, length, bounding-sphere centre xyz and radius)."""
    # reject rays that miss the cylinder's bounding sphere (most rays, for most instruments)
    ox, oy, oz = cyl[n, 11] - sx, cyl[n, 12] - sy, cyl[n, 13] - sz
    dd2 = dx * dx + dy * dy + dz * dz
    t = (ox * dx + oy * dy + oz * dz) / dd2
    t = min(max(t, 0.0), 1.0)
    ex, ey, ez = ox - t * dx, oy - t * dy, oz - t * dz
    if ex * ex + ey * ey + ez * ez > cyl[n, 14] * cyl[n, 14]:
        return 0.0
    ax, ay, az, h = cyl[n, 7], cyl[n, 8], cyl[n, 9], cyl[n, 10]
    if h == 0.0:
        return 0.0
    mx, my, mz = sx - cyl[n, 0], sy - cyl[n, 1], sz - cyl[n, 2]
    md = mx * ax + my * ay + mz * az
    dd = dx * ax + dy * ay + dz * az
    px, py, pz = mx - md * ax, my - md * ay, mz - md * az
    qx, qy, qz = dx - dd * ax, dy - dd * ay, dz - dd * az
    a = qx * qx + qy * qy + qz * qz
    b = 2.0 * (px * qx + py * qy + pz * qz)
    cc = px * px + py * py + pz * pz - cyl[n, 6] * cyl[n, 6]
    lo, hi = 0.0, 1.0
    if a < 1e-18:
        if cc > 0.0:
            return 0.0
    else:
        disc = b * b - 4.0 * a * cc
        if disc <= 0.0:
            return 0.0
        root = math.sqrt(disc)
        lo = max(lo, (-b - root) / (2.0 * a))
        hi = min(hi, (-b + root) / (2.0 * a))
    if dd != 0.0:  # the slab 0 <= md + t dd <= h along the axis
        t0, t1 = (0.0 - md) / dd, (h - md) / dd
        if t0 > t1:
            t0, t1 = t1, t0
        lo, hi = max(lo, t0), min(hi, t1)
    elif md < 0.0 or md > h:
        return 0.0
    if hi <= lo:
        return 0.0
    return (hi - lo) * math.sqrt(dx * dx + dy * dy + dz * dz)


@numba.njit(parallel=True, cache=True)
def _channels(source, targets, cylinders, alloy, grams_per_mm, kind, masses, mask):
    """Per ray: mass thickness per alloy (g/cm^2) and the kind bits of the instruments it crosses."""
    for r in numba.prange(len(targets)):
        dx, dy, dz = targets[r, 0] - source[0], targets[r, 1] - source[1], targets[r, 2] - source[2]
        for c in range(len(cylinders)):
            chord = _chord(source[0], source[1], source[2], dx, dy, dz, cylinders, c)
            if chord > 0.0:
                masses[r, alloy[c]] += chord * grams_per_mm[c]
                mask[r] |= kind[c]


def _cylinders(instruments: list[dict]) -> np.ndarray:
    rows = []
    for p in instruments:
        p0, p1 = np.asarray(p["p0"], dtype=np.float64), np.asarray(p["p1"], dtype=np.float64)
        length = float(np.linalg.norm(p1 - p0))
        axis = (p1 - p0) / length if length > 0 else np.zeros(3)
        rows.append([*p0, *p1, p["radius"], *axis, length, *(0.5 * (p0 + p1)), np.hypot(length / 2, p["radius"])])
    return np.array(rows, dtype=np.float64).reshape(-1, 15)


def instrument_channels(source: np.ndarray, targets: np.ndarray, instruments: list[dict], alloys: list[str],
                        densities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((N, len(alloys)) g/cm^2 per alloy, (N,) uint8 mask of instrument kind bits) along the rays
    (world source (3,) -> targets (N, 3)). A screw's shaft and head share only an end face, so no
    mass is counted twice."""
    masses = np.zeros((len(targets), len(alloys)))
    mask = np.zeros(len(targets), dtype=np.uint8)
    if instruments:
        alloy = np.array([alloys.index(p["material"]) for p in instruments], dtype=np.int64)
        grams_per_mm = np.asarray(densities, dtype=np.float64)[alloy] / 10.0
        kind = np.array([p["kind"] for p in instruments], dtype=np.uint8)
        _channels(np.asarray(source, dtype=np.float64), np.ascontiguousarray(targets, dtype=np.float64),
                  _cylinders(instruments), alloy, grams_per_mm, kind, masses, mask)
    return masses, mask
