"""linear_cross_entropy: the loss and gradients of a linear layer + cross-entropy, chunked."""

import numpy as np

from .._kernels import losses as lk
from .._validate import (as_array, check_label_smoothing, check_reduction, check_z_loss,
                         float_policy)
from ._common import accurate_sum, cast, run_blocks, scalar_as
from .losses import _check_ignore, check_weight

# default block: this many logits at a time (64 MiB of float32); fewer, larger blocks
# keep the matmuls efficient (at 8192 x 256 x 32000, 8M: 1.40x the unfused time, 16M: 1.25x)
_BLOCK_ELEMENTS = 1 << 24
# the gradient matmuls' products: at most this many elements (or one block row of hidden)
_TMP_ELEMENTS = 1 << 22
_MAX_SINGLE_VOCAB = 1 << 17


def _chunks(chunk_size, n, v):
    """(rows per block, vocabulary entries per block)."""
    if chunk_size is None:
        vc = v if v <= _MAX_SINGLE_VOCAB else 1 << 15
        rc = max(16, _BLOCK_ELEMENTS // max(vc, 1))
    elif isinstance(chunk_size, (tuple, list)):
        if len(chunk_size) != 2:
            raise ValueError(f"chunk_size must be an int (rows) or a pair (rows, vocabulary), "
                             f"got {chunk_size!r}")
        rc, vc = (int(c) for c in chunk_size)
    else:
        rc, vc = int(chunk_size), v
    if rc < 1 or vc < 1:
        raise ValueError(f"chunk sizes must be positive, got {chunk_size!r}")
    return min(rc, max(n, 1)), min(vc, v)


def linear_cross_entropy(hidden, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                         grad_output=1.0, chunk_size=None):
    """Cross-entropy of ``hidden @ linear_weight.T + linear_bias`` and its gradients, chunked.

    Returns ``(loss, (grad_hidden, grad_linear_weight, grad_linear_bias))``
    (``grad_linear_bias`` is None without a bias) without ever holding the
    N x V logits: BLAS matmuls (``np.matmul``) run over blocks of rows, and of
    the vocabulary when V is large. Argument names follow PyTorch's
    ``F.linear_cross_entropy``.

    Parameters
    ----------
    hidden : array_like, shape (..., H)
        Inputs of the linear layer; the leading axes are the samples.
    linear_weight : array_like, shape (V, H)
    target : array_like
        Class indices of shape ``hidden.shape[:-1]``, or class distributions
        of shape ``hidden.shape[:-1] + (V,)``.
    linear_bias : array_like, shape (V,), optional
    weight, ignore_index, reduction, label_smoothing, z_loss, grad_output
        As for :func:`cross_entropy_with_grad` (the gradients are those of
        the returned loss times ``grad_output``; with ``reduction="none"``,
        ``grad_output`` is per sample).
    chunk_size : int or (int, int), optional
        Rows per block, or (rows, vocabulary entries) per block. By default
        about 16M logits per block; the vocabulary is split only above 131072
        classes. Any sizes work, dividing N and V or not.

    Notes
    -----
    With one vocabulary block, each row block runs the fused cross-entropy
    kernel on its logits (overwritten by their gradient), then two matmuls
    give the gradients: three matmuls in all, as the unfused computation.
    With several vocabulary blocks, a first pass reduces every block to
    per-row maxima and sums (the online log-sum-exp merge, exact to the same
    accuracy as the in-memory kernel) and a second pass recomputes each
    block's logits to write its gradient: four matmuls. Peak memory is the
    gradients plus one block of logits. Computed in float32 for float32 (and
    float16) inputs, float64 otherwise; the loss sums are float64.
    """
    check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    z = check_z_loss(z_loss)
    ig = _check_ignore(ignore_index)
    h = as_array(hidden)
    wl = as_array(linear_weight)
    hdt = float_policy(h.dtype, "hidden")[1]
    wdt = float_policy(wl.dtype, "linear_weight")[1]
    rdt = np.result_type(hdt, wdt)
    cdt = np.dtype(np.float64) if rdt == np.float64 else np.dtype(np.float32)
    if h.ndim < 1 or wl.ndim != 2 or wl.shape[1] != (h.shape[-1] if h.ndim else -1):
        raise ValueError(f"hidden has shape {h.shape} and linear_weight {wl.shape}: expected "
                         f"(..., H) and (V, H)")
    v, hd = wl.shape
    if v == 0:
        raise ValueError("linear_weight has zero rows: there are no classes")
    batch = h.shape[:-1]
    n = int(np.prod(batch)) if batch else 1
    h2 = np.ascontiguousarray(h.reshape(n, hd), dtype=cdt)
    w2 = np.ascontiguousarray(wl, dtype=cdt)
    b = None
    if linear_bias is not None:
        b = as_array(linear_bias)
        if b.shape != (v,):
            raise ValueError(f"linear_bias has shape {b.shape}; expected ({v},)")
        b = np.ascontiguousarray(b, dtype=cdt)
    cw = check_weight(weight, v)
    wsum = accurate_sum(cw) if cw.size else float(v)
    t = as_array(target)
    if t.dtype.kind not in "biuf":
        raise TypeError(f"target has dtype {t.dtype}; targets must be class indices or "
                        f"distributions")
    if t.shape == batch + (v,) and (t.dtype.kind == "f" or t.shape != batch):
        if ig != -100:
            raise ValueError(f"ignore_index={ig} was given with distribution targets; it must "
                             f"stay at its default")
        kind = lk.KIND_DIST
        tq = cast(np.ascontiguousarray(t.reshape(n, v)), cdt)
        tidx = np.zeros(n, np.int64)
        count = n
        wt_sum = float(n)
    elif t.shape == batch:
        if t.dtype.kind == "f":
            raise TypeError(f"target has dtype {t.dtype} and shape {t.shape}: class indices "
                            f"must be integers")
        kind = lk.KIND_INDEX
        from .losses import _index_targets
        tidx = np.ascontiguousarray(_index_targets(t, v, ig, batch).reshape(n))
        bad, count, wt_sum = lk.scan_targets(tidx, ig, v, cw)
        if bad >= 0:
            pos = tuple(int(p) for p in np.unravel_index(bad, batch)) if batch else ()
            raise IndexError(f"target {int(tidx[bad])} at position {pos} is out of range for "
                             f"{v} classes (valid: 0 to {v - 1}, or ignore_index={ig})")
        tq = np.empty((1, 1), cdt)
    else:
        raise ValueError(f"target has shape {t.shape}; expected {batch} (class indices) or "
                         f"{batch + (v,)} (class distributions)")
    go = as_array(grad_output)
    if reduction == "none":
        gscale = np.ascontiguousarray(np.broadcast_to(go, batch), dtype=np.float64).reshape(n)
        alpha = beta = 1.0
    else:
        if go.ndim:
            raise ValueError(f"grad_output must be a scalar with reduction={reduction!r}")
        g0 = float(go)
        if reduction == "sum":
            alpha = beta = g0
        elif kind == lk.KIND_INDEX:
            alpha = g0 / wt_sum if wt_sum else 0.0
            beta = g0 / count if count else 0.0
        else:
            alpha = beta = g0 / n if n else 0.0
        gscale = None
    rc, vc = _chunks(chunk_size, n, v)
    grad_h = np.zeros((n, hd), cdt)
    grad_w = np.zeros((v, hd), cdt)
    grad_b = np.zeros(v, cdt) if b is not None else None
    loss_rows = np.empty(n) if reduction == "none" else None
    ce_parts = []
    zp_parts = []
    zbuf = np.empty((rc, vc), cdt)
    tmp = np.empty(max(min(zbuf.size, _TMP_ELEMENTS), rc * hd, hd), cdt)
    for r0 in range(0, n, rc):
        r1 = min(r0 + rc, n)
        hb = h2[r0:r1]
        a_rows = gscale[r0:r1] * alpha if gscale is not None else None
        if vc == v:
            zb = zbuf[:r1 - r0]
            np.matmul(hb, w2.T, out=zb)
            if b is not None:
                zb += b
            part = np.zeros((-(-(r1 - r0) // lk.block_rows(v)), 4))
            lr = loss_rows[r0:r1] if loss_rows is not None else np.empty(0)
            run_blocks(lk.ce_rows, lk.ce_rows_parallel, zb.size, zb, kind, tidx[r0:r1],
                       tq[r0:r1] if kind == lk.KIND_DIST else tq, cw, wsum, ig, eps, z, True, zb,
                       a_rows if a_rows is not None else np.empty(0), alpha, beta, lr, part)
            ce_parts.append(part[:, :2].ravel())
            zp_parts.append(part[:, 2:].ravel())
        else:
            _vocab_chunked(hb, w2, b, kind, tidx[r0:r1], tq[r0:r1] if kind == lk.KIND_DIST else tq,
                           cw, wsum, ig, eps, z, alpha, beta, a_rows, vc, zbuf, tmp, grad_h[r0:r1],
                           grad_w, grad_b, loss_rows[r0:r1] if loss_rows is not None else None,
                           ce_parts, zp_parts)
            continue
        _add_grads(zb, hb, w2, grad_h[r0:r1], grad_w, grad_b, tmp, True)
    if reduction == "none":
        loss = cast(loss_rows.reshape(batch), rdt)
    else:
        ce = accurate_sum(np.concatenate(ce_parts)) if ce_parts else 0.0
        zp = accurate_sum(np.concatenate(zp_parts)) if zp_parts else 0.0
        if reduction == "mean":
            if kind == lk.KIND_INDEX:
                ce = ce / wt_sum if wt_sum else 0.0
                zp = zp / count if count else 0.0
            else:
                ce = ce / n if n else 0.0
                zp = zp / n if n else 0.0
        loss = scalar_as(ce + zp, rdt)
    grads = (cast(grad_h.reshape(h.shape), rdt), cast(grad_w, rdt),
             cast(grad_b, rdt) if grad_b is not None else None)
    return loss, grads


def _add_grads(zb, hb, wv, gh, gw, gb, tmp, assign_h):
    """``gh = zb @ wv`` (or ``+=``), ``gw += zb.T @ hb``, ``gb += zb.sum(0)``.

    The matmuls write into the scratch ``tmp`` (the weight gradient in slices
    of the vocabulary), so no temporary is larger than a block of logits.
    """
    r, hd = hb.shape
    if assign_h:
        np.matmul(zb, wv, out=gh)
    else:
        t = tmp[:r * hd].reshape(r, hd)
        np.matmul(zb, wv, out=t)
        gh += t
    vb = zb.shape[1]
    step = max(1, tmp.size // max(hd, 1))
    for v0 in range(0, vb, step):
        v1 = min(v0 + step, vb)
        t = tmp[:(v1 - v0) * hd].reshape(v1 - v0, hd)
        np.matmul(zb[:, v0:v1].T, hb, out=t)
        gw[v0:v1] += t
    if gb is not None:
        gb += zb.sum(axis=0)


def _vocab_blocks(hb, w2, b, kind, tidx, tq, cw, valid, vc, zbuf):
    """Yield (v0, v1, logits, local targets, targets' block, weights' block) per block of
    vocabulary: the logits ``hb @ w2[v0:v1].T + b[v0:v1]`` in ``zbuf``, index targets
    shifted to the block (-1 for ignored samples)."""
    r, v = hb.shape[0], w2.shape[0]
    for v0 in range(0, v, vc):
        v1 = min(v0 + vc, v)
        zb = zbuf[:r, :v1 - v0]
        np.matmul(hb, w2[v0:v1].T, out=zb)
        if b is not None:
            zb += b[v0:v1]
        tl = np.where(valid, tidx - v0, -1) if kind == lk.KIND_INDEX else tidx
        yield (v0, v1, zb, tl, tq[:, v0:v1] if kind == lk.KIND_DIST else tq,
               cw[v0:v1] if cw.size else cw)


def _vocab_chunked(hb, w2, b, kind, tidx, tq, cw, wsum, ig, eps, z, alpha, beta, a_rows, vc,
                   zbuf, tmp, grad_h, grad_w, grad_b, loss_rows, ce_parts, zp_parts):
    """One block of rows over vocabulary blocks: statistics, then gradients."""
    r = hb.shape[0]
    v = w2.shape[0]
    inv_n = 1.0 / v
    run = np.empty((r, 6))
    run[:, 0] = -np.inf
    st = np.empty((r, 6))
    valid = tidx != ig if kind == lk.KIND_INDEX else np.ones(r, bool)
    for _, _, zb, tl, tqb, cwb in _vocab_blocks(hb, w2, b, kind, tidx, tq, cw, valid, vc, zbuf):
        lk.chunk_stats(zb, kind, tl, tqb, cwb, eps, inv_n, st)
        lk.merge_stats(run, st)
    m, c, s, wd, ms, xt = (run[:, j] for j in range(6))
    with np.errstate(all="ignore"):
        ell = np.where(c == 1, np.log1p(s), np.log(c + s))
        lse = m + ell
        if kind == lk.KIND_INDEX:
            wt = cw[np.where(valid, tidx, 0)] if cw.size else np.ones(r)
            mt = (1.0 - eps) * wt
            nll = np.where(mt == 0.0, 0.0, mt * ((m - xt) + ell))
            ce = np.where(valid, nll + wd + ell * ms, 0.0)
            msum = mt + eps * inv_n * wsum
        else:
            ce = wd + ell * ms
            msum = ms
        zp = np.where(valid, z * lse * lse, 0.0)
        a = a_rows if a_rows is not None else np.full(r, alpha)
        bt = a_rows * (beta / alpha if alpha else 1.0) if a_rows is not None else np.full(r, beta)
        zc = 2.0 * bt * z * lse
        coef = np.empty((r, 4))
        coef[:, 0] = np.where(valid, (a * msum + zc) / (c + s), 0.0)
        coef[:, 1] = np.where(valid, a, 0.0)
        coef[:, 2] = np.where(valid, zc, 0.0)
        coef[:, 3] = wsum
    if loss_rows is not None:
        loss_rows[:] = ce + zp
    ce_parts.append(ce)
    zp_parts.append(zp)
    for v0, v1, zb, tl, tqb, cwb in _vocab_blocks(hb, w2, b, kind, tidx, tq, cw, valid, vc,
                                                  zbuf):
        lk.chunk_grad(zb, kind, tl, tqb, cwb, eps, inv_n, run, coef)
        _add_grads(zb, hb, w2[v0:v1], grad_h, grad_w[v0:v1],
                   grad_b[v0:v1] if grad_b is not None else None, tmp, False)
