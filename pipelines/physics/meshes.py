"""Implants as closed triangle meshes: loaded and checked with trimesh, projected exactly.

A detector ray's chord through a closed mesh is the sum of its exit distances minus its entry
distances: every triangle the ray crosses adds sign(n . d) t |d|, t the ray's parameter where it meets
the triangle's plane, n the triangle's outward normal. So the chords of every ray of a view come from
one pass over the triangles: each is projected onto the detector and adds its signed distance to the
pixels whose rays cross it -- exact, with no sorting of hits. Coverage is decided watertight: the
projected vertices are snapped to 1/4096 pixel and the edge functions evaluated in integers with a
tie rule from one symbolic nudge, so a ray through an edge or a vertex shared by several triangles is counted in
exactly one of them (an entry and its exit are never split).

A mesh must be closed and must not intersect itself: `load_mesh` checks that every edge joins exactly
two consistently wound faces (trimesh; a property of the faces alone, so once per distinct face
array), that the enclosed volume is positive, and that the winding number stays 0 or 1 along a ray
through every face (hits from Embree through trimesh's ray engine); otherwise it names the file and
the fault.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np

from pipelines.physics.kept import Kept

SUBPIXEL = 4096  # fixed-point steps per pixel for coverage (exact integer edge functions)
SUBPIXEL_STEPS = float(SUBPIXEL)  # the same, as the float the projected coordinates are scaled by
# a ray whose entry and exit lie at one point (a silhouette's fold) sums to ~1e-13 mm, not exactly 0:
# chords at or below this are no chord (a thousandth of a micrometre)
CHORD_EPS_MM = 1e-6
MESH_SUFFIXES = (".stl", ".obj", ".ply")


class MeshError(ValueError):
    """A mesh that cannot be projected exactly: open, inconsistently wound, empty or self-intersecting."""


def file_sha256(path: str | Path) -> str:
    if not Path(path).is_file():
        raise MeshError(f"{path}: no such mesh file")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_mesh(path: str | Path):
    """A closed, outward-wound, non-self-intersecting trimesh.Trimesh from an STL, OBJ or PLY file."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise MeshError(f"{path}: a mesh must be one of {', '.join(MESH_SUFFIXES)}")
    if not path.is_file():
        raise MeshError(f"{path}: no such mesh file")
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as e:  # trimesh raises many kinds for unreadable files
        raise MeshError(f"{path}: not a readable mesh ({e})") from None
    return check_mesh(mesh, str(path))


def check_mesh(mesh, name: str, self_intersection: bool = True):
    """`mesh` itself when it is closed, consistently wound, outward and (unless `self_intersection` is
    False: a generator that rules it out) free of self-intersections."""
    if len(mesh.faces) == 0:
        raise MeshError(f"{name}: the mesh has no faces")
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    _CLOSED_FACES.get(hashlib.sha256(faces.tobytes()).digest(), lambda: _check_closed(mesh, name))
    volume = signed_volume(mesh.vertices, faces)
    if volume <= 0:
        raise MeshError(f"{name}: the mesh's normals point inwards (volume {volume:.4g} mm^3); "
                        "write it with outward normals")
    depth = max_winding(mesh) if self_intersection else 1
    if depth > 1:
        raise MeshError(f"{name}: the mesh intersects itself (a ray through it is {depth} surfaces deep inside)")
    return mesh


# The digests of face arrays found closed and consistently wound. Both are properties of the faces
# alone (which edges they share, in which direction), not of where the vertices lie: a generator's part
# of a continuous size (a rod of one ring count) has the faces of the last one, so trimesh's edge
# grouping (~5 ms a rod) runs once for them. Orientation and self-intersection depend on the vertices:
# checked every time.
_CLOSED_FACES: Kept[bool] = Kept(64)


