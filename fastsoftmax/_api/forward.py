"""softmax, log_softmax, logsumexp, softmax_jacobian."""

from fractions import Fraction

import numpy as np

from .._kernels import forward as fk
from .._kernels import jacobian as jk
from .._validate import F32, F64, check_out, check_temperature
from ._common import (PARALLEL_MIN_ELEMENTS, UNUSED, Plan, _prod, cast, prepare, run,
                      scalar_result, target_for, thread_scratch, usable_as_is, user_axis)


def _temperature(temperature):
    if type(temperature) is float and temperature == 1.0:
        return 1.0
    return check_temperature(temperature)


def inverse_temperature(t, cdt):
    """1/t as a double-word (hi, lo) in the compute dtype: hi + lo = 1/t to ~2p bits."""
    typ = cdt.type
    if t == 1.0:
        return typ(1.0), typ(0.0)
    exact = Fraction(1) / Fraction(t)
    hi = typ(float(exact))
    lo = typ(float(exact - Fraction(float(hi))))
    return hi, lo


def _run_forward(plan, mask, th, tl, out_arr, lse_arr, mode):
    cdt = plan.work.dtype
    rows = plan.inner == 1
    xin = plan.kernel_view(plan.work)
    if out_arr is None:
        out_v = UNUSED[cdt]["rows" if rows else "lanes"]
    else:
        out_v = plan.kernel_view(out_arr)
    if lse_arr is None:
        lse_v = UNUSED[cdt]["rows_empty" if rows else "lanes_empty"]
    else:
        lse_v = lse_arr.reshape(plan.outer) if rows else lse_arr.reshape(plan.outer, plan.inner)
    if rows:
        run(fk.forward_rows, fk.forward_rows_parallel, plan.work.size,
            xin, mask, th, tl, out_v, lse_v, mode, scratch_words=fk.SCRATCH_WORDS)
    else:
        run(fk.forward_lanes, fk.forward_lanes_parallel, plan.work.size,
            xin, mask, th, tl, out_v, lse_v, mode, scratch_words=fk.SCRATCH_WORDS)


_NO_SCRATCH = np.empty(0)
_ONE = {F32: np.float32(1), F64: np.float64(1)}
_ZERO = {F32: np.float32(0), F64: np.float64(0)}


def _fast_out_ok(out, x):
    """out can be written directly: same dtype and shape, C-contiguous, writeable,
    and the input itself or not overlapping it."""
    return (usable_as_is(out, x.dtype, x.shape)
            and (out is x or not np.may_share_memory(out, x)))


def _softmax_like(x, axis, where, temperature, out, mode):
    a, cdt, rdt = prepare(x)
    ax = user_axis(axis, a.ndim)
    t = _temperature(temperature)
    plan = Plan(a, ax, cdt)
    mask = plan.mask_view(where, a.shape) if where is not None else None
    dst, finish = target_for(out, plan, a.shape, cdt, rdt)
    if plan.work.size:
        th, tl = inverse_temperature(t, cdt)
        _run_forward(plan, mask, th, tl, dst, None, mode)
    return scalar_result(finish(dst))


def _fast_axis(x, axis):
    """The class axis (made non-negative) when softmax/log_softmax can take the
    lean path, else -1: a C-contiguous, non-empty float32/float64 ndarray of at
    least one dimension and an int axis in range."""
    if (type(x) is np.ndarray and (x.dtype is F32 or x.dtype is F64) and x.size
            and x.flags.c_contiguous and type(axis) is int and -x.ndim <= axis < x.ndim):
        return axis % x.ndim
    return -1


def _fast_rows(x, axis):
    """_fast_axis's case with the class axis last of a 1-d or 2-d array (rows)."""
    ax = _fast_axis(x, axis)
    return ax >= 0 and ax == x.ndim - 1 and x.ndim <= 2


