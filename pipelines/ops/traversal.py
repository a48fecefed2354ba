"""Exact line integrals through a voxel-constant volume: one fused voxel traversal per ray.

This is the integral Siddon's method computes (each voxel a constant-valued box, faces at index
-0.5 .. n-0.5), walked voxel by voxel (Amanatides-Woo order) in one compiled loop per ray instead of
materialized arrays of plane crossings. Each ray is summed in a fixed order in float64, by one thread
(or one vector lane), so images are bit-identical whatever the thread count, process or machine.

One traversal gives two images: the whole volume's integral and, when a label volume and a label are
given, the integral of the same voxels restricted to that label (a vertebra-only view) - the same
rays and segments, no second render.

`traverse_numba` is the CPU kernel (numba, parallel over 16x16 detector tiles for cache locality; in a
tile, eight neighbouring rays walk in lockstep on vectors, `lockstep`, each lane the same arithmetic as
the one-ray walk `_ray`); `ray_batch.walk_rays` runs the one-ray function (`_walk_ray`) over a batch of
rays of several views, on the CPU or, compiled by numba for CUDA, one GPU thread a ray;
`traverse_torch` performs the same float64 arithmetic as vectorised torch operations (any device; one launch per step and
operation, so on a GPU it is bound by launches and memory traffic: benchmarks/stream.py measured its
walk 8.4-8.9x slower than the CUDA kernel on an H200).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numba
import numpy as np
import torch
from scipy import ndimage

from pipelines.ops import lockstep
from pipelines.ops.crop import bounding_box

TILE = 16  # detector tile edge: neighbouring rays share cache lines of the volume
LOOKAHEAD = 24.0  # the lockstep walk prefetches the voxel about this many crossings ahead (16 alike, 40 slower)
_BIG = 1e300


@numba.njit
def _slab(s, d, n, a0, a1):
    """Clip the ray fraction interval [a0, a1] to one axis' slab [-0.5, n - 0.5]."""
    if d == 0.0:
        if s < -0.5 or s > n - 0.5:
            return a0, -1.0
        return a0, a1
    lo = (-0.5 - s) / d
    hi = (n - 0.5 - s) / d
    if lo > hi:
        lo, hi = hi, lo
    return max(a0, lo), min(a1, hi)


@numba.njit
def _voxel(s, d, a, n):
    return min(max(int(math.floor(s + a * d + 0.5)), 0), n - 1)


@numba.njit
def _axis(s, d, i):
    """Step sign, fraction of the next plane crossing, fraction between crossings."""
    if d > 0.0:
        return 1, (i + 0.5 - s) / d, 1.0 / d
    if d < 0.0:
        return -1, (i - 0.5 - s) / d, -1.0 / d
    return 0, _BIG, 0.0


@numba.njit
def _enter(n_i, n_j, n_k, box, sx, sy, sz, dx, dy, dz, with_label):
    """A ray's walk state at its entry voxel: (a0, a1, b0, b1, voxel index i, j, k and flat offset,
    per-axis next crossing, increment, remaining crossings, step sign and stride); a1 <= a0 when it
    misses the volume."""
    a0, a1 = _slab(sx, dx, n_i, 0.0, 1.0)
    a0, a1 = _slab(sy, dy, n_j, a0, a1)
    a0, a1 = _slab(sz, dz, n_k, a0, a1)
    b0, b1 = -1.0, -2.0  # the stretch of the ray inside the label's box: labels are read only there
    if with_label:
        b0, b1 = _slab(sx - box[0], dx, box[3] - box[0], a0, a1)
        b0, b1 = _slab(sy - box[1], dy, box[4] - box[1], b0, b1)
        b0, b1 = _slab(sz - box[2], dz, box[5] - box[2], b0, b1)
    inside = 1e-9 * (a1 - a0)  # entry/exit voxels: just inside the first/last sliver
    i, j, k = _voxel(sx, dx, a0 + inside, n_i), _voxel(sy, dy, a0 + inside, n_j), _voxel(sz, dz, a0 + inside, n_k)
    left_i = abs(_voxel(sx, dx, a1 - inside, n_i) - i)
    left_j = abs(_voxel(sy, dy, a1 - inside, n_j) - j)
    left_k = abs(_voxel(sz, dz, a1 - inside, n_k) - k)
    si, ni, inc_i = _axis(sx, dx, i)
    sj, nj, inc_j = _axis(sy, dy, j)
    sk, nk, inc_k = _axis(sz, dz, k)
    if left_i == 0:
        ni = _BIG
    if left_j == 0:
        nj = _BIG
    if left_k == 0:
        nk = _BIG
    off = (i * n_j + j) * n_k + k
    return (a0, a1, b0, b1, i, j, k, off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k, si, sj, sk,
            si * n_j * n_k, sj * n_k, sk)


@numba.njit(inline="always")
def _advance(off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k, stride_i, stride_j, stride_k):
    """One plane crossing: (ray fraction at the crossing, the axis crossed, next voxel offset, updated
    axis state)."""
    if ni <= nj and ni <= nk:
        e = ni
        axis = 0
        off += stride_i
        left_i -= 1
        ni = _BIG if left_i == 0 else ni + inc_i
    elif nj <= nk:
        e = nj
        axis = 1
        off += stride_j
        left_j -= 1
        nj = _BIG if left_j == 0 else nj + inc_j
    else:
        e = nk
        axis = 2
        off += stride_k
        left_k -= 1
        nk = _BIG if left_k == 0 else nk + inc_k
    return e, axis, off, ni, nj, nk, left_i, left_j, left_k


