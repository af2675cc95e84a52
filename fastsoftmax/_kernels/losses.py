"""Cross-entropy with its gradient in one pass, and NLL.

Per sample (one row, or one lane of an ``(O, C, K)`` array), with ``W_c`` the
class weights (1 without ``weight``), ``eps`` the label smoothing, ``m`` the
maximum logit, ``L = log(c + s)`` (see ``_rows``), ``lse = m + L`` and
``-log p_c = (m - x_c) + L``:

* index target ``t`` (``ignore`` skips the sample)::

      ce = (1 - eps) W_t (-log p_t) + eps / C * sum_c W_c (-log p_c)

* distribution target ``q`` (smoothed ``q' = (1 - eps) q + eps / C``)::

      ce = sum_c W_c q'_c (-log p_c)

* every sample adds ``z * lse**2``.

A term whose mass (``(1 - eps) W_t``, ``eps W_c / C`` or ``W_c q'_c``) is
exactly zero contributes zero even where ``-log p_c`` is infinite. The sums
``sum_c W_c (m - x_c)`` are sums of non-negative terms (no cancellation), so a
loss of 1e-13 keeps its digits: ``-log p_t = (m - x_t) + log1p(s)``.

Gradient (``alpha`` scales the ce part, ``beta`` the z part; both already hold
``grad_output`` and the "mean" divisor)::

    g_j = alpha * (M p_j - mass_j) + 2 beta z lse p_j,  M = sum_c mass_c

with ``p_j = e_j / (c + s)``. At an index target the term ``p_t - 1`` is taken
as ``-(1 - p_t)`` with ``1 - p_t = s / (c + s)`` when the target is the single
maximum, so a confident correct prediction keeps an accurate gradient.

Everything is accumulated in float64. "mean"/"sum" reductions are written to
per-block partial sums (``rows_per_block`` samples per block, whatever the
thread count), which the caller adds in a fixed order: reductions are
bit-identical for any number of threads.
"""

import math

import numpy as np
from numba import prange

from ._jit import (F64, exact, fma, fmax_nan_dropping, helper, inline, kernel, ld2, ld3,
                   managed_helper, parallel_twin, reduction, scalar_loop, st2, st3, unmanaged, wide)
from ._rows import (INV_BIG, NEXT_MAX_BYTES, SB, SMALL_C, accurate_sum1, aligned_words,
                    cast_like, from_order_key, is_f32_array, lane_acc2, lanes_to_rows,
                    log_c_plus_s, neumaier, order_key, row_exp_sums, row_max, rows_to_lanes,
                    split_from_plain, split_like)
from .forward import small_block
from .vmath import BIG, exp_shifted, exp_shifted_big, log1p_f64, two_sum

KIND_INDEX = 0
KIND_DIST = 1
ROWS_PER_BLOCK = 256      # samples per block, at most
BLOCK_ELEMENTS = 16384    # and about this many logits per block
KT = 256          # lanes per block of the lanes kernel
SUPER = 8         # blocks per parallel step, at most (scratch allocated once per step)
STEP_ELEMENTS = 65536     # logits per parallel step, at least (when there are SUPER blocks)