def _check_closed(mesh, name: str) -> bool:
    if not mesh.is_watertight:
        raise MeshError(f"{name}: the mesh is open (some edges do not join exactly two faces); "
                        "a chord through an open surface is undefined")
    if not mesh.is_winding_consistent:
        raise MeshError(f"{name}: the mesh's faces are not wound consistently")
    return True


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """The volume a closed, consistently wound mesh encloses (mm^3): the divergence theorem's sum of
    v0 . (v1 x v2) / 6 over its faces; negative when its normals point inwards. (trimesh's
    `mesh.volume` is the same sum among the other integrals of `mass_properties`: ~5x the time.)"""
    return _signed_volume(np.ascontiguousarray(vertices, dtype=np.float64),
                          np.ascontiguousarray(faces, dtype=np.int64)) / 6.0


@numba.njit(cache=True)
def _signed_volume(vertices, faces):
    """Six times the enclosed volume, one pass over the faces (a numpy gather, cross and sum: ~8x the time)."""
    total = 0.0
    for f in range(len(faces)):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        bx, by, bz = vertices[b, 0], vertices[b, 1], vertices[b, 2]
        cx, cy, cz = vertices[c, 0], vertices[c, 1], vertices[c, 2]
        total += (vertices[a, 0] * (by * cz - bz * cy) + vertices[a, 1] * (bz * cx - bx * cz)
                  + vertices[a, 2] * (bx * cy - by * cx))
    return total


def max_winding(mesh) -> int:
    """The largest winding number met along rays through every face's centroid (along its normal),
    from outside the mesh's bounds: 1 for a simple closed surface, more where it overlaps itself."""
    centroids, normals = mesh.triangles_center, mesh.face_normals
    reach = float(np.linalg.norm(mesh.extents)) + 1.0
    origins = centroids - normals * reach
    tri, ray, locations = mesh.ray.intersects_id(origins, normals, multiple_hits=True, return_locations=True,
                                                 max_hits=max(64, len(mesh.faces)))
    if len(ray) == 0:
        return 0
    t = np.einsum("ij,ij->i", locations - origins[ray], normals[ray])
    step = np.where(np.einsum("ij,ij->i", mesh.face_normals[tri], normals[ray]) < 0, 1, -1)  # entry +1, exit -1
    order = np.lexsort((t, ray))
    ray, t, step = ray[order], t[order], step[order]
    # hits at one point (a ray through an edge or a vertex) count once per direction
    same = np.concatenate([[False], (ray[1:] == ray[:-1]) & (np.abs(np.diff(t)) < 1e-6) & (step[1:] == step[:-1])])
    ray, step = ray[~same], step[~same]
    starts = np.flatnonzero(np.concatenate([[True], ray[1:] != ray[:-1]]))
    running = np.cumsum(step)
    running -= np.repeat(np.concatenate([[0], running[starts[1:] - 1]]), np.diff(np.append(starts, len(step))))
    return int(running.max())


def detector_frame(targets: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, column step, row step) of a regular detector whose pixel (i, j)'s ray ends at
    origin + j * column step + i * row step (world mm), from the rays' end points (H * W, 3)."""
    h, w = shape
    grid = np.asarray(targets, dtype=np.float64).reshape(h, w, 3)
    origin = grid[0, 0]
    eu = (grid[0, -1] - origin) / max(w - 1, 1)
    ev = (grid[-1, 0] - origin) / max(h - 1, 1)
    corner = origin + (w - 1) * eu + (h - 1) * ev
    if not np.allclose(grid[-1, -1], corner, atol=1e-3):
        raise ValueError("the detector's rays do not end on a regular grid")
    return origin, eu, ev


def chords(vertices: np.ndarray, faces: np.ndarray, source: np.ndarray, targets: np.ndarray,
           shape: tuple[int, int]) -> np.ndarray:
    """(H, W) length (mm) of every detector ray (world `source` -> `targets`, H * W of them) inside the
    closed mesh of world `vertices` (mm) and outward-wound `faces`."""
    out = np.zeros(shape, dtype=np.float64)
    add_chords(vertices, faces, source, detector_frame(targets, shape), out)
    return out


