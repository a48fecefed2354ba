"""Implants as triangle meshes: a small library generated in code (no downloaded CAD), and meshes from
files, each placed by a pose and recorded by what makes it again.

Generators (local frame, mm; every size a parameter, the defaults stated with their source):
- `pedicle_screw`: a threaded shank along +z, tip at z = 0. The thread is a helical V of `pitch` and
  `thread_depth` on a core of `major_diameter - 2 thread_depth`; it runs out over the last pitch and
  the tip tapers over `tip_length`. Default pitch 2.75 mm: ISO 5835's HB 6.5 cancellous thread.
- `tulip`: a polyaxial screw's head, a cylinder of `diameter` and `height` with a U-slot across x for a
  rod of `rod_diameter` (the rod's axis at `seat_height`); 12 x 13 mm for 5.5-6.0 mm rods, the size of
  common lumbar systems' heads.
- `rod`: a round rod of `diameter` swept along a smooth curve through given points (world mm): a rod
  bent to pass through the placed screws' seats. 5.5 and 6.0 mm are the lumbar systems' rod sizes.
- `cage`: an interbody cage, a `length` x `width` x `height` block with a vertical graft window;
  26 x 10 mm with 8-14 mm heights spans common TLIF/PLIF cages.
- `plate`: a `length` x `width` x `thickness` plate with `holes` screw holes along its axis; 16 mm wide
  and 2.5 mm thick like anterior plates.
Booleans (slot, window, holes) go through trimesh with the manifold3d engine; every generated mesh
passes `meshes.check_mesh`.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from pipelines.io import machine_cache
from pipelines.physics import meshes
from pipelines.physics.kept import Kept

SECTIONS = 96  # facets around a round part (a 7.5 mm screw: its facets lie within 2 um of the circle)
THREAD_STEPS = 24  # rings per thread pitch
# the kinds' mask bits (physics.instruments has SCREW 1, ROD 2, KWIRE 4)
CAGE, PLATE = 8, 16


def pedicle_screw(major_diameter: float = 6.5, length: float = 45.0, pitch: float = 2.75,
                  thread_depth: float = 1.0, tip_length: float = 4.0):
    import trimesh

    if not 0 < thread_depth < major_diameter / 2 or pitch <= 0 or length <= pitch:
        raise ValueError(f"a pedicle screw needs 0 < thread depth < radius and length > pitch: "
                         f"{major_diameter=}, {length=}, {pitch=}, {thread_depth=}")
    core = major_diameter / 2 - thread_depth
    n_z = int(math.ceil(length / pitch * THREAD_STEPS))
    z = np.linspace(0.0, length, n_z + 1)
    phi = np.arange(SECTIONS) * (2 * math.pi / SECTIONS)
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    phase = (zz - pitch * pp / (2 * math.pi)) / pitch
    v_profile = 1.0 - 2.0 * np.abs(phase - np.floor(phase) - 0.5)  # 0 at the root, 1 at the crest
    run_out = np.clip((length - zz) / pitch, 0.0, 1.0)
    taper = 0.35 + 0.65 * np.clip(zz / tip_length, 0.0, 1.0)
    radius = (core + thread_depth * v_profile * run_out) * taper
    rings = np.stack([radius * np.cos(pp), radius * np.sin(pp), zz], axis=-1).reshape(-1, 3)
    return _closed_tube(trimesh, rings, n_z + 1, SECTIONS, np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, length]))


def tulip(diameter: float = 12.0, height: float = 13.0, rod_diameter: float = 5.5):
    import trimesh

    slot_width = rod_diameter + 0.2
    seat = tulip_seat_height(height, rod_diameter)
    body = trimesh.creation.cylinder(radius=diameter / 2, height=height, sections=SECTIONS)
    body.apply_translation([0.0, 0.0, height / 2])
    slot_depth = height - (seat - rod_diameter / 2)
    slot = trimesh.creation.box([diameter * 2, slot_width, slot_depth])
    slot.apply_translation([0.0, 0.0, height - slot_depth / 2 + 0.5])
    seat_bore = trimesh.creation.cylinder(radius=slot_width / 2, height=diameter * 2, sections=SECTIONS)
    seat_bore.apply_transform(_rotate_z_to([1.0, 0.0, 0.0]))
    seat_bore.apply_translation([0.0, 0.0, seat])
    return trimesh.boolean.difference([body, slot, seat_bore], engine="manifold")


def tulip_seat_height(height: float, rod_diameter: float) -> float:
    """Where a rod's axis lies in a tulip (mm above its base): one rod diameter below the top."""
    return height - rod_diameter


