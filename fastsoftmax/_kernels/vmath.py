"""Vectorisable exp / log1p written as plain arithmetic.

Numba lowers ``math.exp`` to a scalar libm call (there is no SVML any more),
so a loop that calls it never vectorises. The functions here are polynomials
plus exponent-bit tricks that LLVM turns into SIMD code. Each public name is
a stub dispatched on the float type by ``@overload``; the implementations are
compiled with the ``EXACT`` flag set (plain IEEE arithmetic: FMAs are
written out where they are wanted, so every code path rounds identically), and
LLVM inlines them into the calling vector loop.

exp
    ``n = round(q / ln 2)``, ``r = q - n ln2`` with a two-part ``ln 2``
    (Cody-Waite; the high part has trailing zero bits so ``n * LN2_HI`` is
    exact), ``exp(r) = 1 + r + r^2 Q(r)`` with ``Q`` a near-minimax
    polynomial (Lawson's algorithm; relative error 3.1e-9 for float32 with
    degree 4, 3.6e-18 for float64 with degree 9), times ``2**n`` from the
    exponent bits. The low part of ``ln 2`` and any residual of the argument
    (``delta``) are added to ``r`` with a single rounding. The result is
    ``fma(p, 2**n, 2**n)`` with ``p = r + r^2 Q(r)``: one rounding, and one
    dependent operation fewer than ``(1 + p) * 2**n``. The float32 ``Q`` is
    evaluated by Estrin's scheme (``(q0 + q1 r) + r^2 ((q2 + q3 r) + r^2
    q4)``, as many operations as Horner's, two fewer in the dependency
    chain). These loops are bound by that chain's latency (the reservation
    station fills with waiting operations), not by the FMA ports: the two
    changes made the float32 exponential loop 0.88-0.90 of its time (float64:
    the FMA alone, 0.91; Estrin's extra products made it slower there).

    ``exp_shifted(x, m)`` is ``exp(x - m)`` where ``x - m`` is first split
    exactly into ``d + lo`` (TwoSum): the rounding of ``x - m`` is otherwise
    multiplied by ``|x - m|`` in the result (the 64-ULP softmax error of the
    usual libraries at logit spreads of +-30). Results are within about 1.5
    ULP. Results below the smallest normal number are flushed to +0 (a
    softmax entry that small has no accuracy bound); NaN propagates.

    The ``_big`` variants return ``2**64`` times the exponential (exactly:
    the factor goes into the exponent bits). Sums of exponentials whose
    logarithm matters (log-softmax, logsumexp, cross-entropy) use them, so
    that terms near the bottom of the range stay normal numbers with full
    relative precision: ``log_softmax([0, -90])`` in float32 is ``-exp(-90)
    = -8.2e-40``, accurate to the last bit of a subnormal, and a row whose
    tiny ``s`` is made of many subnormal-sized terms keeps its digits.

log1p (float64, for u >= 0)
    ``y = 1 + u`` with the exact correction ``c = (u - (y - 1)) / y``,
    ``y = 2**k (1 + f)`` with ``1 + f`` in ``[sqrt(1/2), sqrt(2))``, and
    fdlibm's ``log(1 + f) = f - f**2/2 + s (f**2/2 + R(s**2))``,
    ``s = f / (2 + f)``.
"""

import numpy as np
from numba import types

from ._jit import (EXACT, F32, F64, f32_bits, f32_from_bits, f64_bits, f64_from_bits, fma,
                   overloaded, py_call)

_OPTS = dict(fastmath=set(EXACT), error_model="numpy", nogil=True)

BIG = 2.0 ** 64            # the scale of the _big exponentials

# ---------------------------------------------------------------- float32
_LOG2E_32 = F32(1.4426950408889634)
_MAGIC_32 = F32(12582912.0)           # 1.5 * 2**23: adding it rounds to an integer
_MAGIC_BITS_32 = np.int32(0x4B400000)
_LN2_HI_32 = F32(0.693145751953125)   # 16 significant bits
_LN2_LO_32 = F32(1.4286068203094173e-06)
_ZERO_BELOW_32 = F32(-87.6)           # n >= -126 above: 2**n is normal (below: +0)
_Q32 = (F32(0.4999999344317879616), F32(0.16666520562723333756),
        F32(0.041668388835304484445), F32(0.0083687251881119989188),
        F32(0.0013814582888013555591))