@numba.njit
def _to_block_face(index, sign, left, shift):
    """Crossings along one axis until the walk leaves the voxel's block (2**shift voxels a side);
    left + 1 (never) when the ray ends first."""
    if sign == 0:
        return left + 1
    block = index >> shift
    m = ((block + 1) << shift) - index if sign > 0 else index - (block << shift) + 1
    return m if m <= left else left + 1


@numba.njit
def _nth(value, inc, m):
    """The m-th crossing's fraction (m >= 1) from the next one's, by the walk's own repeated additions."""
    for _ in range(m - 1):
        value += inc
    return value


@numba.njit
def _before(value, inc, left, axis, e, e_axis):
    """(crossings of one axis up to and including the crossing (e, e_axis), the fraction of its next
    one): the walk takes crossings in (fraction, axis) order."""
    c = 0
    while c < left and (value < e or (value == e and axis <= e_axis)):
        c += 1
        if c < left:
            value += inc
    return c, (value if c < left else _BIG)


@numba.njit
def _skip_block(i, j, k, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k, si, sj, sk, shift):
    """Jump over an empty block: the walk's state at the first crossing out of it, computed with the
    walk's own arithmetic (each axis' fractions by the same repeated additions, crossings in the same
    (fraction, axis) order), so the voxels after the block see bit-identical segments. Returns
    (e, counts i, j, k, next fractions); e = _BIG when the ray ends inside the block."""
    m_i = _to_block_face(i, si, left_i, shift)
    m_j = _to_block_face(j, sj, left_j, shift)
    m_k = _to_block_face(k, sk, left_k, shift)
    e_i = _nth(ni, inc_i, m_i) if m_i <= left_i else _BIG
    e_j = _nth(nj, inc_j, m_j) if m_j <= left_j else _BIG
    e_k = _nth(nk, inc_k, m_k) if m_k <= left_k else _BIG
    if e_i <= e_j and e_i <= e_k:
        e, e_axis = e_i, 0
    elif e_j <= e_k:
        e, e_axis = e_j, 1
    else:
        e, e_axis = e_k, 2
    if e == _BIG:
        return e, 0, 0, 0, ni, nj, nk
    c_i, ni = _before(ni, inc_i, left_i, 0, e, e_axis)
    c_j, nj = _before(nj, inc_j, left_j, 1, e, e_axis)
    c_k, nk = _before(nk, inc_k, left_k, 2, e, e_axis)
    return e, c_i, c_j, c_k, ni, nj, nk


@numba.njit
def _block_of(s, d, a, size, nb):
    """The block (`size` voxels a side) holding the point at ray fraction a, clamped to the grid."""
    return min(max(int(math.floor((s + a * d + 0.5) / size)), 0), nb - 1)


@numba.njit
def _back_face(s, d, b, size):
    """(ray fraction, step) of the face through which a ray walked backwards leaves block b along one
    axis: its lower face when the ray runs up the axis, its upper face when it runs down."""
    if d > 0.0:
        return (b * size - 0.5 - s) / d, -1
    if d < 0.0:
        return ((b + 1) * size - 0.5 - s) / d, 1
    return -_BIG, 0


@numba.njit
def _occupied_end(occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, dx, dy, dz, a0, a1):
    """The ray fraction at which a ray leaves the last block it crosses before a1 that is NEAR an
    occupied one, found by walking the block grid backwards from a1 (rays mostly end in a few blocks of
    air); a0 when there is none on [a0, a1]. Past it the ray meets only exact zeros: the voxels the walk
    reads lie on the ray up to its rounding, so within a block's width of the blocks this walk visits,
    even where the ray passes within rounding of a block's edge or corner and the two walks order their
    crossings differently there."""
    size = float(1 << shift)
    back = a1 - 1e-9 * (a1 - a0)
    bi = _block_of(sx, dx, back, size, nb_i)
    bj = _block_of(sy, dy, back, size, nb_j)
    bk = _block_of(sz, dz, back, size, nb_k)
    fi, ti = _back_face(sx, dx, bi, size)
    fj, tj = _back_face(sy, dy, bj, size)
    fk, tk = _back_face(sz, dz, bk, size)
    cur = a1
    while cur > a0:
        if occ[(bi * nb_j + bj) * nb_k + bk] & NEAR:
            return cur
        if fi >= fj and fi >= fk:
            cur, bi = fi, bi + ti
            fi, _ = _back_face(sx, dx, bi, size)
        elif fj >= fk:
            cur, bj = fj, bj + tj
            fj, _ = _back_face(sy, dy, bj, size)
        else:
            cur, bk = fk, bk + tk
            fk, _ = _back_face(sz, dz, bk, size)
        if bi < 0 or bi >= nb_i or bj < 0 or bj >= nb_j or bk < 0 or bk >= nb_k:
            break
    return a0


MAX_KNOTS = 2  # hinge accumulators per ray (`traverse_hinges_numba`); unused ones get a knot at +inf
NO_GRID_SHIFT = 62  # the block shift of `_NO_SKIP`, the walk without a grid: one block, never empty
MISSED, EMPTY, LIVE = 0, 1, 2  # how `_ray_start` leaves a ray: off the volume, only zeros on it, to walk