def rod(points, diameter: float = 5.5, step: float = 1.0):
    """A rod through `points` (world mm, in order): centripetal Catmull-Rom between them."""
    import trimesh

    points = np.asarray(points, dtype=np.float64)
    if len(points) < 2:
        raise ValueError("a rod needs two points or more")
    path = _catmull_rom(points, step)
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    bend = _min_bend_radius(path)
    if bend < diameter:
        raise ValueError(f"a {diameter:g} mm rod cannot bend to a {bend:.2g} mm radius through {points.tolist()}")
    gap = _min_far_distance(path, math.pi * diameter / 2)
    if gap < 1.5 * diameter:
        raise ValueError(f"a {diameter:g} mm rod through {points.tolist()} comes back within {gap:.2g} mm of itself")
    normal = np.cross(tangents[0], [1.0, 0.0, 0.0] if abs(tangents[0][0]) < 0.9 else [0.0, 1.0, 0.0])
    normals = _transported(tangents, normal / np.linalg.norm(normal))
    binormals = np.cross(tangents, normals)
    phi = np.arange(SECTIONS) * (2 * math.pi / SECTIONS)
    r = diameter / 2
    rings = _rings(path, normals, binormals, np.cos(phi), np.sin(phi), r)
    return _closed_tube(trimesh, rings, len(path), SECTIONS, path[0], path[-1])


@numba.njit(cache=True)
def _rings(path, normals, binormals, cos_phi, sin_phi, r):
    """(len(path) x len(phi), 3) ring-major: every section point of path point k about its frame,
    path + r (cos phi normal + sin phi binormal) (one pass: numpy's broadcast temporaries took ~0.2 ms)."""
    n = len(cos_phi)
    out = np.empty((len(path) * n, 3))
    for k in range(len(path)):
        for m in range(n):
            for d in range(3):
                out[k * n + m, d] = path[k, d] + r * (cos_phi[m] * normals[k, d] + sin_phi[m] * binormals[k, d])
    return out


@numba.njit(cache=True)
def _transported(tangents, normal):
    """(N, 3) unit normals along a path by parallel transport (no twist): each is the last one with its
    component along the point's unit tangent removed, normalised again (scalar arithmetic: numpy's small
    vector calls per point cost ~0.7 ms a rod)."""
    out = np.empty_like(tangents)
    nx, ny, nz = normal[0], normal[1], normal[2]
    for k in range(len(tangents)):
        tx, ty, tz = tangents[k, 0], tangents[k, 1], tangents[k, 2]
        along = nx * tx + ny * ty + nz * tz
        nx, ny, nz = nx - tx * along, ny - ty * along, nz - tz * along
        length = np.sqrt(nx * nx + ny * ny + nz * nz)
        nx, ny, nz = nx / length, ny / length, nz / length
        out[k, 0], out[k, 1], out[k, 2] = nx, ny, nz
    return out


def cage(length: float = 26.0, width: float = 10.0, height: float = 11.0, window: float = 0.45):
    """Centred on the origin, long along x, `height` along z, a window of `window` x its footprint."""
    import trimesh

    block = trimesh.creation.box([length, width, height])
    hole = trimesh.creation.box([length * window, width * window, height * 2])
    return trimesh.boolean.difference([block, hole], engine="manifold")


