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

With `shapes: meshes` (the default) the same draws place triangle meshes (`physics.implants`): each
screw a threaded shank of the catalogue size nearest its drawn one (diameters every 0.5 mm, lengths
every 5 mm, as screws are sold) with a tulip head whose slot faces the spine's axis; each side's rod
bent through its tulips' seats; an interbody cage in the disc space between the first two levels and
an anterior plate across them, each with its own probability; and the config's own mesh files.
Meshes project exactly (`physics.meshes.chords`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numba
import numpy as np

from pipelines.ops.orient import voxel_to_world
from pipelines.physics import implants, meshes
from pipelines.physics.implants import CAGE, PLATE, MeshImplant
from pipelines.physics.units import MM_PER_CM
from schemas.config import MAX_INSTRUMENTS, InstrumentConfig

SCREW, ROD, KWIRE = 1, 2, 4  # bits of the instrument mask (with implants.CAGE 8 and implants.PLATE 16)
KIND_BITS = {"screw": SCREW, "rod": ROD, "kwire": KWIRE, "cage": CAGE, "plate": PLATE}
SCREW_DIAMETER_STEP_MM, SCREW_LENGTH_STEP_MM = 0.5, 5.0  # the catalogue sizes mesh screws are rounded to
CAGE_SIZE_MM = (26.0, 10.0)  # length, width
PLATE_OVERHANG_MM = 15.0  # beyond each of the two centroids' levels
# Placement geometry (mm, degrees, or fractions of the vertebra's width / depth at its centroid's level)
HEAD_DIAMETER_FACTOR = 1.8  # tulip head: wider and short, behind the shaft
HEAD_LENGTH_MM = 12.0
FRAME_SLAB_MM = 3.0  # the vertebra's width and depth are measured within this distance of its centroid's level
SCREW_TILT_DEG = (-5.0, 5.0)  # cranio-caudal tilt of a screw's axis
SCREW_TIP_MEDIAL = (0.02, 0.06)  # tip beside the midline, x width
SCREW_TIP_BEHIND_FRONT = (0.08, 0.15)  # tip behind the anterior body wall, x depth
ROD_OVERHANG_MM = 8.0  # a rod runs past the first and last screw heads by this much
KWIRE_TARGET_LATERAL = (0.0, 0.2)  # x width from the midline
KWIRE_TARGET_BEHIND_FRONT = (0.2, 0.5)  # x depth
KWIRE_TARGET_CRANIOCAUDAL_MM = (-10.0, 10.0)
KWIRE_ANGLE_DEG = (0.0, 35.0)  # lateral angle off the anterior direction
KWIRE_TILT_DEG = (-25.0, 25.0)
RECORD_MM_DECIMALS, RECORD_RADIUS_DECIMALS = 3, 4  # recorded (and rendered) to 1 um: the record is the instrument


@dataclass(frozen=True)
class Instrument:
    """One solid cylinder of an instrument: its kind bit, end points (world mm), radius (mm) and alloy."""

    kind: int
    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius: float
    material: str

    @classmethod
    def rounded(cls, kind: int, p0, p1, radius: float, material: str) -> Instrument:
        """As recorded and rendered: end points to 1 um, radius to 0.1 um."""
        return cls(int(kind), tuple(round(float(v), RECORD_MM_DECIMALS) for v in p0),
                   tuple(round(float(v), RECORD_MM_DECIMALS) for v in p1),
                   round(float(radius), RECORD_RADIUS_DECIMALS), material)

    def record(self) -> dict:
        return {**asdict(self), "p0": list(self.p0), "p1": list(self.p1)}

    @classmethod
    def from_record(cls, record: dict) -> Instrument:
        return cls(int(record["kind"]), tuple(record["p0"]), tuple(record["p1"]), float(record["radius"]),
                   record["material"])


@dataclass(frozen=True)
class VertebraFrame:
    """A vertebra's centroid (world mm) and its extents along x (right-left) and y (posterior-anterior) at
    the centroid's level, and along z overall."""

    centre: np.ndarray
    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]

    @property
    def width(self) -> float:
        return self.x[1] - self.x[0]

    @property
    def depth(self) -> float:
        return self.y[1] - self.y[0]


