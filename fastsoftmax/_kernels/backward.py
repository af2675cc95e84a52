"""Vector-Jacobian products of softmax and log-softmax, from the forward output.

* ``softmax_backward``:     ``out = y * (g - sum(g * y))``
* ``log_softmax_backward``: ``out = g - exp(y) * sum(g)``

Everything is computed in float64 (float32 data is rounded once at the end).
For float64 data the row sums are taken accurately: each product ``g*y`` is
split exactly into its rounded value and its FMA residual, and the rounded
values are summed on a grid fixed by their largest magnitude (see
``_rows.accurate_sum1``), so cancellation in ``g - sum`` is the only error
left, as in any correct implementation.
"""

import numpy as np
from numba import prange, types

from ._jit import (FAST, F64, fma, fmax_nan_dropping, helper, inline, kernel, ld1, ld2, ld3,
                   overloaded, parallel_twin, py_call, st1, st2, st3, unmanaged, wide)
from ._rows import acc_add, grid_magic, split_at
from .vmath import exp_core

_EXP_MAX = 709.78


@inline
def _exp_any(q):
    """exp of a float64 of any size (inf above the overflow threshold)."""
    return np.inf if q > _EXP_MAX else exp_core(q, 0.0)


def row_dot(g, y, i, n, prod):
    """sum_j g[i, j] * (y[i, j] if prod else 1) as a float64 pair (hi, lo)."""
    return py_call(row_dot, g, y, i, n, prod)


def _is_f64(a):
    return isinstance(a, types.Array) and a.dtype == types.float64


@overloaded(row_dot, jit_options=dict(fastmath=set(FAST), error_model="numpy", nogil=True))
def _row_dot(g, y, i, n, prod):
    if _is_f64(g) or _is_f64(y):
        def impl64(g, y, i, n, prod):
            wide()
            mx = 0.0
            for j in range(n):
                v = F64(ld2(g, i, j)) * (F64(ld2(y, i, j)) if prod else 1.0)
                mx = fmax_nan_dropping(mx, abs(v))
            magic = grid_magic(mx)
            sh = 0.0
            sl = 0.0
            for j in range(n):
                gv = F64(ld2(g, i, j))
                yv = F64(ld2(y, i, j)) if prod else 1.0
                p = gv * yv
                pe = fma(gv, yv, -p)
                if magic == 0.0:
                    sh += p
                    sl += pe
                else:
                    h, l_ = split_at(p, magic)
                    sh += h
                    sl += l_ + pe
            return sh, sl
        return impl64

    def impl(g, y, i, n, prod):     # float32: products are exact in float64
        wide()
        s = 0.0
        for j in range(n):
            s += F64(ld2(g, i, j)) * (F64(ld2(y, i, j)) if prod else 1.0)
        return s, 0.0
    return impl


SHORT_C = 64         # log_softmax_backward of shorter rows: exponentials in flat blocks
FLAT_BLOCK = 2048    # elements per flat block


@helper
def _lsm_short_rows(g, y, out, r0, r1, ex):
    """log_softmax_backward of rows [r0, r1), n < SHORT_C, in blocks of
    about FLAT_BLOCK elements: exp(y) of the whole block first, as one flat
    vector loop into ``ex``, then each row's ``g - (e * sh + e * sl)``. In a
    per-row loop the n % 8 leftover exponentials run in scalar code (about 40
    cycles each: 8 cycles per entry at n = 10). Measured single-threaded:
    n = 10, 12, 20, 47: 13, 11, 10, 9 -> 7, 6, 6, 6.5 cycles per entry; rows of
    a multiple of 8 gain nothing (n = 24, 40: within noise), and from n = 64
    the second pass over the buffer costs more than the leftovers (n = 160:
    4.3 -> 5.5), hence SHORT_C. Same operations per entry as the long-row
    loop, so the same bits.
    """
    wide()
    n = g.shape[1]
    # out=g reads and writes g alone (see backward_rows); out=y needs no twin,
    # since the row loop below does not read y
    in_place = out.ctypes.data == g.ctypes.data
    yf = y.reshape(y.shape[0] * n)
    bs = FLAT_BLOCK // n
    for b0 in range(r0, r1, bs):
        b1 = min(b0 + bs, r1)
        k0 = b0 * n
        for k in range(k0, b1 * n):
            st1(ex, k - k0, _exp_any(F64(ld1(yf, k))))
        for i in range(b0, b1):
            sh, sl = row_dot(g, y, i, n, False)
            base = (i - b0) * n
            if in_place:
                for j in range(n):
                    e = ld1(ex, base + j)
                    st2(g, i, j, F64(ld2(g, i, j)) - (e * sh + e * sl))
            else:
                for j in range(n):
                    e = ld1(ex, base + j)
                    st2(out, i, j, F64(ld2(g, i, j)) - (e * sh + e * sl))


