"""Plain NumPy float64 versions of every in-memory function: the tests' oracle.

Written to be read, not to be fast: each function is the textbook formula
(the max-shifted softmax of the source notes, ``log_softmax = (x - m) -
log(sum)``, ``p - onehot`` for the fused gradient), with the edge cases of
SPEC §2/§4 spelled out. Everything is computed and returned in float64
(results of 0-d inputs as NumPy scalars). Argument checking is minimal: the
fastsoftmax functions own the validation. The benchmarks use these as the
"plain NumPy" baseline.

The log-sum-exp is ``m + log(c + s)`` with ``c`` the count of maxima and
``s`` the sum of the other ``exp(x - m)``, ``log1p(s)`` for ``c = 1``
(Blanchard, Higham & Higham 2021), so the oracle itself does not lose tiny
log-probabilities.
"""

import numpy as np

__all__ = [
    "softmax", "log_softmax", "logsumexp", "softmax_jacobian", "sigmoid", "log_sigmoid",
    "softmax_backward", "log_softmax_backward", "sigmoid_backward", "cross_entropy",
    "nll_loss", "cross_entropy_with_grad", "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_grad", "linear_cross_entropy",
]


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _scalar(a):
    return a[()] if isinstance(a, np.ndarray) and a.ndim == 0 else a


def _prep(x, axis, where=None, temperature=1.0):
    """float64 logits / T with masked entries -inf, class axis moved last."""
    z = _f64(x)
    scalar = z.ndim == 0
    if scalar:
        z = z.reshape(1)
        axis = 0
    z = z / float(temperature)
    if where is not None:
        z = np.where(np.broadcast_to(np.asarray(where, bool), z.shape), z, -np.inf)
    return np.moveaxis(z, axis, -1), axis, scalar


def _lse_parts(z):
    """(m, c, s, special) along the last axis; special rows are non-finite."""
    with np.errstate(all="ignore"):
        m = np.max(z, axis=-1, keepdims=True) if z.shape[-1] else np.full(z.shape[:-1] + (1,), -np.inf)
        finite = np.isfinite(m)
        msafe = np.where(finite, m, 0.0)
        e = np.exp(z - msafe)
        is_max = (z == m) & finite
        c = is_max.sum(axis=-1, keepdims=True)
        s = np.where(is_max, 0.0, e).sum(axis=-1, keepdims=True)
        has_nan = np.isnan(z).any(axis=-1, keepdims=True)
    return m, c, s, e, finite, has_nan


def _log_c_s(c, s):
    with np.errstate(all="ignore"):
        return np.where(c == 1, np.log1p(s), np.log(np.maximum(c, 1) + s))


def softmax(x, axis=-1, *, where=None, temperature=1.0, out=None):
    z, ax, scalar = _prep(x, axis, where, temperature)
    m, c, s, e, finite, has_nan = _lse_parts(z)
    with np.errstate(all="ignore"):
        p = e / (c + s)
        npos = (z == np.inf).sum(axis=-1, keepdims=True)
        p = np.where(finite, p, np.where(npos > 0, (z == np.inf) / np.maximum(npos, 1), 0.0))
        p = np.where(has_nan, np.nan, p)
    res = np.moveaxis(p, -1, ax)
    return _finish(res, scalar, out)


def log_softmax(x, axis=-1, *, where=None, temperature=1.0, out=None):
    z, ax, scalar = _prep(x, axis, where, temperature)
    m, c, s, e, finite, has_nan = _lse_parts(z)
    with np.errstate(all="ignore"):
        lp = (z - m) - _log_c_s(c, s)
        npos = (z == np.inf).sum(axis=-1, keepdims=True)
        special = np.where(npos > 0, np.where(z == np.inf, -np.log(np.maximum(npos, 1)), -np.inf),
                           -np.inf)
        lp = np.where(finite, lp, special)
        lp = np.where(has_nan, np.nan, lp)
    return _finish(np.moveaxis(lp, -1, ax), scalar, out)


def logsumexp(x, axis=-1, *, where=None, keepdims=False, out=None):
    z, ax, scalar = _prep(x, axis, where)
    m, c, s, e, finite, has_nan = _lse_parts(z)
    with np.errstate(all="ignore"):
        lse = np.where(finite, m + _log_c_s(c, s), m)
        lse = np.where(has_nan, np.nan, lse)
    lse = lse[..., 0]
    if keepdims:
        lse = np.expand_dims(lse, ax) if not scalar else lse.reshape(1)
    elif scalar:
        lse = lse.reshape(())
    if out is not None:
        out[...] = lse
        return out
    return _scalar(lse)


