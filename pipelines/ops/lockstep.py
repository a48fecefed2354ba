"""Eight rays walked in lockstep: the traversal's voxel step on vectors of `LANES` lanes, one ray a lane.

The image kernel (`traversal._image_kernel`) starts each ray on its own (`traversal._ray_start`: entry,
end of the occupied blocks), puts `LANES` neighbouring rays'
walk states into two small arrays, walks them together here, and finishes each on its own
(`traversal._ray_finish`). A lane does exactly what `traversal._ray`'s loop does for its ray, with the
same float64 operations in the same order (the step of `traversal._advance`; the sums of `_ray`), so
the images are the same bit for bit: only which instructions carry them differs. A lane whose ray has
ended keeps its state (its sums are selected, never changed) until every lane has ended.

Why vectors: a step of one ray is ~20 instructions with an unpredictable branch (which axis is crossed
next); on eight lanes it is ~70 vector instructions and no branch but the loop's own (and, with a
label, whether any lane is in the label's box). A numba loop over eight lanes' arrays was not
vectorised when tried, so the loop is written as LLVM vector IR in a numba intrinsic
(`numba.extending.intrinsic`, llvmlite's IR builder): `<8 x double>` fractions, `<8 x i32>` offsets,
compare masks and selects. LLVM lowers the vectors to what the CPU has (AVX-512, or halves and
quarters of them on AVX2 and SSE), so the kernel runs, with the same sums, on any CPU numba targets.
The voxels are read by eight scalar loads into a vector rather than a
hardware gather: on the AMD EPYC (Zen 4) this project is measured on, the walk with `vgatherqps` was
no faster than the one-ray walk, with eight loads it was ~1.5x faster (ad-hoc timings, recorded in
docs/benchmarks.md; benchmarks/stream.py prints the walk's ms per view).

Prefetching: a posed view's rays cross the volume obliquely, so a ray reads a new cache line (and often
a new page) nearly every step, and a volume of over a hundred MB is far from the caches. Every step
asks for the voxel some `traversal.LOOKAHEAD` crossings ahead on every lane's ray (`llvm.prefetch`, a
hint: it never faults and changes no result, so an address past the ray's end or the volume's is
harmless), each lane's offset to it set when its ray starts (`traversal._ahead`). On the demo views
this took the one-thread walk from 70-73 to 60-61 ms a view prefetching four lanes of eight, and all
eight were 4-5 % faster again than four (ad-hoc: interleaved in one process, docs/benchmarks.md).

32-bit offsets and counts: a 256-bit `<8 x i32>` is one operation where a 512-bit `<8 x i64>` is two
on CPUs that split 512-bit vectors (Zen 4); on the demo views the walk took 7-8 % less time with them
(ad-hoc, interleaved in one process). So the image kernel takes volumes of fewer than 2**31 voxels
(`traversal.MAX_VOXELS`; 8 GB of float32).

No contraction: LLVM fuses a multiply and an add into one rounding only under fast-math flags, which
this IR never sets; `tests/ops/test_traversal.py` checks the images against the one-ray walk bit for bit.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8
SOURCE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()  # kernels' cache key (traversal)

# rows of the float64 state (FLOAT_ROWS, LANES): ray fractions, per-axis next crossing and increment,
# the sums, the label box's stretch of the ray (`traversal._lane_start` fills them in this order)
(F_A, F_END, F_NI, F_NJ, F_NK, F_INC_I, F_INC_J, F_INC_K, F_ACC, F_LABEL, F_H0, F_H1, F_B0, F_B1) = range(14)
FLOAT_ROWS = 14
# rows of the int32 state (INT_ROWS, LANES): voxel offset, crossings left per axis, per-axis offset step,
# the offset from a lane's voxel to the one its ray reaches some crossings later (prefetched)
(I_OFF, I_LEFT_I, I_LEFT_J, I_LEFT_K, I_STRIDE_I, I_STRIDE_J, I_STRIDE_K, I_AHEAD) = range(8)
INT_ROWS = 8
PREFETCHED = tuple(range(LANES))  # the lanes whose rays' voxels ahead are prefetched: all

_F64, _F32, _I64, _I32, _I8, _I1 = (ir.DoubleType(), ir.FloatType(), ir.IntType(64), ir.IntType(32), ir.IntType(8),
                                    ir.IntType(1))


def _vec(t):
    return ir.VectorType(t, LANES)


def _splat(builder, value, ty):
    """A scalar in every lane."""
    one = builder.insert_element(ir.Constant(_vec(ty), ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(_vec(ty), ir.Undefined), ir.Constant(_vec(_I32), [0] * LANES))


def _const(ty, value):
    return ir.Constant(_vec(ty), [value] * LANES)


def _lanes(builder, off):
    """Each lane's offset as a scalar: extracted once a step, for the voxel and the label loads."""
    return [builder.extract_element(off, ir.Constant(_I32, lane)) for lane in range(LANES)]


