"""Row building blocks shared by the softmax-family and loss kernels.

Layouts. Every kernel sees C-contiguous arrays in one of two shapes:

* rows ``(R, C)``: the class axis is last and contiguous; vector loops run
  along a row (``wide`` rows, ``C >= SMALL_C``) or, for short rows, along a
  flat block of several rows (``small`` rows);
* lanes ``(O, C, K)``: the class axis is not last; vector loops run across the
  ``K`` contiguous lanes (one independent softmax per lane), never transposing.

A row is reduced in three sweeps: the maximum ``m``; ``e = exp(x - m)`` with
its sum (see ``row_exp_sums``: superblocks of ``SB`` elements, so the
exponentials stay in L1 between the loops, a float64 sum over 131072 classes
stays within a few units of roundoff, float32 terms are summed in float64);
the output.

Accuracy (Blanchard, Higham & Higham 2021): with ``c`` the number of entries
equal to the maximum and ``s`` the sum of the others' exponentials,
``logsumexp = m + log(c + s)``, which is ``m + log1p(s)`` for ``c = 1`` and
keeps its digits when ``s`` is below the unit roundoff. ``c`` and ``s`` are
read off the stored exponentials: an entry equal to the maximum gives
exactly ``1.0`` (entries within half a unit of it round to ``1.0`` too,
which changes ``c + s`` by less than a unit in its last place). Counting
them costs a compare and a masked add per entry, about as much as the sum
itself; for float32 rows whose exponentials all stay stored, a plain sum
comes first and ``c + s`` is taken as ``1 + s'`` whenever ``s'`` keeps its
digits that way (``split_from_plain``); only rows with a dominant maximum
are summed again, split.

Non-finite rows (a NaN, a ``+inf``, or nothing but ``-inf``) leave the vector
path and are finished by ``special_row`` according to SPEC §4.
"""

import math

import numpy as np
from numba import types

from ._jit import (EXACT, FAST, F64, VEC_BYTES, exact, f32_bits, f32_from_bits, f64_bits,
                   f64_from_bits, fma, fmax_nan_dropping, helper, ld1, ld2, ld3, managed_helper,
                   overloaded, py_call, reduction, scalar_loop, st2, st3, transpose_block, wide)
from .vmath import (BIG, exp_shifted, exp_shifted_big, exp_shifted_scaled,
                    exp_shifted_scaled_big, log1p_f64, two_sum)

SB = 1024        # superblock: exponentials kept in L1 between sweeps
VB = 64          # vector-loop granularity (16 float32 lanes x 4 unrolled)
SMALL_C = 64     # rows shorter than this are transposed into lanes
# Rows of at most this many bytes read the next row's maximum in their last
# sweep (the scaling of the output or gradient), where its first read from
# memory overlaps the stores: 0.87-0.95 of the time at 250-2000 float32
# classes on AMD Zen 4; at 4096 classes and beyond 1.03-1.13 for softmax and
# log_softmax (two rows no longer fit in L1 together), so longer rows read
# their maximum in a sweep of its own
NEXT_MAX_BYTES = 8192

MODE_SOFTMAX = 0
MODE_LOG_SOFTMAX = 1
MODE_LOGSUMEXP = 2


# ---------------------------------------------------------------- accessors
def xload2(x, mask, i, j):
    """x[i, j], or -inf where mask[i, j] is False (mask may be None)."""
    return py_call(xload2, x, mask, i, j)


def xload3(x, mask, o, c, k):
    """x[o, c, k], or -inf where mask[o, c, k] is False (mask may be None)."""
    return py_call(xload3, x, mask, o, c, k)


def cast_like(arr, v):
    """v converted to arr's dtype."""
    return py_call(cast_like, arr, v)


def unmasked(mask, j):
    """True when entry j of a 1-D mask view is kept (always, for no mask)."""
    return py_call(unmasked, mask, j)


# Tiny helpers are compiled as functions of their own and left to LLVM to
# inline: Numba-level inlining of branchy helpers into loops trips its
# internal SSA checks (NumbaIRAssumptionWarning).
_SMALL_OPTS = dict(fastmath=set(EXACT), error_model="numpy", nogil=True)


def _neg_inf_of(arr):
    return np.dtype(str(arr.dtype)).type(-np.inf)