@inline
def _row_into(g, y, dst, i, n, mode, dh, dl):
    """Row i of a backward into dst (g, y or out): softmax's
    ``y * ((g - dh) - dl)`` (mode 0) or log_softmax's ``g - exp(y) * (dh + dl)``
    (mode 1). Inlined at the Numba level, so that with dst one of the inputs
    the loop reads and writes one array and LLVM needs no overlap check."""
    if mode == 0:
        for j in range(n):
            st2(dst, i, j, F64(ld2(y, i, j)) * ((F64(ld2(g, i, j)) - dh) - dl))
    else:
        for j in range(n):
            e = _exp_any(F64(ld2(y, i, j)))
            st2(dst, i, j, F64(ld2(g, i, j)) - (e * dh + e * dl))


@kernel
def backward_rows(g, y, out, mode, nchunks):
    """mode 0: softmax_backward; mode 1: log_softmax_backward; (R, C) rows."""
    wide()
    g = unmanaged(g)
    y = unmanaged(y)
    out = unmanaged(out)
    R, n = g.shape
    for ch in prange(nchunks):
        r0 = ch * R // nchunks
        r1 = (ch + 1) * R // nchunks
        if mode == 1 and n < SHORT_C:
            _lsm_short_rows(g, y, out, r0, r1, np.empty(FLAT_BLOCK))
            continue
        # out= an input (an in-place call) gets loops that read and write
        # that input alone: with out and it both, LLVM's overlap check fails
        # and the loop runs scalar (1.2-3.9x the out-of-place time)
        on_g = out.ctypes.data == g.ctypes.data
        on_y = out.ctypes.data == y.ctypes.data
        for i in range(r0, r1):
            if mode == 0:
                dh, dl = row_dot(g, y, i, n, True)
            else:
                dh, dl = row_dot(g, y, i, n, False)
            # the same inlined row loop, given the very array it writes
            if on_g:
                _row_into(g, y, g, i, n, mode, dh, dl)
            elif on_y:
                _row_into(g, y, y, i, n, mode, dh, dl)
            else:
                _row_into(g, y, out, i, n, mode, dh, dl)


backward_rows_parallel = parallel_twin(backward_rows)


@kernel
def backward_lanes(g, y, out, mode, nchunks):
    """As backward_rows along axis 1 of (O, C, K) arrays (lanes vectorised)."""
    wide()
    g = unmanaged(g)
    y = unmanaged(y)
    out = unmanaged(out)
    O, n, K = g.shape
    for ch in prange(nchunks):
        o0 = ch * O // nchunks
        o1 = (ch + 1) * O // nchunks
        s = np.empty(K)
        comp = np.empty(K)
        for o in range(o0, o1):
            for k in range(K):
                s[k] = 0.0
                comp[k] = 0.0
            for c in range(n):
                for k in range(K):
                    gv = F64(ld3(g, o, c, k))
                    yv = F64(ld3(y, o, c, k)) if mode == 0 else 1.0
                    p = gv * yv
                    a, b = acc_add(out, s[k], comp[k], p)
                    s[k] = a
                    comp[k] = b + fma(gv, yv, -p)
            for c in range(n):
                for k in range(K):
                    gv = F64(ld3(g, o, c, k))
                    yv = F64(ld3(y, o, c, k))
                    if mode == 0:
                        st3(out, o, c, k, yv * ((gv - s[k]) - comp[k]))
                    else:
                        e = _exp_any(yv)
                        st3(out, o, c, k, gv - (e * s[k] + e * comp[k]))


backward_lanes_parallel = parallel_twin(backward_lanes)