def _load_lanes(builder, base, offsets, elem):
    """base[offsets[l]] for every lane, by one scalar load each (every lane's offset is inside the
    array: a lane keeps the offset of a voxel of its ray, or 0, after it ends)."""
    ptr = builder.bitcast(base, elem.as_pointer())
    out = ir.Constant(_vec(elem), ir.Undefined)
    for lane, at in enumerate(offsets):
        out = builder.insert_element(out, builder.load(builder.gep(ptr, [at])), ir.Constant(_I32, lane))
    return out


def _prefetch(builder, base, offsets):
    """Ask the cache for base[offset] of each offset (`llvm.prefetch`: read, keep in every level,
    data): a hint, which never faults, so no offset needs to lie inside the array."""
    i8p = ir.IntType(8).as_pointer()
    hint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32]),
                                          "llvm.prefetch.p0")
    ptr = builder.bitcast(base, _F32.as_pointer())
    for at in offsets:
        builder.call(hint, [builder.bitcast(builder.gep(ptr, [at]), i8p), ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                            ir.Constant(_I32, 1)])


def _any(builder, mask):
    bits = builder.bitcast(mask, ir.IntType(LANES))
    return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(LANES), 0))


def lockstep_walk(with_label: bool, with_hinges: bool, big: float):
    """The intrinsic `walk(flat, labels, label, fstate, istate, c0, c1)`: walks the lanes of the state
    arrays until every lane has ended (no crossing left, or its fraction at or past F_END), updating
    them in place. `big`: the fraction an axis' next crossing takes when it has none left
    (`traversal._BIG`). `with_label` adds F_LABEL (voxels of `labels` equal to `label` on the ray's
    stretch [F_B0, F_B1]); `with_hinges` adds F_H0, F_H1 (the integrals of max(v - c, 0) for the
    float32 knots c0, c1)."""

    @intrinsic
    def walk(typingctx, flat, labels, label, fstate, istate, c0, c1):
        ok = (isinstance(flat, types.Array) and flat.dtype == types.float32 and flat.ndim == 1
              and isinstance(labels, types.Array) and labels.dtype == types.uint8 and labels.ndim == 1
              and isinstance(label, types.Integer)
              and isinstance(fstate, types.Array) and fstate.dtype == types.float64 and fstate.layout == "C"
              and isinstance(istate, types.Array) and istate.dtype == types.int32 and istate.layout == "C"
              and c0 == types.float32 and c1 == types.float32)
        if not ok:
            return None
        sig = types.void(flat, labels, label, fstate, istate, c0, c1)

        def codegen(context, builder, signature, args):
            flat_a, labels_a, fs_a, is_a = (context.make_array(signature.args[n])(context, builder, args[n])
                                            for n in (0, 1, 3, 4))
            fptr = builder.bitcast(fs_a.data, _vec(_F64).as_pointer())
            iptr = builder.bitcast(is_a.data, _vec(_I32).as_pointer())
            fslot = [cgutils.alloca_once(builder, _vec(_F64)) for _ in range(FLOAT_ROWS)]
            islot = [cgutils.alloca_once(builder, _vec(_I32)) for _ in range(INT_ROWS)]
            for rows, ptr, slots in ((FLOAT_ROWS, fptr, fslot), (INT_ROWS, iptr, islot)):
                for r in range(rows):
                    builder.store(builder.load(builder.gep(ptr, [ir.Constant(_I64, r)]), align=8), slots[r])
            label_v = _splat(builder, context.cast(builder, args[2], signature.args[2], types.int32), _I32)
            # the prefetched lanes' offsets ahead, fixed for the walk: scalars, added to the offsets the loads use
            aheads = builder.load(builder.gep(iptr, [ir.Constant(_I64, I_AHEAD)]), align=8)
            aheads = [builder.extract_element(aheads, ir.Constant(_I32, lane)) for lane in PREFETCHED]
            knots = (_splat(builder, args[5], _F32), _splat(builder, args[6], _F32))
            head, body, done = (builder.append_basic_block(f"lockstep.{n}") for n in ("head", "body", "done"))
            builder.branch(head)

            builder.position_at_end(head)  # which lanes go on: crossings left and not past the end
            f = [builder.load(s) for s in fslot]
            i = [builder.load(s) for s in islot]
            left = builder.add(builder.add(i[I_LEFT_I], i[I_LEFT_J]), i[I_LEFT_K])
            active = builder.and_(builder.icmp_signed(">", left, _const(_I32, 0)),
                                  builder.fcmp_ordered("<", f[F_A], f[F_END]))
            builder.cbranch(_any(builder, active), body, done)

            builder.position_at_end(body)
            _step(builder, flat_a.data, labels_a.data, label_v, knots, aheads, f, i, fslot, islot, active, big,
                  with_label, with_hinges)
            builder.branch(head)

            builder.position_at_end(done)
            for rows, ptr, slots in ((FLOAT_ROWS, fptr, fslot), (INT_ROWS, iptr, islot)):
                for r in range(rows):
                    builder.store(builder.load(slots[r]), builder.gep(ptr, [ir.Constant(_I64, r)]), align=8)
            return context.get_dummy_value()

        return sig, codegen

    return walk


