"""Elementwise kernels: sigmoid, log-sigmoid, their backward, binary cross-entropy.

All work on flat C-contiguous arrays. With ``e = exp(-|x|)`` in ``(0, 1]``:

* ``sigmoid(x) = 1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` otherwise;
* ``log_sigmoid(x) = -log1p(e)`` for ``x >= 0`` and ``x - log1p(e)`` otherwise;
* binary cross-entropy with logits (PyTorch's formula)::

      loss = w * ((1 - t) x + (1 + (pw - 1) t) softplus(-x))
      softplus(-x) = max(-x, 0) + log1p(exp(-|x|))
      dloss/dx = w * ((1 - t) - (1 + (pw - 1) t) sigmoid(-x))

so nothing overflows and tiny losses keep their digits. Everything is
computed in float64 with the vectorised exp/log1p of ``vmath`` (float32 data
is rounded once at the end); sums of losses are float64.
"""

import numpy as np
from numba import prange

from ._jit import F64, inline, kernel, ld1, parallel_twin, st1, wide
from ._rows import INV_BIG, accurate_sum1, neumaier
from .vmath import exp_core_big, log1p_f64

BLOCK = 4096     # elements per parallel block (and per partial sum)


@inline
def _sig_small(x):
    """(e, e / (1 + e)) with e = exp(-|x|): the sigmoid of -|x|, in float64."""
    e = exp_core_big(-abs(x), 0.0) * INV_BIG     # rounds correctly into the subnormals
    return e, e / (1.0 + e)


@inline
def _sigmoid(x):
    e, small = _sig_small(x)
    return 1.0 / (1.0 + e) if x >= 0.0 else small


@inline
def _log_sigmoid(x):
    e = exp_core_big(-abs(x), 0.0) * INV_BIG
    lp = log1p_f64(e)
    return -lp if x >= 0.0 else x - lp


@kernel
def sigmoid_flat(x, out, mode, nchunks):
    """mode 0: sigmoid; mode 1: log_sigmoid (computed in float64)."""
    wide()
    n = x.shape[0]
    for ch in prange(nchunks):
        a = ch * n // nchunks
        b = (ch + 1) * n // nchunks
        if mode == 0:
            for j in range(a, b):
                st1(out, j, _sigmoid(F64(ld1(x, j))))
        else:
            for j in range(a, b):
                st1(out, j, _log_sigmoid(F64(ld1(x, j))))


sigmoid_flat_parallel = parallel_twin(sigmoid_flat)


@kernel
def sigmoid_backward_flat(g, y, out, nchunks):
    """out = g * y * (1 - y), in float64."""
    wide()
    n = g.shape[0]
    for ch in prange(nchunks):
        a = ch * n // nchunks
        b = (ch + 1) * n // nchunks
        for j in range(a, b):
            yv = F64(ld1(y, j))
            st1(out, j, F64(ld1(g, j)) * yv * (1.0 - yv))


sigmoid_backward_flat_parallel = parallel_twin(sigmoid_backward_flat)


@inline
def _bce_term(xv, tv, pwv):
    """(loss, dloss/dx) of one element, both as sums of non-negative terms."""
    lw = 1.0 + (pwv - 1.0) * tv
    e, small = _sig_small(xv)
    l1 = log1p_f64(e)
    if xv >= 0.0:
        return (1.0 - tv) * xv + lw * l1, (1.0 - tv) - lw * small
    return lw * l1 - pwv * tv * xv, lw * small - pwv * tv


@kernel
def bce_flat(x, t, w, pw, want_grad, grad, gscale, alpha, loss, part):
    """Binary cross-entropy with logits over flat arrays, in float64.

    ``t`` targets (same length), ``w``/``pw`` weight and pos_weight (same
    length, or empty for 1), ``gscale`` per-element grad_output or empty
    (then ``alpha``), ``loss`` per-element output or empty (then per-block
    partial sums ``part[b] = (hi, lo)``, blocks of BLOCK elements, each
    summed accurately, see ``_rows.accurate_sum1``).

    With ``pw`` the pos_weight, ``lw = 1 + (pw - 1) t`` and
    ``l1 = log1p(exp(-|x|))``, both forms below are sums of non-negative
    terms for targets in [0, 1], so small losses keep their digits::

        x >= 0:  loss = (1 - t) x + lw l1,   grad = (1 - t) - lw sigmoid(-x)
        x <  0:  loss = lw l1 - pw t x,      grad = lw sigmoid(x) - pw t
    """
    wide()
    n = x.shape[0]
    nblk = (n + BLOCK - 1) // BLOCK
    has_w = w.shape[0] > 0
    has_pw = pw.shape[0] > 0
    per_element = loss.shape[0] > 0
    for blk in prange(nblk):
        a = blk * BLOCK
        b = min(a + BLOCK, n)
        vals = loss if per_element else np.empty(b - a)
        off = 0 if per_element else a
        for j in range(a, b):
            xv = F64(ld1(x, j))
            tv = F64(ld1(t, j))
            pwv = F64(ld1(pw, j)) if has_pw else 1.0
            v, gg = _bce_term(xv, tv, pwv)
            if has_w:
                wv = F64(ld1(w, j))
                v = 0.0 if wv == 0.0 else v * wv
                gg = gg * wv
            vals[j - off] = v
            if want_grad:
                gg = gg * (F64(ld1(gscale, j)) if gscale.shape[0] else alpha)
                st1(grad, j, gg)
        if not per_element:
            hi, lo = accurate_sum1(vals, 0, b - a)
            part[blk, 0] = hi
            part[blk, 1] = lo


bce_flat_parallel = parallel_twin(bce_flat)


@kernel
def compensated_sum(a):
    """Neumaier sum of a 1-D float64 array, in index order (deterministic)."""
    s = 0.0
    comp = 0.0
    for i in range(a.shape[0]):
        s, comp = neumaier(s, comp, a[i])
    return s + comp
