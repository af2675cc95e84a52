"""Softmax, log-softmax and logsumexp kernels.

``forward_rows`` works on ``(R, C)`` rows, ``forward_lanes`` on ``(O, C, K)``
lanes (class axis in the middle); see ``_rows`` for the layouts and the
numerics. ``mode`` selects what is written:

* ``MODE_SOFTMAX``: ``out[i, j] = e_j / sum(e)``;
* ``MODE_LOG_SOFTMAX``: ``out[i, j] = (x_j - m) / T - log(c + s)``;
* ``MODE_LOGSUMEXP``: nothing into ``out``;

and every mode writes the row's logsumexp of ``x / T`` into ``lse`` when
``lse`` has a slot per row (pass a zero-length array to skip it). In
``MODE_LOGSUMEXP`` ``out`` is never written and may be any array with one
row (lanes: shape ``(1, 1, 1)``) of the input's dtype.

``th, tl`` is ``1/T`` as a double-word (``th + tl``); ``scaled`` is False for
``T = 1``, which takes the plain path. Rows are split into ``nchunks``
contiguous chunks, run by ``prange`` in the parallel twin; each chunk
allocates its scratch once. Every row's result is independent of the
chunking, so results are bit-identical for any thread count.
"""

import numpy as np
from numba import prange, types

from ._jit import (F64, VEC_BYTES, fma, fmax_nan_dropping, helper, inline, kernel, ld2, ld3,
                   overloaded, managed_helper, parallel_twin, py_call, shift_rows, st2, st3,
                   unmanaged, wide)
from ._rows import (MODE_LOG_SOFTMAX, MODE_LOGSUMEXP, MODE_SOFTMAX, NEXT_MAX_BYTES, SB,
                    SMALL_C, INV_BIG, UNIT_MAGIC, VB, acc_add, lane_acc, lane_acc2,
                    cast_like, dw_inverse, from_order_key, lanes_to_rows, log_c_plus_s,
                    order_key, row_exp_sums, row_max, rows_to_lanes, special_row, split_like,
                    xload2, xload3)
from .vmath import (BIG, exp_shifted, exp_shifted_big, exp_shifted_scaled,
                    exp_shifted_scaled_big, log1p_f64, two_sum)


def row_of(a, i):
    """a[i] for an array, None for None."""
    return py_call(row_of, a, i)


# Views returned by an overload: typed in a function of their own, which
# Numba compiles only with its runtime (the body is inlined into the caller,
# which is compiled without it; see _jit.NO_NRT_DISPATCHERS).
_VIEW_OPTS = dict(inline="always", jit_options={"_nrt": True})


@overloaded(row_of, **_VIEW_OPTS)
def _row_of(a, i):
    if isinstance(a, (types.NoneType, types.Omitted)):
        return lambda a, i: None
    return lambda a, i: a[i]


def lane_of(a, o, k):
    """a[o, :, k] for an array, None for None."""
    return py_call(lane_of, a, o, k)


@overloaded(lane_of, **_VIEW_OPTS)
def _lane_of(a, o, k):
    if isinstance(a, (types.NoneType, types.Omitted)):
        return lambda a, o, k: None
    return lambda a, o, k: a[o, :, k]


@inline
def _finite(v):
    return v - v == 0.0


def lse_of(x, mode, mth, ell):
    """A row's logsumexp ``m / T + log(c + s)`` (``mth + ell``), as stored in ``lse``.

    Float32 data in MODE_LOGSUMEXP get NaN instead when the result is
    ill-conditioned, and the caller recomputes those rows in float64. The
    float32 exponentials carry a relative error up to about 1.5 ULP, so
    ``ell`` is off by up to ``1.5 * 2**-23 * ell``: that is at most
    ``0.5 + 3 ell / |lse|`` ULP of the result. A maximum ``m >= 0`` gives
    ``lse >= ell`` (at most 3.5 ULP, typically well under 1: the exponentials'
    errors average out); a negative one can cancel (the logsumexp of
    log-probabilities is 0), so such rows with ``|lse| < 2 ell`` are flagged.
    """
    return py_call(lse_of, x, mode, mth, ell)


