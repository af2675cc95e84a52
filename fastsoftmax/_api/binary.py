"""binary_cross_entropy_with_logits, binary_cross_entropy_with_grad."""

import numpy as np

from .._kernels import elementwise as ek
from .._validate import as_array, check_out, check_reduction
from ._common import UNUSED, Plan, accurate_sum, cast, prepare, run_blocks, scalar_as, target_for


def _broadcast_param(value, name, shape, plan, cdt):
    if value is None:
        return UNUSED[cdt]["rows_empty"]
    v = as_array(value)
    if v.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {v.dtype}; it must be real-valued")
    try:
        b = np.broadcast_to(v, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {v.shape}, which does not broadcast to the logits' "
                         f"shape {tuple(shape)}") from None
    return plan.like(b, cdt).reshape(-1)


def _bce(logits, target, weight, pos_weight, reduction, want_grad, grad_output=1.0, out=None,
         inplace=False):
    check_reduction(reduction)
    if out is not None and inplace:
        raise ValueError("out= and inplace=True cannot be combined: inplace writes the gradient "
                         "into the logits")
    a, cdt, rdt = prepare(logits, "logits")
    t = as_array(target)
    if t.dtype.kind not in "biuf":
        raise TypeError(f"target has dtype {t.dtype}; binary targets must be real numbers")
    if t.shape != a.shape:
        raise ValueError(f"target has shape {t.shape}, but the logits have shape {a.shape}; "
                         f"they must match")
    if inplace:
        from .losses import _check_inplace
        _check_inplace(logits, cdt)
    plan = Plan(a, max(a.ndim - 1, 0), cdt, elementwise=True)
    tw = plan.like(t, cdt).reshape(-1)
    w = _broadcast_param(weight, "weight", a.shape, plan, cdt)
    pw = _broadcast_param(pos_weight, "pos_weight", a.shape, plan, cdt)
    size = plan.work.size
    if reduction == "none":
        loss = np.empty(size, np.float64)
        part = np.empty((1, 2))
    else:
        loss = np.empty(0, np.float64)
        part = np.zeros((max(-(-size // ek.BLOCK), 1), 2))
    gscale = np.empty(0, np.float64)
    alpha = 1.0
    if want_grad:
        go = as_array(grad_output)
        if go.dtype.kind not in "biuf":
            raise TypeError(f"grad_output has dtype {go.dtype}")
        if reduction == "none":
            try:
                gscale = plan.like(np.broadcast_to(go, a.shape), np.float64).reshape(-1)
            except ValueError:
                raise ValueError(f"grad_output has shape {go.shape}; with reduction='none' it "
                                 f"must broadcast to the logits' shape {a.shape}") from None
        else:
            if go.ndim:
                raise ValueError(f"grad_output must be a scalar with reduction={reduction!r}, "
                                 f"got shape {go.shape}")
            alpha = float(go) / size if (reduction == "mean" and size) else float(go)
            if reduction == "mean" and not size:
                alpha = 0.0
        if inplace:
            dst = plan.work
            finish = lambda arr: logits  # noqa: E731
        else:
            if out is not None:
                check_out(out, a.shape, rdt)
            dst, finish = target_for(out, plan, a.shape, cdt, rdt, others=(tw, w, pw))
        grad = dst.reshape(-1)
    else:
        grad = UNUSED[cdt]["rows_empty"]
    if size:
        run_blocks(ek.bce_flat, ek.bce_flat_parallel, size, plan.work.reshape(-1), tw, w, pw,
                   want_grad, grad, gscale, alpha, loss, part)
    if reduction == "none":
        value = plan.to_user(loss.reshape(plan.work.shape))
        value = cast(value.reshape(a.shape), rdt)
    else:
        total = accurate_sum(part) if size else 0.0
        if reduction == "mean":
            total = total / size if size else 0.0
        value = scalar_as(total, rdt)
    if not want_grad:
        return value
    return value, finish(dst)


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean"):
    """Binary cross-entropy of sigmoid(logits) against ``target``, as PyTorch's.

    ``target`` has the logits' shape (probabilities; integers and bools are
    accepted); ``weight`` and ``pos_weight`` broadcast against the logits
    (``pos_weight`` of shape ``(C,)`` weighs the positive term per class of
    the last axis). Per element::

        loss = w * ((1 - t) x + (1 + (pos_weight - 1) t) log(1 + exp(-x)))

    evaluated without overflow and without cancellation for targets in
    [0, 1] (a loss of 1e-20 keeps its digits). "mean" averages over every
    element. Returns a NumPy scalar ("mean"/"sum") or an array ("none").
    """
    return _bce(logits, target, weight, pos_weight, reduction, False)


def binary_cross_entropy_with_grad(logits, target, *, weight=None, pos_weight=None,
                                   reduction="mean", grad_output=1.0, out=None, inplace=False):
    """(loss, dloss/dlogits * grad_output) of :func:`binary_cross_entropy_with_logits`.

    The gradient is ``w * ((1 - t) - (1 + (pos_weight - 1) t) sigmoid(-x))``,
    divided by the number of elements for "mean". ``grad_output``, ``out`` and
    ``inplace`` as for :func:`cross_entropy_with_grad`.
    """
    return _bce(logits, target, weight, pos_weight, reduction, True, grad_output, out, inplace)