def block_rows(n):
    """Samples per block of the rows kernels, for rows of ``n`` classes.

    Blocks of about BLOCK_ELEMENTS logits, so that a few wide rows still
    spread over the threads (256 rows of 32000 classes are 256 blocks, not
    one). The blocking depends on the shape only, never on the thread count,
    so the partial sums (and the reductions) are the same for any number of
    threads.
    """
    return min(ROWS_PER_BLOCK, max(1, BLOCK_ELEMENTS // max(n, 1)))


# The kernels' copy. Python callers (the API sizing the partial-sum array) use
# ``block_rows`` itself: an uncached jitted call from Python would compile in
# every fresh process.
rows_per_block = inline(block_rows)


@inline
def blocks_per_step(rpb, n):
    """Blocks per parallel step: SUPER, or fewer for wide rows (the scratch
    allocated per step is then a small cost next to STEP_ELEMENTS logits)."""
    return min(SUPER, max(1, STEP_ELEMENTS // max(rpb * n, 1)))


@inline
def _finite(v):
    return v - v == 0.0


@inline
def _weight(weight, c):
    return weight[c] if weight.shape[0] else 1.0


@inline
def _mass_dist(weight, tq, i, c, eps, inv_n):
    """W_c q'_c for a row target (eps mixes in the uniform distribution)."""
    q = F64(ld2(tq, i, c))
    if eps != 0.0:
        q = (1.0 - eps) * q + eps * inv_n
    return _weight(weight, c) * q


@inline
def _nll(mf, xt, ell):
    """-log p_t = (m - x_t) + log(c + s), in this order (m - x_t is exact or tiny)."""
    return (mf - xt) + ell


@inline
def _xlogterm(mass, nlp):
    """mass * (-log p), zero when the mass is zero (even if -log p is inf)."""
    return 0.0 if mass == 0.0 else mass * nlp


@reduction
def wsum_index(x, i, a, b, mf, weight):
    """sum_{c in [a, b)} W_c (m - x[i, c]) (zero-weight terms are 0)."""
    wide()
    ws = 0.0
    for c in range(a, b):
        ws += _xlogterm(_weight(weight, c), mf - F64(ld2(x, i, c)))
    return ws


@reduction
def wsum_dist(x, i, a, b, mf, weight, tq, eps, inv_n):
    """(sum mass_c (m - x[i, c]), sum mass_c) over [a, b), mass_c = W_c q'_c."""
    wide()
    ws = 0.0
    qq = 0.0
    for c in range(a, b):
        mass = _mass_dist(weight, tq, i, c, eps, inv_n)
        ws += _xlogterm(mass, mf - F64(ld2(x, i, c)))
        qq += mass
    return ws, qq


# ---------------------------------------------------------------- special rows
@helper
def _special_row(x, i, n, kind, t, tq, weight, wsum, eps, z, want_grad, grad, alpha, beta):
    """A row whose maximum is +inf, -inf or NaN: SPEC §4's limits.

    -log p_c is log k at the k entries equal to +inf and +inf elsewhere; +inf
    everywhere for a row of only -inf; NaN for a NaN row. p follows the
    softmax table (1/k at the +inf entries; all 0 for -inf rows).
    """
    wide()
    nan = False
    k = 0
    for c in range(n):
        v = ld2(x, i, c)
        if v != v:
            nan = True
        elif v == np.inf:
            k += 1
    if nan:
        if want_grad:
            for c in range(n):
                st2(grad, i, c, np.nan)
        return np.nan, np.nan
    lse = np.inf if k > 0 else -np.inf
    logk = math.log(k) if k > 0 else 0.0
    inv_n = 1.0 / n
    ce = 0.0
    msum = 0.0
    for c in range(n):
        nlp = logk if (k > 0 and ld2(x, i, c) == np.inf) else np.inf
        if kind == 0:
            mass = eps * inv_n * _weight(weight, c)
            if c == t:
                mass += (1.0 - eps) * _weight(weight, c)
        else:
            mass = _mass_dist(weight, tq, i, c, eps, inv_n)
        ce += _xlogterm(mass, nlp)
        msum += mass
    zp = z * lse * lse if z != 0.0 else 0.0
    if want_grad:
        for c in range(n):
            p = 1.0 / k if (k > 0 and ld2(x, i, c) == np.inf) else 0.0
            if kind == 0:
                mass = eps * inv_n * _weight(weight, c)
                if c == t:
                    mass += (1.0 - eps) * _weight(weight, c)
            else:
                mass = _mass_dist(weight, tq, i, c, eps, inv_n)
            g = alpha * (msum * p - mass)
            if z != 0.0 and p != 0.0:
                g += 2.0 * beta * z * lse * p
            st2(grad, i, c, g)
    return ce, zp


# ---------------------------------------------------------------- wide rows
@helper
def _scale_big(grad, i, n, k, x, inx):
    """grad[i, :n] = grad[i, :n] * 2**-64 * k (grad holds 2**64 e).

    In the data's dtype, with ``k`` as a double-word (kh + kl): ``fma(e, kh,
    e kl)`` rounds once as the float64 product would (for float32 data the
    float64 loop, with its conversions, took a third of the fused kernel's
    time). A ``k`` so small that its double-word would lose digits, or so
    large that ``e k`` (``e`` up to 2**64) could overflow before the scaling,
    takes the float64 loop.

    With ``inx >= 0`` the same loop reads row ``inx`` of x for its maximum
    (see NEXT_MAX_BYTES) and returns (that maximum, True); otherwise, or in
    the float64 loop, (anything, False).
    """
    wide()
    ak = abs(k)
    v0 = ld2(x, inx if inx >= 0 else i, 0)
    nk = order_key(v0)
    if ak > 2.0 ** -100 and ak < 2.0 ** 60:
        kh, kl = split_like(grad, k, 0.0)
        sc = cast_like(grad, INV_BIG)
        if inx >= 0:
            for c in range(n):
                e = ld2(grad, i, c)
                st2(grad, i, c, fma(e, kh, e * kl) * sc)
                nk = max(nk, order_key(ld2(x, inx, c)))
            return from_order_key(nk, v0), True
        for c in range(n):
            e = ld2(grad, i, c)
            st2(grad, i, c, fma(e, kh, e * kl) * sc)
    else:
        k1 = k * INV_BIG
        for c in range(n):
            st2(grad, i, c, F64(ld2(grad, i, c)) * k1)
    return v0, False


@exact
def _row_loss(kind, mf, xt, cnt, shi, slo, weight, t, eps, inv_n, wsum, wd, wsum_q, z):
    """A wide row's (ce, z part, logsumexp) from its maximum ``mf`` and the
    split sums ``cnt + shi + slo`` of its exponentials (see _ce_wide_row)."""
    ell = log_c_plus_s(cnt, shi, slo)
    lse = mf + ell
    if kind == 0:
        wt = _weight(weight, t)
        ce = _xlogterm((1.0 - eps) * wt, _nll(mf, F64(xt), ell))
        if eps != 0.0:
            ce += eps * inv_n * (ell * wsum + wd)
    else:
        ce = ell * wsum_q + wd
    return ce, z * lse * lse, lse


@helper
def _ce_wide_row(x, i, n, kind, t, tq, weight, wsum, eps, z, want_grad, grad, alpha, beta,
                 scratch, m_in, have_m, inx):
    """One row, C >= SMALL_C: (ce, z part) in float64, then (the maximum of
    row ``inx``, True) when the gradient's scaling read it (see _scale_big),
    else (anything, False). The row's own maximum is ``m_in`` when ``have_m``."""
    wide()
    inv_n = 1.0 / n
    m = m_in if have_m else row_max(x, None, i, n)
    # the target's logit once the row is in cache (read first, its miss took
    # 5% of a one-thread profile, though the A/B on two threads measured no
    # change); before sweep two, which overwrites x in place
    xt = ld2(x, i, t) if kind == 0 else ld2(x, i, 0)
    if not _finite(m):
        ce, zp = _special_row(x, i, n, kind, t, tq, weight, wsum, eps, z, want_grad, grad,
                              alpha, beta)
        return ce, zp, m, False
    mf = F64(m)
    # the weighted sums of (m - x_c) first (an in-place grad overwrites x next)
    wd = 0.0          # sum_c mass_c (m - x_c)  (index targets: sum_c W_c (m - x_c))
    wdc = 0.0
    qs = 0.0          # sum_c mass_c            (distribution targets)
    qsc = 0.0
    if kind == 0 and eps != 0.0:
        for a in range(0, n, SB):
            wd, wdc = neumaier(wd, wdc, wsum_index(x, i, a, min(a + SB, n), mf, weight))
    elif kind == 1:
        for a in range(0, n, SB):
            ws, qq = wsum_dist(x, i, a, min(a + SB, n), mf, weight, tq, eps, inv_n)
            wd, wdc = neumaier(wd, wdc, ws)
            qs, qsc = neumaier(qs, qsc, qq)
    # sweep two: the exponentials (into grad) and their sums
    if want_grad:
        s, sc, cnt = row_exp_sums(x, None, i, n, m, m, m, False, True, grad, i, True, scratch)
    else:
        s, sc, cnt = row_exp_sums(x, None, i, n, m, m, m, False, True, scratch, 2, False,
                                  scratch)
    if s != s:
        if want_grad:
            for c in range(n):
                st2(grad, i, c, np.nan)
        return np.nan, np.nan, m, False
    shi = s
    slo = sc
    wsum_q = qs + qsc if kind == 1 else wsum
    wd = wd + wdc
    # the loss: after the gradient when the gradient does not need the
    # logsumexp (no z-loss), so that the logarithm's chain of dependent
    # operations overlaps the next row's first read instead of delaying the
    # gradient (A/B 0.97-0.98 at 500-2000 classes, 0.95 at 250)
    late = want_grad and z == 0.0
    ce = 0.0
    zp = 0.0
    lse = 0.0
    if not late:
        ce, zp, lse = _row_loss(kind, mf, xt, cnt, shi, slo, weight, t, eps, inv_n, wsum, wd,
                                wsum_q, z)
    if not want_grad:
        return ce, zp, m, False
    # sweep three: the gradient, from the stored exponentials
    tot = F64(cnt) + shi
    inv = 1.0 / tot
    zc = 0.0 if late else 2.0 * beta * z * lse
    mnx = m
    have = False
    if kind == 0:
        wt = _weight(weight, t)
        mt = (1.0 - eps) * wt
        msum = mt + eps * inv_n * wsum
        k1 = (alpha * msum + zc) * inv * INV_BIG     # grad holds 2**64 e
        ew = alpha * eps * inv_n
        if ew != 0.0 and weight.shape[0]:
            for c in range(n):
                st2(grad, i, c, F64(ld2(grad, i, c)) * k1 - ew * weight[c])
        elif ew != 0.0:
            for c in range(n):
                st2(grad, i, c, F64(ld2(grad, i, c)) * k1 - ew)
        else:
            mnx, have = _scale_big(grad, i, n, (alpha * msum + zc) * inv, x, inx)
        # the target entry: p_t - 1 = -(1 - p_t), 1 - p_t without cancellation
        et = F64(exp_shifted(xt, m))
        pt = et * inv
        qt = shi * inv if (et == 1.0 and cnt == 1) else 1.0 - pt
        gt = alpha * (-mt * qt + eps * inv_n * (wsum * pt - wt)) + zc * pt
        st2(grad, i, t, gt)
    else:
        k1 = (alpha * wsum_q + zc) * inv * INV_BIG
        for c in range(n):
            mass = _mass_dist(weight, tq, i, c, eps, inv_n)
            st2(grad, i, c, F64(ld2(grad, i, c)) * k1 - alpha * mass)
    if late:
        ce, zp, lse = _row_loss(kind, mf, xt, cnt, shi, slo, weight, t, eps, inv_n, wsum, wd,
                                wsum_q, z)
    return ce, zp, mnx, have


# ---------------------------------------------------------------- lanes
@helper
def _ce_lanes(x, o, k0, k1, kind, tl, tq, weight, wsum, eps, z, want_grad, grad,
              av, bv, ignore, ce_out, zp_out, fv, sv, iv, ev):
    """Samples k0..k1 of outer index o of an (O, C, K) array (one lane each).

    ``tl[k]``: index targets of the lanes (int64); ``tq``: distribution targets
    in the logits' layout; ``av``/``bv``: per-lane alpha/beta; results go to
    ``ce_out[k]``/``zp_out[k]`` (float64, lane-relative). ``fv`` (10, KT)
    float64, ``sv`` (KT,) float, ``iv`` (4, KT) int64 and ``ev`` (4, KT) float
    are scratch. Lanes whose target is ``ignore`` give zeros.

    Every loop over the lanes is branch-free arithmetic (it vectorises); the
    rare lanes with a non-finite maximum or a NaN are counted in a vector
    loop and only then finished one by one. Loops that index by the target
    (a gather or a scatter) are kept scalar.

    Float32 data: plain float64 sums of the exponentials first (no count of
    maxima: a compare and a masked add per entry less), and ``c + s`` is
    read off them as ``1 + s'`` (see ``_rows.split_from_plain``); only when a
    live lane's ``s'`` is below the bound (a dominant maximum) are the split
    sums and counts of maxima taken again, for the block
    (``_lanes_from_plain``). The sums are a loop of their own: accumulated in
    the exponentials' loop (float64 adds in a float32 loop), they measured no
    faster than the split loop they replace.
    """
    wide()
    n = x.shape[1]
    kk = k1 - k0
    inv_n = 1.0 / n
    # fv rows: 0 s, 1 s comp, 2 wd then zc, 3 qs then the target entry,
    #          4 ell, 5 lse, 6 1/(c+s), 7 x_t, 8 k1, 9 W_t
    # iv rows: 0 count of maxima, 1 target (0 for ignored lanes), 2 state:
    #          0 live, 1 ignored, 2 finished (non-finite or NaN), 3 scratch
    # ev rows: 0 the exponentials, 1 the state in the data's type (1 live,
    #          0 ignored, -1 finished: masks as wide as the data's vectors),
    #          2 and 3 the gradient's factors as double-words (float32)
    for k in range(kk):
        sv[k] = ld3(x, o, 0, k0 + k)
    for c in range(1, n):
        for k in range(kk):
            sv[k] = fmax_nan_dropping(sv[k], ld3(x, o, c, k0 + k))
    # (one array per loop: each of them vectorises)
    for k in range(kk):
        iv[0, k] = 0
    if kind == 0:
        for k in range(kk):
            iv[1, k] = 0 if tl[k] == ignore else tl[k]
        for k in range(kk):
            iv[2, k] = 1 if tl[k] == ignore else 0
        for k in range(kk):
            ev[1, k] = 0.0 if tl[k] == ignore else 1.0
    else:
        for k in range(kk):
            iv[1, k] = 0
        for k in range(kk):
            iv[2, k] = 0
        for k in range(kk):
            ev[1, k] = 1.0
    for k in range(kk):
        ce_out[k] = 0.0
    for k in range(kk):
        zp_out[k] = 0.0
    for r in range(4):          # the accumulators (the other rows are set before use)
        for k in range(kk):
            fv[r, k] = 0.0
    if kind == 0:
        for k in range(kk):
            scalar_loop()
            fv[7, k] = F64(ld3(x, o, iv[1, k], k0 + k))
            fv[9, k] = _weight(weight, iv[1, k])
    # lanes with a non-finite maximum: finished now, before any write
    nbad = 0
    for k in range(kk):
        nbad += 1 if (iv[2, k] == 0 and not _finite(sv[k])) else 0
    if nbad:
        for k in range(kk):
            if iv[2, k] == 0 and not _finite(sv[k]):
                iv[2, k] = 2
                ev[1, k] = -1.0
                ce_v, zp_v = _special_lane(x, o, k0 + k, n, kind, iv[1, k], tq, weight, wsum,
                                           eps, z, want_grad, grad, av[k], bv[k])
                ce_out[k] = ce_v
                zp_out[k] = zp_v
    need_wsum = kind == 1 or eps != 0.0
    in_place = x.ctypes.data == grad.ctypes.data
    plain = is_f32_array(x)
    # every lane live (none ignored or finished): stores need no mask
    nlive = 0
    for k in range(kk):
        nlive += 1 if iv[2, k] == 0 else 0
    all_live = nlive == kk
    for c in range(n):
        wc = _weight(weight, c)
        if need_wsum:
            if kind == 0:
                for k in range(kk):
                    fv[2, k] += _xlogterm(wc, F64(sv[k]) - F64(ld3(x, o, c, k0 + k)))
            else:
                for k in range(kk):
                    q = F64(ld3(tq, o, c, k0 + k))
                    if eps != 0.0:
                        q = (1.0 - eps) * q + eps * inv_n
                    mass = wc * q
                    fv[2, k] += _xlogterm(mass, F64(sv[k]) - F64(ld3(x, o, c, k0 + k)))
                    fv[3, k] += mass
        # the exponentials, times 2**64, to grad (live lanes) and ev[0]
        if want_grad and all_live and in_place:
            for k in range(kk):
                e = exp_shifted_big(ld3(grad, o, c, k0 + k), sv[k])
                ev[0, k] = e
                st3(grad, o, c, k0 + k, e)
        elif want_grad and all_live:
            for k in range(kk):
                e = exp_shifted_big(ld3(x, o, c, k0 + k), sv[k])
                ev[0, k] = e
                st3(grad, o, c, k0 + k, e)
        elif want_grad and in_place:
            # reading grad (= x) itself: with two arrays LLVM would guard the vector
            # loop by a no-overlap check that an in-place call fails (scalar, 3x slower)
            for k in range(kk):
                e = exp_shifted_big(ld3(grad, o, c, k0 + k), sv[k])
                ev[0, k] = e
                if ev[1, k] > 0.0:
                    st3(grad, o, c, k0 + k, e)
        elif want_grad:
            for k in range(kk):
                e = exp_shifted_big(ld3(x, o, c, k0 + k), sv[k])
                ev[0, k] = e
                if ev[1, k] > 0.0:
                    st3(grad, o, c, k0 + k, e)
        else:
            for k in range(kk):
                ev[0, k] = exp_shifted_big(ld3(x, o, c, k0 + k), sv[k])
        if plain:
            # the plain sums (BIG for each maximum)
            for k in range(kk):
                fv[0, k] += F64(ev[0, k])
        else:
            # the split sums and the counts of maxima
            for k in range(kk):
                v = F64(ev[0, k])
                one = v == BIG
                iv[0, k] += 1 if one else 0
                h, l_ = lane_acc2(ev, fv[0, k], fv[1, k], 0.0 if one else v)
                fv[0, k] = h
                fv[1, k] = l_
    if plain:
        _lanes_from_plain(x, o, k0, kk, n, want_grad, grad, sv, fv, iv)
    # per lane: log(c + s), lse, 1 / (c + s)
    for k in range(kk):
        cnt = iv[0, k]
        hi = fv[0, k] + fv[1, k]
        lo = (fv[1, k] - (hi - fv[0, k])) * INV_BIG
        hi *= INV_BIG
        t2, tlo = two_sum(F64(cnt - 1), hi)
        ell = log1p_f64(t2) + (tlo + lo) / (1.0 + t2)
        fv[0, k] = hi
        fv[4, k] = ell
        fv[5, k] = F64(sv[k]) + ell
        fv[6, k] = 1.0 / (F64(cnt) + hi)
    # the losses
    if kind == 0:
        for k in range(kk):
            ell = fv[4, k]
            ce = _xlogterm((1.0 - eps) * fv[9, k], _nll(F64(sv[k]), fv[7, k], ell))
            ce += eps * inv_n * (ell * wsum + fv[2, k]) if eps != 0.0 else 0.0
            live = iv[2, k] == 0
            ce_out[k] = ce if live else ce_out[k]
            zp_out[k] = z * fv[5, k] * fv[5, k] if live else zp_out[k]
    else:
        for k in range(kk):
            ce = fv[4, k] * fv[3, k] + fv[2, k]
            live = iv[2, k] == 0
            ce_out[k] = ce if live else ce_out[k]
            zp_out[k] = z * fv[5, k] * fv[5, k] if live else zp_out[k]
    # lanes with a NaN (rare)
    nnan = 0
    for k in range(kk):
        nnan += 1 if (iv[2, k] == 0 and fv[0, k] != fv[0, k]) else 0
    if nnan:
        all_live = False
        for k in range(kk):
            if iv[2, k] == 0 and fv[0, k] != fv[0, k]:
                iv[2, k] = 2
                ev[1, k] = -1.0
                ce_out[k] = np.nan
                zp_out[k] = np.nan
                if want_grad:
                    for c in range(n):
                        st3(grad, o, c, k0 + k, np.nan)
    if not want_grad:
        return
    # the gradient: g = e * k1 - alpha * mass_c (grad holds 2**64 e)
    for k in range(kk):
        zc = 2.0 * bv[k] * z * fv[5, k]
        if kind == 0:
            msum = (1.0 - eps) * fv[9, k] + eps * inv_n * wsum
        else:
            msum = fv[3, k]
        fv[8, k] = (av[k] * msum + zc) * fv[6, k] * INV_BIG
        fv[2, k] = zc
    # float32, every lane live, no smoothing: the factors as double-words in
    # float32 (as _scale_big; ev rows 2 and 3) when every lane's is in range
    f32_scale = plain and kind == 0 and eps == 0.0 and all_live
    if f32_scale:
        nin = 0
        for k in range(kk):
            ak = abs(fv[8, k]) * BIG
            nin += 1 if (ak > 2.0 ** -100 and ak < 2.0 ** 60) else 0
        f32_scale = nin == kk
    if f32_scale:
        for k in range(kk):
            kh, kl = split_like(ev, fv[8, k] * BIG, 0.0)
            ev[2, k] = kh
            ev[3, k] = kl
    sc = cast_like(ev, INV_BIG)
    for c in range(n):
        wc = _weight(weight, c)
        if f32_scale:
            for k in range(kk):
                e = ld3(grad, o, c, k0 + k)
                st3(grad, o, c, k0 + k, fma(e, ev[2, k], e * ev[3, k]) * sc)
        elif kind == 0 and eps == 0.0 and all_live:
            for k in range(kk):
                st3(grad, o, c, k0 + k, F64(ld3(grad, o, c, k0 + k)) * fv[8, k])
        elif kind == 0 and eps == 0.0:
            for k in range(kk):
                g = F64(ld3(grad, o, c, k0 + k)) * fv[8, k]
                st = ev[1, k]
                if st >= 0.0:                  # ignored lanes: a zero gradient
                    st3(grad, o, c, k0 + k, g if st > 0.0 else 0.0)
        elif kind == 0:
            for k in range(kk):
                g = F64(ld3(grad, o, c, k0 + k)) * fv[8, k] - av[k] * eps * inv_n * wc
                st = ev[1, k]
                if st >= 0.0:                  # ignored lanes: a zero gradient
                    st3(grad, o, c, k0 + k, g if st > 0.0 else 0.0)
        else:
            for k in range(kk):
                q = F64(ld3(tq, o, c, k0 + k))
                if eps != 0.0:
                    q = (1.0 - eps) * q + eps * inv_n
                g = F64(ld3(grad, o, c, k0 + k)) * fv[8, k] - av[k] * wc * q
                st = ev[1, k]
                if st >= 0.0:
                    st3(grad, o, c, k0 + k, g if st > 0.0 else 0.0)
    if kind == 0:
        # the target entries, without cancellation (vector part, then the stores)
        for k in range(kk):
            et = F64(exp_shifted(cast_like(ev, fv[7, k]), sv[k]))
            inv = fv[6, k]
            pt = et * inv
            qt = fv[0, k] * inv if (et == 1.0 and iv[0, k] == 1) else 1.0 - pt
            mt = (1.0 - eps) * fv[9, k]
            fv[3, k] = av[k] * (-mt * qt + eps * inv_n * (wsum * pt - fv[9, k])) + fv[2, k] * pt
        for k in range(kk):
            scalar_loop()
            if iv[2, k] == 0:
                st3(grad, o, iv[1, k], k0 + k, fv[3, k])


@helper
def _lanes_from_plain(x, o, k0, kk, n, want_grad, grad, sv, fv, iv):
    """Float32 lanes of _ce_lanes: their plain sums ``fv[0]`` (2**64 times
    the sum of all exponentials, ``c + s``) as ``c = 1`` and ``s' = c - 1 + s``
    where ``s'`` keeps its digits (``_rows.split_from_plain``, on the sums
    scaled by 2**-64, exactly); otherwise, for a live lane, the split sum of
    the non-maximal terms and the count of maxima (the exponentials as
    ``grad`` holds them, or computed again without a gradient), in the order
    of the split loop (the same bits). ``fv[4]`` and ``iv[3]`` are scratch
    here; ``iv[0]`` is 0 meanwhile for the lanes summed again."""
    wide()
    nfall = 0
    for k in range(kk):
        t, tlo, ok = split_from_plain(fv[0, k] * INV_BIG, 0.0, n)
        fv[0, k] = t * BIG
        fv[1, k] = tlo * BIG
        redo = iv[2, k] == 0 and not ok and t == t        # live; NaN lanes: not summed again
        iv[0, k] = 0 if redo else 1
        nfall += 1 if redo else 0
    if nfall == 0:
        return
    for k in range(kk):
        fv[4, k] = 0.0
    for k in range(kk):
        iv[3, k] = 0
    for c in range(n):
        if want_grad:
            for k in range(kk):
                v = F64(ld3(grad, o, c, k0 + k))
                one = v == BIG
                iv[3, k] += 1 if one else 0
                fv[4, k] += 0.0 if one else v
        else:
            for k in range(kk):
                v = F64(exp_shifted_big(ld3(x, o, c, k0 + k), sv[k]))
                one = v == BIG
                iv[3, k] += 1 if one else 0
                fv[4, k] += 0.0 if one else v
    for k in range(kk):
        redo = iv[0, k] == 0
        fv[0, k] = fv[4, k] if redo else fv[0, k]
        fv[1, k] = 0.0 if redo else fv[1, k]
        iv[0, k] = iv[3, k] if redo else iv[0, k]


@managed_helper
def _special_lane(x, o, kk, n, kind, t, tq, weight, wsum, eps, z, want_grad, grad, alpha,
                  beta):
    """A non-finite lane: copied into rows and run through _special_row."""
    wide()
    xr = np.empty((1, n), dtype=x.dtype)
    qr = np.empty((1, n), dtype=tq.dtype)
    gr = np.empty((1, n), dtype=grad.dtype)
    for c in range(n):
        xr[0, c] = ld3(x, o, c, kk)
        if kind == 1:
            qr[0, c] = ld3(tq, o, c, kk)
    ce, zp = _special_row(xr, 0, n, kind, t, qr, weight, wsum, eps, z, want_grad, gr, alpha,
                          beta)
    if want_grad:
        for c in range(n):
            st3(grad, o, c, kk, gr[0, c])
    return ce, zp


# ---------------------------------------------------------------- kernels
@inline
def _row_scales(gscale, i, alpha, beta):
    if gscale.shape[0]:
        g = gscale[i]
        return alpha * g, beta * g
    return alpha, beta


@managed_helper
def _lane_scratch(x, g):
    """The per-lane work arrays of _ce_lanes for g lanes, each on a cache line:
    (targets, alpha, beta, float64 sums, x-dtype values, counts, exponentials)."""
    tl = aligned_words(g).view(np.int64)
    av = aligned_words(g)
    bv = aligned_words(g)
    fv = aligned_words(10 * g).reshape((10, g))
    sv = aligned_words(g).view(x.dtype)[:g]
    iv = aligned_words(4 * g).view(np.int64).reshape((4, g))
    ev = aligned_words(4 * g).view(x.dtype)[:4 * g].reshape((4, g))
    return tl, av, bv, fv, sv, iv, ev


@inline
def _emit_block(ce_b, zp_b, nb, r0, loss_rows, part, blk):
    """A block's per-sample losses (reduction "none") or its partial sums."""
    if loss_rows.shape[0]:
        for j in range(nb):
            loss_rows[r0 + j] = ce_b[j] + zp_b[j]
    else:
        h, l_ = accurate_sum1(ce_b, 0, nb)
        part[blk, 0] = h
        part[blk, 1] = l_
        h, l_ = accurate_sum1(zp_b, 0, nb)
        part[blk, 2] = h
        part[blk, 3] = l_


@kernel
def ce_rows(x, kind, tidx, tq, weight, wsum, ignore, eps, z, want_grad, grad, gscale, alpha,
            beta, loss_rows, part):
    """Cross-entropy over the rows of a C-contiguous (R, C) array.

    ``tidx`` (R,) int64 index targets (kind 0) or ``tq`` (R, C) distribution
    targets (kind 1); ``weight`` (C,) float64 or empty; ``wsum`` its sum (C
    without weights); ``gscale`` per-row grad_output (reduction "none") or
    empty; ``alpha``/``beta`` the scales of the ce and z parts. Writes the
    gradient into ``grad`` (may be ``x``) when ``want_grad``, the per-row
    loss into ``loss_rows`` when it is not empty, else partial sums into
    ``part`` (one row of 4 per ``rows_per_block(C)`` samples).
    """
    wide()
    x = unmanaged(x)
    tidx = unmanaged(tidx)
    tq = unmanaged(tq)
    weight = unmanaged(weight)
    grad = unmanaged(grad)
    gscale = unmanaged(gscale)
    loss_rows = unmanaged(loss_rows)
    part = unmanaged(part)
    R, n = x.shape
    rpb = rows_per_block(n)
    nblk = (R + rpb - 1) // rpb
    # each parallel step takes bps blocks, so the scratch is allocated once
    # per step; the blocks (and so the partial sums) do not depend on the
    # thread count
    bps = blocks_per_step(rpb, n)
    nsup = (nblk + bps - 1) // bps
    for sup in prange(nsup):
        ce_b = np.empty(ROWS_PER_BLOCK)
        zp_b = np.empty(ROWS_PER_BLOCK)
        wide_rows = n >= SMALL_C
        sbw = SB if wide_rows else 1
        scratch = aligned_words(3 * sbw).view(x.dtype)[:3 * sbw].reshape((3, sbw))
        # short rows: gl samples at a time transposed into lanes; every
        # lane array starts on a cache line
        gl = 1 if wide_rows else min(rpb, small_block(n))
        nl = 1 if wide_rows else n
        xs = aligned_words(nl * gl).view(x.dtype)[:nl * gl].reshape((1, nl, gl))
        nq = nl * gl if kind == 1 else 1
        qs = aligned_words(nq).view(tq.dtype)[:nq].reshape((1, nl if kind == 1 else 1,
                                                            gl if kind == 1 else 1))
        gs = aligned_words(nl * gl).view(x.dtype)[:nl * gl].reshape((1, nl, gl))
        tl, av, bv, fv, sv, iv, ev = _lane_scratch(x, gl)
        for blk in range(sup * bps, min(sup * bps + bps, nblk)):
            r0 = blk * rpb
            r1 = min(r0 + rpb, R)
            if wide_rows:
                fuse = want_grad and n * x.itemsize <= NEXT_MAX_BYTES
                mnx = x[r0, 0]
                have = False
                for i in range(r0, r1):
                    t = tidx[i] if kind == 0 else 0
                    if kind == 0 and t == ignore:
                        if want_grad:
                            for c in range(n):
                                st2(grad, i, c, 0.0)
                        ce_b[i - r0] = 0.0
                        zp_b[i - r0] = 0.0
                        have = False
                        continue
                    a_i, b_i = _row_scales(gscale, i, alpha, beta)
                    ce, zp, mnx, have = _ce_wide_row(
                        x, i, n, kind, t, tq, weight, wsum, eps, z, want_grad, grad, a_i, b_i,
                        scratch, mnx, have, i + 1 if (fuse and i + 1 < r1) else -1)
                    ce_b[i - r0] = ce
                    zp_b[i - r0] = zp
            else:
                for b0 in range(r0, r1, gl):
                    g = min(gl, r1 - b0)
                    rows_to_lanes(x, None, b0, g, xs)
                    if kind == 1:
                        rows_to_lanes(tq, None, b0, g, qs)
                    for k in range(g):
                        tl[k] = tidx[b0 + k] if kind == 0 else 0
                        a_i, b_i = _row_scales(gscale, b0 + k, alpha, beta)
                        av[k] = a_i
                        bv[k] = b_i
                    j = b0 - r0
                    _ce_lanes(xs, 0, 0, g, kind, tl, qs, weight, wsum, eps, z, want_grad, gs,
                              av, bv, ignore, ce_b[j:j + g], zp_b[j:j + g], fv, sv, iv, ev)
                    if want_grad:
                        lanes_to_rows(gs, b0, g, grad)
            _emit_block(ce_b, zp_b, r1 - r0, r0, loss_rows, part, blk)


ce_rows_parallel = parallel_twin(ce_rows)


@kernel
def ce_lanes(x, kind, tidx, tq, weight, wsum, ignore, eps, z, want_grad, grad, gscale, alpha,
             beta, loss_rows, part):
    """Cross-entropy along axis 1 of a C-contiguous (O, C, K) array.

    ``tidx`` (O, K) int64; ``tq`` (O, C, K); ``gscale`` (O, K) or empty;
    ``loss_rows`` (O, K) or empty; ``part`` one row per (o, lane block).
    Otherwise as ``ce_rows``.
    """
    wide()
    x = unmanaged(x)
    tidx = unmanaged(tidx)
    tq = unmanaged(tq)
    weight = unmanaged(weight)
    grad = unmanaged(grad)
    gscale = unmanaged(gscale)
    loss_rows = unmanaged(loss_rows)
    part = unmanaged(part)
    O, n, K = x.shape
    nkb = (K + KT - 1) // KT
    nw = O * nkb
    bps = blocks_per_step(min(K, KT), n)
    nsup = (nw + bps - 1) // bps
    for sup in prange(nsup):
        tl, av, bv, fv, sv, iv, ev = _lane_scratch(x, KT)
        ce_o = aligned_words(KT)
        zp_o = aligned_words(KT)
        for w in range(sup * bps, min(sup * bps + bps, nw)):
            o = w // nkb
            k0 = (w % nkb) * KT
            k1 = min(k0 + KT, K)
            kk = k1 - k0
            for k in range(kk):
                tl[k] = tidx[o, k0 + k] if kind == 0 else 0
                if gscale.shape[0]:
                    av[k] = alpha * gscale[o, k0 + k]
                    bv[k] = beta * gscale[o, k0 + k]
                else:
                    av[k] = alpha
                    bv[k] = beta
            _ce_lanes(x, o, k0, k1, kind, tl, tq, weight, wsum, eps, z, want_grad, grad, av,
                      bv, ignore, ce_o, zp_o, fv, sv, iv, ev)
            _emit_block(ce_o, zp_o, kk, k0, loss_rows[o] if loss_rows.shape[0] else ce_o[:0],
                        part, w)


ce_lanes_parallel = parallel_twin(ce_lanes)


# ---------------------------------------------------------------- targets
@kernel
def scan_targets(t, ignore, n, weight):
    """One pass over index targets: (first bad position or -1, valid count, sum of W_t).

    ``t`` is a flat int64 array. The counts are branch-free vector loops; the
    position of a bad target is looked up only when there is one. The weight
    sum is Neumaier-compensated and taken in index order, so it does not
    depend on threads (without weights it is the count, exactly).
    """
    nbad = 0
    cnt = 0
    for i in range(t.shape[0]):
        v = t[i]
        keep = v != ignore
        bad = keep and (v < 0 or v >= n)
        nbad += 1 if bad else 0
        cnt += 1 if (keep and not bad) else 0
    if nbad:
        for i in range(t.shape[0]):
            v = t[i]
            if v != ignore and (v < 0 or v >= n):
                return i, 0, 0.0
    if weight.shape[0] == 0:
        return -1, cnt, F64(cnt)
    s = 0.0
    comp = 0.0
    for i in range(t.shape[0]):
        v = t[i]
        if v != ignore:
            s, comp = neumaier(s, comp, weight[v])
    return -1, cnt, s + comp


# ---------------------------------------------------------------- NLL
@kernel
def nll_index(lp, tidx, weight, ignore, loss):
    """loss[i] = -W_t lp[i, t] (0 for ignored samples and zero weights).

    ``lp`` is (R, C) or (O, C, K) viewed through ``tidx`` of shape (R,) or
    (O, K); here rows only: the caller passes (R, C) and (R,).
    """
    for i in range(lp.shape[0]):
        t = tidx[i]
        if t == ignore:
            loss[i] = 0.0
            continue
        w = weight[t] if weight.shape[0] else 1.0
        loss[i] = _xlogterm(w, -F64(lp[i, t]))


@kernel
def nll_index_lanes(lp, tidx, weight, ignore, loss):
    """nll_index for (O, C, K) log-probabilities and (O, K) targets."""
    O, n, K = lp.shape
    for o in range(O):
        for k in range(K):
            t = tidx[o, k]
            if t == ignore:
                loss[o, k] = 0.0
                continue
            w = weight[t] if weight.shape[0] else 1.0
            loss[o, k] = _xlogterm(w, -F64(lp[o, t, k]))


@kernel
def nll_dist(lp, tq, weight, loss):
    """loss[i] = -sum_c W_c q_c lp[i, c] over rows (zero-mass terms are 0)."""
    wide()
    R, n = lp.shape
    for i in range(R):
        s = 0.0
        comp = 0.0
        for c in range(n):
            mass = _weight(weight, c) * F64(ld2(tq, i, c))
            s, comp = neumaier(s, comp, _xlogterm(mass, -F64(ld2(lp, i, c))))
        loss[i] = s + comp


# ---------------------------------------------------------------- vocabulary chunks
# linear_cross_entropy over chunks of the vocabulary: the logits of one
# (rows x vocabulary-chunk) block at a time. Pass one reduces each block to
# per-row statistics relative to the block's maximum and merges them into
# running statistics relative to the running maximum; pass two recomputes
# each block and writes its gradient in place.

@kernel
def chunk_stats(z, kind, tl, tq, wch, eps, inv_n, st):
    """Per-row statistics of a logits block z (R, Vc).

    ``tl[i]``: the row's index target relative to the block (any value outside
    [0, Vc) when it is elsewhere or ignored); ``tq`` (R, Vc) distribution
    targets; ``wch`` the block's class weights (or empty); ``inv_n`` is
    1/V for the whole vocabulary. Writes ``st[i] = (m, c, s, wd, ms, xt)``:
    maximum, count of maxima, sum of the other exponentials (relative to m),
    ``sum mass_c (m - z_c)``, ``sum mass_c`` (mass: class weight times eps/V
    for index targets, W_c q'_c for distributions), and the target's logit
    (NaN when the target is not in this block).
    """
    wide()
    z = unmanaged(z)
    tl = unmanaged(tl)
    tq = unmanaged(tq)
    wch = unmanaged(wch)
    st = unmanaged(st)
    R, n = z.shape
    wsum_w = 0.0
    for c in range(n):
        wsum_w += _weight(wch, c)
    rpb = rows_per_block(n)
    for blk in prange((R + rpb - 1) // rpb):
        scratch = aligned_words(3 * SB).view(z.dtype)[:3 * SB].reshape((3, SB))
        for i in range(blk * rpb, min((blk + 1) * rpb, R)):
            m = row_max(z, None, i, n)
            mf = F64(m)
            wd = 0.0
            ms = 0.0
            if kind == 0:
                if eps != 0.0:
                    wd = eps * inv_n * wsum_index(z, i, 0, n, mf, wch)
                    ms = eps * inv_n * wsum_w
            else:
                wd, ms = wsum_dist(z, i, 0, n, mf, wch, tq, eps, inv_n)
            if _finite(m):
                s, slo, cnt = row_exp_sums(z, None, i, n, m, m, m, False, True, scratch, 2,
                                           False, scratch)
                s += slo
            else:
                s = np.nan
                cnt = 0
            t = tl[i]
            st[i, 0] = mf
            st[i, 1] = F64(cnt)
            st[i, 2] = s
            st[i, 3] = wd
            st[i, 4] = ms
            st[i, 5] = F64(ld2(z, i, t)) if (kind == 0 and t >= 0 and t < n) else np.nan


@kernel
def merge_stats(run, st):
    """Fold block statistics ``st`` into the running ones ``run`` (same layout).

    With M the running maximum: a block with a larger maximum m turns the
    running (c + s) into "others" scaled by exp(M - m); a smaller one adds
    (c + s) exp(m - M). The weighted sums move to the new maximum by adding
    (new max - old max) times the mass (all terms stay non-negative). The
    first block is copied (``run[i, 0]`` is -inf before it).
    """
    for i in range(run.shape[0]):
        M = run[i, 0]
        m = st[i, 0]
        if M == -np.inf:
            for j in range(6):
                run[i, j] = st[i, j]
            continue
        if m > M:
            f = exp_shifted(M, m)
            run[i, 2] = st[i, 2] + (run[i, 1] + run[i, 2]) * f
            run[i, 1] = st[i, 1]
            run[i, 3] = run[i, 3] + (m - M) * run[i, 4] + st[i, 3]
            run[i, 0] = m
        elif m == M:
            run[i, 1] += st[i, 1]
            run[i, 2] += st[i, 2]
            run[i, 3] += st[i, 3]
        else:
            f = exp_shifted(m, M)
            run[i, 2] += (st[i, 1] + st[i, 2]) * f
            run[i, 3] += st[i, 3] + (M - m) * st[i, 4]
        run[i, 4] += st[i, 4]
        if st[i, 5] == st[i, 5]:
            run[i, 5] = st[i, 5]


@kernel
def chunk_grad(z, kind, tl, tq, wch, eps, inv_n, run, coef):
    """Overwrite a logits block z (R, Vc) with its cross-entropy gradient.

    ``run[i] = (M, c, s, ...)`` are the final row statistics; ``coef[i] =
    (k1, alpha, zc, wsum)`` with ``zc = 2 beta z lse``, ``k1 = (alpha * total
    mass + zc) / (c + s)`` and ``wsum`` the sum of all class weights (V
    without weights); a row with ``k1 = alpha = 0`` (ignored) gets zeros.
    Index targets inside the block get the cancellation-free target entry
    (see the module docstring).
    """
    wide()
    z = unmanaged(z)
    tl = unmanaged(tl)
    tq = unmanaged(tq)
    wch = unmanaged(wch)
    run = unmanaged(run)
    coef = unmanaged(coef)
    R, n = z.shape
    rpb = rows_per_block(n)
    for blk in prange((R + rpb - 1) // rpb):
        for i in range(blk * rpb, min((blk + 1) * rpb, R)):
            M = cast_like(z, run[i, 0])
            k1 = coef[i, 0]
            alpha = coef[i, 1]
            if alpha == 0.0 and k1 == 0.0:
                for c in range(n):
                    st2(z, i, c, 0.0)
                continue
            t = tl[i]
            in_block = kind == 0 and t >= 0 and t < n
            xt = ld2(z, i, t) if in_block else M
            if kind == 0:
                ew = alpha * eps * inv_n
                for c in range(n):
                    st2(z, i, c, F64(exp_shifted(ld2(z, i, c), M)) * k1 - ew * _weight(wch, c))
            else:
                for c in range(n):
                    mass = _mass_dist(wch, tq, i, c, eps, inv_n)
                    st2(z, i, c, F64(exp_shifted(ld2(z, i, c), M)) * k1 - alpha * mass)
            if in_block:
                tot = run[i, 1] + run[i, 2]
                inv = 1.0 / tot
                et = F64(exp_shifted(xt, M))
                pt = et * inv
                qt = run[i, 2] * inv if (et == 1.0 and run[i, 1] == 1.0) else 1.0 - pt
                wt = _weight(wch, t)
                mt = (1.0 - eps) * wt
                zc = coef[i, 2]
                gt = alpha * (-mt * qt + eps * inv_n * (coef[i, 3] * pt - wt)) + zc * pt
                st2(z, i, t, gt)