@overloaded(lse_of, inline="always")
def _lse_of(x, mode, mth, ell):
    if x.dtype == types.float32:
        def impl32(x, mode, mth, ell):
            v = mth + ell
            if mode == MODE_LOGSUMEXP and mth < 0.0 and abs(v) < 2.0 * ell:
                return np.nan
            return v
        return impl32
    return lambda x, mode, mth, ell: mth + ell


KT = 256   # lanes per block of the lanes kernel
G_MAX = 1024   # rows per transposed block of the short-row path: about 4096 // C,
               # a multiple of 64 (long vector loops, a block of a few tens of KB)


# ------------------------------------------------------------------ lanes block
_FINISHED = -(1 << 40)   # below zero whatever the class count adds to it


@helper
def _store_shifted(x, mask, o, c, k0, kk, mv, thc, out, cv, all_lanes):
    """out[o, c, k0 + k] = (x[o, c, k0 + k] - mv[k]) * thc for the lanes k < kk
    (only those with cv[k] >= 0 unless ``all_lanes``). In place (out is x) the
    loops read out alone, so that they need no no-overlap check."""
    wide()
    if x.ctypes.data == out.ctypes.data:
        if all_lanes:
            for k in range(kk):
                st3(out, o, c, k0 + k, (xload3(out, mask, o, c, k0 + k) - mv[k]) * thc)
        else:
            for k in range(kk):
                if cv[k] >= 0:
                    st3(out, o, c, k0 + k, (xload3(out, mask, o, c, k0 + k) - mv[k]) * thc)
    elif all_lanes:
        for k in range(kk):
            st3(out, o, c, k0 + k, (xload3(x, mask, o, c, k0 + k) - mv[k]) * thc)
    else:
        for k in range(kk):
            if cv[k] >= 0:
                st3(out, o, c, k0 + k, (xload3(x, mask, o, c, k0 + k) - mv[k]) * thc)