def softmax_jacobian(x, axis=-1):
    z, ax, scalar = _prep(x, axis)
    p = softmax(z, axis=-1)
    eye = np.eye(p.shape[-1])
    return p[..., :, None] * (eye - p[..., None, :])


def sigmoid(x, *, out=None):
    z = _f64(x)
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(z))
        r = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return _finish(r, False, out)


def log_sigmoid(x, *, out=None):
    z = _f64(x)
    return _finish(-np.logaddexp(0.0, -z), False, out)


def softmax_backward(grad, y, axis=-1, *, out=None):
    g, yy = _f64(grad), _f64(y)
    if yy.ndim == 0:
        return _finish(yy * (g - g * yy), False, out)
    return _finish(yy * (g - np.sum(g * yy, axis=axis, keepdims=True)), False, out)


def log_softmax_backward(grad, y, axis=-1, *, out=None):
    g, yy = _f64(grad), _f64(y)
    with np.errstate(all="ignore"):
        if yy.ndim == 0:
            return _finish(g - np.exp(yy) * g, False, out)
        return _finish(g - np.exp(yy) * np.sum(g, axis=axis, keepdims=True), False, out)


def sigmoid_backward(grad, y, *, out=None):
    g, yy = _f64(grad), _f64(y)
    return _finish(g * yy * (1.0 - yy), False, out)


def _finish(res, scalar, out):
    if scalar:
        res = res.reshape(())
    if out is not None:
        out[...] = res
        return out
    return _scalar(res)


# ---------------------------------------------------------------- losses
def _targets(logits_shape, axis, target, ignore_index, n):
    """(mass, per-sample weight-of-target, valid mask, is_index) with the class axis last."""
    t = np.asarray(target)
    moved_shape = tuple(np.delete(np.array(logits_shape), axis)) if len(logits_shape) else ()
    if t.shape == tuple(logits_shape) and not (t.dtype.kind in "biu" and t.shape == moved_shape):
        q = np.moveaxis(_f64(t).reshape(logits_shape if logits_shape else (1,)),
                        axis if logits_shape else 0, -1)
        return q, None, np.ones(q.shape[:-1], bool), False
    ti = t.astype(np.int64).reshape(moved_shape)
    valid = ti != ignore_index
    onehot = np.zeros(moved_shape + (n,))
    np.put_along_axis(onehot, np.where(valid, ti, 0)[..., None], 1.0, axis=-1)
    onehot *= valid[..., None]
    return onehot, ti, valid, True


def _ce_parts(logits, target, axis, weight, ignore_index, label_smoothing, z_loss):
    """Per-sample (ce, z term), mass (class axis last), and p, lse, valid, is_index."""
    x = _f64(logits)
    if x.ndim == 0:
        x = x.reshape(1)
        axis = 0
        shape = ()
    else:
        shape = x.shape
    z = np.moveaxis(x, axis, -1)
    n = z.shape[-1]
    q, ti, valid, is_index = _targets(shape, axis if shape else 0, target, ignore_index, n)
    w = np.ones(n) if weight is None else _f64(weight)
    eps = float(label_smoothing)
    if is_index:
        mass = ((1.0 - eps) * q + eps / n * valid[..., None]) * w
    else:
        mass = ((1.0 - eps) * q + eps / n) * w
    lp = log_softmax(z, axis=-1)
    lse = logsumexp(z, axis=-1)
    with np.errstate(all="ignore"):
        terms = np.where(mass == 0.0, 0.0, -mass * lp)
        ce = terms.sum(axis=-1)
        zt = (np.where(valid, float(z_loss) * lse * lse, 0.0) if z_loss
              else np.zeros(np.shape(lse)))
    p = softmax(z, axis=-1)
    return ce, zt, mass, p, lse, valid, is_index, w, ti


def _reduce(ce, zt, reduction, is_index, valid, w, ti):
    if reduction == "none":
        return ce + zt, None, None
    if reduction == "sum":
        return ce.sum() + zt.sum(), 1.0, 1.0
    nvalid = int(valid.sum())
    if is_index:
        wsum = float(np.sum(np.where(valid, w[np.where(valid, ti, 0)], 0.0)))
    else:
        wsum = float(valid.size)
    ce_mean = ce.sum() / wsum if wsum else 0.0
    z_mean = zt.sum() / nvalid if nvalid else 0.0
    return ce_mean + z_mean, (1.0 / wsum if wsum else 0.0), (1.0 / nvalid if nvalid else 0.0)