# ---------------------------------------------------------------- float64
_LOG2E_64 = F64(1.4426950408889634)
_MAGIC_64 = F64(6755399441055744.0)   # 1.5 * 2**52
_MAGIC_BITS_64 = np.int64(0x4338000000000000)
_LN2_HI_64 = F64(6.93147180369123816490e-01)  # 0x3fe62e42fee00000
_LN2_LO_64 = F64(1.90821492927058770002e-10)
_ZERO_BELOW_64 = F64(-708.7)           # n >= -1022 above
# fdlibm's log coefficients: log(1+f) = f - hfsq + s*(hfsq + R(s*s)), s = f/(2+f)
_LG = (F64(6.666666666666735130e-01), F64(3.999999999940941908e-01),
       F64(2.857142874366239149e-01), F64(2.222219843214978396e-01),
       F64(1.818357216161805012e-01), F64(1.531383769920937332e-01),
       F64(1.479819860511658591e-01))
_Q64 = (F64(0.50000000000000106392), F64(0.16666666666666412241),
        F64(0.041666666666530036009), F64(0.0083333333334946009776),
        F64(0.0013888888943666733093), F64(0.00019841269506367635893),
        F64(0.000024801493057099349631), F64(2.7557586480387734197e-6),
        F64(2.7630264505559665375e-7), F64(2.5000054000512069648e-8))


def _is32(t):
    return isinstance(t, types.Float) and t.bitwidth == 32


def _is64(t):
    return isinstance(t, types.Float) and t.bitwidth == 64


# ------------------------------------------------------------------ stubs
def exp_core(q, delta):
    """exp(q + delta) for q <= ~0 and |delta| small; +0 below the normal range."""
    return py_call(exp_core, q, delta)


def exp_core_big(q, delta):
    """2**64 * exp(q + delta): exp_core scaled so that no term of a sum is subnormal."""
    return py_call(exp_core_big, q, delta)


def exp_shifted_big(x, m):
    """2**64 * exp(x - m) (see exp_core_big)."""
    return py_call(exp_shifted_big, x, m)


def exp_shifted_scaled_big(x, m, th, tl):
    """2**64 * exp((x - m) * (th + tl)) (see exp_core_big)."""
    return py_call(exp_shifted_scaled_big, x, m, th, tl)


def exp_shifted(x, m):
    """exp(x - m) with the exact rounding residual of x - m (x <= m)."""
    return py_call(exp_shifted, x, m)


def exp_shifted_scaled(x, m, th, tl):
    """exp((x - m) * (th + tl)), (th, tl) a double-word 1/T (x <= m)."""
    return py_call(exp_shifted_scaled, x, m, th, tl)


def log1p_f64(u):
    """log1p(u) for float64 u >= 0 (below 2**53), within about 1 ULP."""
    return py_call(log1p_f64, u)