def plate(length: float = 60.0, width: float = 16.0, thickness: float = 2.5, holes: int = 4,
          hole_diameter: float = 4.5):
    """Centred on the origin, long along z, `thickness` along y, holes through it along y."""
    import trimesh

    body = trimesh.creation.box([width, thickness, length])
    if holes <= 0:
        return body
    vertices, faces = _hole_cutter(hole_diameter / 2, thickness * 3)
    centres = (np.arange(holes) - (holes - 1) / 2) * length / holes
    if holes > 1 and length / holes <= hole_diameter:  # overlapping holes: one cutter each, in turn
        parts = [trimesh.Trimesh(vertices + [0.0, 0.0, z], faces, process=False) for z in centres]
        return trimesh.boolean.difference([body, *parts], engine="manifold")
    # disjoint holes: every cutter in one mesh of separate closed parts (one boolean)
    cutter = trimesh.Trimesh(np.concatenate([vertices + [0.0, 0.0, z] for z in centres]),
                             np.concatenate([faces + k * len(vertices) for k in range(holes)]), process=False)
    return trimesh.boolean.difference([body, cutter], engine="manifold")


@functools.lru_cache(maxsize=8)
def _hole_cutter(radius: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of a closed cylinder of SECTIONS facets along y, centred on the origin."""
    import trimesh

    c = trimesh.creation.cylinder(radius=radius, height=height, sections=SECTIONS)
    c.apply_transform(_rotate_z_to([0.0, 1.0, 0.0]))
    vertices, faces = np.array(c.vertices), np.array(c.faces)
    vertices.setflags(write=False)
    faces.setflags(write=False)
    return vertices, faces


GENERATORS = {"pedicle_screw": pedicle_screw, "tulip": tulip, "rod": rod, "cage": cage, "plate": plate}
# generators that refuse parameters whose mesh could touch itself (the rod: its bend radius and its
# clearance from itself), so their meshes skip the ray-cast self-intersection check: a rod's mesh is
# new with every sample's screw heads, and that check was ~0.05 s a rod (the other checks still run)
SIMPLE_BY_CONSTRUCTION = frozenset({"rod"})


@dataclass(frozen=True)
class MeshImplant:
    """One mesh implant as recorded: its mask bit, how its mesh is made (a generator and its parameters,
    or a file and its SHA-256), its pose (local mm -> world mm, 4 x 4 row-major) and its alloy."""

    kind: int
    generator: str  # a GENERATORS name, or "file"
    params: str  # JSON (sorted keys) of the generator's parameters, or {"path", "sha256"} of a file
    pose: tuple[float, ...]
    material: str

    @classmethod
    def make(cls, kind: int, generator: str, params: dict, pose: np.ndarray, material: str) -> MeshImplant:
        return cls(int(kind), generator, json.dumps(_plain(params), sort_keys=True),
                   tuple(round(float(v), 6) for v in np.asarray(pose, dtype=np.float64).ravel()), material)

    def record(self) -> dict:
        return {"kind": self.kind, "generator": self.generator, "params": json.loads(self.params),
                "pose": list(self.pose), "material": self.material}

    @classmethod
    def from_record(cls, record: dict) -> MeshImplant:
        return cls.make(record["kind"], record["generator"], record["params"], np.array(record["pose"]).reshape(4, 4),
                        record["material"])

    def world(self) -> tuple[np.ndarray, np.ndarray]:
        """(vertices (V, 3) world mm, faces (F, 3)) of the posed mesh, read-only."""
        vertices, faces = local_mesh(self.generator, self.params)  # a file's hash checked when not in memory
        return _posed(vertices, self.pose), faces


POSED_IN_MEMORY = 16  # an item's posed meshes (a screw's: ~0.9 MB), kept for its next views
# (id of the local vertices, pose) -> (local vertices, posed vertices)
_POSED: Kept[tuple[np.ndarray, np.ndarray]] = Kept(POSED_IN_MEMORY)


def _posed(vertices: np.ndarray, pose: tuple[float, ...]) -> np.ndarray:
    """A mesh's vertices posed in the world, kept: every view of an item crosses the same posed meshes
    (~0.07 ms a screw). Keyed by the local mesh's identity (each entry holds that mesh, so its id is not
    reused while kept), so a mesh `local_mesh` makes anew is posed anew."""
    def make():
        world = meshes.posed(np.ascontiguousarray(vertices, dtype=np.float64),
                             np.asarray(pose, dtype=np.float64).reshape(4, 4))
        world.setflags(write=False)
        return vertices, world
    return _POSED.get((id(vertices), pose), make)[1]


# generators whose parameters the sampler takes from catalogue steps (screws rounded to sizes as sold,
# the tulip from the config): a finite set of meshes, so their checked meshes are also kept on disk
# per machine (`MESH_CACHE_ENV`), as are meshes read from files (by content). A screw's check casts a ray
# through each of its ~76 k faces (~0.35 s); DataLoader workers start anew every epoch and would
# otherwise check every screw size again. Cages, plates and rods take continuous sizes: not kept.
CATALOGUE = frozenset({"pedicle_screw", "tulip"})
MESH_CACHE_ENV = "SPINEFORGE_MESH_CACHE"  # a folder, or "off"; default $XDG_CACHE_HOME/spineforge


@functools.lru_cache(maxsize=64)
def local_mesh(generator: str, params: str) -> tuple[np.ndarray, np.ndarray]:
    """The checked mesh of a generator's parameters or of a file (its hash checked), read-only arrays."""
    p = json.loads(params)
    if generator == "file":
        if meshes.file_sha256(p["path"]) != p["sha256"]:
            raise meshes.MeshError(f"{p['path']}: the file changed since it was recorded (SHA-256 differs)")
        key = json.dumps(["file", p["sha256"]])

        def make():
            return meshes.load_mesh(p["path"])
    elif generator in GENERATORS:
        key = json.dumps([generator, params]) if generator in CATALOGUE else None

        def make():
            return meshes.check_mesh(GENERATORS[generator](**p), f"{generator}({params})",
                                     self_intersection=generator not in SIMPLE_BY_CONSTRUCTION)
    else:
        raise ValueError(f"unknown implant generator {generator!r}; known: file, {', '.join(GENERATORS)}")
    path = _cache_path(key)
    arrays = machine_cache.cached_arrays(path, lambda: _mesh_arrays(make(), digest=path is not None), _intact)
    vertices, faces = arrays["vertices"], arrays["faces"]
    vertices.setflags(write=False)
    faces.setflags(write=False)
    return vertices, faces