@numba.njit(inline="always")
def _ray_start(n_i, n_j, n_k, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, tx, ty, tz, with_label, jump):
    """A ray up to its first voxel to read: (status, a, a0, a1, a_end, b0, b1, off, ni, nj, nk, inc_i,
    inc_j, inc_k, left_i, left_j, left_k, stride_i, stride_j, stride_k, on_ray).

    A block (2**shift voxels a side) not OCCUPIED in the occupancy flags `occ` holds only zeros, which
    add nothing. The walk stops at a_end, where the ray leaves the last block NEAR an occupied one
    (`_occupied_end`). With `jump` (a constant of the caller) it also jumps over the empty blocks before
    the ray's first occupied one (`_skip_block`: the state after the jump is the one the step-by-step
    walk reaches, found by the same per-crossing additions). The one-ray walk (`_ray`: `walk_rays`, the
    GPU's function) jumps; the image kernel's lockstep lanes do not: there the jump's scalar arithmetic
    cost more than the vector steps it replaced (docs/benchmarks.md). Between start and end every voxel
    is read, without a lookup in the grid per step (which cost more than the empty blocks inside a body
    save). status MISSED: the ray misses the volume; EMPTY: it meets only zeros; LIVE: walk from
    fraction a."""
    dx, dy, dz = tx - sx, ty - sy, tz - sz
    (a0, a1, b0, b1, i, j, k, off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k, si, sj, sk,
     stride_i, stride_j, stride_k) = _enter(n_i, n_j, n_k, box, sx, sy, sz, dx, dy, dz, with_label)
    status = LIVE
    a = a0
    a_end = a0
    on_ray = 0
    if a1 <= a0:
        status = MISSED
    else:
        on_ray = left_i + left_j + left_k + 1
        # without a grid the stop is the exit (as `_occupied_end` finds it: the one block is NEAR), with no
        # search for it (its six divisions a ray cost ~1.7 ms of a 256^2 view)
        end = a1 if shift == NO_GRID_SHIFT else _occupied_end(occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, dx, dy, dz,
                                                               a0, a1)
        if end <= a0:  # no block on the ray holds (or touches one that holds) a non-zero voxel
            status = EMPTY
        else:
            a_end = end + 1e-9 * (a1 - a0)  # past it only zeros (the margin: far above rounding, far below a voxel)
            # the empty blocks before the first occupied one
            while (jump and left_i + left_j + left_k > 0
                   and not occ[((i >> shift) * nb_j + (j >> shift)) * nb_k + (k >> shift)] & OCCUPIED):
                e, c_i, c_j, c_k, ni, nj, nk = _skip_block(i, j, k, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j,
                                                           left_k, si, sj, sk, shift)
                if e == _BIG:  # the ray ends inside this empty block
                    status = EMPTY
                    break
                i += si * c_i
                j += sj * c_j
                k += sk * c_k
                left_i -= c_i
                left_j -= c_j
                left_k -= c_k
                off += stride_i * c_i + stride_j * c_j + stride_k * c_k
                a = e
    return (status, a, a0, a1, a_end, b0, b1, off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k,
            stride_i, stride_j, stride_k, on_ray)


@numba.njit(inline="always")
def _ray_finish(flat, labels, label, off, a, a1, a_end, b0, b1, knots, acc, acc_label, h0, h1, read, with_label,
                with_hinges):
    """The last voxel, from fraction a to the ray's exit a1, unless the walk stopped at a_end (past it
    only zeros): the sums and the count of voxels read."""
    if a >= a_end:
        return acc, acc_label, h0, h1, read
    acc, acc_label, h0, h1 = _segment(flat[off], a, a1, off, labels, label, b0, b1, knots[0], knots[1], acc,
                                      acc_label, h0, h1, with_label, with_hinges)
    return acc, acc_label, h0, h1, read + 1


@numba.njit(inline="always")
def _segment(v, a, e, at, labels, label, b0, b1, c0, c1, acc, acc_label, h0, h1, with_label, with_hinges):
    """The sums with the ray's stretch [a, e] in the voxel at offset `at` (value v) added: the whole
    integral, the label's (read only on the ray's stretch in the label's box [b0, b1]) and the hinges."""
    w = e - a
    seg = w * v
    acc += seg
    if with_label:
        if e > b0 and a < b1 and labels[at] == label:
            acc_label += seg
    if with_hinges:
        h0 += w * max(v - c0, np.float32(0.0))
        h1 += w * max(v - c1, np.float32(0.0))
    return acc, acc_label, h0, h1


@numba.njit(inline="always")
def _ray(flat, n_i, n_j, n_k, labels, label, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, tx, ty, tz, with_label,
         with_hinges, knots):
    """Along one ray, in ray-fraction units: the whole and labelled integrals and, `with_hinges`, the
    ray's length inside the volume and for each of the MAX_KNOTS knots c the integral of max(v - c, 0)
    (branch-free, in registers); then the voxels on the ray and those read. `with_label` and
    `with_hinges` are constants at every call site, so each inlined copy compiles only the arithmetic it
    asks for. The walk of `ray_batch.walk_rays` (CPU and CUDA); the image kernel walks the same steps
    eight rays at a time (`lockstep`). Skipped empty blocks hold only zeros, and adding +0.0 leaves a
    float64 sum unchanged, so the images are bit-identical with and without the occupancy grid."""
    (status, a, a0, a1, a_end, b0, b1, off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k,
     stride_i, stride_j, stride_k, on_ray) = _ray_start(n_i, n_j, n_k, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz,
                                                        tx, ty, tz, with_label, True)
    if status == MISSED:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0
    if status == EMPTY:
        return 0.0, 0.0, a1 - a0, 0.0, 0.0, on_ray, 0
    c0, c1 = knots[0], knots[1]
    acc = 0.0
    acc_label = 0.0
    h0 = 0.0
    h1 = 0.0
    read = 0
    # exactly left_i + left_j + left_k crossings: every index stays inside the volume
    while left_i + left_j + left_k > 0 and a < a_end:
        v = flat[off]
        at = off
        read += 1
        e, axis, off, ni, nj, nk, left_i, left_j, left_k = _advance(off, ni, nj, nk, inc_i, inc_j, inc_k, left_i,
                                                                    left_j, left_k, stride_i, stride_j, stride_k)
        acc, acc_label, h0, h1 = _segment(v, a, e, at, labels, label, b0, b1, c0, c1, acc, acc_label, h0, h1,
                                          with_label, with_hinges)
        a = e
    acc, acc_label, h0, h1, read = _ray_finish(flat, labels, label, off, a, a1, a_end, b0, b1, knots, acc, acc_label,
                                               h0, h1, read, with_label, with_hinges)
    return acc, acc_label, a1 - a0, h0, h1, on_ray, read