@overloaded(xload2, jit_options=_SMALL_OPTS)
def _xload2(x, mask, i, j):
    if isinstance(mask, (types.NoneType, types.Omitted)):
        return lambda x, mask, i, j: ld2(x, i, j)
    ninf = _neg_inf_of(x)

    def impl(x, mask, i, j):
        v = ld2(x, i, j)
        return v if ld2(mask, i, j) else ninf
    return impl


@overloaded(xload3, jit_options=_SMALL_OPTS)
def _xload3(x, mask, o, c, k):
    if isinstance(mask, (types.NoneType, types.Omitted)):
        return lambda x, mask, o, c, k: ld3(x, o, c, k)
    ninf = _neg_inf_of(x)

    def impl(x, mask, o, c, k):
        v = ld3(x, o, c, k)
        return v if ld3(mask, o, c, k) else ninf
    return impl


@overloaded(unmasked, inline="always")
def _unmasked(mask, j):
    if isinstance(mask, (types.NoneType, types.Omitted)):
        return lambda mask, j: True
    return lambda mask, j: bool(mask[j])


@overloaded(cast_like, inline="always")
def _cast_like(arr, v):
    t = np.dtype(str(arr.dtype)).type
    return lambda arr, v: t(v)


# ---------------------------------------------------------------- scratch
@managed_helper
def aligned_words(nwords):
    """An uninitialised float64 array of ``nwords`` whose data starts on a
    64-byte boundary (512-bit stores that straddle two cache lines cost
    about 3x on the CPUs measured)."""
    raw = np.empty(nwords + 8)
    s = (64 - raw.ctypes.data % 64) % 64 // 8
    return raw[s:s + nwords]


# ---------------------------------------------------------------- transposes
# Short rows are transposed into lanes and back. Rows of at least VT_TO_LANES
# (into lanes) or VT_TO_ROWS (back) float32 entries go through 16 x 16 blocks
# in vector registers (``transpose_block``). Shorter rows, float64 and masked
# copies stay scalar (``scalar_loop``: LLVM would otherwise use gather/scatter
# instructions, several times slower here), four rows at a time so that four
# independent load/store chains are in flight. Measured on one thread, 655360
# entries, AMD Zen 4: the blocks took 0.84 of the scalar time into lanes at 10
# classes and 0.55-0.64 at 12-63, 1.0 back into rows at 10 and 0.60-0.77 at
# 12-63; at 4-8 classes they are mostly padding (1.1-3x), and float64's 8 x 8
# blocks gained nothing reliable.
VT_TO_LANES = 10
VT_TO_ROWS = 12


@helper
def rows_to_lanes(x, mask, r0, g, dst):
    """dst[0, c, k] = x[r0 + k, c] (-inf where masked out) for k < g."""
    n = x.shape[1]
    if mask is None and x.itemsize == 4 and n >= VT_TO_LANES:
        L = VEC_BYTES // 4
        gp = dst.shape[2]
        for k in range(0, g, L):
            for c0 in range(0, n, L):
                transpose_block(x, (r0 + k) * n + c0, n, min(L, n - c0), min(L, g - k),
                                dst, c0 * gp + k, gp)
        return
    g4 = g - g % 4
    for k in range(0, g4, 4):
        for c in range(n):
            scalar_loop()
            st3(dst, 0, c, k, xload2(x, mask, r0 + k, c))
            st3(dst, 0, c, k + 1, xload2(x, mask, r0 + k + 1, c))
            st3(dst, 0, c, k + 2, xload2(x, mask, r0 + k + 2, c))
            st3(dst, 0, c, k + 3, xload2(x, mask, r0 + k + 3, c))
    for k in range(g4, g):
        for c in range(n):
            scalar_loop()
            st3(dst, 0, c, k, xload2(x, mask, r0 + k, c))