def _cache_path(key: str | None):
    root = None if key is None else machine_cache.cache_root(MESH_CACHE_ENV)
    if root is None:
        return None
    return root / f"mesh-{hashlib.sha256((key + _code_version()).encode()).hexdigest()[:32]}.npz"


@functools.cache
def _code_version() -> str:
    """What a kept mesh depends on besides its parameters: this module's and `meshes`' code (the
    generators and the checks) and the versions of trimesh and manifold3d (the booleans)."""
    h = hashlib.sha256()
    for module in (__file__, meshes.__file__):
        h.update(Path(module).read_bytes())
    for package in ("trimesh", "manifold3d"):
        h.update(importlib.metadata.version(package).encode())
    return h.hexdigest()


def _digest(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(vertices.tobytes() + faces.tobytes()).digest(), dtype=np.uint8)


def _mesh_arrays(mesh, digest: bool = True) -> dict[str, np.ndarray]:
    """A checked mesh's arrays, with their digest when they are to be kept on disk (`_intact` checks it
    when they are read back; a rod or a cage made for one item is not kept: ~0.2 ms of hashing a rod)."""
    vertices, faces = np.array(mesh.vertices, dtype=np.float64), np.array(mesh.faces, dtype=np.int64)
    arrays = {"vertices": vertices, "faces": faces}
    if digest:
        arrays["digest"] = _digest(vertices, faces)
    return arrays


def _intact(arrays: dict[str, np.ndarray]) -> bool:
    """A kept mesh is used only when its arrays are the ones that were checked (their digest)."""
    try:
        vertices, faces = arrays["vertices"], arrays["faces"]
        return (vertices.dtype == np.float64 and faces.dtype == np.int64 and vertices.ndim == faces.ndim == 2
                and np.array_equal(_digest(vertices, faces), arrays["digest"]))
    except KeyError:
        return False


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 6)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return value