def _step(builder, flat, labels, label_v, knots, aheads, f, i, fslot, islot, active, big, with_label, with_hinges):
    """One step of every active lane: `traversal._ray`'s loop body, lane by lane."""
    a, ni, nj, nk, off = f[F_A], f[F_NI], f[F_NJ], f[F_NK], i[I_OFF]
    offsets = _lanes(builder, off)
    _prefetch(builder, flat, [builder.add(offsets[lane], ahead) for lane, ahead in zip(PREFETCHED, aheads)])
    vf = _load_lanes(builder, flat, offsets, _F32)  # the voxel the lane is in
    v = builder.fpext(vf, _vec(_F64))

    def le(x, y):
        return builder.fcmp_ordered("<=", x, y)

    # traversal._advance: i if ni <= nj and ni <= nk, else j if nj <= nk, else k
    pick_i = builder.and_(le(ni, nj), le(ni, nk))
    pick_j = builder.and_(builder.not_(pick_i), le(nj, nk))
    pick_k = builder.and_(builder.not_(pick_i), builder.not_(pick_j))
    e = builder.select(pick_i, ni, builder.select(pick_j, nj, nk))
    pick_i, pick_j, pick_k = (builder.and_(p, active) for p in (pick_i, pick_j, pick_k))
    zero = _const(_I32, 0)
    step = builder.select(pick_i, i[I_STRIDE_I], builder.select(pick_j, i[I_STRIDE_J],
                                                                builder.select(pick_k, i[I_STRIDE_K], zero)))
    builder.store(builder.add(off, step), islot[I_OFF])
    for pick, left_row, nxt, inc_row, next_row in ((pick_i, I_LEFT_I, ni, F_INC_I, F_NI),
                                                   (pick_j, I_LEFT_J, nj, F_INC_J, F_NJ),
                                                   (pick_k, I_LEFT_K, nk, F_INC_K, F_NK)):
        left = builder.select(pick, builder.sub(i[left_row], _const(_I32, 1)), i[left_row])
        builder.store(left, islot[left_row])
        # an axis with no crossing left has next = big already (it is never picked), so testing every
        # lane's count after the step gives each picked lane's next and leaves the others' unchanged
        moved = builder.select(pick, builder.fadd(nxt, f[inc_row]), nxt)
        builder.store(builder.select(builder.icmp_signed("==", left, zero), _const(_F64, big), moved), fslot[next_row])
    w = builder.fsub(e, a)
    seg = builder.fmul(w, v)
    builder.store(builder.select(active, builder.fadd(f[F_ACC], seg), f[F_ACC]), fslot[F_ACC])
    if with_label:  # labels are read only while a lane is on its ray's stretch inside the label's box
        inside = builder.and_(active, builder.and_(builder.fcmp_ordered(">", e, f[F_B0]),
                                                   builder.fcmp_ordered("<", a, f[F_B1])))
        read, after = builder.append_basic_block("lockstep.label"), builder.append_basic_block("lockstep.after")
        builder.cbranch(_any(builder, inside), read, after)
        builder.position_at_end(read)
        found = builder.zext(_load_lanes(builder, labels, offsets, _I8), _vec(_I32))
        hit = builder.and_(inside, builder.icmp_signed("==", found, label_v))
        builder.store(builder.select(hit, builder.fadd(f[F_LABEL], seg), f[F_LABEL]), fslot[F_LABEL])
        builder.branch(after)
        builder.position_at_end(after)
    if with_hinges:
        zero32 = _const(_F32, 0.0)
        for knot, row in zip(knots, (F_H0, F_H1)):
            above = builder.fsub(vf, knot)
            above = builder.select(builder.fcmp_ordered(">", above, zero32), above, zero32)
            summed = builder.fadd(f[row], builder.fmul(w, builder.fpext(above, _vec(_F64))))
            builder.store(builder.select(active, summed, f[row]), fslot[row])
    builder.store(builder.select(active, e, a), fslot[F_A])