@helper
def lanes_to_rows(src, r0, g, dst):
    """dst[r0 + k, c] = src[0, c, k] for k < g."""
    n = dst.shape[1]
    if dst.itemsize == 4 and n >= VT_TO_ROWS:
        L = VEC_BYTES // 4
        gp = src.shape[2]
        for k in range(0, g, L):
            for c0 in range(0, n, L):
                transpose_block(src, c0 * gp + k, gp, min(L, g - k), min(L, n - c0),
                                dst, (r0 + k) * n + c0, n)
        return
    g4 = g - g % 4
    for k in range(0, g4, 4):
        for c in range(n):
            scalar_loop()
            st2(dst, r0 + k, c, ld3(src, 0, c, k))
            st2(dst, r0 + k + 1, c, ld3(src, 0, c, k + 1))
            st2(dst, r0 + k + 2, c, ld3(src, 0, c, k + 2))
            st2(dst, r0 + k + 3, c, ld3(src, 0, c, k + 3))
    for k in range(g4, g):
        for c in range(n):
            scalar_loop()
            st2(dst, r0 + k, c, ld3(src, 0, c, k))


# ---------------------------------------------------------------- scalars
@exact
def neumaier(s, comp, v):
    """One step of Neumaier's compensated sum: returns the new (s, comp).

    Once the sum is infinite or NaN the compensation stops changing (it
    would otherwise become inf - inf = NaN and turn an infinite sum into NaN).
    """
    t = s + v
    if abs(s) >= abs(v):
        c = (s - t) + v
    else:
        c = (v - t) + s
    if t - t == 0.0:
        comp += c
    return t, comp


@exact
def log_c_plus_s(c, s, slo):
    """log(c + s + slo) for an integer count c >= 1 and a double-word s >= 0.

    ``log1p`` for ``c = 1`` keeps the digits of a tiny ``s``: the package's
    own (``vmath.log1p_f64``, the one the lanes kernels use), which LLVM
    inlines; libm's was a call of about 30 ns per row (a tenth of a 64-class
    logsumexp).
    """
    if c == 1:
        return log1p_f64(s) + slo / (1.0 + s)
    t = F64(c) + s
    return math.log(t) + ((F64(c) - t) + s + slo) / t


# ---------------------------------------------------------------- wide rows
def order_key(v):
    """An integer that orders like the float v: its bits (int32 for float32,
    int64 for float64), with the magnitude bits flipped when the sign bit is
    set. -0.0 sorts just below +0.0, a NaN with the sign bit clear above
    +inf, one with the sign bit set below -inf."""
    return py_call(order_key, v)


def from_order_key(k, like):
    """The float of like's type whose order_key is k (the flip is its own inverse)."""
    return py_call(from_order_key, k, like)


def _key_parts(t):
    """(to bits, from bits, integer type, shift, magnitude mask) for float type t."""
    if isinstance(t, types.Float) and t.bitwidth == 32:
        return f32_bits, f32_from_bits, np.int32, np.int32(31), np.int32(0x7FFFFFFF)
    if isinstance(t, types.Float) and t.bitwidth == 64:
        return f64_bits, f64_from_bits, np.int64, np.int64(63), np.int64(0x7FFFFFFFFFFFFFFF)
    return None


@overloaded(order_key, jit_options=_SMALL_OPTS)
def _order_key(v):
    parts = _key_parts(v)
    if parts is None:
        return None
    to_bits, _, ity, sh, low = parts

    def impl(v):
        b = to_bits(v)
        return ity(b ^ ((b >> sh) & low))
    return impl


@overloaded(from_order_key, jit_options=_SMALL_OPTS)
def _from_order_key(k, like):
    parts = _key_parts(like)
    if parts is None:
        return None
    _, from_bits, ity, sh, low = parts

    def impl(k, like):
        kk = ity(k)
        return from_bits(ity(kk ^ ((kk >> sh) & low)))
    return impl


@reduction
def row_max(x, mask, i, n):
    """max of row i, as the integer maximum of the entries' ``order_key``.

    LLVM folds an integer maximum's vector accumulators with a few shuffles;
    a floating-point ``maxnum`` reduction ended in 16 dependent scalar
    steps, each with its own NaN test (15-40 ns a row: a third of the time
    of a 64-class row). NaN: one with the sign bit clear (NumPy's ``nan``)
    is the maximum, so the row goes to the special-row path; one with the
    sign bit set is below every key and the NaN shows up in the sum of
    exponentials instead. Either way the row ends as SPEC §4 says.
    """
    wide()
    v0 = xload2(x, mask, i, 0)
    k = order_key(v0)
    n64 = n - n % VB
    for j in range(n64):
        k = max(k, order_key(xload2(x, mask, i, j)))
    if n64 < n:
        # the last VB entries again (max is idempotent): a full vector
        # iteration instead of a scalar tail; short rows fall back to scalar.
        start = n - VB if n >= VB else 0
        for j in range(start, n):
            k = max(k, order_key(xload2(x, mask, i, j)))
    return from_order_key(k, v0)