def _fast_forward(x, ax, mode, out):
    """softmax/log_softmax of a C-contiguous array without mask or temperature:
    the lean path (few Python objects, no allocation besides the result)."""
    y = np.empty(x.shape, x.dtype) if out is None else out
    if ax == x.ndim - 1:
        if x.ndim != 2:
            x, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, x.shape[-1])
        else:
            y2 = y
        if x.size < PARALLEL_MIN_ELEMENTS:
            # (tiny arrays run in scalar code without scratch: skip the lookup)
            fk.forward_rows_simple(x, y2, UNUSED[x.dtype]["rows_empty"], mode,
                                   _NO_SCRATCH if x.size <= fk.TINY
                                   else thread_scratch(fk.SCRATCH_WORDS))
        else:
            run(fk.forward_rows, fk.forward_rows_parallel, x.size, x, None, _ONE[x.dtype],
                _ZERO[x.dtype], y2, UNUSED[x.dtype]["rows_empty"], mode,
                scratch_words=fk.SCRATCH_WORDS)
    else:
        if x.ndim == 3 and ax == 1:
            xv, yv = x, y
        else:
            n = x.shape[ax]
            lanes = (x.size // (n * _prod(x.shape[ax + 1:])), n, -1)
            xv, yv = x.reshape(lanes), y.reshape(lanes)
        run(fk.forward_lanes, fk.forward_lanes_parallel, x.size, xv, None, _ONE[x.dtype],
            _ZERO[x.dtype], yv, UNUSED[x.dtype]["lanes_empty"], mode,
            scratch_words=fk.SCRATCH_WORDS)
    return y


def softmax(x, axis=-1, *, where=None, temperature=1.0, out=None):
    """Softmax along ``axis``: ``exp(x_i - m) / sum_j exp(x_j - m)``, ``m`` the maximum.

    Parameters
    ----------
    x : array_like
        Logits. float32 and float64 are computed in their own precision,
        float16 in float32 (returned as float16), bool and integers in
        float64.
    axis : int, default -1
        The class axis. A 0-d input is one row of one element.
    where : array_like of bool, optional
        Broadcastable to ``x``; entries where it is False act as ``-inf``
        (probability 0). A row with no entry left is all zeros.
    temperature : float, default 1.0
        Computes ``softmax(x / temperature)`` without forming ``x / temperature``.
    out : ndarray, optional
        Of the result's shape and dtype; may be ``x`` itself (in place).

    Returns
    -------
    ndarray (a NumPy scalar for 0-d input, as NumPy's ufuncs do), or ``out``.

    Notes
    -----
    Each entry of at least the smallest normal number is within 4 ULP of the
    exact softmax of the given values (SPEC §4): ``x - m`` is split exactly
    into a rounded part and its residual, and both enter the exponential.
    Rows with a NaN are all NaN; rows with ``k`` entries ``+inf`` give ``1/k``
    at them and 0 elsewhere; rows of only ``-inf`` are all 0.
    """
    if where is None and type(temperature) is float and temperature == 1.0:
        ax = _fast_axis(x, axis)
        if ax >= 0 and (out is None or _fast_out_ok(out, x)):
            return _fast_forward(x, ax, fk.MODE_SOFTMAX, out)
    return _softmax_like(x, axis, where, temperature, out, fk.MODE_SOFTMAX)


def log_softmax(x, axis=-1, *, where=None, temperature=1.0, out=None):
    """Log of the softmax along ``axis``: ``(x_i - m) - log(c + s)``.

    ``c`` is the number of entries equal to the maximum ``m`` and ``s`` the sum
    of the other entries' ``exp(x_j - m)``; for ``c = 1`` the log is
    ``log1p(s)``, so tiny values keep their digits:
    ``log_softmax([0, -30])[0]`` is ``-9.357622968840175e-14``, not 0.
    Masked-out entries (``where`` False) are ``-inf``. Parameters, dtypes and
    non-finite rows as for :func:`softmax` (a NaN row is NaN; with ``k``
    entries ``+inf`` they get ``-log k`` and the rest ``-inf``; a row of only
    ``-inf`` is all ``-inf``).
    """
    if where is None and type(temperature) is float and temperature == 1.0:
        ax = _fast_axis(x, axis)
        if ax >= 0 and (out is None or _fast_out_ok(out, x)):
            return _fast_forward(x, ax, fk.MODE_LOG_SOFTMAX, out)
    return _softmax_like(x, axis, where, temperature, out, fk.MODE_LOG_SOFTMAX)


def logsumexp(x, axis=-1, *, where=None, keepdims=False, out=None):
    """``log(sum(exp(x)))`` along ``axis``, computed as ``m + log(c + s)``.

    Returns the reduced array (keeping ``axis`` as length 1 when
    ``keepdims``); a 0-d result is a NumPy scalar, as with ``np.sum``. A zero
    length ``axis`` gives ``-inf`` (the log of an empty sum), as do rows that
    are all ``-inf`` or masked out. A NaN gives NaN; a ``+inf`` gives
    ``+inf``. Unlike SciPy, there is no ``b=`` weight and no ``return_sign``.

    Accuracy: within 4 ULP, except that a result near zero from a negative
    maximum (``m + log(c + s)`` with ``m`` close to ``-log(c + s)``) is as
    ill-conditioned as the sum itself: its relative error grows with
    ``|m| / |logsumexp|``. Float32 (and float16) rows are reduced with float32
    exponentials summed in float64; a row whose result is ill-conditioned
    (a negative maximum and ``|logsumexp| < 2 log(c + s)``, such as the
    logsumexp of log-probabilities) is computed again in float64, which
    absorbs cancellation up to a factor of about 2**28. Float64 inputs carry
    about ``|m| / |logsumexp|`` ULP there.
    """
    if (where is None and out is None and not keepdims and _fast_rows(x, axis)
            and x.size < PARALLEL_MIN_ELEMENTS):
        x2 = x if x.ndim == 2 else x.reshape(1, -1)
        lse = np.empty(x2.shape[0], x.dtype)
        fk.forward_rows_simple(x2, UNUSED[x.dtype]["rows"], lse, fk.MODE_LOGSUMEXP,
                               thread_scratch(fk.SCRATCH_WORDS))
        if x.dtype is F32:
            _lse_float64_rows(x2, None, lse)
        return lse if x.ndim == 2 else lse[0]
    a, cdt, rdt = prepare(x)
    ax = user_axis(axis, a.ndim)
    plan = Plan(a, ax, cdt)
    mask = plan.mask_view(where, a.shape) if where is not None else None
    user_batch = a.shape[:ax] + a.shape[ax + 1:]
    res_shape = a.shape[:ax] + (1,) + a.shape[ax + 1:] if keepdims else user_batch
    if a.ndim == 0:
        res_shape = (1,) if keepdims else ()
    if out is not None:
        check_out(out, res_shape, rdt)
    lse = np.empty(plan.batch_shape(), cdt)
    if plan.n == 0:
        lse.fill(-np.inf)
    elif lse.size:
        one, zero = inverse_temperature(1.0, cdt)
        _run_forward(plan, mask, one, zero, None, lse, fk.MODE_LOGSUMEXP)
        if cdt != F64:
            kv = plan.kernel_view(plan.work)
            if plan.inner == 1:
                _lse_float64_rows(kv, mask, lse.reshape(plan.outer))
            else:
                _lse_float64_lanes(kv, mask, lse.reshape(plan.outer, plan.inner))
    res = cast(plan.to_user(lse).reshape(res_shape), rdt)
    if out is not None:
        np.copyto(out, res)
        return out
    return scalar_result(res)


def _lse_float64_rows(x, mask, lse):
    """Recompute in float64 the rows (of an (R, C) float32 array) that the
    float32 pass flagged with NaN: ill-conditioned results, or NaN rows
    (which come out NaN again)."""
    bad = np.flatnonzero(np.isnan(lse))
    if bad.size:
        sub = np.ascontiguousarray(x[bad], F64)
        msub = None if mask is None else np.ascontiguousarray(mask[bad])
        lse[bad] = _lse64(sub, msub)


def _lse_float64_lanes(x, mask, lse):
    """_lse_float64_rows for an (O, C, K) array, lse of shape (O, K)."""
    o, k = np.nonzero(np.isnan(lse))
    if o.size:
        sub = np.ascontiguousarray(x[o, :, k], F64)
        msub = None if mask is None else np.ascontiguousarray(mask[o, :, k])
        lse[o, k] = _lse64(sub, msub)


def _lse64(rows, mask):
    """logsumexp of the rows of a C-contiguous (R, C) float64 array."""
    lse = np.empty(rows.shape[0], F64)
    run(fk.forward_rows, fk.forward_rows_parallel, rows.size, rows, mask, _ONE[F64],
        _ZERO[F64], UNUSED[F64]["rows"], lse, fk.MODE_LOGSUMEXP,
        scratch_words=fk.SCRATCH_WORDS)
    return lse


def softmax_jacobian(x, axis=-1):
    """The softmax Jacobian ``J[..., i, j] = p_i (delta_ij - p_j)``.

    The result has shape ``(*batch, C, C)`` where ``batch`` is ``x.shape``
    without ``axis``; a 0-d input gives shape ``(1, 1)`` (and the single entry
    0). The diagonal's ``1 - p_i`` is computed without cancellation (from the
    other entries' mass when ``p_i`` is the row's single maximum), so entries
    keep their relative accuracy when one class dominates.
    """
    a, cdt, rdt = prepare(x)
    ax = user_axis(axis, a.ndim)
    if a.ndim == 0:
        a = a.reshape(1)
    moved = np.moveaxis(a, ax, -1)
    batch = moved.shape[:-1]
    n = moved.shape[-1]
    nrows = int(np.prod(batch)) if batch else 1
    rows = np.ascontiguousarray(moved, dtype=cdt).reshape(nrows, n)
    jac = np.empty((nrows, n, n), cdt)
    if rows.size:
        run(jk.jacobian_rows, jk.jacobian_rows_parallel, jac.size, rows, jac)
    res = jac.reshape(batch + (n, n))
    return cast(res, rdt)