@helper
def _lanes_block(x, mask, o, k0, k1, th, tl, scaled, mode, out, lse, mv, sv, cv, ev, rows_out):
    """Lanes [k0, k1) of outer index o: one softmax per lane along axis 1.

    Every loop runs across the lanes, so it vectorises whatever the class
    count. ``mv`` holds the lane maxima, ``sv[0:2]`` the lane sums (a
    float64 pair), ``cv`` the count of maxima (negative once a lane is
    finished: non-finite lanes are finished first, before anything is
    written, so an in-place call reads them intact), ``ev`` the current
    exponentials; ``sv[2:4]`` receive ``log(c + s)`` or the double-word
    ``1 / sum``.

    With ``rows_out`` (log-softmax of short rows, see _small_rows), out is
    written for finished lanes only: on return ``mv`` holds the lane maxima
    and ``ev`` the logarithms log(c + s) in the array's dtype, and the caller
    writes the other lanes' output itself.
    """
    wide()
    n = x.shape[1]
    kk = k1 - k0
    for k in range(kk):
        mv[k] = xload3(x, mask, o, 0, k0 + k)
    for c in range(1, n):
        for k in range(kk):
            mv[k] = fmax_nan_dropping(mv[k], xload3(x, mask, o, c, k0 + k))
    for k in range(kk):
        sv[0, k] = 0.0
        sv[1, k] = 0.0
        cv[k] = 0
    # lanes with a non-finite maximum (counted in a vector loop; rare)
    nbad = 0
    for k in range(kk):
        nbad += 0 if _finite(mv[k]) else 1
    for k in range(kk if nbad else 0):
        if not _finite(mv[k]):
            if mode != MODE_LOGSUMEXP:
                outv = out[o, :, k0 + k]
            else:
                outv = out[0, :, 0]
            v = special_row(x[o, :, k0 + k], lane_of(mask, o, k0 + k), outv, mode)
            if lse.shape[0]:
                lse[o, k0 + k] = v
            cv[k] = _FINISHED
    split = mode != MODE_SOFTMAX
    # log-softmax: the shifted logits (x - m) * th go to out during this sweep
    # (the stores' cache misses hide behind the exponentials), and sweep
    # three subtracts log(c + s) in place. Stores skip finished lanes only
    # when there are some (nbad): a lane mask costs a load per vector.
    shift = mode == MODE_LOG_SOFTMAX and not rows_out
    thc = cast_like(ev, th)
    # the common case stores them from the exponentials' loop itself (an
    # in-place call must read out alone, see _store_shifted)
    fused = shift and nbad == 0 and not scaled and x.ctypes.data != out.ctypes.data
    for c in range(n):
        if split:
            # scaled exponentials (times 2**64): no term of the sum is subnormal
            if scaled:
                for k in range(kk):
                    ev[k] = exp_shifted_scaled_big(xload3(x, mask, o, c, k0 + k), mv[k], th,
                                                   tl)
            elif fused:
                for k in range(kk):
                    v = xload3(x, mask, o, c, k0 + k)
                    ev[k] = exp_shifted_big(v, mv[k])
                    st3(out, o, c, k0 + k, (v - mv[k]) * thc)
            else:
                for k in range(kk):
                    ev[k] = exp_shifted_big(xload3(x, mask, o, c, k0 + k), mv[k])
            if shift and not fused:
                _store_shifted(x, mask, o, c, k0, kk, mv, thc, out, cv, nbad == 0)
            for k in range(kk):
                v = F64(ev[k])
                one = v == BIG
                cv[k] += 1 if one else 0
                h, l_ = lane_acc2(ev, sv[0, k], sv[1, k], 0.0 if one else v)
                sv[0, k] = h
                sv[1, k] = l_
        else:
            if scaled:
                for k in range(kk):
                    ev[k] = exp_shifted_scaled(xload3(x, mask, o, c, k0 + k), mv[k], th, tl)
            else:
                for k in range(kk):
                    ev[k] = exp_shifted(xload3(x, mask, o, c, k0 + k), mv[k])
            if nbad == 0:
                for k in range(kk):
                    st3(out, o, c, k0 + k, ev[k])
            else:
                for k in range(kk):
                    if cv[k] >= 0:
                        st3(out, o, c, k0 + k, ev[k])
            for k in range(kk):
                h, l_ = lane_acc(ev, sv[0, k], sv[1, k], F64(ev[k]), UNIT_MAGIC)
                sv[0, k] = h
                sv[1, k] = l_
    # a NaN somewhere in a lane (an in-place softmax has already overwritten it)
    nnan = 0
    for k in range(kk):
        nnan += 1 if (cv[k] >= 0 and sv[0, k] != sv[0, k]) else 0
    for k in range(kk if nnan else 0):
        if cv[k] >= 0 and sv[0, k] != sv[0, k]:
            if mode != MODE_LOGSUMEXP:
                for c in range(n):
                    st3(out, o, c, k0 + k, np.nan)
            if lse.shape[0]:
                lse[o, k0 + k] = np.nan
            cv[k] = _FINISHED
    # per lane, vectorised: log(c + s) (split modes, or when the lse is
    # wanted), and the double-word 1 / s for softmax
    want_lse = lse.shape[0] > 0
    if split:
        for k in range(kk):
            hi = sv[0, k] + sv[1, k]
            lo = (sv[1, k] - (hi - sv[0, k])) * INV_BIG
            t, tlo = two_sum(F64(cv[k] - 1), hi * INV_BIG)
            sv[2, k] = log1p_f64(t) + (tlo + lo) / (1.0 + t)
    else:
        for k in range(kk):
            hi = sv[0, k] + sv[1, k]
            lo = sv[1, k] - (hi - sv[0, k])
            ih, il = dw_inverse(hi, lo)
            sv[2, k] = ih
            sv[3, k] = il
            if want_lse:
                sv[1, k] = log1p_f64(hi - 1.0) + lo / hi   # hi >= 1: hi - 1 is exact
    if want_lse:
        for k in range(kk):
            if cv[k] >= 0:
                lse[o, k0 + k] = lse_of(x, mode, F64(mv[k]) * (th + tl),
                                           sv[2, k] if split else sv[1, k])
    clean = nbad == 0 and nnan == 0
    if mode == MODE_SOFTMAX:
        for k in range(kk):
            h, l_ = split_like(ev, sv[2, k], sv[3, k])
            ev[k] = h
            mv[k] = l_          # the maxima are not needed any more
        for c in range(n):
            if clean:
                for k in range(kk):
                    e = ld3(out, o, c, k0 + k)
                    st3(out, o, c, k0 + k, fma(e, ev[k], e * mv[k]))
            else:
                for k in range(kk):
                    if cv[k] >= 0:
                        e = ld3(out, o, c, k0 + k)
                        st3(out, o, c, k0 + k, fma(e, ev[k], e * mv[k]))
    elif mode == MODE_LOG_SOFTMAX:
        for k in range(kk):
            ev[k] = cast_like(ev, sv[2, k])
        for c in range(n if not rows_out else 0):      # out holds (x - m) * th
            if clean:
                for k in range(kk):
                    st3(out, o, c, k0 + k, ld3(out, o, c, k0 + k) - ev[k])
            else:
                for k in range(kk):
                    if cv[k] >= 0:
                        st3(out, o, c, k0 + k, ld3(out, o, c, k0 + k) - ev[k])