def _uniform(rng: np.random.Generator, r) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def vertebra_frame(labels: np.ndarray, affine: np.ndarray, level_id: int,
                   box: np.ndarray | None = None) -> VertebraFrame | None:
    """The frame of one vertebra, or None when it has no voxels. `box`: the label's voxel box
    (`ops.traversal.label_box`) when known, so only it is searched (the same voxels, in the same order)."""
    if box is None:
        idx = np.argwhere(labels == level_id)
    else:
        lo, hi = np.asarray(box[:3], dtype=np.int64), np.asarray(box[3:], dtype=np.int64)
        inside = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        idx = np.argwhere(inside == level_id) + lo
    if len(idx) == 0:
        return None
    world = voxel_to_world(affine, idx.astype(float))
    centre = world.mean(axis=0)
    centre.setflags(write=False)  # a scene keeps its frames (`place_instruments`' frames)
    slab = world[np.abs(world[:, 2] - centre[2]) <= FRAME_SLAB_MM]
    slab = slab if len(slab) else world
    return VertebraFrame(centre, (float(slab[:, 0].min()), float(slab[:, 0].max())),
                         (float(slab[:, 1].min()), float(slab[:, 1].max())),
                         (float(world[:, 2].min()), float(world[:, 2].max())))


def _frame(labels: np.ndarray, affine: np.ndarray, level_id: int, boxes: dict[int, np.ndarray] | None,
           frames: dict[int, VertebraFrame | None] | None) -> VertebraFrame | None:
    """`vertebra_frame` of a level, searched in its box when `boxes` has them (absent there: no voxels),
    kept in `frames` when given (~1.7 ms a search on the demo CT)."""
    if frames is not None and level_id in frames:
        return frames[level_id]
    if boxes is not None:
        frame = vertebra_frame(labels, affine, level_id, boxes[level_id]) if level_id in boxes else None
    else:
        frame = vertebra_frame(labels, affine, level_id)
    if frames is not None:
        frames[level_id] = frame
    return frame


def _screw(frame: VertebraFrame, side: int, rng: np.random.Generator,
           cfg: InstrumentConfig) -> tuple[list[Instrument], np.ndarray]:
    """A screw's shaft and head, and the head's centre (where a rod joins it)."""
    cx, _, cz = frame.centre
    diameter = _uniform(rng, cfg.screw_diameter_mm)
    length = _uniform(rng, cfg.screw_length_mm)
    angle = math.radians(_uniform(rng, cfg.screw_convergence_deg))
    tilt = math.radians(rng.uniform(*SCREW_TILT_DEG))
    tip = np.array([cx + side * rng.uniform(*SCREW_TIP_MEDIAL) * frame.width,
                    frame.y[1] - rng.uniform(*SCREW_TIP_BEHIND_FRONT) * frame.depth, cz])
    # from the tip back towards the posterior, diverging laterally by the convergence angle
    back = np.array([side * math.sin(angle), -math.cos(angle) * math.cos(tilt), math.sin(tilt)])
    entry = tip + back * length
    head_end = entry + back * HEAD_LENGTH_MM
    return ([Instrument.rounded(SCREW, tip, entry, diameter / 2, cfg.screw_material),
             Instrument.rounded(SCREW, entry, head_end, diameter * HEAD_DIAMETER_FACTOR / 2, cfg.screw_material)],
            head_end * 0.5 + entry * 0.5)


def _kwire(frame: VertebraFrame, rng: np.random.Generator, cfg: InstrumentConfig) -> Instrument:
    cx, _, cz = frame.centre
    side = 1 if rng.random() < 0.5 else -1
    target = np.array([cx + side * rng.uniform(*KWIRE_TARGET_LATERAL) * frame.width,
                       frame.y[1] - rng.uniform(*KWIRE_TARGET_BEHIND_FRONT) * frame.depth,
                       cz + rng.uniform(*KWIRE_TARGET_CRANIOCAUDAL_MM)])
    angle = math.radians(rng.uniform(*KWIRE_ANGLE_DEG))
    tilt = math.radians(rng.uniform(*KWIRE_TILT_DEG))
    back = np.array([side * math.sin(angle), -math.cos(angle) * math.cos(tilt), math.sin(tilt)])
    length = _uniform(rng, cfg.kwire_length_mm)
    return Instrument.rounded(KWIRE, target, target + back * length, _uniform(rng, cfg.kwire_diameter_mm) / 2,
                              cfg.kwire_material)


def implant_from_record(record: dict) -> Instrument | MeshImplant:
    return MeshImplant.from_record(record) if "generator" in record else Instrument.from_record(record)