def add_chords(vertices: np.ndarray, faces: np.ndarray, source: np.ndarray,
               frame: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray) -> tuple[int, int, int, int]:
    """Add the mesh's chords to `out` (H, W, float64) for a detector `frame` (`detector_frame`); returns the
    pixel box (first row, last row, first column, last column) it touched, empty (first > last) if none."""
    origin, eu, ev = frame
    box = np.array([out.shape[0], -1, out.shape[1], -1], dtype=np.int64)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    bands, sections = tube_bands(faces)
    _raster_chords(np.ascontiguousarray(vertices, dtype=np.float64), faces, bands, sections,
                   np.asarray(source, dtype=np.float64), np.asarray(origin, dtype=np.float64),
                   np.asarray(eu, dtype=np.float64), np.asarray(ev, dtype=np.float64), out, box)
    return int(box[0]), int(box[1]), int(box[2]), int(box[3])


def band_faces(n_rings: int, sections: int) -> np.ndarray:
    """(2 (n_rings - 1) sections, 3) faces joining `n_rings` rings of `sections` points each (ring-major
    vertex indices) into a tube's side: for each band between rings k and k + 1 and each position s on
    the ring, with a, b the points s and s + 1 (mod sections) of ring k and c, d those of ring k + 1,
    the faces (a, b, d), then (a, d, c) of every position: faces 2 k sections + s and 2 k sections +
    sections + s."""
    ring = np.arange(sections)
    nxt = (ring + 1) % sections
    k = np.arange(n_rings - 1)[:, None] * sections
    a, b, c, d = k + ring, k + nxt, k + sections + ring, k + sections + nxt
    return np.stack([np.stack([a, b, d], -1), np.stack([a, d, c], -1)], axis=1).reshape(-1, 3)


# face arrays (by identity; each entry holds its array, so the id is not reused while kept) -> how
# many of `band_faces`' bands they start with, and the sections of their rings
_BANDS: Kept[tuple[np.ndarray, int, int]] = Kept(64)