def acc_add(like, s, comp, v):
    """Add v to the running sum (s, comp): compensated for float64 data (``like``)."""
    return py_call(acc_add, like, s, comp, v)


UNIT_MAGIC = F64(1.5 * 2.0 ** 26)       # splits values in [0, 1] at 2**-26
INV_BIG = F64(2.0 ** -64)


def _is_f64_array(e):
    return isinstance(e, types.Array) and e.dtype == types.float64


def is_f32_array(e):
    """True for a float32 array (a compile-time constant in kernels)."""
    return py_call(is_f32_array, e)


@overloaded(is_f32_array, inline="always")
def _is_f32_array_impl(e):
    if isinstance(e, types.Array) and e.dtype == types.float32:
        return lambda e: True
    return lambda e: False


def lane_acc(like, sh, sl, v, magic):
    """(sh, sl) + v for a lane sum of exponentials in [0, 1] (plain ones).

    For float64 data ``v`` is split at the grid of ``magic`` (UNIT_MAGIC:
    2**-26): the grid parts add up exactly in any order (up to 2**27 of
    them) and the remainders are 2**-26 smaller. This is accurate relative
    to the largest term, and the largest term of a plain sum is 1 (the
    maximum's), so also relative to the sum. Float32 data: a float64 sum.
    """
    return py_call(lane_acc, like, sh, sl, v, magic)


@overloaded(lane_acc, inline="always")
def _lane_acc(like, sh, sl, v, magic):
    if _is_f64_array(like):
        def impl64(like, sh, sl, v, magic):
            h, l_ = split_at(v, magic)
            return sh + h, sl + l_
        return impl64
    return lambda like, sh, sl, v, magic: (sh + F64(v), sl)


def lane_acc2(like, sh, sl, v):
    """(sh, sl) + v for a lane sum of the non-maximal (split) exponentials.

    These can all be far below the grid of any fixed magic number (a
    dominant maximum leaves only tiny terms), so float64 data gets Knuth's
    TwoSum: ``sh + sl`` is then the sum to about 2**-106 per term, whatever
    the magnitudes. Float32 data: a float64 sum.
    """
    return py_call(lane_acc2, like, sh, sl, v)


@overloaded(lane_acc2, inline="always")
def _lane_acc2(like, sh, sl, v):
    if _is_f64_array(like):
        def impl64(like, sh, sl, v):
            s, e = two_sum(sh, F64(v))
            return s, sl + e
        return impl64
    return lambda like, sh, sl, v: (sh + F64(v), sl)


@exact
def split_at(v, magic):
    """v as hi + lo, hi rounded to the grid of ``magic`` (magic-number rounding)."""
    hi = (v + magic) - magic
    return hi, v - hi


@exact
def grid_magic(mx):
    """1.5 * 2**(e + 26) for 2**(e-1) <= mx < 2**e: splitting at its grid leaves
    multiples of 2**(e - 26) that add up exactly (up to 2**27 of them); 0.0
    when mx is 0, not finite or too large for the trick."""
    if not (mx > 0.0 and mx < 1e290):
        return 0.0
    f, e = math.frexp(mx)
    return math.ldexp(1.5, e + 26)


@reduction
def accurate_sum1(a, lo, hi):
    """sum(a[lo:hi]) of a float64 array, to a few units of roundoff of the result.

    The entries are split at a grid fixed by their largest magnitude: the
    grid parts add up exactly in any order, and the remainders are 2**-26
    smaller, so the vectorised (reordered) sum loses nothing that matters.
    NaN and inf propagate as in a plain sum.
    """
    wide()
    mx = 0.0
    for j in range(lo, hi):
        mx = fmax_nan_dropping(mx, abs(ld1(a, j)))
    magic = grid_magic(mx)
    sh = 0.0
    sl = 0.0
    if magic == 0.0:
        for j in range(lo, hi):
            sh += ld1(a, j)
    else:
        for j in range(lo, hi):
            h, l_ = split_at(ld1(a, j), magic)
            sh += h
            sl += l_
    return sh, sl