def place_instruments(rng: np.random.Generator, labels: np.ndarray, affine: np.ndarray, level_ids: list[int],
                      cfg: InstrumentConfig, boxes: dict[int, np.ndarray] | None = None,
                      frames: dict[int, VertebraFrame | None] | None = None) -> list[Instrument | MeshImplant]:
    """Instruments of one sample: screw pairs in the first of `level_ids` (the target) and the next
    drawn number of them, rods joining each side's heads, drawn K-wires; with meshes, also a cage, a
    plate and the config's mesh files; [] with probability 1 - cfg.probability. `boxes`: every label's
    voxel box (`ops.traversal.label_boxes`) when the caller keeps them, so each vertebra is found
    without a pass over the whole label map; `frames`: a dict the caller keeps for these labels (level id ->
    frame), filled here as vertebrae are found, so a scene's later samples do not search them again."""
    if rng.random() >= cfg.probability:
        return []
    n_levels = int(rng.integers(cfg.screw_levels[0], cfg.screw_levels[1] + 1))
    levels = level_ids[:max(n_levels, 1)]
    found = [_frame(labels, affine, lid, boxes, frames) for lid in levels]
    located = [f for f in found if f is not None]
    mesh = cfg.shapes == "meshes"
    out: list[Instrument | MeshImplant] = []
    heads = {-1: [], 1: []}
    for frame in located[:n_levels]:
        for side in (-1, 1):
            parts, head = _screw(frame, side, rng, cfg)
            if mesh:
                parts, head = _mesh_screw(parts, cfg)
            out += parts
            heads[side].append(head)
    if len(heads[1]) >= 2 and rng.random() < cfg.rod_probability:
        diameter = _uniform(rng, cfg.rod_diameter_mm)
        for side in (-1, 1):
            ends = np.array(heads[side])
            axis = ends[-1] - ends[0]
            extend = axis / max(np.linalg.norm(axis), 1e-9) * ROD_OVERHANG_MM
            if mesh:
                points = np.concatenate([[ends[0] - extend], ends, [ends[-1] + extend]])
                out.append(MeshImplant.make(ROD, "rod", {"points": points, "diameter": diameter}, np.eye(4),
                                            cfg.rod_material))
            else:
                out.append(Instrument.rounded(ROD, ends[0] - extend, ends[-1] + extend, diameter / 2, cfg.rod_material))
    if located:
        for _ in range(int(rng.integers(cfg.kwires[0], cfg.kwires[1] + 1))):
            out.append(_kwire(located[0], rng, cfg))
    if mesh and len(located) >= 2:
        if rng.random() < cfg.cage_probability:
            out.append(_cage(located[0], located[1], rng, cfg))
        if rng.random() < cfg.plate_probability:
            out.append(_plate(located[0], located[1], cfg))
    if mesh and located:
        for m in cfg.meshes:
            pose = np.asarray(m.transform, dtype=np.float64).copy()
            pose[:3, 3] += located[0].centre
            out.append(MeshImplant.make(KIND_BITS[m.kind], "file", {"path": m.path, "sha256": meshes.file_sha256(m.path)},
                                        pose, m.material))
    return out


def _mesh_screw(parts: list[Instrument], cfg: InstrumentConfig) -> tuple[list[MeshImplant], np.ndarray]:
    """The threaded screw and tulip standing where the cylinders `_screw` drew stand, and the rod's seat."""
    shaft = parts[0]
    tip, entry = np.array(shaft.p0), np.array(shaft.p1)
    back = (entry - tip) / np.linalg.norm(entry - tip)
    diameter = max(round(2 * shaft.radius / SCREW_DIAMETER_STEP_MM) * SCREW_DIAMETER_STEP_MM, SCREW_DIAMETER_STEP_MM)
    length = max(round(np.linalg.norm(entry - tip) / SCREW_LENGTH_STEP_MM) * SCREW_LENGTH_STEP_MM, SCREW_LENGTH_STEP_MM)
    screw = MeshImplant.make(SCREW, "pedicle_screw", {"major_diameter": diameter, "length": length,
                                                      "pitch": cfg.screw_pitch_mm,
                                                      "thread_depth": min(cfg.screw_thread_depth_mm, diameter / 4)},
                             implants.pose_along(tip, back), cfg.screw_material)
    entry = tip + back * length
    rod_diameter = cfg.rod_diameter_mm[1]  # the tulip fits the largest rod
    # the tulip's slot (its local x) faces the spine's axis: world z, less its part along the screw
    along = np.array([0.0, 0.0, 1.0]) - back * back[2]
    along /= max(np.linalg.norm(along), 1e-9)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = along, np.cross(back, along), back, entry
    tulip = MeshImplant.make(SCREW, "tulip", {"diameter": cfg.tulip_diameter_mm, "height": cfg.tulip_height_mm,
                                              "rod_diameter": rod_diameter}, pose, cfg.screw_material)
    seat = entry + back * implants.tulip_seat_height(cfg.tulip_height_mm, rod_diameter)
    return [screw, tulip], seat