def tube_bands(faces: np.ndarray) -> tuple[int, int]:
    """(bands, sections) when `faces` (int64) begin with `band_faces(bands + 1, sections)` (a tube's
    side; its caps or other faces may follow), else (0, 0): the rasteriser then finds the faces that
    can hold a pixel centre without gathering their vertices (`_band_centres`). Found once per face
    array kept, in one compiled pass (~0.1 ms for a threaded screw's 77 k faces)."""
    def find():
        if len(faces) < 2 or faces[0, 0] != 0 or faces[0, 1] != 1:
            return faces, 0, 0
        sections = int(faces[0, 2]) - 1  # face 0 is (0, 1, sections + 1)
        if sections < 3:
            return faces, 0, 0
        for bands in (len(faces) // (2 * sections), len(faces) // (2 * sections) - 1):  # open, then capped
            if bands >= 1 and 2 * bands * sections <= len(faces) and _starts_with_bands(faces, bands, sections):
                return faces, bands, sections
        return faces, 0, 0
    _, bands, sections = _BANDS.get(id(faces), find)
    return bands, sections


@numba.njit(cache=True)
def _starts_with_bands(faces, bands, sections):
    """Whether faces[:2 bands sections] equal `band_faces(bands + 1, sections)`, with the corners the
    rasteriser takes (`_corners`), in one pass (building the pattern and comparing the arrays took ~0.3
    ms a rod, and a rod's mesh is new with every item)."""
    for k in range(bands):
        at = 2 * k * sections
        for s in range(sections):
            a, b, c, d = _corners(k * sections, s, sections)
            t = at + sections + s
            if faces[at + s, 0] != a or faces[at + s, 1] != b or faces[at + s, 2] != d \
                    or faces[t, 0] != a or faces[t, 1] != d or faces[t, 2] != c:
                return False
    return True


@numba.njit(cache=True)
def posed(vertices, pose):
    """(V, 3) float64: local `vertices` (V, 3) mm placed in the world by a 4 x 4 `pose` (local mm -> world
    mm, row-major): R v + t per vertex, in scalar arithmetic (BLAS's 3 x 3 product cost ~3x this)."""
    out = np.empty((len(vertices), 3))
    for k in range(len(vertices)):
        x, y, z = vertices[k, 0], vertices[k, 1], vertices[k, 2]
        for r in range(3):
            out[k, r] = pose[r, 0] * x + pose[r, 1] * y + pose[r, 2] * z + pose[r, 3]
    return out


@numba.njit(cache=True, error_model="numpy")
def projected(vertices, source, origin, eu, ev):
    """Detector coordinates (column, row; pixel centres at integers) where the rays from the source
    through each vertex meet the detector plane. Scalar arithmetic (a dot product of 3-vectors as
    BLAS calls on per-vertex temporaries cost ~65 ns a vertex: 2.5 ms of a screw's 3 ms)."""
    xs, ys, zs = _columns(vertices)
    c = projection(source, origin, eu, ev)
    out = np.empty((len(xs), 2))
    for k in range(len(xs)):
        out[k, 0], out[k, 1] = detector_uv(xs[k], ys[k], zs[k], c)
    return out


@numba.njit(cache=True, error_model="numpy")
def snapped(vertices, source, origin, eu, ev):
    """(columns, rows), (V,) int64 each: `projected`'s coordinates in steps of 1 / SUBPIXEL pixel, rounded
    half to even (the rasteriser's fixed-point vertices), in one pass over three columns of the vertices,
    which runs in SIMD lanes (a (V, 3) row per vertex did not: a screw's chords took 0.90 ms a view, then
    0.78); kept as two columns, which the tube pass reads in ring order (`_band_centres`)."""
    xs, ys, zs = _columns(vertices)
    us, vs = np.empty(len(xs), dtype=np.int64), np.empty(len(xs), dtype=np.int64)
    _snap_columns(xs, ys, zs, projection(source, origin, eu, ev), us, vs)
    return us, vs


@numba.njit(cache=True, error_model="numpy")
def _snap_columns(xs, ys, zs, c, us, vs):
    """us, vs = `detector_uv` of each point of the columns, times SUBPIXEL, rounded. Its own kernel: in
    the caller's loop, beside the columns' allocation, it did not vectorise."""
    for k in range(len(xs)):
        u, v = detector_uv(xs[k], ys[k], zs[k], c)
        us[k], vs[k] = np.round(u * SUBPIXEL_STEPS), np.round(v * SUBPIXEL_STEPS)


@numba.njit(inline="always")
def _columns(vertices):
    """(x, y, z) contiguous columns of (V, 3) vertices."""
    n = len(vertices)
    xs, ys, zs = np.empty(n), np.empty(n), np.empty(n)
    for k in range(n):
        xs[k], ys[k], zs[k] = vertices[k, 0], vertices[k, 1], vertices[k, 2]
    return xs, ys, zs


@numba.njit(inline="always")
def projection(source, origin, eu, ev):
    """What `detector_uv` needs of a source and a detector frame (inside numba): the source, the origin,
    the steps, the detector's normal (items 12-14), the Gram matrix of the steps, its determinant and the
    plane's reach (item 19: the normal's product with origin - source)."""
    ux, uy, uz = eu[0], eu[1], eu[2]
    vx, vy, vz = ev[0], ev[1], ev[2]
    nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx  # the detector's normal
    g00, g01, g11 = ux * ux + uy * uy + uz * uz, ux * vx + uy * vy + uz * vz, vx * vx + vy * vy + vz * vz
    sx, sy, sz = source[0], source[1], source[2]
    ox, oy, oz = origin[0], origin[1], origin[2]
    reach = nx * (ox - sx) + ny * (oy - sy) + nz * (oz - sz)
    return (sx, sy, sz, ox, oy, oz, ux, uy, uz, vx, vy, vz, nx, ny, nz, g00, g01, g11, g00 * g11 - g01 * g01,
            reach)


@numba.njit(inline="always")
def detector_uv(x, y, z, c):
    """(column, row) of the world point (x, y, z) seen from the source (`projection`'s `c`)."""
    sx, sy, sz, ox, oy, oz, ux, uy, uz, vx, vy, vz, nx, ny, nz, g00, g01, g11, det, reach = c
    wx, wy, wz = x - sx, y - sy, z - sz
    t = reach / (nx * wx + ny * wy + nz * wz)
    qx, qy, qz = sx + wx * t - ox, sy + wy * t - oy, sz + wz * t - oz
    a, b = qx * ux + qy * uy + qz * uz, qx * vx + qy * vy + qz * vz
    return (a * g11 - b * g01) / det, (b * g00 - a * g01) / det


@numba.njit(inline="always")
def _owns(ax, ay, bx, by):
    """Whether the edge a -> b (the triangle's inside to its positive side) owns the rays exactly on it:
    whether the point nudged by (e, e^2), e -> 0+, falls inside. One nudge for every edge, so a ray
    through an edge or a vertex shared by several triangles lies in exactly one of them."""
    return by < ay or (by == ay and bx > ax)


@numba.njit(inline="always")
def _holds_centre(ax, bx, cx, ay, by, cy, w, h):
    """The pixel box of a face with snapped vertices (ax, ay) .. (cx, cy) clipped to the detector: (first
    column, last column, first row, last row); empty (first > last) when it holds no pixel centre."""
    lo_x = max((min(ax, bx, cx) + SUBPIXEL - 1) // SUBPIXEL, 0)
    hi_x = min(max(ax, bx, cx) // SUBPIXEL, w - 1)
    lo_y = max((min(ay, by, cy) + SUBPIXEL - 1) // SUBPIXEL, 0)
    hi_y = min(max(ay, by, cy) // SUBPIXEL, h - 1)
    return lo_x, hi_x, lo_y, hi_y


@numba.njit(inline="always")
def _corners(base, s, sections):
    """(a, b, c, d) of position s of the band whose first ring starts at vertex `base` (`band_faces`):
    its faces are (a, b, d) and (a, d, c)."""
    a = base + s
    b = a + 1 if s + 1 < sections else base  # the ring closes
    return a, b, a + sections, b + sections


@numba.njit(inline="always")
def _band_face(f, sections):
    """The corners of face f of `band_faces`' pattern."""
    k, r = f // (2 * sections), f % (2 * sections)
    a, b, c, d = _corners(k * sections, r % sections, sections)
    if r < sections:
        return a, b, d
    return a, d, c


@numba.njit(cache=True, error_model="numpy")
def _band_centres(us, vs, bands, sections, w, h, keep):
    """keep[f]: whether face f of a tube's side (`band_faces`) can hold a pixel centre (`_holds_centre`'s
    box not empty). The vertices are read in ring order, each position's four once for its two faces,
    not gathered through the faces."""
    for k in range(bands):
        base, at = k * sections, 2 * k * sections
        for s in range(sections):
            a, b, c, d = _corners(base, s, sections)
            lx, hx, ly, hy = _holds_centre(us[a], us[b], us[d], vs[a], vs[b], vs[d], w, h)
            keep[at + s] = lx <= hx and ly <= hy
            lx, hx, ly, hy = _holds_centre(us[a], us[d], us[c], vs[a], vs[d], vs[c], w, h)
            keep[at + sections + s] = lx <= hx and ly <= hy


@numba.njit(cache=True, error_model="numpy")
def _raster_chords(vertices, faces, bands, sections, source, origin, eu, ev, out, box):
    """Scalar arithmetic throughout (no small arrays per face or pixel): a pixel's ray direction is
    o + j eu + i ev (o = origin - source), so n . d is linear in (i, j) per face. `box` grows to the
    pixels touched. The first 2 `bands` `sections` faces are a tube's side (`tube_bands`): which of them
    can hold a pixel centre is found first for all of them (`_band_centres`), and their corners come from
    the pattern (`_band_face`), so `faces` is read only past the side: a kept face's row read from a cold
    array waited on memory, and a screw's chords were then slower than face by face (ad-hoc: 0.89 against
    0.77 ms, now 0.55). The faces are taken in their order, as without the bands, so every pixel sums the
    same terms in the same order."""
    h, w = out.shape
    us, vs = snapped(vertices, source, origin, eu, ev)
    banded = 2 * bands * sections
    keep = np.empty(banded, dtype=np.bool_)
    _band_centres(us, vs, bands, sections, w, h, keep)
    ox, oy, oz = origin[0] - source[0], origin[1] - source[1], origin[2] - source[2]
    ux, uy, uz = eu[0], eu[1], eu[2]
    vx, vy, vz = ev[0], ev[1], ev[2]
    sx, sy, sz = source[0], source[1], source[2]
    for f in range(len(faces)):
        if f < banded:  # a side face: its corners from its place in the pattern, not read from `faces`
            if not keep[f]:
                continue
            a, b, c = _band_face(f, sections)
        else:
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay = us[a], vs[a]
        bx, by = us[b], vs[b]
        cx, cy = us[c], vs[c]
        # the pixel centres in the face's box first: most faces of a threaded screw hold none (~10 % faster)
        lo_x, hi_x, lo_y, hi_y = _holds_centre(ax, bx, cx, ay, by, cy, w, h)
        if lo_x > hi_x or lo_y > hi_y:
            continue
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0:
            continue  # seen edge-on: no ray crosses it over an area
        if area < 0:  # counter-clockwise for the coverage test (the sign of the chord comes from the normal)
            bx, by, cx, cy = cx, cy, bx, by
        box[0], box[1] = min(box[0], lo_y), max(box[1], hi_y)
        box[2], box[3] = min(box[2], lo_x), max(box[3], hi_x)
        pax, pay, paz = vertices[a, 0], vertices[a, 1], vertices[a, 2]
        e1x, e1y, e1z = vertices[b, 0] - pax, vertices[b, 1] - pay, vertices[b, 2] - paz
        e2x, e2y, e2z = vertices[c, 0] - pax, vertices[c, 1] - pay, vertices[c, 2] - paz
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x  # outward (the winding)
        reach = nx * (pax - sx) + ny * (pay - sy) + nz * (paz - sz)
        n_o, n_u, n_v = nx * ox + ny * oy + nz * oz, nx * ux + ny * uy + nz * uz, nx * vx + ny * vy + nz * vz
        tl0, tl1, tl2 = _owns(bx, by, cx, cy), _owns(cx, cy, ax, ay), _owns(ax, ay, bx, by)
        for i in range(lo_y, hi_y + 1):
            py = i * SUBPIXEL
            for j in range(lo_x, hi_x + 1):
                px = j * SUBPIXEL
                e0 = (cx - bx) * (py - by) - (cy - by) * (px - bx)
                e1 = (ax - cx) * (py - cy) - (ay - cy) * (px - cx)
                e2 = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
                if (e0 < 0 or (e0 == 0 and not tl0)) or (e1 < 0 or (e1 == 0 and not tl1)) \
                        or (e2 < 0 or (e2 == 0 and not tl2)):
                    continue
                nd = n_o + j * n_u + i * n_v
                if nd == 0.0:
                    continue
                dx, dy, dz = ox + j * ux + i * vx, oy + j * uy + i * vy, oz + j * uz + i * vz
                length = np.sqrt(dx * dx + dy * dy + dz * dz) * (reach / nd)  # t |d|, t in units of |d|
                out[i, j] += length if nd > 0.0 else -length