# ------------------------------------------------------------------ rows
@helper
def _wide_row(x, mask, i, n, th, tl, scaled, mode, out, lse, scratch, m_in, have_m, inx):
    """Row i, n >= SMALL_C. Its maximum is ``m_in`` when ``have_m``. With
    ``inx >= 0`` (softmax and log_softmax), the last sweep also reads row
    ``inx``'s maximum (see NEXT_MAX_BYTES); returns (that maximum, True), or
    (anything, False) when the row ended before that sweep."""
    wide()
    m = m_in if have_m else row_max(x, mask, i, n)
    if not _finite(m):
        v = special_row(x[i], row_of(mask, i), out[i if mode != MODE_LOGSUMEXP else 0], mode)
        if lse.shape[0]:
            lse[i] = v
        return m, False
    split = mode != MODE_SOFTMAX
    if mode == MODE_LOG_SOFTMAX:
        # the shifted logits (x - m) / T go to out in sweep two
        hi, lo, c = row_exp_sums(x, mask, i, n, m, th, tl, scaled, True, scratch, 2, False,
                                 scratch, out)
    elif split:
        hi, lo, c = row_exp_sums(x, mask, i, n, m, th, tl, scaled, True, scratch, 2, False,
                                 scratch)
    else:
        hi, lo, c = row_exp_sums(x, mask, i, n, m, th, tl, scaled, False, out, i, True,
                                 scratch)
    if hi != hi:
        # a NaN among the entries (sweep two may already have overwritten an
        # in-place input, so the row is not read again): everything is NaN
        if mode != MODE_LOGSUMEXP:
            for j in range(n):
                st2(out, i, j, np.nan)
        if lse.shape[0]:
            lse[i] = np.nan
        return m, False
    if split:
        ell = log_c_plus_s(c, hi, lo)
    else:
        ell = np.log(hi) + lo / hi
    if lse.shape[0]:
        lse[i] = lse_of(x, mode, F64(m) * (th + tl), ell)
    # sweep three; the last n % VB entries as one more full vector block over
    # [n - VB, n) that stores back what is already there before the tail (the
    # loops that also take the next row's maximum are copies of those that
    # do not: a branch inside one loop would stop it vectorising)
    n64 = n - n % VB
    nv0 = xload2(x, mask, inx if inx >= 0 else i, 0)
    nk = order_key(nv0)
    if mode == MODE_SOFTMAX:
        ih, il = dw_inverse(hi, lo)
        ch, cl = split_like(out, ih, il)
        if inx >= 0:
            for j in range(n64):
                e = ld2(out, i, j)
                st2(out, i, j, fma(e, ch, e * cl))
                nk = max(nk, order_key(xload2(x, mask, inx, j)))
        else:
            for j in range(n64):
                e = ld2(out, i, j)
                st2(out, i, j, fma(e, ch, e * cl))
        if n64 < n:
            for j in range(n - VB, n):
                e = ld2(out, i, j)
                st2(out, i, j, fma(e, ch, e * cl) if j >= n64 else e)
    elif mode == MODE_LOG_SOFTMAX:
        ellc = cast_like(out, ell)
        thc = cast_like(out, th)
        if inx >= 0:
            for j in range(n64):        # out holds (x - m) * th here
                st2(out, i, j, ld2(out, i, j) - ellc)
                nk = max(nk, order_key(xload2(x, mask, inx, j)))
        else:
            for j in range(n64):
                st2(out, i, j, ld2(out, i, j) - ellc)
        if n64 < n and x.ctypes.data == out.ctypes.data:
            # in place: one array (see _rows.exp_window); before n64 it
            # holds the shifted logits already
            for j in range(n - VB, n):
                v = (xload2(out, mask, i, j) - m) * thc - ellc
                st2(out, i, j, v if j >= n64 else ld2(out, i, j))
        elif n64 < n:
            for j in range(n - VB, n):
                v = (xload2(x, mask, i, j) - m) * thc - ellc
                st2(out, i, j, v if j >= n64 else ld2(out, i, j))
    else:
        return m, False
    if inx < 0:
        return m, False
    for j in range(n64, n):
        nk = max(nk, order_key(xload2(x, mask, inx, j)))
    return from_order_key(nk, nv0), True