def _cage(upper: VertebraFrame, lower: VertebraFrame, rng: np.random.Generator, cfg: InstrumentConfig) -> MeshImplant:
    """A cage in the disc space: midway between the two centroids, in the anterior half of the bodies."""
    angle = math.radians(_uniform(rng, cfg.cage_angle_deg))
    height = _uniform(rng, cfg.cage_height_mm)
    centre = 0.5 * (upper.centre + lower.centre)
    centre[1] = 0.5 * ((upper.y[1] - 0.3 * upper.depth) + (lower.y[1] - 0.3 * lower.depth))
    pose = np.eye(4)
    pose[:3, 0] = [math.cos(angle), math.sin(angle), 0.0]
    pose[:3, 1] = [-math.sin(angle), math.cos(angle), 0.0]
    pose[:3, 3] = centre
    return MeshImplant.make(CAGE, "cage", {"length": CAGE_SIZE_MM[0], "width": CAGE_SIZE_MM[1], "height": height},
                            pose, cfg.cage_material)


def _plate(upper: VertebraFrame, lower: VertebraFrame, cfg: InstrumentConfig) -> MeshImplant:
    """An anterior plate on the bodies' front, from above one centroid to below the other."""
    thickness = 2.5
    span = abs(upper.centre[2] - lower.centre[2]) + 2 * PLATE_OVERHANG_MM
    centre = 0.5 * (upper.centre + lower.centre)
    centre[1] = max(upper.y[1], lower.y[1]) + thickness / 2 + 0.5
    pose = np.eye(4)
    pose[:3, 3] = centre
    return MeshImplant.make(PLATE, "plate", {"length": round(span, 3), "thickness": thickness}, pose, cfg.plate_material)


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


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _channels(source, targets, cylinders, alloy, grams_per_mm, kind, bit, masses, mask, ids):
    """Per ray: mass thickness per alloy (g/cm^2), the kind bits and the id bits of the instruments it crosses."""
    for r in numba.prange(len(targets)):
        dx, dy, dz = targets[r, 0] - source[0], targets[r, 1] - source[1], targets[r, 2] - source[2]
        for c in range(len(cylinders)):
            chord = _chord(source[0], source[1], source[2], dx, dy, dz, cylinders, c)
            if chord > 0.0:
                masses[r, alloy[c]] += chord * grams_per_mm[c]
                mask[r] |= kind[c]
                ids[r] |= bit[c]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _channels_spans(source, targets, width, cylinders, spans, alloy, grams_per_mm, kind, bit, masses, mask, ids):
    """`_channels` over each cylinder's pixels only (`_cylinder_spans`: per cylinder and detector row,
    the first and last column; none where first > last): every ray outside them misses the cylinder.
    A ray's cylinders are still added in their order, so its sums are `_channels`' to the bit."""
    for c in range(len(cylinders)):
        for i in numba.prange(spans.shape[1]):
            for j in range(spans[c, i, 0], spans[c, i, 1] + 1):
                r = i * width + j
                dx, dy, dz = targets[r, 0] - source[0], targets[r, 1] - source[1], targets[r, 2] - source[2]
                chord = _chord(source[0], source[1], source[2], dx, dy, dz, cylinders, c)
                if chord > 0.0:
                    masses[r, alloy[c]] += chord * grams_per_mm[c]
                    mask[r] |= kind[c]
                    ids[r] |= bit[c]