@numba.njit
def _ray_of(flat, n_i, n_j, n_k, labels, label, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, tx, ty, tz, hinged,
            knots):
    """`_ray` with its label flag made a constant (two inlined copies), `hinged` a constant of the caller."""
    if label >= 0:
        return _ray(flat, n_i, n_j, n_k, labels, label, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, tx, ty, tz, True,
                    hinged, knots)
    return _ray(flat, n_i, n_j, n_k, labels, label, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, tx, ty, tz, False,
                hinged, knots)


@numba.njit(inline="always")
def _lane_idle(ist, lane):
    """A lane with no ray to walk: no crossing left (the lockstep loop never moves it) and offset 0
    (its loads, which the loop makes for every lane, stay inside the volume)."""
    ist[lockstep.I_OFF, lane] = 0
    ist[lockstep.I_LEFT_I, lane] = 0
    ist[lockstep.I_LEFT_J, lane] = 0
    ist[lockstep.I_LEFT_K, lane] = 0
    ist[lockstep.I_AHEAD, lane] = 0


@numba.njit(inline="always")
def _ahead(inc_i, inc_j, inc_k, stride_i, stride_j, stride_k):
    """The offset from a ray's voxel to the one it reaches about LOOKAHEAD crossings later: each axis
    takes a share of the crossings in proportion to how often the ray crosses its planes (1 / inc). Only
    what the walk prefetches, never what it reads."""
    rate_i = 1.0 / inc_i if inc_i > 0.0 else 0.0
    rate_j = 1.0 / inc_j if inc_j > 0.0 else 0.0
    rate_k = 1.0 / inc_k if inc_k > 0.0 else 0.0
    share = LOOKAHEAD / max(rate_i + rate_j + rate_k, 1e-300)
    ahead = (stride_i * int(share * rate_i + 0.5) + stride_j * int(share * rate_j + 0.5)
             + stride_k * int(share * rate_k + 0.5))
    return min(max(ahead, -MAX_VOXELS), MAX_VOXELS)  # held by the lanes' 32-bit state


@numba.njit(inline="always")
def _lane_start(fs, ist, lane, n_i, n_j, n_k, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz, tx, ty, tz, with_label):
    """Start one ray (`_ray_start`) into a lane of the lockstep state; a ray with nothing to read
    leaves its lane idle (`_lane_idle`). Returns (status, a0, a1,
    crossings left, voxels on the ray)."""
    (status, a, a0, a1, a_end, b0, b1, off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k,
     stride_i, stride_j, stride_k, on_ray) = _ray_start(n_i, n_j, n_k, box, occ, nb_i, nb_j, nb_k, shift, sx, sy, sz,
                                                        tx, ty, tz, with_label, False)
    if status != LIVE:
        _lane_idle(ist, lane)
        return status, a0, a1, 0, on_ray
    # the rows in lockstep's order (F_A .. F_B1, I_OFF .. I_AHEAD); the sums start at 0
    floats = (a, a_end, ni, nj, nk, inc_i, inc_j, inc_k, 0.0, 0.0, 0.0, 0.0, b0, b1)
    ints = (off, left_i, left_j, left_k, stride_i, stride_j, stride_k,
            _ahead(inc_i, inc_j, inc_k, stride_i, stride_j, stride_k))
    for row in range(lockstep.FLOAT_ROWS):
        fs[row, lane] = floats[row]
    for row in range(lockstep.INT_ROWS):
        ist[row, lane] = ints[row]
    return status, a0, a1, left_i + left_j + left_k, on_ray


# the lockstep walks, one per (labelled, hinged)
_lanes_plain, _lanes_label = lockstep.lockstep_walk(False, False, _BIG), lockstep.lockstep_walk(True, False, _BIG)
_lanes_hinged, _lanes_label_hinged = lockstep.lockstep_walk(False, True, _BIG), lockstep.lockstep_walk(True, True, _BIG)