@overloaded(acc_add, inline="always")
def _acc_add(like, s, comp, v):
    if _is_f64_array(like):
        return lambda like, s, comp, v: neumaier(s, comp, v)
    return lambda like, s, comp, v: (s + v, comp)


@exact
def dw_inverse(hi, lo):
    """1 / (hi + lo) as a double-word (ih, il), hi + lo a double-word > 0."""
    ih = 1.0 / hi
    r = fma(-hi, ih, 1.0) - lo * ih        # 1 - (hi + lo) * ih, to first order
    return ih, r * ih


def split_like(arr, hi, lo):
    """A double-word f64 (hi, lo) as a double-word in arr's dtype."""
    return py_call(split_like, arr, hi, lo)


@overloaded(split_like, inline="always")
def _split_like(arr, hi, lo):
    t = np.dtype(str(arr.dtype)).type

    def impl(arr, hi, lo):
        h = t(hi)
        return h, t((hi - F64(h)) + lo)
    return impl


# Sweep two of a wide row: the exponentials and their sum. Superblocks of SB
# entries: the exponentials go to ``dst`` (the output or gradient row, or a
# scratch row that stays in L1), then a reduction function (FAST flags, so
# it vectorises) adds them up; the superblocks' sums are combined with
# Neumaier's compensation.
#
# Float64 sums keep their digits through a split: every term is cut at a
# grid of 2**-26 times the largest term (``grid_magic``); the grid parts add
# up exactly in any order (up to 2**27 of them) and the remainders are 2**-26
# smaller, so reassociating them costs nothing that matters. Plain sums
# (softmax) contain the maximum's exponential, 1, so the grid is fixed;
# split sums (the non-maximal terms) can all be tiny, so their grid comes
# from a first pass for their largest term. Float32 terms are summed in
# float64.

@helper
def exp_span(x, mask, i, a, b, m, th, tl, scaled, big, dst, drow, doff, sout=None):
    """dst[drow, doff + (j - a)] = exp((x[i, j] - m) / T) for j in [a, b).

    With ``big``, 2**64 times that (the scaled exponentials of split sums).
    In place (``dst`` is ``x``, same row and columns) the loop reads and
    writes ``dst`` alone: with two arrays LLVM guards the vector loop by a
    no-overlap check, which an in-place call fails (4x slower, scalar).

    With ``sout`` (an array shaped like ``x``; ``big`` only), the loop also
    writes ``sout[i, j] = (x[i, j] - m) * th``: the log-softmax's shifted
    logits, stored while the exponentials are computed, where the stores'
    cache misses hide behind the arithmetic (a separate streaming pass over
    a fresh output array is about 1.5x slower).
    """
    wide()
    if sout is not None:
        _exp_span_shift(x, mask, i, a, b, m, th, tl, scaled, dst, drow, doff, sout)
        return
    if drow == i and doff == a and x.ctypes.data == dst.ctypes.data:
        _exp_span_inplace(dst, mask, i, a, b, m, th, tl, scaled, big)
        return
    if big:
        if scaled:
            for j in range(a, b):
                st2(dst, drow, doff + (j - a),
                    exp_shifted_scaled_big(xload2(x, mask, i, j), m, th, tl))
        else:
            for j in range(a, b):
                st2(dst, drow, doff + (j - a), exp_shifted_big(xload2(x, mask, i, j), m))
    elif scaled:
        for j in range(a, b):
            st2(dst, drow, doff + (j - a), exp_shifted_scaled(xload2(x, mask, i, j), m, th, tl))
    else:
        for j in range(a, b):
            st2(dst, drow, doff + (j - a), exp_shifted(xload2(x, mask, i, j), m))


@helper
def _exp_span_inplace(y, mask, i, a, b, m, th, tl, scaled, big):
    """exp_span with dst = x: y[i, j] = exp((y[i, j] - m) / T) (times 2**64 with ``big``)."""
    wide()
    if big:
        if scaled:
            for j in range(a, b):
                st2(y, i, j, exp_shifted_scaled_big(xload2(y, mask, i, j), m, th, tl))
        else:
            for j in range(a, b):
                st2(y, i, j, exp_shifted_big(xload2(y, mask, i, j), m))
    elif scaled:
        for j in range(a, b):
            st2(y, i, j, exp_shifted_scaled(xload2(y, mask, i, j), m, th, tl))
    else:
        for j in range(a, b):
            st2(y, i, j, exp_shifted(xload2(y, mask, i, j), m))