@numba.njit(cache=True, error_model="numpy")
def _cylinder_spans(cylinders, source, origin, eu, ev, height, width, spans):
    """Fill `spans` (n, height, 2) int64: per cylinder and detector row, the first and last column whose
    ray can meet the cylinder (first > last: none). The cylinder is cut along its axis into pieces about
    four radii long (at least 1 mm); each piece lies in a box of its length and the cylinder's width, whose
    corners, projected from the source, bound the rays that cross it (a convex box in front of the
    source); each piece's pixel rectangle, widened by a pixel for rounding, is joined into the rows'
    spans. A cylinder with a corner not in front of the source spans the whole detector."""
    proj = meshes.projection(source, origin, eu, ev)
    sx, sy, sz = source[0], source[1], source[2]
    nx, ny, nz, reach = proj[12], proj[13], proj[14], proj[19]
    for c in range(len(cylinders)):
        spans[c, :, 0], spans[c, :, 1] = width, -1
        ax, ay, az = cylinders[c, 7], cylinders[c, 8], cylinders[c, 9]
        length, radius = cylinders[c, 10], cylinders[c, 6]
        # two unit vectors across the axis (any axis: the one of x, y, z least along it is crossed with it)
        if abs(ax) <= abs(ay) and abs(ax) <= abs(az):
            px, py, pz = 0.0, az, -ay
        elif abs(ay) <= abs(az):
            px, py, pz = -az, 0.0, ax
        else:
            px, py, pz = ay, -ax, 0.0
        norm = math.sqrt(px * px + py * py + pz * pz)
        if length == 0.0 or norm == 0.0:
            continue  # no chord (`_chord`)
        px, py, pz = px / norm, py / norm, pz / norm
        qx, qy, qz = ay * pz - az * py, az * px - ax * pz, ax * py - ay * px
        pieces = min(max(int(math.ceil(length / max(4.0 * radius, 1.0))), 1), 1024)
        whole = False
        for k in range(pieces):
            u_lo, u_hi, v_lo, v_hi = np.inf, -np.inf, np.inf, -np.inf
            for t in (length * k / pieces, length * (k + 1) / pieces):  # the piece's box: its eight corners
                cx, cy, cz = cylinders[c, 0] + t * ax, cylinders[c, 1] + t * ay, cylinders[c, 2] + t * az
                for su in (-radius, radius):
                    for sv in (-radius, radius):
                        x, y, z = cx + su * px + sv * qx, cy + su * py + sv * qy, cz + su * pz + sv * qz
                        if (nx * (x - sx) + ny * (y - sy) + nz * (z - sz)) * reach <= 0.0:
                            whole = True  # not in front of the source
                        u, v = meshes.detector_uv(x, y, z, proj)
                        u_lo, u_hi, v_lo, v_hi = min(u_lo, u), max(u_hi, u), min(v_lo, v), max(v_hi, v)
            if whole:
                break
            r0 = max(int(math.floor(v_lo)) - 1, 0)
            r1 = min(int(math.ceil(v_hi)) + 1, height - 1)
            c0 = max(int(math.floor(u_lo)) - 1, 0)
            c1 = min(int(math.ceil(u_hi)) + 1, width - 1)
            for i in range(r0, r1 + 1):
                spans[c, i, 0] = min(spans[c, i, 0], c0)
                spans[c, i, 1] = max(spans[c, i, 1], c1)
        if whole:
            spans[c, :, 0], spans[c, :, 1] = 0, width - 1


def _cylinders(instruments: list[Instrument]) -> np.ndarray:
    rows = []
    for p in instruments:
        p0, p1 = np.asarray(p.p0, dtype=np.float64), np.asarray(p.p1, dtype=np.float64)
        length = float(np.linalg.norm(p1 - p0))
        axis = (p1 - p0) / length if length > 0 else np.zeros(3)
        rows.append([*p0, *p1, p.radius, *axis, length, *(0.5 * (p0 + p1)), np.hypot(length / 2, p.radius)])
    return np.array(rows, dtype=np.float64).reshape(-1, 15)


@numba.njit(cache=True)
def _add_mesh(chord, masses, mask, ids, alloy, density, kind, bit):
    """Within one mesh's box: its chords (mm) as g/cm^2 of its alloy, its kind bit and its id bit where a
    ray is inside (chord above CHORD_EPS_MM); the chords are zeroed for the next mesh."""
    for i in range(chord.shape[0]):
        for j in range(chord.shape[1]):
            c = chord[i, j]
            if c > meshes.CHORD_EPS_MM:
                masses[i, j, alloy] += c * density / MM_PER_CM
                mask[i, j] |= kind
                ids[i, j] |= bit
            chord[i, j] = 0.0