def _image_kernel(hinged: bool):
    """The image loop, compiled for one value of the flag `hinged` (a closure constant, which numba
    compiles in, and keys its on-disk cache by): parallel over detector tiles; in each tile, rays
    `lockstep.LANES` at a time (neighbouring pixels of a row), each started and finished on its own and
    walked together (`lockstep`). Each kernel compiles on its first use and holds only the arithmetic it
    needs."""
    # numba keys a kernel's on-disk cache by its code and its closure's values: the closure holds the
    # flag and the digest of lockstep.py, so an edit there recompiles; the intrinsics are globals
    # (their pickles carry a fresh id in every process)
    key = (hinged, lockstep.SOURCE_DIGEST)

    @numba.njit(parallel=True, nogil=True, cache=True)
    def traverse(flat, shape, labels, label, box, occ, occ_shape, shift, source, targets, raylen, height, width,
                 knots, out, out_label, out_hinges, out_steps):
        hinged = key[0]
        lanes = lockstep.LANES
        n_i, n_j, n_k = shape[0], shape[1], shape[2]
        nb_i, nb_j, nb_k = occ_shape[0], occ_shape[1], occ_shape[2]
        tiles_w = (width + TILE - 1) // TILE
        n_tiles = ((height + TILE - 1) // TILE) * tiles_w
        sx, sy, sz = source[0], source[1], source[2]
        labelled = label >= 0
        for tile in numba.prange(n_tiles):
            row0 = (tile // tiles_w) * TILE
            col0 = (tile % tiles_w) * TILE
            tile_w = min(width - col0, TILE)
            n_rays = min(height - row0, TILE) * tile_w
            fs = np.zeros((lockstep.FLOAT_ROWS, lanes))
            ist = np.zeros((lockstep.INT_ROWS, lanes), dtype=np.int32)
            ray = np.empty(lanes, dtype=np.int64)
            ends = np.empty(lanes)
            lengths = np.empty(lanes)
            lefts = np.empty(lanes, dtype=np.int64)
            for first in range(0, n_rays, lanes):
                live = 0
                for lane in range(lanes):
                    ray[lane] = -1
                    n = first + lane
                    if n >= n_rays:  # the tile's last lanes
                        _lane_idle(ist, lane)
                        continue
                    r = (row0 + n // tile_w) * width + col0 + n % tile_w
                    status, a0, a1, left, on_ray = _lane_start(fs, ist, lane, n_i, n_j, n_k, box, occ, nb_i, nb_j,
                                                               nb_k, shift, sx, sy, sz, targets[r, 0], targets[r, 1],
                                                               targets[r, 2], labelled)
                    out_steps[r, 0] = on_ray
                    if status == LIVE:
                        ray[lane] = r
                        ends[lane] = a1
                        lengths[lane] = a1 - a0
                        lefts[lane] = left
                        live += 1
                        continue
                    out[r] = 0.0
                    out_label[r] = 0.0
                    out_steps[r, 1] = 0
                    if hinged:
                        scale = raylen[r]
                        out_hinges[r, 0] = (a1 - a0) * scale if status == EMPTY else 0.0
                        out_hinges[r, 1] = 0.0
                        out_hinges[r, 2] = 0.0
                if live == 0:
                    continue
                if hinged:
                    if labelled:
                        _lanes_label_hinged(flat, labels, label, fs, ist, knots[0], knots[1])
                    else:
                        _lanes_hinged(flat, labels, label, fs, ist, knots[0], knots[1])
                elif labelled:
                    _lanes_label(flat, labels, label, fs, ist, knots[0], knots[1])
                else:
                    _lanes_plain(flat, labels, label, fs, ist, knots[0], knots[1])
                for lane in range(lanes):
                    r = ray[lane]
                    if r < 0:
                        continue
                    left = ist[lockstep.I_LEFT_I, lane] + ist[lockstep.I_LEFT_J, lane] + ist[lockstep.I_LEFT_K, lane]
                    whole, part, h0, h1, read = _ray_finish(
                        flat, labels, label, ist[lockstep.I_OFF, lane], fs[lockstep.F_A, lane], ends[lane],
                        fs[lockstep.F_END, lane], fs[lockstep.F_B0, lane], fs[lockstep.F_B1, lane], knots,
                        fs[lockstep.F_ACC, lane], fs[lockstep.F_LABEL, lane], fs[lockstep.F_H0, lane],
                        fs[lockstep.F_H1, lane], lefts[lane] - left, labelled, hinged)
                    scale = raylen[r]
                    out[r] = whole * scale
                    out_label[r] = part * scale
                    out_steps[r, 1] = read
                    if hinged:
                        out_hinges[r, 0] = lengths[lane] * scale
                        out_hinges[r, 1] = h0 * scale
                        out_hinges[r, 2] = h1 * scale

    return traverse


_TRAVERSE = {False: _image_kernel(False), True: _image_kernel(True)}  # without / with hinge integrals


_workqueue_lock = threading.Lock()


OCCUPIED, NEAR = 1, 2  # the bits of `Occupancy.flags`


@dataclass(frozen=True)
class Occupancy:
    """Which blocks of a volume hold anything (`occupancy`): each ray's walk stops after the last block
    near an occupied one (`_ray_start`)."""

    grid: np.ndarray  # (nb_i, nb_j, nb_k) uint8: 1 where the block holds a non-zero voxel
    shift: int  # blocks are 2**shift voxels a side
    shape: tuple[int, int, int]  # the volume's shape
    # what the kernels read, flattened: OCCUPIED where the block holds a non-zero voxel, NEAR where it
    # or one of its 26 neighbours does (a ray's end is found on NEAR: see `_occupied_end`)
    flags: np.ndarray

    @property
    def empty_fraction(self) -> float:
        return float(1.0 - self.grid.mean()) if self.grid.size else 0.0

    @property
    def far_fraction(self) -> float:
        """The share of blocks with no non-zero voxel in them or in any of their 26 neighbours: where a
        ray's walk can stop early."""
        return float(1.0 - np.mean((self.flags & NEAR) > 0)) if self.flags.size else 0.0

    @property
    def pays_on_cpu(self) -> bool:
        """Whether the CPU image kernel gains by this grid (`GRID_FAR_MIN`)."""
        return self.far_fraction >= GRID_FAR_MIN


BLOCK_SHIFT = 3  # 8^3-voxel blocks (benchmarks/stream.py prints the share of steps left out)
# Finding a ray's stop walks the block grid back from its exit (~50 ns a ray on the demo views); it pays
# where wide air lies beyond the body. On the demo CT's six stream views, padded with air (one thread,
# interleaved, ad-hoc, docs/benchmarks.md), the stop cost 1.7 ms a view at 12 % far blocks and 0.8 ms
# at 27 %, and saved 1.4 ms at 49 % and 2.8 ms at 75 %: renderers walk on the CPU with the grid from here.
GRID_FAR_MIN = 0.35
# the walk without a grid: one block, never empty
_NO_SKIP = np.full(1, OCCUPIED | NEAR, dtype=np.uint8), np.ones(3, dtype=np.int64), NO_GRID_SHIFT


def occupancy(volume: np.ndarray, shift: int = BLOCK_SHIFT) -> Occupancy:
    """The occupancy grid of `volume` (i, j, k): a block is empty when every voxel in it is exactly 0
    (air clipped to mu = 0), so leaving it out changes no image. Built once per volume (one pass over it)."""
    if not 0 <= shift < 16:
        raise ValueError(f"block shift must be in [0, 16), got {shift}")
    size = 1 << shift
    blocks = [-(-n // size) for n in volume.shape]
    padded = np.zeros([b * size for b in blocks], dtype=bool)
    padded[tuple(slice(0, n) for n in volume.shape)] = volume != 0
    grid = padded.reshape(blocks[0], size, blocks[1], size, blocks[2], size).any(axis=(1, 3, 5))
    near = ndimage.binary_dilation(grid, structure=np.ones((3, 3, 3), dtype=bool))
    flags = (grid * OCCUPIED + near * NEAR).astype(np.uint8).reshape(-1)
    return Occupancy(grid.astype(np.uint8), shift, tuple(int(n) for n in volume.shape), flags)


def traverse_numba(volume: np.ndarray, source: np.ndarray, targets: np.ndarray, raylen: np.ndarray,
                   height: int, width: int, labels: np.ndarray | None = None,
                   label: int = -1, occupied: Occupancy | None = None,
                   box: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Line integrals of `volume` (i, j, k; float32) along rays from `source` (3,) to `targets` (H*W, 3),
    both in voxel coordinates; `raylen` (H*W,) is each ray's source-detector length in mm.

    Returns (whole, labelled) float64 (H*W,) images; `labelled` integrates only voxels whose
    `labels` value equals `label` (zeros when no label is asked for). With `occupied` (the volume's
    `occupancy`), each ray stops where it leaves the last block that is occupied or touches an
    occupied one: the same images, bit for bit, from fewer voxel reads.
    `box`: `label_box(labels, label)` when the caller keeps it (it is a pass over the label volume).
    """
    whole, part, _, _ = _walk(volume, source, targets, raylen, height, width, labels, label, None, occupied, box)
    return whole, part


def traverse_hinges_numba(volume: np.ndarray, source: np.ndarray, targets: np.ndarray, raylen: np.ndarray,
                          height: int, width: int, knots, labels: np.ndarray | None = None,
                          label: int = -1, occupied: Occupancy | None = None, box: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`traverse_numba` (the same two images, bit for bit) and, from the same walk, (H*W, 1 + MAX_KNOTS)
    float64: each ray's length inside the volume (mm) and, per knot c (at most MAX_KNOTS), the line
    integral of max(v - c, 0) (columns of absent knots are 0).

    Any per-voxel quantity that is a continuous piecewise-linear function of the value with its kinks
    at the knots, q(v) = alpha + beta v + sum_k gamma_k max(v - c_k, 0) - the materials' partial
    densities (`pipelines.physics.materials`) - integrates exactly from these columns and the whole
    image, so the walk still reads one float per voxel and keeps its accumulators in registers.
    Empty blocks are left out only when every knot is >= 0 (then max(0 - c, 0) = 0 there too).
    """
    whole, part, hinges, _ = _walk(volume, source, targets, raylen, height, width, labels, label, knots, occupied,
                                   box)
    return whole, part, hinges


def walk_counts(volume: np.ndarray, source: np.ndarray, targets: np.ndarray, height: int, width: int,
                occupied: Occupancy | None = None) -> tuple[int, int]:
    """(voxels on the rays, voxels the walk reads): what clipping rays to the occupied blocks saves on
    one view."""
    n = height * width
    _, _, _, steps = _walk(volume, source, targets, np.ones(n), height, width, None, -1, None, occupied, None)
    return int(steps[:, 0].sum()), int(steps[:, 1].sum())


def _padded_knots(knots) -> np.ndarray:
    """Knots as MAX_KNOTS float32 values, absent ones at +inf (float32 max): their hinges are 0."""
    knots = np.asarray([] if knots is None else knots, dtype=np.float32).reshape(-1)
    if len(knots) > MAX_KNOTS:
        raise ValueError(f"at most {MAX_KNOTS} knots, got {len(knots)}")
    padded = np.full(MAX_KNOTS, np.finfo(np.float32).max, dtype=np.float32)
    padded[:len(knots)] = knots
    return padded


def _occupancy_arrays(volume: np.ndarray, occupied: Occupancy | None, knots: np.ndarray):
    if occupied is None or np.any(knots < 0):
        return _NO_SKIP
    if occupied.shape != tuple(volume.shape):
        raise ValueError(f"occupancy of a {occupied.shape} volume given for a {tuple(volume.shape)} one")
    return occupied.flags, np.asarray(occupied.grid.shape, dtype=np.int64), occupied.shift


MAX_VOXELS = 2 ** 31 - 1  # the image kernel's lanes hold voxel offsets in 32 bits (`lockstep`)


def _walk(volume, source, targets, raylen, height, width, labels, label, knots, occupied, box):
    """Pack the arguments of the image kernel once; hinge columns only when `knots` is given."""
    voxels = int(np.prod(np.shape(volume), dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise ValueError(f"a volume of {voxels} voxels {tuple(np.shape(volume))}: the image kernel addresses at "
                         f"most {MAX_VOXELS} (32-bit offsets); walk it with ops.ray_batch.walk_rays (64-bit, the "
                         "same sums) or crop it")
    flat = np.ascontiguousarray(volume, dtype=np.float32).reshape(-1)
    labels_flat, label, box = _label_arrays(volume.shape, labels, label, box)
    n = height * width
    out, out_label = np.empty(n), np.empty(n)
    hinges = np.empty((n if knots is not None else 0, 1 + MAX_KNOTS))
    steps = np.empty((n, 2), dtype=np.int64)
    padded = _padded_knots(knots)
    occ, occ_shape, shift = _occupancy_arrays(volume, occupied, padded)
    args = (flat, np.asarray(volume.shape, dtype=np.int64), labels_flat, int(label), box, occ, occ_shape, int(shift),
            np.asarray(source, dtype=np.float64).reshape(3), np.ascontiguousarray(targets, dtype=np.float64),
            np.ascontiguousarray(raylen, dtype=np.float64), int(height), int(width), padded, out,
            out_label, hinges, steps)
    kernel = _TRAVERSE[knots is not None]
    if _layer() == "workqueue":  # numba's fallback thread pool must not be entered from two threads at once
        with _workqueue_lock:
            kernel(*args)
    else:
        kernel(*args)
    return out, out_label, hinges, steps


def _label_arrays(shape, labels, label, box=None):
    if labels is None or label < 0:
        return np.zeros(1, dtype=np.uint8), -1, np.zeros(6, dtype=np.int64)
    if labels.shape != tuple(shape):
        raise ValueError(f"labels {labels.shape} do not match the volume {tuple(shape)}")
    box = label_box(labels, label) if box is None else np.asarray(box, dtype=np.int64).reshape(6)
    return np.ascontiguousarray(labels, dtype=np.uint8).reshape(-1), int(label), box


def label_boxes(labels: np.ndarray) -> dict[int, np.ndarray]:
    """`label_box` of every label > 0 of a label volume, from one pass over it."""
    boxes = {}
    for value, found in enumerate(ndimage.find_objects(np.asarray(labels)), start=1):
        if found is not None:
            boxes[value] = np.array([s.start for s in found] + [s.stop for s in found], dtype=np.int64)
    return boxes


def label_box(labels: np.ndarray, label: int) -> np.ndarray:
    """(lo_i, lo_j, lo_k, hi_i, hi_j, hi_k): voxel-index box (hi exclusive) holding every `label` voxel; empty: all 0."""
    box = bounding_box(labels == label)
    if box is None:
        return np.zeros(6, dtype=np.int64)
    return np.concatenate([box[0], box[1] + 1]).astype(np.int64)


def _layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        return "workqueue" if not _has_safe_layer() else "safe"


def _has_safe_layer() -> bool:
    for module in ("numba.np.ufunc.omppool", "numba.np.ufunc.tbbpool"):
        try:
            __import__(module)
            return True
        except ImportError:
            continue
    return False


@numba.njit(inline="always")
def _walk_ray(r, flat, n_i, n_j, n_k, labels, ray_label, boxes, occ, nb_i, nb_j, nb_k, shift, sources, targets, raylen,
              knots, hinged, out, out_label, out_hinges):
    """Ray r of a batch (`walk_rays`): its own source and part label, its label's box from the table;
    the body of both the CPU loop and the CUDA kernel (`ray_batch`), so the two differ only in
    who runs which ray."""
    label = ray_label[r]
    box = boxes[max(label, 0)]
    whole, part, length, h0, h1, _, _ = _ray_of(
        flat, n_i, n_j, n_k, labels, label, box, occ, nb_i, nb_j, nb_k, shift, sources[r, 0], sources[r, 1],
        sources[r, 2], targets[r, 0], targets[r, 1], targets[r, 2], hinged, knots)
    scale = raylen[r]
    out[r] = whole * scale
    out_label[r] = part * scale
    if hinged:
        out_hinges[r, 0] = length * scale
        out_hinges[r, 1] = h0 * scale
        out_hinges[r, 2] = h1 * scale


def _rays_kernel(hinged: bool):
    """The CPU loop over a batch of rays (parallel), compiled for one value of `hinged`."""

    @numba.njit(parallel=True, nogil=True, cache=True)
    def walk(flat, n_i, n_j, n_k, labels, ray_label, boxes, occ, nb_i, nb_j, nb_k, shift, sources, targets, raylen,
             knots, out, out_label, out_hinges):
        for r in numba.prange(targets.shape[0]):
            _walk_ray(r, flat, n_i, n_j, n_k, labels, ray_label, boxes, occ, nb_i, nb_j, nb_k, shift, sources, targets,
                      raylen, knots, hinged, out, out_label, out_hinges)

    return walk


_RAYS = {False: _rays_kernel(False), True: _rays_kernel(True)}


def label_table(boxes: dict[int, np.ndarray]) -> np.ndarray:
    """(256, 6) int64: row v the `label_box` of label v (all 0 for an absent label), from `label_boxes`."""
    table = np.zeros((256, 6), dtype=np.int64)
    for value, box in boxes.items():
        table[int(value)] = box
    return table


def traverse_torch(volume: torch.Tensor, source: torch.Tensor, targets: torch.Tensor, raylen: torch.Tensor,
                   labels: torch.Tensor | None = None, label: int | torch.Tensor = -1, chunk: int = 1 << 18,
                   knots=None) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`traverse_numba`'s arithmetic as float64 torch operations, chunk by chunk of rays (for CUDA).
    With `knots`: also `traverse_hinges_numba`'s (N, 1 + MAX_KNOTS) columns, as a third result.

    Several views walk in one call: `source` may be (N, 3), one source per ray, and `label` an (N,)
    tensor, one label per ray (-1: no part image for that ray). Each ray's sums are the same whichever
    rays share its call."""
    dims = volume.shape
    flat = volume.reshape(-1)
    dev = volume.device
    n = len(targets)
    per_ray = torch.as_tensor(label, dtype=torch.long, device=dev).expand(n)
    lab = labels.reshape(-1) if labels is not None and bool((per_ray >= 0).any()) else None
    hinge_knots = None if knots is None else torch.as_tensor(_padded_knots(knots), device=dev)
    outs, outs_label, outs_hinges = [], [], []
    src = source.double().reshape(-1, 3).expand(n, 3)
    for lo in range(0, n, chunk):
        whole, part, hinges = _traverse_chunk(flat, dims, lab, per_ray[lo:lo + chunk], src[lo:lo + chunk],
                                              targets[lo:lo + chunk].double(), raylen[lo:lo + chunk].double(),
                                              hinge_knots)
        outs.append(whole)
        outs_label.append(part)
        outs_hinges.append(hinges)
    if not outs:
        empty = torch.zeros(0, dtype=torch.float64, device=dev)
        outs, outs_label, outs_hinges = [empty], [empty], [torch.zeros((0, 1 + MAX_KNOTS), dtype=torch.float64,
                                                                       device=dev)]
    if knots is None:
        return torch.cat(outs), torch.cat(outs_label)
    return torch.cat(outs), torch.cat(outs_label), torch.cat(outs_hinges)


def _traverse_chunk(flat, dims, labels, label, src, tgt, raylen, knots=None):
    dev = tgt.device
    n = len(tgt)
    d = tgt - src
    a0 = torch.zeros(n, dtype=torch.float64, device=dev)
    a1 = torch.ones(n, dtype=torch.float64, device=dev)
    for ax in range(3):
        s, dd, size = src[:, ax], d[:, ax], dims[ax]
        safe = torch.where(dd == 0, torch.ones_like(dd), dd)
        lo, hi = (-0.5 - s) / safe, (size - 0.5 - s) / safe
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        outside = (dd == 0) & ((s < -0.5) | (s > size - 0.5))
        a0 = torch.where(dd == 0, a0, torch.maximum(a0, lo))
        a1 = torch.where(outside, torch.full_like(a1, -1.0), torch.where(dd == 0, a1, torch.minimum(a1, hi)))
    hit = a1 > a0
    inside = 1e-9 * (a1 - a0)
    idx, left, step, nxt, inc = [], [], [], [], []
    strides = (dims[1] * dims[2], dims[2], 1)
    for ax in range(3):
        s, dd, size = src[:, ax], d[:, ax], dims[ax]
        first = torch.floor(s + (a0 + inside) * dd + 0.5).clamp(0, size - 1)
        last = torch.floor(s + (a1 - inside) * dd + 0.5).clamp(0, size - 1)
        count = torch.where(hit, (last - first).abs(), torch.zeros_like(first)).long()
        sign = torch.sign(dd).long()
        safe = torch.where(dd == 0, torch.ones_like(dd), dd)
        plane = torch.where(dd > 0, (first + 0.5 - s) / safe, (first - 0.5 - s) / safe)
        plane = torch.where((dd == 0) | (count == 0), torch.full_like(plane, _BIG), plane)
        idx.append(first.long())
        left.append(count)
        step.append(sign * strides[ax])
        nxt.append(plane)
        inc.append(torch.where(dd > 0, 1.0 / safe, torch.where(dd < 0, -1.0 / safe, torch.zeros_like(dd))))
    off = (idx[0] * dims[1] + idx[1]) * dims[2] + idx[2]
    off = torch.where(hit, off, torch.zeros_like(off))
    acc = torch.zeros(n, dtype=torch.float64, device=dev)
    acc_label = torch.zeros_like(acc)
    hinges = torch.zeros((n, 1 + MAX_KNOTS), dtype=torch.float64, device=dev) if knots is not None else None
    a = a0.clone()
    total = left[0] + left[1] + left[2]
    for t in range(int(total.max().item()) if n else 0):
        active = t < total
        v = flat[off].double()
        pick_i = (nxt[0] <= nxt[1]) & (nxt[0] <= nxt[2])
        pick_j = ~pick_i & (nxt[1] <= nxt[2])
        pick_k = ~pick_i & ~pick_j
        e = torch.where(pick_i, nxt[0], torch.where(pick_j, nxt[1], nxt[2]))
        seg = (e - a) * v
        acc = torch.where(active, acc + seg, acc)
        if hinges is not None:
            hinges[:, 1:] += torch.where(active[:, None], (e - a)[:, None] * (v.float()[:, None] - knots).clamp(min=0), 0.0)
        if labels is not None:
            acc_label = torch.where(active & (labels[off].long() == label), acc_label + seg, acc_label)
        moved = off
        for ax, pick in enumerate((pick_i, pick_j, pick_k)):
            go = active & pick
            left[ax] = left[ax] - go.long()
            nxt[ax] = torch.where(go, torch.where(left[ax] > 0, nxt[ax] + inc[ax], torch.full_like(e, _BIG)), nxt[ax])
            moved = moved + go.long() * step[ax]
        off = moved
        a = torch.where(active, e, a)
    last = flat[off]
    seg = (a1 - a) * last.double()
    acc = torch.where(hit, acc + seg, torch.zeros_like(acc)) * raylen
    if hinges is not None:
        hinges[:, 1:] += (a1 - a)[:, None] * (last.float()[:, None] - knots).clamp(min=0)
        hinges[:, 0] = a1 - a0
        hinges = torch.where(hit[:, None], hinges, 0.0) * raylen[:, None]
    if labels is not None:
        acc_label = torch.where(hit & (labels[off].long() == label), acc_label + seg, acc_label)
    acc_label = torch.where(hit, acc_label, torch.zeros_like(acc_label)) * raylen
    return acc, acc_label, hinges