def _closed_tube(trimesh, rings: np.ndarray, n_rings: int, sections: int, start: np.ndarray, end: np.ndarray):
    """A watertight tube from `n_rings` rings of `sections` points (ring-major), capped by fans to
    `start` and `end`; faces wound outwards for rings running counter-clockwise about the direction
    from start to end."""
    ring = np.arange(sections)
    nxt = (ring + 1) % sections
    bands = meshes.band_faces(n_rings, sections)  # the side, band by band; the rasteriser knows its order
    s, e = len(rings), len(rings) + 1
    last = (n_rings - 1) * sections
    caps = [np.stack([np.full(sections, s), nxt, ring], 1), np.stack([np.full(sections, e), last + ring, last + nxt], 1)]
    vertices = np.concatenate([rings, start[None], end[None]])
    return trimesh.Trimesh(vertices, np.concatenate([bands, *caps]), process=False)


def _catmull_rom(points: np.ndarray, step: float) -> np.ndarray:
    """Samples every ~`step` mm of the centripetal Catmull-Rom curve through `points` (ends extended)."""
    ext = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        t0 = 0.0
        t1 = t0 + np.linalg.norm(p1 - p0) ** 0.5
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5
        n = max(int(math.ceil(np.linalg.norm(p2 - p1) / step)), 1)
        t = np.linspace(t1, t2, n, endpoint=False)[:, None]  # the segment's samples at once
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    out.append(points[-1:])
    return np.concatenate(out)


def _min_bend_radius(path: np.ndarray) -> float:
    """The smallest radius of the circles through three consecutive samples."""
    a, b, c = path[:-2], path[1:-1], path[2:]
    ab, bc, ca = (np.linalg.norm(x, axis=1) for x in (b - a, c - b, a - c))
    area2 = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    with np.errstate(divide="ignore"):
        r = np.where(area2 > 1e-12, ab * bc * ca / np.maximum(2 * area2, 1e-300), np.inf)
    return float(r.min()) if len(r) else math.inf


def _min_far_distance(path: np.ndarray, arc: float) -> float:
    """The closest approach of two samples of the path more than `arc` mm apart along it. With the bend
    radius at least the diameter (no fold within `arc`), a tube around the path is free of self-contact
    when this is above its diameter; the rod asks 1.5 diameters, a margin for the 1 mm sampling and the
    flat facets (`local_mesh` then skips the ray-cast check)."""
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    return float(_closest_far_pair(np.ascontiguousarray(path, dtype=np.float64), s, float(arc)))


@numba.njit(cache=True)
def _closest_far_pair(path, s, arc):
    """min |path[i] - path[j]| over the pairs more than `arc` apart along the path (arc lengths `s`), inf
    if none: one pass over the pairs (numpy's (N, N, 3) temporaries cost ~0.25 ms a rod)."""
    best = np.inf
    for i in range(len(path)):
        for j in range(i + 1, len(path)):
            if abs(s[i] - s[j]) > arc:
                dx, dy, dz = path[i, 0] - path[j, 0], path[i, 1] - path[j, 1], path[i, 2] - path[j, 2]
                best = min(best, math.sqrt(dx * dx + dy * dy + dz * dz))
    return best


def _rotate_z_to(direction) -> np.ndarray:
    """A 4 x 4 rotation taking +z to `direction`."""
    import trimesh

    return trimesh.geometry.align_vectors([0.0, 0.0, 1.0], np.asarray(direction, dtype=np.float64))


def pose_along(start: np.ndarray, direction: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """A 4 x 4 pose putting a local +z axis from `start` along `direction`, rolled by `roll` radians."""
    import trimesh

    pose = _rotate_z_to(direction) @ trimesh.transformations.rotation_matrix(roll, [0.0, 0.0, 1.0])
    pose[:3, 3] = start
    return pose