@helper
def _exp_span_shift(x, mask, i, a, b, m, th, tl, scaled, dst, drow, doff, sout):
    """exp_span (big) that also writes sout[i, j] = (x[i, j] - m) * th; ``sout``
    may be ``x`` itself (then only ``sout`` is read, see exp_span)."""
    wide()
    if x.ctypes.data == sout.ctypes.data:
        if scaled:
            for j in range(a, b):
                v = xload2(sout, mask, i, j)
                st2(dst, drow, doff + (j - a), exp_shifted_scaled_big(v, m, th, tl))
                st2(sout, i, j, (v - m) * th)
        else:
            for j in range(a, b):
                v = xload2(sout, mask, i, j)
                st2(dst, drow, doff + (j - a), exp_shifted_big(v, m))
                st2(sout, i, j, (v - m) * th)
    elif scaled:
        for j in range(a, b):
            v = xload2(x, mask, i, j)
            st2(dst, drow, doff + (j - a), exp_shifted_scaled_big(v, m, th, tl))
            st2(sout, i, j, (v - m) * th)
    else:
        for j in range(a, b):
            v = xload2(x, mask, i, j)
            st2(dst, drow, doff + (j - a), exp_shifted_big(v, m))
            st2(sout, i, j, (v - m) * th)


def span_sum(e, row, a, b):
    """Sum of e[row, a:b] (entries in [0, 1], the maximum's among them) as a
    pair (hi, lo) of float64s."""
    return py_call(span_sum, e, row, a, b)


def span_sum_split(e, row, a, b):
    """(hi, lo, count): the sum of the scaled exponentials below BIG (the
    non-maximal ones) as a float64 pair, and the number equal to BIG."""
    return py_call(span_sum_split, e, row, a, b)


_VEC_OPTS = dict(fastmath=set(FAST), error_model="numpy", nogil=True)


@overloaded(span_sum, jit_options=_VEC_OPTS)
def _span_sum(e, row, a, b):
    if _is_f64_array(e):
        def impl64(e, row, a, b):
            wide()
            sh = 0.0
            sl = 0.0
            for j in range(a, b):
                h, l_ = split_at(ld2(e, row, j), UNIT_MAGIC)
                sh += h
                sl += l_
            return sh, sl
        return impl64

    def impl(e, row, a, b):
        wide()
        s = 0.0
        for j in range(a, b):
            s += F64(ld2(e, row, j))
        return s, 0.0
    return impl


@overloaded(span_sum_split, jit_options=_VEC_OPTS)
def _span_sum_split(e, row, a, b):
    if _is_f64_array(e):
        def impl64(e, row, a, b):
            wide()
            mx = 0.0
            c = 0
            for j in range(a, b):
                v = ld2(e, row, j)
                one = v == BIG
                c += 1 if one else 0
                mx = fmax_nan_dropping(mx, 0.0 if one else v)
            magic = grid_magic(mx)
            sh = 0.0
            sl = 0.0
            for j in range(a, b):
                v = ld2(e, row, j)
                h, l_ = split_at(0.0 if v == BIG else v, magic)
                sh += h
                sl += l_
            return sh, sl, c
        return impl64

    def impl(e, row, a, b):
        wide()
        s = 0.0
        c = 0
        for j in range(a, b):
            v = F64(ld2(e, row, j))
            one = v == BIG
            c += 1 if one else 0
            s += 0.0 if one else v
        return s, 0.0, c
    return impl


@helper
def tail_to_scratch(x, mask, i, n, scratch, srow):
    """Copy x[i, :n] (n < VB) into scratch[srow, :VB], padded with -inf."""
    wide()
    ninf = cast_like(scratch, -np.inf)
    for k in range(VB):
        st2(scratch, srow, k, xload2(x, mask, i, k) if k < n else ninf)