def cross_entropy(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0, z_loss=0.0):
    ce, zt, mass, p, lse, valid, is_index, w, ti = _ce_parts(
        logits, target, axis, weight, ignore_index, label_smoothing, z_loss)
    loss, _, _ = _reduce(ce, zt, reduction, is_index, valid, w, ti)
    return _scalar(np.asarray(loss))


def cross_entropy_with_grad(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, z_loss=0.0, grad_output=1.0,
                            out=None, inplace=False):
    ce, zt, mass, p, lse, valid, is_index, w, ti = _ce_parts(
        logits, target, axis, weight, ignore_index, label_smoothing, z_loss)
    loss, a, b = _reduce(ce, zt, reduction, is_index, valid, w, ti)
    go = _f64(grad_output)
    if reduction == "none":
        a = b = go[..., None] if go.ndim else go
    else:
        a, b = a * go, b * go
    with np.errstate(all="ignore"):
        msum = mass.sum(axis=-1, keepdims=True)
        g = a * (msum * p - mass)
        if z_loss:   # d(z lse^2)/dx_j = 2 z lse p_j, and 0 where p_j = 0 (also for lse = +-inf)
            zg = 2.0 * b * float(z_loss) * lse[..., None] * p * valid[..., None]
            g = g + np.where(p == 0.0, 0.0, zg)
        g = np.where(valid[..., None], g, 0.0)
    x = np.asarray(logits)
    if x.ndim == 0:
        g = g.reshape(())
    else:
        g = np.moveaxis(g, -1, axis)
    return _scalar(np.asarray(loss)), g


def nll_loss(log_probs, target, axis=-1, *, weight=None, ignore_index=-100, reduction="mean"):
    x = _f64(log_probs)
    shape = x.shape
    if x.ndim == 0:
        x = x.reshape(1)
        axis = 0
    z = np.moveaxis(x, axis, -1)
    n = z.shape[-1]
    q, ti, valid, is_index = _targets(shape, axis, target, ignore_index, n)
    w = np.ones(n) if weight is None else _f64(weight)
    mass = q * w
    with np.errstate(all="ignore"):
        loss = np.where(mass == 0.0, 0.0, -mass * z).sum(axis=-1)
    res, _, _ = _reduce(loss, np.zeros_like(loss), reduction, is_index, valid, w, ti)
    return _scalar(np.asarray(res))


def _bce_terms(logits, target, weight, pos_weight):
    x, t = _f64(logits), _f64(target)
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    lw = 1.0 + (pw - 1.0) * t
    with np.errstate(all="ignore"):
        # PyTorch's (1 - t) x + lw softplus(-x), rewritten for x < 0 with
        # softplus(-x) = softplus(x) - x so that no term cancels
        l1 = np.log1p(np.exp(-np.abs(x)))        # softplus(-|x|)
        loss = np.where(x >= 0, (1.0 - t) * x + lw * l1, lw * l1 - pw * t * x)
        grad = (1.0 - t) - lw * sigmoid(-x)
    if weight is not None:
        wb = np.broadcast_to(_f64(weight), loss.shape)
        loss = np.where(wb == 0.0, 0.0, loss * wb)
        grad = grad * wb
    return loss, grad


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean"):
    loss, _ = _bce_terms(logits, target, weight, pos_weight)
    if reduction == "none":
        return _scalar(loss)
    if reduction == "sum":
        return np.float64(loss.sum())
    return np.float64(loss.mean()) if loss.size else np.float64(0.0)


def binary_cross_entropy_with_grad(logits, target, *, weight=None, pos_weight=None,
                                   reduction="mean", grad_output=1.0, out=None, inplace=False):
    loss, grad = _bce_terms(logits, target, weight, pos_weight)
    go = _f64(grad_output)
    if reduction == "none":
        return _scalar(loss), grad * go
    if reduction == "sum":
        return np.float64(loss.sum()), grad * go
    n = loss.size
    return (np.float64(loss.mean()) if n else np.float64(0.0)), (grad * go / n if n else grad)


def linear_cross_entropy(hidden, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                         chunk_size=None):
    """The unfused computation: materialise the logits, then the fused loss gradient."""
    h, wl = _f64(hidden), _f64(linear_weight)
    logits = h @ wl.T
    if linear_bias is not None:
        logits = logits + _f64(linear_bias)
    loss, g = cross_entropy_with_grad(logits, target, weight=weight, ignore_index=ignore_index,
                                      reduction=reduction, label_smoothing=label_smoothing,
                                      z_loss=z_loss)
    gb = g.sum(axis=0) if linear_bias is not None else None
    return loss, (g @ wl, g.T @ h, gb)