def _regular_frame(targets: np.ndarray, shape: tuple[int, int] | None):
    """`meshes.detector_frame` where the rays end on a regular (H, W) grid; None without a shape or where
    they do not."""
    if shape is None or shape[0] * shape[1] != len(targets):
        return None
    try:
        return meshes.detector_frame(targets, shape)
    except ValueError:
        return None


def instrument_channels(source: np.ndarray, targets: np.ndarray, instruments: list[Instrument | MeshImplant],
                        alloys: list[str], densities: np.ndarray,
                        shape: tuple[int, int] | None = None,
                        out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((N, len(alloys)) g/cm^2 per alloy, (N,) uint8 mask of instrument kind bits, (N,) int32 mask of
    instrument id bits: bit k where the ray crosses `instruments[k]`) along the rays (world source (3,)
    -> targets (N, 3)). A screw's shaft and head share only an end face, so no mass is counted twice.
    Mesh implants need the detector's `shape` (H, W = N): their rays end on its regular grid. `out`
    (N, len(alloys)) float64, e.g. the alloy columns of the view's mass channels: zeroed, filled and
    returned as the masses; None: a new array."""
    if len(instruments) > MAX_INSTRUMENTS:
        raise ValueError(f"{len(instruments)} instruments in one view: the id mask holds {MAX_INSTRUMENTS}")
    if out is None:
        masses = np.zeros((len(targets), len(alloys)))
    elif out.shape != (len(targets), len(alloys)) or out.dtype != np.float64:
        raise ValueError(f"instrument masses out of shape {out.shape} and type {out.dtype}: "
                         f"expected {(len(targets), len(alloys))} float64")
    else:
        masses = out
        masses[...] = 0.0
    mask = np.zeros(len(targets), dtype=np.uint8)
    ids = np.zeros(len(targets), dtype=np.int32)
    cylinders = [(k, p) for k, p in enumerate(instruments) if isinstance(p, Instrument)]
    implants = [(k, p) for k, p in enumerate(instruments) if isinstance(p, MeshImplant)]
    if implants and shape is None:
        raise ValueError("mesh implants need the detector's shape")
    frame = meshes.detector_frame(targets, shape) if implants else _regular_frame(targets, shape)
    if cylinders:
        bit = np.array([1 << k for k, _ in cylinders], dtype=np.int32)
        cylinders = [p for _, p in cylinders]
        alloy = np.array([alloys.index(p.material) for p in cylinders], dtype=np.int64)
        grams_per_mm = np.asarray(densities, dtype=np.float64)[alloy] / MM_PER_CM
        kind = np.array([p.kind for p in cylinders], dtype=np.uint8)
        rows = _cylinders(cylinders)
        source64, targets64 = np.asarray(source, dtype=np.float64), np.ascontiguousarray(targets, dtype=np.float64)
        if frame is None:
            _channels(source64, targets64, rows, alloy, grams_per_mm, kind, bit, masses, mask, ids)
        else:  # only the rays near each cylinder: a K-wire's sphere test over every ray cost ~0.6 ms a view
            spans = np.empty((len(rows), shape[0], 2), dtype=np.int64)
            origin, eu, ev = (np.asarray(x, dtype=np.float64) for x in frame)
            _cylinder_spans(rows, source64, origin, eu, ev, shape[0], shape[1], spans)
            _channels_spans(source64, targets64, shape[1], rows, spans, alloy, grams_per_mm, kind, bit,
                            masses, mask, ids)
    if implants:
        chord = np.zeros(shape)  # one mesh's chords at a time, zeroed again inside its box
        by_pixel = np.reshape(masses, (shape[0], shape[1], -1), copy=False)  # a view: written through
        mask_2d, ids_2d = mask.reshape(shape), ids.reshape(shape)
        for k, implant in implants:
            vertices, faces = implant.world()
            r0, r1, c0, c1 = meshes.add_chords(vertices, faces, source, frame, chord)
            if r0 <= r1:
                a = alloys.index(implant.material)
                box = (slice(r0, r1 + 1), slice(c0, c1 + 1))
                _add_mesh(chord[box], by_pixel[box], mask_2d[box], ids_2d[box], a, float(densities[a]),
                          np.uint8(implant.kind), np.int32(1 << k))
    return masses, mask, ids
