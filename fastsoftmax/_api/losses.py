"""cross_entropy, cross_entropy_with_grad, nll_loss."""

import numpy as np

from .._kernels import losses as lk
from .._validate import (as_array, check_ignore_index, check_label_smoothing, check_out,
                         check_reduction, check_z_loss, normalize_axis)
from ._common import (NATIVE_FLOATS, UNUSED, Plan, accurate_sum, cast, prepare, run_blocks,
                      scalar_as, target_for, usable_as_is)

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_EMPTY_F64 = np.empty(0, np.float64)


class Targets:
    """Validated targets in the working layout of the logits' Plan."""

    __slots__ = ("kind", "idx", "dist", "count", "wsum", "n_samples")

    @classmethod
    def index(cls, idx, count, wsum):
        """Class-index targets ``idx`` (int64, checked by ``lk.scan_targets``, which
        gave ``count`` and ``wsum``: the samples not ignored and their weight)."""
        tg = cls()
        tg.kind = lk.KIND_INDEX
        tg.idx = idx
        tg.dist = None
        tg.count = count
        tg.wsum = wsum
        tg.n_samples = idx.size
        return tg


def _per_sample_shape(shape, axis, ndim):
    if ndim == 0:
        return ()
    return shape[:axis] + shape[axis + 1:]