@helper
def exp_window(x, mask, i, n, m, th, tl, scaled, big, scratch, srow, dst, drow, store):
    """The last n % VB exponentials of a row (VB <= n), as one full vector block.

    The block is the window [n - VB, n): entries before n - n % VB (done
    already; an in-place call has overwritten them) enter as -inf, so their
    exponentials are 0. ``scratch[srow, :VB]`` receives the window's
    exponentials (for the sums); with ``store``, ``dst[drow, j]`` receives
    those of the tail and keeps its value elsewhere.
    """
    wide()
    n64 = n - n % VB
    j0 = n - VB
    ninf = cast_like(x, -np.inf)
    if store and drow == i and x.ctypes.data == dst.ctypes.data:
        # in place: one array read and written (with x and dst both, LLVM's
        # overlap check fails and the loop runs scalar: 45% of an in-place
        # fused loss at 250 classes); entries before n64 hold exponentials
        for lane in range(VB):
            j = j0 + lane
            keep = j < n64
            e = _exp_sel(ninf if keep else xload2(dst, mask, i, j), m, th, tl, scaled, big)
            st2(scratch, srow, lane, e)
            st2(dst, i, j, ld2(dst, i, j) if keep else e)
    elif store:
        for lane in range(VB):
            j = j0 + lane
            v = xload2(x, mask, i, j)
            e = _exp_sel(v if j >= n64 else ninf, m, th, tl, scaled, big)
            st2(scratch, srow, lane, e)
            st2(dst, drow, j, e if j >= n64 else ld2(dst, drow, j))
    else:
        for lane in range(VB):
            j = j0 + lane
            v = xload2(x, mask, i, j)
            st2(scratch, srow, lane, _exp_sel(v if j >= n64 else ninf, m, th, tl, scaled, big))


def _exp_sel(v, m, th, tl, scaled, big):
    """exp((v - m) / T), times 2**64 with ``big``."""
    return py_call(_exp_sel, v, m, th, tl, scaled, big)


@overloaded(_exp_sel, jit_options=_SMALL_OPTS)
def _exp_sel_impl(v, m, th, tl, scaled, big):
    def impl(v, m, th, tl, scaled, big):
        if big:
            return exp_shifted_scaled_big(v, m, th, tl) if scaled else exp_shifted_big(v, m)
        return exp_shifted_scaled(v, m, th, tl) if scaled else exp_shifted(v, m)
    return impl


@helper
def row_exp_sums(x, mask, i, n, m, th, tl, scaled, want_split, dst, drow, use_dst_offsets,
                 scratch, sout=None):
    """Sweep two over a wide row.

    Writes the exponentials to ``dst`` (row ``drow``, at the row's own column
    offsets when ``use_dst_offsets``; otherwise superblock by superblock at
    offset 0, overwriting, as a scratch area) and returns ``(hi, lo, c)``:
    the sum of all exponentials as a double-word when not ``want_split``;
    else the sum of those of the non-maximal entries, with ``c`` the count of
    maxima (or ``c = 1`` and the sum of all but one, see ``split_from_plain``:
    ``c + s`` is the same, and so is everything computed from it). In the
    split case ``dst`` receives the exponentials times 2**64 (see
    ``vmath.exp_core_big``); the sums returned are unscaled. Scratch
    rows 0 and 1 (the data's dtype, VB long at least) hold the tail's block
    (see ``exp_window``; rows shorter than VB are padded with -inf).
    With ``sout`` (split sums only), ``sout[i, j] = (x[i, j] - m) * th`` for
    the columns before ``n - n % VB`` (see ``exp_span``).
    """
    wide()
    n64 = n - n % VB
    # float32 split sums whose exponentials all stay stored: a plain sum first,
    # the split sum only for the rows that need it (split_from_plain)
    plain = want_split and is_f32_array(dst) and (use_dst_offsets or n <= SB)
    s = 0.0
    comp = 0.0
    c = 0
    split_now = want_split and not plain
    for a in range(0, n64, SB):
        b = min(a + SB, n64)
        off = a if use_dst_offsets else 0
        exp_span(x, mask, i, a, b, m, th, tl, scaled, want_split, dst, drow, off, sout)
        s, comp, c = add_span(dst, drow, off, off + (b - a), split_now, s, comp, c)
    if n64 < n:
        if n >= VB:
            exp_window(x, mask, i, n, m, th, tl, scaled, want_split, scratch, 1, dst, drow,
                       use_dst_offsets)
        else:
            tail_to_scratch(x, mask, i, n, scratch, 0)
            exp_span(scratch, None, 0, 0, VB, m, th, tl, scaled, want_split, scratch, 1, 0)
            if use_dst_offsets:
                for j in range(n):
                    st2(dst, drow, j, ld2(scratch, 1, j))
        s, comp, c = add_span(scratch, 1, 0, VB, split_now, s, comp, c)
    hi = s + comp
    lo = comp - (hi - s)
    if plain:
        t, tlo, ok = split_from_plain(hi * INV_BIG, lo * INV_BIG, n)
        if ok:
            return t, tlo, 1
        hi, lo, c = stored_split_sums(dst, drow, n, use_dst_offsets, scratch)
    if want_split:
        return hi * INV_BIG, lo * INV_BIG, c
    return hi, lo, c