def two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e == a + b exactly."""
    return py_call(two_sum, a, b)


# ------------------------------------------------------------------ impls
@overloaded(two_sum, jit_options=_OPTS)
def _two_sum(a, b):
    if not (isinstance(a, types.Float) and a == b):
        return None

    def impl(a, b):
        s = a + b
        bb = s - a
        return s, (a - (s - bb)) + (b - bb)
    return impl


def _exp_generator(bias32, bias64, zero32, zero64):
    """The overload of exp_core (bias 0) or exp_core_big (result times 2**64).

    ``2**(n + bias)`` is built from the exponent bits in one factor, which is
    a normal number down to ``zero``: below it the result is flushed to +0
    (for exp_core, results below the smallest normal number, where a
    softmax entry has no accuracy bound; for exp_core_big, terms far below
    anything a sum of scaled exponentials can notice).

    The argument is reduced exactly (``r = q - n ln2_hi``), the rest of the
    argument (``delta`` minus ``n ln2_lo``) is added to it with one rounding
    (at most 2**-26 relative, a quarter of a float32 ULP), and
    ``2**n exp(r) = 2**n + 2**n (r + r**2 Q(r))`` is evaluated with FMAs.
    """
    def generator(q, delta):
        if _is32(q):
            q0, q1, q2, q3, q4 = _Q32
            b32 = np.int32(127 + bias32)

            def impl32(q, delta):
                t = fma(q, _LOG2E_32, _MAGIC_32)        # rounds q / ln 2 to an integer
                n = t - _MAGIC_32
                r = fma(-n, _LN2_HI_32, q)               # exact
                r = r + fma(-n, _LN2_LO_32, delta)
                r2 = r * r
                qq = fma(r2, fma(r2, q4, fma(q3, r, q2)), fma(q1, r, q0))    # Estrin
                p = fma(r2, qq, r)                                            # exp(r) - 1
                scale = f32_from_bits((f32_bits(t) + (b32 - _MAGIC_BITS_32)) << np.int32(23))
                return F32(0.0) if q < zero32 else fma(p, scale, scale)
            return impl32
        if _is64(q):
            c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = _Q64
            b64 = np.int64(1023 + bias64)

            def impl64(q, delta):
                t = fma(q, _LOG2E_64, _MAGIC_64)
                n = t - _MAGIC_64
                r = fma(-n, _LN2_HI_64, q)
                r = r + fma(-n, _LN2_LO_64, delta)
                qq = fma(fma(fma(fma(fma(fma(fma(fma(fma(c9, r, c8), r, c7), r, c6), r, c5),
                                         r, c4), r, c3), r, c2), r, c1), r, c0)
                p = fma(r * r, qq, r)
                scale = f64_from_bits((f64_bits(t) + (b64 - _MAGIC_BITS_64)) << np.int64(52))
                return F64(0.0) if q < zero64 else fma(p, scale, scale)
            return impl64
        return None
    return generator


overloaded(exp_core, jit_options=_OPTS)(
    _exp_generator(0, 0, _ZERO_BELOW_32, _ZERO_BELOW_64))
overloaded(exp_core_big, jit_options=_OPTS)(
    _exp_generator(64, 64, F32(-131.5), F64(-752.0)))


def _shifted_generator(core):
    def generator(x, m):
        if not (isinstance(x, types.Float) and x == m):
            return None

        def impl(x, m):
            d, lo = two_sum(x, -m)
            return core(d, lo)
        return impl
    return generator


def _shifted_scaled_generator(core):
    def generator(x, m, th, tl):
        if not (isinstance(x, types.Float) and x == m == th == tl):
            return None

        def impl(x, m, th, tl):
            d, lo = two_sum(x, -m)
            q = d * th
            qlo = fma(d, th, -q) + (d * tl + lo * th)   # fma(d, th, -q) is exact
            return core(q, qlo)
        return impl
    return generator


overloaded(exp_shifted, jit_options=_OPTS)(_shifted_generator(exp_core))
overloaded(exp_shifted_big, jit_options=_OPTS)(_shifted_generator(exp_core_big))
overloaded(exp_shifted_scaled, jit_options=_OPTS)(_shifted_scaled_generator(exp_core))
overloaded(exp_shifted_scaled_big, jit_options=_OPTS)(_shifted_scaled_generator(exp_core_big))


@overloaded(log1p_f64, jit_options=_OPTS)
def _log1p_f64(u):
    if not _is64(u):
        return None
    ln2_hi = F64(6.93147180369123816490e-01)
    ln2_lo = F64(1.90821492927058770002e-10)
    sqrt2 = F64(1.4142135623730951)
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = _LG
    mant = np.int64((1 << 52) - 1)
    one_bits = np.int64(1023 << 52)

    def impl(u):
        y = F64(1.0) + u
        c = (u - (y - F64(1.0))) / y           # the rounding of 1 + u, exactly
        bits = f64_bits(y)
        k = (bits >> np.int64(52)) - np.int64(1023)
        mf = f64_from_bits((bits & mant) | one_bits)     # y = 2**k * mf, mf in [1, 2)
        big = mf > sqrt2
        mf = mf * F64(0.5) if big else mf
        kf = F64(k) + (F64(1.0) if big else F64(0.0))
        f = mf - F64(1.0)                                 # exact
        hfsq = F64(0.5) * f * f
        s = f / (F64(2.0) + f)
        z = s * s
        r = z * fma(fma(fma(fma(fma(fma(lg7, z, lg6), z, lg5), z, lg4), z, lg3), z, lg2), z, lg1)
        return kf * ln2_hi - ((hfsq - (s * (hfsq + r) + (kf * ln2_lo + c))) - f)
    return impl