def check_weight(weight, n):
    if weight is None:
        return _EMPTY_F64
    w = as_array(weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weight has dtype {w.dtype}; class weights must be real numbers")
    if w.shape != (n,):
        raise ValueError(f"weight has shape {w.shape}, but there are {n} classes: it must have "
                         f"shape ({n},)")
    return np.ascontiguousarray(w, dtype=np.float64)


def prepare_targets(target, logits_shape, axis, ndim, n, plan, cdt, weight, ignore_index):
    """Classify, validate and lay out targets (SPEC §3, §5)."""
    t = as_array(target)
    sample_shape = _per_sample_shape(logits_shape, axis, ndim)
    kind_ok = t.dtype.kind in "biuf"
    if not kind_ok:
        raise TypeError(f"target has dtype {t.dtype}; targets must be integer class indices or "
                        f"real-valued class distributions")
    is_dist_shape = t.shape == tuple(logits_shape)
    is_index_shape = t.shape == sample_shape
    if is_index_shape and (t.dtype.kind in "biu" or not is_dist_shape):
        if t.dtype.kind == "f":
            raise TypeError(f"target has dtype {t.dtype} and the per-sample shape {t.shape}: "
                            f"class indices must be integers (a float target needs the "
                            f"logits' shape {tuple(logits_shape)} to be a distribution)")
        idx = _index_targets(t, n, ignore_index, sample_shape)
        bad, cnt, wsum = lk.scan_targets(idx.reshape(-1), ignore_index, n, weight)
        if bad >= 0:
            pos = np.unravel_index(bad, sample_shape) if sample_shape else ()
            raise IndexError(f"target {int(idx.reshape(-1)[bad])} at position {tuple(int(p) for p in pos)} "
                             f"is out of range for {n} classes (valid: 0 to {n - 1}, or "
                             f"ignore_index={ignore_index})")
        return Targets.index(plan.batch_like(idx, np.int64), cnt, wsum)
    if is_dist_shape:
        if ignore_index != -100:
            raise ValueError(f"ignore_index={ignore_index} was given with distribution targets "
                             f"(shape {t.shape}); it applies to class-index targets only and must "
                             f"stay at its default")
        tg = Targets()
        tg.kind = lk.KIND_DIST
        tg.idx = None
        tg.dist = plan.like(t, cdt)
        tg.n_samples = int(np.prod(sample_shape)) if sample_shape else 1
        tg.count = tg.n_samples
        tg.wsum = 0.0
        return tg
    expected = (f"{sample_shape} (class indices) or {tuple(logits_shape)} "
                f"(class distributions)")
    raise ValueError(f"target has shape {t.shape}, but the logits have shape "
                     f"{tuple(logits_shape)} with the class axis {axis}: the target must have "
                     f"shape {expected}")


def _index_targets(t, n, ignore_index, sample_shape):
    """Integer targets as int64, with a clear IndexError for values int64 cannot hold."""
    if t.dtype.kind == "b":
        return t.astype(np.int64)
    if t.dtype.kind == "u" and t.dtype.itemsize == 8 and t.size:
        big = t > np.uint64(_INT64_MAX)
        if big.any():
            pos = np.unravel_index(int(np.argmax(big.reshape(-1))), sample_shape) if sample_shape else ()
            raise IndexError(f"target {int(t.reshape(-1)[np.argmax(big.reshape(-1))])} at position "
                             f"{tuple(int(p) for p in pos)} is out of range for {n} classes "
                             f"(valid: 0 to {n - 1}, or ignore_index={ignore_index})")
    return t.astype(np.int64, copy=False)


def _check_ignore(ignore_index):
    ig = check_ignore_index(ignore_index)
    if not _INT64_MIN <= ig <= _INT64_MAX:
        raise ValueError(f"ignore_index={ig} does not fit in int64")
    return ig


def _grad_output(grad_output, reduction, sample_shape):
    if reduction == "none":
        g = as_array(grad_output)
        if g.dtype.kind not in "biuf":
            raise TypeError(f"grad_output has dtype {g.dtype}")
        try:
            return np.broadcast_to(g, sample_shape)
        except ValueError:
            raise ValueError(f"grad_output has shape {g.shape}; with reduction='none' it must "
                             f"broadcast to the per-sample shape {sample_shape}") from None
    g = as_array(grad_output)
    if g.ndim != 0 or g.dtype.kind not in "biuf":
        raise ValueError(f"grad_output must be a real scalar with reduction={reduction!r}, "
                         f"got shape {g.shape} and dtype {g.dtype}")
    return float(g)


def _scales(reduction, tg, grad_output):
    """(alpha, beta): scales of the cross-entropy part and the z-loss part."""
    if reduction == "none":
        return 1.0, 1.0
    if reduction == "sum":
        return grad_output, grad_output
    if tg.kind == lk.KIND_INDEX:
        alpha = grad_output / tg.wsum if tg.wsum != 0.0 else 0.0
        beta = grad_output / tg.count if tg.count else 0.0
    else:
        alpha = beta = grad_output / tg.n_samples if tg.n_samples else 0.0
    return alpha, beta


def _reduce(reduction, tg, part):
    """The "mean" or "sum" from the kernels' per-block partial sums (fixed order)."""
    ce = accurate_sum(part[:, :2])
    zp = accurate_sum(part[:, 2:])
    if reduction == "sum":
        return ce + zp
    if tg.kind == lk.KIND_INDEX:
        ce = ce / tg.wsum if tg.wsum != 0.0 else 0.0
        zp = zp / tg.count if tg.count else 0.0
    else:
        ce = ce / tg.n_samples if tg.n_samples else 0.0
        zp = zp / tg.n_samples if tg.n_samples else 0.0
    return ce + zp


def _index_call(x, target, axis, weight, ignore_index, reduction):
    """``(dtype, N, C)`` when a loss call is the common one, else None.

    The common call: (N, C) C-contiguous, writeable float32/float64 scores
    with the class axis last, (N,) C-contiguous int64 class indices, no
    weights, the default ``ignore_index`` and a "mean" or "sum" reduction.
    Such calls skip the general path's plumbing (``_ce_fast``,
    ``_nll_fast``) and give the same kernels the same arguments, so their
    results are bit-identical (tests/test_losses.py checks it).
    """
    # types first: an == on an array argument would not give a plain bool
    if not (type(x) is np.ndarray and type(target) is np.ndarray and type(axis) is int
            and type(ignore_index) is int and type(reduction) is str and weight is None
            and x.ndim == 2 and (axis == -1 or axis == 1) and ignore_index == -100
            and (reduction == "mean" or reduction == "sum")):
        return None
    dt = x.dtype
    R, n = x.shape
    if (dt not in NATIVE_FLOATS or not usable_as_is(x, dt, x.shape)
            or not usable_as_is(target, np.int64, (R,)) or R == 0 or n == 0):
        return None
    return dt, R, n


def _ce_fast(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
             want_grad, grad_output, out, inplace):
    """The common call (``_index_call``) with label_smoothing and z_loss at 0,
    without the general path's plumbing; None otherwise.

    Its Python overhead was 25 of the 30 us a (4, 16) loss took; anything
    else, and every error, takes the general path. The gradient goes to a
    fresh array, or to ``out`` / the logits (``inplace``) when the general
    path would write there directly too: ``out`` of the logits' dtype and
    shape, C-contiguous and writeable, the logits themselves or apart from
    them; neither overlapping the targets.
    """
    if not (type(label_smoothing) in (float, int) and type(z_loss) in (float, int)
            and (not want_grad or type(grad_output) in (float, int))
            and (inplace is False or (inplace is True and out is None))
            and label_smoothing == 0.0 and z_loss == 0.0):
        return None
    common = _index_call(logits, target, axis, weight, ignore_index, reduction)
    if common is None:
        return None
    dt, R, n = common
    grad = UNUSED[dt]["rows"]
    if want_grad:
        grad = _fast_grad_target(logits, target, out, inplace, dt, R, n)
        if grad is None:
            return None
    bad, cnt, wsum_t = lk.scan_targets(target, -100, n, _EMPTY_F64)
    if bad >= 0:
        return None      # the general path raises the IndexError
    tg = Targets.index(target, cnt, wsum_t)
    alpha, beta = _scales(reduction, tg, float(grad_output) if want_grad else 1.0)
    part = np.zeros((-(-R // lk.block_rows(n)), 4))
    # the options as the general path passes them (a -0.0 stays -0.0)
    run_blocks(lk.ce_rows, lk.ce_rows_parallel, logits.size, logits, lk.KIND_INDEX, target,
               UNUSED[dt]["rows"], _EMPTY_F64, float(n), ignore_index, float(label_smoothing),
               float(z_loss), want_grad, grad, _EMPTY_F64, alpha, beta, _EMPTY_F64, part)
    loss = scalar_as(_reduce(reduction, tg, part), dt)
    return (loss, grad) if want_grad else loss


def _fast_grad_target(logits, target, out, inplace, dt, R, n):
    """Where ``_ce_fast`` writes the gradient, or None for the general path."""
    if out is None and not inplace:
        return np.empty((R, n), dt)
    if np.may_share_memory(target, logits):
        return None
    if inplace:
        return logits            # writeable and C-contiguous (_index_call)
    if not usable_as_is(out, dt, (R, n)) or np.may_share_memory(out, target):
        return None
    if out.ctypes.data == logits.ctypes.data or not np.may_share_memory(out, logits):
        return out               # the logits themselves (both C-contiguous), or apart
    return None


def _ce(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
        want_grad, grad_output=1.0, out=None, inplace=False):
    res = _ce_fast(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                   z_loss, want_grad, grad_output, out, inplace)
    if res is not None:
        return res
    check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    z = check_z_loss(z_loss)
    ig = _check_ignore(ignore_index)
    if out is not None and inplace:
        raise ValueError("out= and inplace=True cannot be combined: inplace writes the gradient "
                         "into the logits")
    a, cdt, rdt = prepare(logits, "logits")
    ax = normalize_axis(axis, a.ndim)
    n = a.shape[ax] if a.ndim else 1
    if n == 0:
        raise ValueError(f"logits have shape {a.shape}: the class axis {ax} has zero classes, "
                         f"so there is no cross-entropy")
    if inplace:
        _check_inplace(logits, cdt)
    w = check_weight(weight, n)
    plan = Plan(a, ax, cdt)
    tg = prepare_targets(target, a.shape, ax, a.ndim, n, plan, cdt, w, ig)
    sample_shape = _per_sample_shape(a.shape, ax, a.ndim)
    wsum = accurate_sum(w) if w.size else float(n)
    go = _grad_output(grad_output, reduction, sample_shape) if want_grad else 1.0
    alpha, beta = _scales(reduction, tg, go if reduction != "none" else 1.0)
    rows = plan.inner == 1
    # outputs
    if reduction == "none":
        loss_rows = np.empty(plan.outer if rows else (plan.outer, plan.inner), np.float64)
    else:
        loss_rows = _EMPTY_F64 if rows else np.empty((0, 0))
    # one row of partial sums per block of samples (written even for "none")
    nblk = (-(-plan.outer // lk.block_rows(plan.n)) if rows
            else plan.outer * -(-plan.inner // lk.KT))
    part = np.zeros((max(nblk, 1), 4))
    gscale = _EMPTY_F64 if rows else np.empty((0, 0))
    if want_grad and reduction == "none":
        gscale = plan.batch_like(go, np.float64)
    if want_grad:
        if inplace:
            dst = plan.work
            finish = lambda arr: logits  # noqa: E731
        else:
            others = (tg.idx,) if tg.idx is not None else (tg.dist,)
            if out is not None and isinstance(out, np.ndarray) and np.may_share_memory(
                    out, as_array(target)):
                check_out(out, a.shape, rdt)
                dst, finish = _fresh_then_copy(plan, a.shape, cdt, rdt, out)
            else:
                dst, finish = target_for(out, plan, a.shape, cdt, rdt, others=others)
        grad_v = plan.kernel_view(dst)
    else:
        grad_v = np.empty((1, 1) if rows else (1, 1, 1), cdt)
        finish = None
    idx = tg.idx if tg.idx is not None else (np.empty(1, np.int64) if rows
                                             else np.empty((1, 1), np.int64))
    dist = (plan.kernel_view(tg.dist) if tg.dist is not None
            else np.empty((1, 1) if rows else (1, 1, 1), cdt))
    if plan.work.size:
        serial, parallel = ((lk.ce_rows, lk.ce_rows_parallel) if rows
                            else (lk.ce_lanes, lk.ce_lanes_parallel))
        run_blocks(serial, parallel, plan.work.size, plan.kernel_view(plan.work), tg.kind, idx,
                   dist, w, wsum, ig, eps, z, want_grad, grad_v, gscale, alpha, beta, loss_rows,
                   part)
    # the loss value
    if reduction == "none":
        per = loss_rows.reshape(plan.batch_shape())
        per = plan.to_user(per)
        loss = cast(per.reshape(sample_shape), rdt)
    else:
        loss = scalar_as(_reduce(reduction, tg, part), rdt)
    if not want_grad:
        return loss
    return loss, finish(dst)


def _fresh_then_copy(plan, shape, cdt, rdt, out):
    def finish(arr):
        res = plan.to_user(arr)
        np.copyto(out, cast(res.reshape(shape), out.dtype))
        return out
    return np.empty(plan.work.shape, cdt), finish


def _check_inplace(logits, cdt):
    if not isinstance(logits, np.ndarray):
        raise ValueError(f"inplace=True needs the logits as a numpy.ndarray, got "
                         f"{type(logits).__name__}")
    if logits.dtype != cdt or not logits.dtype.isnative:
        raise ValueError(f"inplace=True needs float32 or float64 logits in native byte order "
                         f"(the gradient is written over them), got {logits.dtype}")
    if not logits.flags.writeable:
        raise ValueError("inplace=True needs writeable logits; these are read-only")
    if not logits.flags.c_contiguous:
        raise ValueError("inplace=True needs C-contiguous logits (any other layout would need a "
                         "copy of the logits' size; use out= instead)")


_CE_DOC_OPTIONS = """
    logits : array_like
        Unnormalised scores; the class axis is ``axis``. float32/float64 are
        computed in float64 and returned in their dtype (float16 as float16;
        integers and bools as float64).
    target : array_like
        Class indices (an integer or bool array of the per-sample shape, the
        logits' shape without ``axis``; values in ``[0, C)`` or
        ``ignore_index``), or class distributions (an array of the logits'
        shape: probabilities, or one-hot integers/bools).
    axis : int, default -1
        The class axis (PyTorch's (N, C, d1, ...) layout is ``axis=1``).
    weight : array_like of shape (C,), optional
        Class weights, PyTorch's semantics.
    ignore_index : int, default -100
        Index targets equal to it contribute nothing (zero gradient). Must stay
        at its default with distribution targets.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the sum of the targets' weights for index targets
        (by the number of samples for distribution targets), as PyTorch.
    label_smoothing : float in [0, 1]
        Mixes the uniform distribution into the target, as PyTorch.
    z_loss : float >= 0
        Adds ``z_loss * logsumexp(row)**2`` per sample (PaLM's auxiliary loss),
        unweighted; under "mean" divided by the number of non-ignored samples.
"""


def cross_entropy(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0, z_loss=0.0):
    """Cross-entropy of softmax(logits) against ``target``, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------""" + _CE_DOC_OPTIONS + """
    Returns
    -------
    A NumPy scalar of the result dtype for "mean"/"sum", an array of the
    per-sample shape for "none".

    Notes
    -----
    Per sample, ``-log p_t = (m - x_t) + log1p(s)`` (``m`` the maximum, ``s``
    the other entries' ``exp(x - m)``), so tiny losses keep their digits:
    ``cross_entropy([[0, -30, -30]], [0])`` is ``1.87e-13`` (PyTorch: 0.0).
    Deliberate differences from PyTorch: a "mean" with no contributing
    sample (empty batch, every target ignored, or zero total weight) is 0.0,
    not NaN; a term whose target mass is exactly 0 contributes 0 even where
    the log-probability is ``-inf``. Reductions are bit-identical whatever
    the thread count. Only O(N) memory is allocated, never O(N*C).
    """
    return _ce(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
               False)


def cross_entropy_with_grad(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, z_loss=0.0, grad_output=1.0,
                            out=None, inplace=False):
    """The cross-entropy and its gradient with respect to the logits, in one pass.

    Reads each row of logits once and writes its gradient once (PyTorch's
    forward + backward materialise the log-probabilities and two more arrays
    of the logits' size).

    Parameters
    ----------""" + _CE_DOC_OPTIONS + """
    grad_output : float or array_like, default 1.0
        The upstream gradient: a scalar for "mean"/"sum", an array of the
        per-sample shape (or broadcastable to it) for "none". The returned
        gradient is that of the returned loss times ``grad_output``.
    out : ndarray, optional
        Receives the gradient (the logits' shape and result dtype); may be the
        logits array itself.
    inplace : bool, default False
        Write the gradient over the logits (which must then be a writeable,
        C-contiguous float32/float64 ndarray) and allocate nothing of their
        size. Cannot be combined with ``out``.

    Returns
    -------
    (loss, grad) with ``loss`` as for :func:`cross_entropy`.

    Notes
    -----
    The target entry's ``p_t - 1`` is computed as ``-(sum of the other
    entries)/(sum of all)``, so the gradient of a confident, correct
    prediction keeps its relative accuracy. All validation happens before any
    computation: after an error the logits (also with ``inplace``) and any
    ``out`` are untouched.
    """
    return _ce(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
               True, grad_output=grad_output, out=out, inplace=inplace)


def _nll_fast(log_probs, target, reduction, dt, R, n):
    """nll_loss for the common call (``_index_call``); None for a bad target (the
    general path raises)."""
    bad, cnt, wsum = lk.scan_targets(target, -100, n, _EMPTY_F64)
    if bad >= 0:
        return None
    loss_rows = np.empty(R, np.float64)
    lk.nll_index(log_probs, target, _EMPTY_F64, -100, loss_rows)
    total = accurate_sum(loss_rows)
    if reduction == "mean":
        total = total / wsum if wsum else 0.0
    return scalar_as(total, dt)


def nll_loss(log_probs, target, axis=-1, *, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of ``log_probs`` (e.g. a log_softmax output), as ``F.nll_loss``.

    Index targets as for :func:`cross_entropy` (per sample ``-W_t
    log_probs[t]``; "mean" divides by the sum of the targets' weights). As an
    extension, distribution targets of the log-probabilities' shape give
    ``-sum_c W_c q_c log_probs[c]`` ("mean" over samples), so that
    ``cross_entropy(x, q) == nll_loss(log_softmax(x), q)``. A zero-mass term
    contributes 0 even where the log-probability is ``-inf``; a "mean" with
    no contributing sample is 0.0. Only the targets' entries are read for
    index targets.
    """
    common = _index_call(log_probs, target, axis, weight, ignore_index, reduction)
    if common is not None:
        res = _nll_fast(log_probs, target, reduction, *common)
        if res is not None:
            return res
    check_reduction(reduction)
    ig = _check_ignore(ignore_index)
    a, cdt, rdt = prepare(log_probs, "log_probs")
    ax = normalize_axis(axis, a.ndim)
    n = a.shape[ax] if a.ndim else 1
    if n == 0:
        raise ValueError(f"log_probs have shape {a.shape}: the class axis {ax} has zero classes")
    w = check_weight(weight, n)
    plan = Plan(a, ax, cdt)
    tg = prepare_targets(target, a.shape, ax, a.ndim, n, plan, cdt, w, ig)
    sample_shape = _per_sample_shape(a.shape, ax, a.ndim)
    rows = plan.inner == 1
    loss_rows = np.empty(plan.batch_shape(), np.float64)
    if plan.work.size:
        lp = plan.kernel_view(plan.work)
        if tg.kind == lk.KIND_INDEX:
            if rows:
                lk.nll_index(lp, tg.idx, w, ig, loss_rows.reshape(plan.outer))
            else:
                lk.nll_index_lanes(lp, tg.idx, w, ig, loss_rows.reshape(plan.outer, plan.inner))
        else:
            q = plan.kernel_view(tg.dist)
            if not rows:   # rare: bring the class axis last for the row kernel
                lp = np.ascontiguousarray(np.moveaxis(lp, 1, 2)).reshape(-1, n)
                q = np.ascontiguousarray(np.moveaxis(q, 1, 2)).reshape(-1, n)
            lk.nll_dist(lp, q, w, loss_rows.reshape(-1))
    if reduction == "none":
        return cast(plan.to_user(loss_rows).reshape(sample_shape), rdt)
    total = accurate_sum(loss_rows) if loss_rows.size else 0.0
    if reduction == "mean":
        denom = tg.wsum if tg.kind == lk.KIND_INDEX else tg.n_samples
        total = total / denom if denom else 0.0
    return scalar_as(total, rdt)