@helper
def stored_split_sums(dst, drow, n, use_dst_offsets, scratch):
    """The split sums of ``row_exp_sums`` (superblock by superblock, in its
    order) over exponentials it has stored: in ``dst`` (the whole row at its
    own offsets, or at offset 0 when it fits in one superblock) and the tail's
    block in scratch row 1."""
    wide()
    n64 = n - n % VB
    s = 0.0
    comp = 0.0
    c = 0
    for a in range(0, n64, SB):
        off = a if use_dst_offsets else 0
        s, comp, c = add_span(dst, drow, off, off + (min(a + SB, n64) - a), True, s, comp, c)
    if n64 < n:
        s, comp, c = add_span(scratch, 1, 0, VB, True, s, comp, c)
    hi = s + comp
    return hi, comp - (hi - s), c


@helper
def add_span(e, row, a, b, split, s, comp, c):
    """``(s, comp, c)`` with the sum of ``e[row, a:b]`` added (Neumaier's
    compensation across spans): the split sum and its count of maxima when
    ``split``, else the plain sum."""
    if split:
        hi, lo, cb = span_sum_split(e, row, a, b)
    else:
        hi, lo = span_sum(e, row, a, b)
        cb = 0
    s, comp = neumaier(s, comp, hi)
    return s, comp + lo, c + cb


PLAIN_SPLIT_MIN = 2.0 ** -23     # times the class count: see split_from_plain


@exact
def split_from_plain(th, tl, n):
    """``(s, slo, ok)``: a row's ``c + s`` (the sum of its exponentials, as the
    double-word ``th + tl >= 1``) as ``1 + s``, when ``s`` keeps its digits.

    A float64 sum of ``n`` terms (up to ``n + VB`` with the tail's block) is
    off by at most ``(n + VB) 2**-53 (th + tl)``; ``s = th + tl - 1`` (exact,
    Fast2Sum: ``th >= 1``) is then within ``2**-30`` of itself when it is at
    least ``(n + VB) 2**-23``, a 128th of a float32 unit of whatever is
    computed from it. ``log(c + s)`` is ``log1p(s)`` for any count ``c`` of
    maxima; rows below the bound (a dominant maximum, where ``log1p`` needs
    the small ``s`` to its last digits) are summed again split
    (``ok`` False).
    """
    t = th - 1.0
    tlo = tl + ((th - t) - 1.0)
    return t, tlo, t >= F64(n + VB) * PLAIN_SPLIT_MIN


# ---------------------------------------------------------------- special rows
@helper
def special_row(xv, mv, outv, mode):
    """Finish a row holding a NaN, a +inf, or only -inf (SPEC §4 table).

    ``xv``/``outv`` are 1-D views of the row (any stride), ``mv`` the mask
    view or None. Returns the row's logsumexp; writes the softmax or
    log-softmax into ``outv`` for those modes.
    """
    wide()
    n = xv.shape[0]
    nan = False
    npos = 0
    for j in range(n):
        if not unmasked(mv, j):
            continue
        v = xv[j]
        if v != v:
            nan = True
        elif v == np.inf:
            npos += 1
    if nan:
        lse = np.nan
    elif npos > 0:
        lse = np.inf
    else:
        lse = -np.inf          # only -inf (or masked) entries
    if mode == MODE_LOGSUMEXP:
        return lse
    for j in range(n):
        inf_here = unmasked(mv, j) and xv[j] == np.inf
        if nan:
            outv[j] = np.nan
        elif mode == MODE_SOFTMAX:
            outv[j] = 1.0 / npos if inf_here else 0.0
        else:
            outv[j] = -math.log(npos) if inf_here else -np.inf
    return lse