@inline
def small_block(n):
    """Rows per transposed block for rows of n < SMALL_C entries."""
    return min(G_MAX, max(64, (4096 // n) // 64 * 64))


@helper
def _small_rows(x, mask, r0, r1, th, tl, scaled, mode, out, lse, xs, os, ls, mv, sv, cv, ev,
                tbl):
    """Rows [r0, r1) of a short-row array, a block of rows at a time.

    A row this short would leave the vector lanes mostly idle, so each block
    of g rows is transposed into ``xs`` (C, g) and run as g lanes of the lanes
    algorithm (masked entries are copied as -inf), then transposed back.
    log_softmax without a mask instead writes its output along the rows,
    straight from x: ``(x - m) * th - log(c + s)``, each row's m and log
    broadcast to its entries by a vector permute (``shift_rows``; ``tbl``:
    the row of each entry of a group of L rows); only the finished lanes
    (rows with a NaN, +inf or nothing but -inf) are copied back from the
    lanes. That replaces the transpose back, the store of the shifted logits
    and a sweep over them: 0.82-0.88 of the time at 65536x10 float32, 0.93
    float64, 0.87 at 4096x20 (paired runs, 2 threads, AMD Zen 4).
    """
    wide()
    g_max = xs.shape[2]
    n = x.shape[1]
    rows_out = mode == MODE_LOG_SOFTMAX and mask is None
    L = tbl.shape[0] // n
    if rows_out:
        for j in range(L * n):
            tbl[j] = j // n
    thc = cast_like(x, th)
    for b0 in range(r0, r1, g_max):
        g = min(g_max, r1 - b0)
        rows_to_lanes(x, mask, b0, g, xs)
        _lanes_block(xs, None, 0, 0, g, th, tl, scaled, mode, os, ls, mv, sv, cv, ev, rows_out)
        if rows_out:
            for b in range(0, g, L):
                base = (b0 + b) * n
                m = min(L, g - b) * n
                for v in range(0, m, L):
                    shift_rows(x, base + v, min(L, m - v), mv, ev, b, tbl, v, thc, out)
            nfin = 0
            for k in range(g):
                nfin += 1 if cv[k] < 0 else 0
            for k in range(g if nfin else 0):
                if cv[k] < 0:
                    for c in range(n):
                        st2(out, b0 + k, c, ld3(os, 0, c, k))
        elif mode != MODE_LOGSUMEXP:
            lanes_to_rows(os, b0, g, out)
        if lse.shape[0]:
            for k in range(g):
                lse[b0 + k] = ls[0, k]


# Scratch space comes from the caller (a per-thread buffer of float64 words,
# SCRATCH_WORDS per chunk), so a call with out= allocates nothing
# (SPEC §6: under 1 KiB): F_WORDS of the array's dtype, D_WORDS of float64,
# I_WORDS of int64.
F_WORDS = 2 * 4096 + 4 * G_MAX
D_WORDS = 4 * G_MAX
I_WORDS = G_MAX
SCRATCH_WORDS = F_WORDS + D_WORDS + I_WORDS


@inline
def _typed(seg, x):
    """The chunk's scratch as (x-dtype array, float64 array, int64 array)."""
    return (seg[:F_WORDS].view(x.dtype), seg[F_WORDS:F_WORDS + D_WORDS],
            seg[F_WORDS + D_WORDS:SCRATCH_WORDS].view(np.int64))


TINY = 512    # arrays of at most this many elements take the scalar path


@helper
def _tiny_rows(x, mask, th, tl, scaled, out, lse, mode, r0, r1):
    """Rows of a tiny array, in scalar code: vector loops would cost more to set
    up than they save. Same numerics as the other paths (scaled exponentials
    for the split sums, compensated float64 sums for float64 data)."""
    n = x.shape[1]
    for i in range(r0, r1):
        m = xload2(x, mask, i, 0)
        for j in range(1, n):
            m = fmax_nan_dropping(m, xload2(x, mask, i, j))
        split = mode != MODE_SOFTMAX
        tot = 0.0
        tcomp = 0.0
        c = 0
        if _finite(m):
            for j in range(n):
                v = xload2(x, mask, i, j)
                if split:
                    e = F64(exp_shifted_scaled_big(v, m, th, tl) if scaled
                            else exp_shifted_big(v, m))
                    if e == BIG:
                        c += 1
                    else:
                        tot, tcomp = acc_add(x, tot, tcomp, e * INV_BIG)
                else:
                    e = exp_shifted_scaled(v, m, th, tl) if scaled else exp_shifted(v, m)
                    if mode == MODE_SOFTMAX:
                        st2(out, i, j, e)
                    tot, tcomp = acc_add(x, tot, tcomp, F64(e))
        if not _finite(m) or tot != tot:
            v = special_row(x[i], row_of(mask, i), out[i if mode != MODE_LOGSUMEXP else 0], mode)
            if lse.shape[0]:
                lse[i] = v
            continue
        hi = tot + tcomp
        lo = tcomp - (hi - tot)
        if split:
            ell = log_c_plus_s(c, hi, lo)
        else:
            ell = np.log(hi) + lo / hi
        if lse.shape[0]:
            lse[i] = lse_of(x, mode, F64(m) * (th + tl), ell)
        if mode == MODE_SOFTMAX:
            ih, il = dw_inverse(hi, lo)
            ch, cl = split_like(out, ih, il)
            for j in range(n):
                e = ld2(out, i, j)
                st2(out, i, j, fma(e, ch, e * cl))
        elif mode == MODE_LOG_SOFTMAX:
            ellc = cast_like(out, ell)
            thc = cast_like(out, th)
            for j in range(n):
                st2(out, i, j, (xload2(x, mask, i, j) - m) * thc - ellc)


@managed_helper
def _rows_range(x, mask, th, tl, scaled, out, lse, mode, r0, r1, seg):
    """Rows [r0, r1): wide rows one by one, short rows through lanes (tiny
    arrays in scalar code; the choice depends on the array's shape only)."""
    wide()
    x = unmanaged(x)
    mask = unmanaged(mask)
    out = unmanaged(out)
    lse = unmanaged(lse)
    seg = unmanaged(seg)
    n = x.shape[1]
    if x.shape[0] * n <= TINY:
        _tiny_rows(x, mask, th, tl, scaled, out, lse, mode, r0, r1)
        return
    fw, dw, iw = _typed(seg, x)
    if n >= SMALL_C:
        scratch = fw[:3 * SB].reshape((3, SB))
        # (no software prefetch of the next row: without the burst of
        # prefetches at the start of each row, 0.95 of the time on 4096-class
        # rows and no different on 64-2000 classes on an Intel Xeon; on AMD
        # Zen 4, prefetching the next superblock cost logsumexp 1.18 at
        # 256x32000)
        fuse = mode != MODE_LOGSUMEXP and n * x.itemsize <= NEXT_MAX_BYTES
        mnx = xload2(x, mask, r0, 0)
        have = False
        for i in range(r0, r1):
            mnx, have = _wide_row(x, mask, i, n, th, tl, scaled, mode, out, lse, scratch,
                                  mnx, have, i + 1 if (fuse and i + 1 < r1) else -1)
    elif n > 0:
        # every piece starts on a cache line (gp: g rounded up to 16 lanes)
        g = min(small_block(n), r1 - r0)
        gp = (g + 15) // 16 * 16
        ng = n * gp
        xs = fw[:ng].reshape((1, n, gp))
        os = fw[ng:2 * ng].reshape((1, n, gp))
        ls = fw[2 * ng:2 * ng + gp].reshape((1, gp))
        mv = fw[2 * ng + gp:2 * ng + 2 * gp]
        ev = fw[2 * ng + 2 * gp:2 * ng + 3 * gp]
        sv = dw[:4 * gp].reshape((4, gp))
        cv = iw[:gp]
        # the row numbers for shift_rows: n vectors of L = VEC_BYTES // itemsize
        tbl = fw[2 * ng + 3 * gp:2 * ng + 3 * gp + n * (VEC_BYTES // x.itemsize)]
        _small_rows(x, mask, r0, r1, th, tl, scaled, mode, out, lse, xs, os, ls, mv, sv, cv, ev,
                    tbl)


@kernel
def forward_rows(x, mask, th, tl, out, lse, mode, scratch, nchunks):
    """Softmax family over the rows of a C-contiguous (R, C) array.

    ``scratch``: float64, at least ``nchunks * SCRATCH_WORDS`` long.
    """
    R = x.shape[0]
    scaled = not (th == 1.0 and tl == 0.0)
    for ch in prange(nchunks):
        _rows_range(x, mask, th, tl, scaled, out, lse, mode, ch * R // nchunks,
                    (ch + 1) * R // nchunks,
                    scratch[ch * SCRATCH_WORDS:(ch + 1) * SCRATCH_WORDS])


@kernel
def forward_rows_simple(x, out, lse, mode, scratch):
    """forward_rows without mask or temperature, serial: the small-call fast path
    (fewer arguments make Numba's dispatch about twice cheaper)."""
    one = cast_like(x, 1.0)
    zero = cast_like(x, 0.0)
    _rows_range(x, None, one, zero, False, out, lse, mode, 0, x.shape[0], scratch)


forward_rows_parallel = parallel_twin(forward_rows)


# ------------------------------------------------------------------ lanes


@kernel
def forward_lanes(x, mask, th, tl, out, lse, mode, scratch, nchunks):
    """Softmax family along axis 1 of a C-contiguous (O, C, K) array (scratch as
    forward_rows)."""
    wide()
    x = unmanaged(x)
    mask = unmanaged(mask)
    out = unmanaged(out)
    lse = unmanaged(lse)
    scratch = unmanaged(scratch)
    O, n, K = x.shape
    scaled = not (th == 1.0 and tl == 0.0)
    nkb = (K + KT - 1) // KT
    work = O * nkb
    for ch in prange(nchunks):
        w0 = ch * work // nchunks
        w1 = (ch + 1) * work // nchunks
        fw, dw, iw = _typed(scratch[ch * SCRATCH_WORDS:(ch + 1) * SCRATCH_WORDS], x)
        mv = fw[:KT]
        ev = fw[KT:2 * KT]
        sv = dw[:4 * KT].reshape((4, KT))
        cv = iw[:KT]
        for w in range(w0, w1):
            o = w // nkb
            k0 = (w % nkb) * KT
            k1 = min(k0 + KT, K)
            if n > 0:
                _lanes_block(x, mask, o, k0, k1, th, tl, scaled, mode, out, lse, mv, sv, cv, ev,
                             False)


forward_lanes_parallel = parallel_twin(forward_lanes)
