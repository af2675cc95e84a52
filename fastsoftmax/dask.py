"""fastsoftmax on Dask arrays: the in-memory kernels run on each block (SPEC §3).

An optional extra: ``pip install "fastsoftmax[dask]"`` (``dask[array,distributed]``).

Functions: :func:`softmax`, :func:`log_softmax`, :func:`logsumexp`,
:func:`cross_entropy`, :func:`cross_entropy_with_grad`, with the options of
the in-memory functions of the same names (``out=`` and ``inplace=`` aside:
Dask arrays are immutable).

Layout
------
The rows (every axis but the class axis ``axis``) may be split into any
number of chunks; **the class axis must be one chunk**. A logits array with
several chunks along it is refused with a ``ValueError`` that says how to fix
it (``x.rechunk({axis: -1})``): merging the class axis moves the whole array
between workers, a cost that should be chosen, not hidden. The arrays that
go with the logits are aligned automatically: index targets, a per-sample
``grad_output`` and ``where`` masks (Dask or NumPy arrays broadcastable to
the logits) are rechunked to the logits' chunks. NumPy logits are wrapped in
a Dask array with the class axis whole and the other axes chunked by Dask's
``"auto"`` rule. Chunk sizes must be known (``x.compute_chunk_sizes()``).

Results
-------
Everything stays lazy. Element-wise results (softmax, log-softmax, the
gradient) are Dask arrays chunked like the logits; per-sample results
(logsumexp, ``reduction="none"`` losses) are Dask arrays chunked like the
logits' rows. ``reduction="mean"``/``"sum"`` give a **0-d Dask array** of
the result dtype; its ``compute()`` is a NumPy scalar, as the in-memory
function returns. dtypes follow the in-memory policy (SPEC §2).

Reductions are exact across blocks: each block reports the sums of its
per-sample cross-entropy and z-loss terms (``math.fsum`` of the per-sample
values), its sum of target weights and its count of non-ignored samples; one
final task adds them with ``math.fsum`` in block order and divides totals by
totals (not a mean of block means), with the in-memory rules: index targets'
"mean" divides the cross-entropy by the sum of the targets' class weights and
the z-loss by the number of non-ignored samples; distribution targets divide
by the number of samples; a "mean" over zero contributing samples is 0.0.

:func:`cross_entropy_with_grad` with ``reduction="mean"`` and index targets
is a two-stage graph: per-block target sums (targets only, the logits are not
read) -> the global scales ``grad_output / sum(weights)`` and ``grad_output /
count`` -> per-block fused loss-and-gradient with those scales. The loss and
the gradient come from the same per-block task, so ``dask.compute(loss,
grad)`` reads each block of logits once and runs one fused kernel pass on it
(two in the one case of the notes below).

Accuracy: per-sample values and gradients are those of the in-memory
functions on the whole array (the kernels are row-wise); reductions differ
from them only by the rounding of the per-block sums (float64 partial sums;
float32 and float16 per-sample values are rounded to float32 before being
added, so a float32 reduction can differ from the in-memory one by an ULP).

Errors in options (reduction, label_smoothing, z_loss, ignore_index, weight,
temperature, dtypes, shapes, the class-axis chunking) are raised when the
graph is built, with the in-memory messages. Target values outside
``[0, C)`` can only be seen when the blocks run: ``compute()`` raises the
in-memory ``IndexError``, with the position in the whole array.

Notes
-----
Index targets, "mean", class ``weight`` and ``z_loss > 0`` together need the
cross-entropy and z-loss parts scaled separately (by ``1/sum(weights)`` and
``1/count``), while the public in-memory API scales both by one
``grad_output``. Each block then runs two kernel passes (the cross-entropy
with ``z_loss=0``, and the z-loss alone, with zero class weights) and adds
the two gradients: entries can differ from the in-memory ones by a few ULP of
the row's largest gradient entry (one extra rounding of each part).

Workers run the Numba kernels with Numba's own thread pool; with one worker
process per core, ``NUMBA_NUM_THREADS=1`` in the workers avoids
oversubscription (results do not depend on the thread count).
"""

import math
import operator

import numpy as np

try:
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("fastsoftmax.dask needs Dask: pip install 'fastsoftmax[dask]' "
                      "(dask[array,distributed])") from exc

from . import cross_entropy as _ce_mem
from . import cross_entropy_with_grad as _ceg_mem
from . import log_softmax as _log_softmax_mem
from . import logsumexp as _logsumexp_mem
from . import softmax as _softmax_mem
from ._validate import normalize_axis

__all__ = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"]

_INDEX = "index"
_DIST = "dist"
_NPART = 4     # per-block partial sums: (ce terms, z terms, target weights, valid samples)


# ====================================================================== shared plumbing
def _raw(x):
    """A Dask array as it is, anything else as a NumPy array."""
    return x if isinstance(x, da.Array) else np.asarray(x)


def _check_known_chunks(arr, name):
    if any(math.isnan(c) for dim in arr.chunks for c in dim):
        raise ValueError(f"{name} has unknown chunk sizes {arr.chunks}; fastsoftmax.dask needs "
                         f"them: call {name}.compute_chunk_sizes() first")


def _logits_dask(arr, ax, name):
    """The logits as a Dask array (0-d made one row of one class), class axis checked."""
    if isinstance(arr, da.Array):
        _check_known_chunks(arr, name)
        xd = arr.reshape(1) if arr.ndim == 0 else arr
    else:
        a = arr.reshape(1) if arr.ndim == 0 else arr
        xd = da.from_array(a, chunks=tuple(-1 if i == ax else "auto" for i in range(a.ndim)))
    nchunks = len(xd.chunks[ax])
    if nchunks > 1:
        raise ValueError(
            f"{name} has {nchunks} chunks along the class axis {ax} (chunks {xd.chunks[ax]}); "
            f"fastsoftmax.dask needs the whole class axis in one chunk: call "
            f"{name}.rechunk({{{ax}: -1}}) first (the other axes may keep many chunks)")
    return xd


def _to_chunks(arr, chunks):
    """A Dask or NumPy array of these shape as a Dask array with these chunks."""
    if isinstance(arr, da.Array):
        return arr.rechunk(chunks)
    return da.from_array(arr, chunks=chunks)


def _expand(arr, ax):
    """A per-sample Dask array with a length-1 class axis, to broadcast against blocks."""
    return da.expand_dims(arr, ax)


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype=dtype)


def _mask(where, xd):
    """``where`` broadcast to the logits and chunked like them (None stays None)."""
    if where is None:
        return None
    w = _raw(where)
    try:
        ok = np.broadcast_shapes(w.shape, xd.shape) == xd.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"where has shape {w.shape}, which does not broadcast to the input "
                         f"shape {xd.shape}")
    if not isinstance(w, da.Array):
        w = da.from_array(w, chunks=-1)
    return da.broadcast_to(w, xd.shape).rechunk(xd.chunks)


def _probe_where(where):
    return None if where is None else np.zeros((), dtype=_raw(where).dtype)


# ====================================================================== forward
def _softmax_block(xb, wb, *, axis, temperature, log):
    fn = _log_softmax_mem if log else _softmax_mem
    return fn(xb, axis, where=wb, temperature=temperature)


def _softmax_like(x, axis, where, temperature, log):
    arr = _raw(x)
    ndim = arr.ndim
    fn = _log_softmax_mem if log else _softmax_mem
    # options, dtype and axis through the in-memory function, on an empty array
    probe = fn(np.zeros((0,) * max(ndim, 1), arr.dtype), axis, where=_probe_where(where),
               temperature=temperature)
    rdt = probe.dtype
    ax = normalize_axis(axis, ndim)
    xd = _logits_dask(arr, ax, "x")
    wd = _mask(where, xd)
    res = da.map_blocks(_softmax_block, xd, wd, axis=ax, temperature=temperature, log=log,
                        dtype=rdt, meta=_meta(xd.ndim, rdt),
                        token="fastsoftmax-log_softmax" if log else "fastsoftmax-softmax")
    return res.reshape(()) if ndim == 0 else res


def softmax(x, axis=-1, *, where=None, temperature=1.0):
    """:func:`fastsoftmax.softmax` of a Dask array, block by block.

    ``x`` is chunked along its rows, with ``axis`` in one chunk (a
    ``ValueError`` otherwise, see the module notes). ``where`` is a Dask or
    NumPy boolean mask broadcastable to ``x``. Returns a Dask array chunked
    like ``x``, of the in-memory result dtype, equal to the in-memory
    ``softmax`` of the whole array.
    """
    return _softmax_like(x, axis, where, temperature, log=False)


def log_softmax(x, axis=-1, *, where=None, temperature=1.0):
    """:func:`fastsoftmax.log_softmax` of a Dask array, block by block (as :func:`softmax`)."""
    return _softmax_like(x, axis, where, temperature, log=True)


def _logsumexp_block(xb, wb, *, axis, keepdims):
    return _logsumexp_mem(xb, axis, where=wb, keepdims=keepdims)


def logsumexp(x, axis=-1, *, where=None, keepdims=False):
    """:func:`fastsoftmax.logsumexp` of a Dask array, block by block.

    Returns a Dask array chunked like the rows of ``x`` (with ``axis`` kept
    as one chunk of length 1 when ``keepdims``); a 0-d ``x`` gives a 0-d
    array (shape ``(1,)`` with ``keepdims``), as in memory.
    """
    arr = _raw(x)
    ndim = arr.ndim
    probe = _logsumexp_mem(np.zeros((0,) * max(ndim, 1), arr.dtype), axis,
                           where=_probe_where(where), keepdims=keepdims)
    rdt = probe.dtype
    ax = normalize_axis(axis, ndim)
    xd = _logits_dask(arr, ax, "x")
    wd = _mask(where, xd)
    kw = dict(axis=ax, keepdims=bool(keepdims), dtype=rdt, token="fastsoftmax-logsumexp")
    if keepdims:
        chunks = tuple((1,) if i == ax else c for i, c in enumerate(xd.chunks))
        return da.map_blocks(_logsumexp_block, xd, wd, chunks=chunks,
                             meta=_meta(xd.ndim, rdt), **kw)
    return da.map_blocks(_logsumexp_block, xd, wd, drop_axis=ax,
                         meta=_meta(xd.ndim - 1, rdt), **kw)


# ====================================================================== losses: blocks
def _sample_starts(block_info, axis):
    """Where this block's samples start in the whole per-sample array."""
    if not block_info:
        return None
    loc = block_info[0]["array-location"]
    return tuple(s for i, (s, _) in enumerate(loc) if i != axis)


def _index_block(tb, axis, n, ig, starts):
    """The block's index targets (per-sample shape), range-checked with global positions."""
    t = np.squeeze(tb, axis=axis)
    if t.dtype.kind == "b":
        t = t.astype(np.int64)
    valid = t != ig
    bad = valid & ((t < 0) | (t >= n))
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        local = np.unravel_index(first, t.shape) if t.ndim else ()
        pos = tuple(int(p) + (starts[i] if starts else 0) for i, p in enumerate(local))
        raise IndexError(f"target {int(t.reshape(-1)[first])} at position {pos} is out of range "
                         f"for {n} classes (valid: 0 to {n - 1}, or ignore_index={ig})")
    return t, valid


def _fsum(a):
    return math.fsum(np.asarray(a, dtype=np.float64).reshape(-1).tolist())


def _parts(values, ndim, axis):
    """A block's partial sums, shaped to sit in the block grid (along the class axis)."""
    shape = [1] * ndim
    shape[axis] = len(values)
    return np.array(values, dtype=np.float64).reshape(shape)


def _block_sums(t, valid, kind, weight, n_samples):
    """(sum of the targets' class weights, number of contributing samples) of a block."""
    if kind == _DIST:
        return 0.0, float(n_samples)
    cnt = int(np.count_nonzero(valid))
    if weight is None:
        return float(cnt), float(cnt)
    return _fsum(weight[t[valid]]), float(cnt)


def _kernel_passes(xb, t, axis, o, scale):
    """(sum of ce terms, sum of z terms, gradient or None) of one block.

    ``scale``: None (loss only) or the global (alpha, beta) of the ce and z
    parts. float16 logits run through float32, as the in-memory functions
    compute them, so that the per-sample values keep float32 precision.
    """
    xw = xb.astype(np.float32) if xb.dtype == np.float16 else xb
    common = dict(ignore_index=o["ig"], reduction="none")
    if not o["split"]:
        kw = dict(common, weight=o["weight"], label_smoothing=o["eps"], z_loss=o["z"])
        if scale is None:
            return _fsum(_ce_mem(xw, t, axis, **kw)), 0.0, None
        per, g = _ceg_mem(xw, t, axis, grad_output=scale[0], **kw)
        return _fsum(per), 0.0, g
    # the ce part and the z part apart (they have different "mean" divisors)
    kw_ce = dict(common, weight=o["weight"], label_smoothing=o["eps"], z_loss=0.0)
    kw_z = dict(common, weight=np.zeros_like(o["weight"]), label_smoothing=0.0, z_loss=o["z"])
    if scale is None:
        return _fsum(_ce_mem(xw, t, axis, **kw_ce)), _fsum(_ce_mem(xw, t, axis, **kw_z)), None
    per, g = _ceg_mem(xw, t, axis, grad_output=scale[0], **kw_ce)
    zper, gz = _ceg_mem(xw, t, axis, grad_output=scale[1], **kw_z)
    g += gz
    return _fsum(per), _fsum(zper), g


def _prepare_block_targets(tb, axis, o, block_info):
    if o["kind"] == _INDEX:
        return _index_block(tb, axis, o["n"], o["ig"], _sample_starts(block_info, axis))
    return tb, None


def _n_samples(xb, axis):
    return math.prod(s for i, s in enumerate(xb.shape) if i != axis)


def _ce_loss_block(xb, tb, *, axis, o, block_info=None):
    t, valid = _prepare_block_targets(tb, axis, o, block_info)
    if o["reduction"] == "none":
        return _ce_mem(xb, t, axis, weight=o["weight"], ignore_index=o["ig"], reduction="none",
                       label_smoothing=o["eps"], z_loss=o["z"])
    s_ce, s_z, _ = _kernel_passes(xb, t, axis, o, None)
    w, c = _block_sums(t, valid, o["kind"], o["weight"], _n_samples(xb, axis))
    return _parts((s_ce, s_z, w, c), xb.ndim, axis)


def _ce_grad_block(xb, tb, gob, scale, *, axis, o, block_info=None):
    """(per-sample losses or the block's partial sums, gradient) of one block."""
    t, valid = _prepare_block_targets(tb, axis, o, block_info)
    if o["reduction"] == "none":
        g = np.asarray(gob)
        if g.ndim == xb.ndim:        # a block of the expanded per-sample grad_output
            g = np.squeeze(g, axis=axis)
        return _ceg_mem(xb, t, axis, weight=o["weight"], ignore_index=o["ig"],
                        reduction="none", label_smoothing=o["eps"], z_loss=o["z"],
                        grad_output=g)
    s_ce, s_z, g = _kernel_passes(xb, t, axis, o, scale)
    if g.dtype != o["rdt"]:
        g = g.astype(o["rdt"])
    w, c = _block_sums(t, valid, o["kind"], o["weight"], _n_samples(xb, axis))
    return _parts((s_ce, s_z, w, c), xb.ndim, axis), g


def _target_block(tb, *, axis, o, block_info=None):
    """(sum of target weights, count) of one block of index targets."""
    t, valid = _index_block(tb, axis, o["n"], o["ig"], _sample_starts(block_info, axis))
    return _parts(_block_sums(t, valid, _INDEX, o["weight"], 0), tb.ndim, axis)


def _pick(pair, i):
    return pair[i]


def _pick_expanded(pair, i, axis):
    return np.expand_dims(pair[i], axis)


# ====================================================================== losses: global steps
def _columns(parts, axis, k):
    """The block partials as a (blocks, k) array, blocks in C order of the block grid."""
    return np.moveaxis(np.asarray(parts, dtype=np.float64), axis, -1).reshape(-1, k)


def _ce_finish(parts, axis, reduction, kind, rdt):
    """The loss from all blocks' partial sums: totals over totals, fsum in block order."""
    p = _columns(parts, axis, _NPART)
    ce = math.fsum(p[:, 0].tolist())
    zp = math.fsum(p[:, 1].tolist())
    if reduction == "sum":
        value = ce + zp
    else:
        cnt = math.fsum(p[:, 3].tolist())
        den = math.fsum(p[:, 2].tolist()) if kind == _INDEX else cnt
        value = (ce / den if den != 0.0 else 0.0) + (zp / cnt if cnt else 0.0)
    with np.errstate(over="ignore"):     # float16: a total beyond 65504 is inf, silently
        return rdt.type(value)


def _ce_scales(tparts, grad_output, *, axis, reduction, kind, n_samples):
    """(alpha, beta): the global scales of the ce and z parts of the gradient."""
    go = float(np.asarray(grad_output))
    if reduction == "sum":
        return go, go
    if kind == _DIST:
        a = go / n_samples if n_samples else 0.0
        return a, a
    p = _columns(tparts, axis, 2)
    wsum = math.fsum(p[:, 0].tolist())
    cnt = math.fsum(p[:, 1].tolist())
    return (go / wsum if wsum != 0.0 else 0.0), (go / cnt if cnt else 0.0)


# ====================================================================== losses: graphs
def _classify_targets(t, shape, ax, ndim, ig):
    """_INDEX or _DIST, with the in-memory errors for dtypes and shapes."""
    if t.dtype.kind not in "biuf":
        raise TypeError(f"target has dtype {t.dtype}; targets must be integer class indices or "
                        f"real-valued class distributions")
    sample_shape = shape[:ax] + shape[ax + 1:] if ndim else ()
    is_dist = tuple(t.shape) == tuple(shape)
    is_index = tuple(t.shape) == tuple(sample_shape)
    if is_index and (t.dtype.kind in "biu" or not is_dist):
        if t.dtype.kind == "f":
            raise TypeError(f"target has dtype {t.dtype} and the per-sample shape {t.shape}: "
                            f"class indices must be integers (a float target needs the "
                            f"logits' shape {tuple(shape)} to be a distribution)")
        return _INDEX
    if is_dist:
        if ig != -100:
            raise ValueError(f"ignore_index={ig} was given with distribution targets (shape "
                             f"{t.shape}); it applies to class-index targets only and must stay "
                             f"at its default")
        return _DIST
    raise ValueError(f"target has shape {t.shape}, but the logits have shape {tuple(shape)} "
                     f"with the class axis {ax}: the target must have shape "
                     f"{tuple(sample_shape)} (class indices) or {tuple(shape)} (class "
                     f"distributions)")


def _prepare_ce(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
                want_grad, grad_output):
    """Validate everything the graph can see and align the inputs; returns a dict."""
    arr = _raw(logits)
    ndim = arr.ndim
    # options and the logits' dtype, in the in-memory order, on an empty problem
    _ce_mem(np.zeros((0, 1), arr.dtype), np.zeros(0, np.int64), ignore_index=ignore_index,
            reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss)
    ig = operator.index(ignore_index)
    ax = normalize_axis(axis, ndim)
    shape = tuple(arr.shape)
    n = shape[ax] if ndim else 1
    if n == 0:
        raise ValueError(f"logits have shape {shape}: the class axis {ax} has zero classes, "
                         f"so there is no cross-entropy")
    tarr = _raw(target)
    kind = _classify_targets(tarr, shape, ax, ndim, ig)
    # weight, targets' dtype and grad_output through the in-memory function
    if ndim >= 2:
        pshape = tuple(n if i == ax else 0 for i in range(ndim))
    else:
        pshape = (n,) if ndim else ()
    psample = pshape[:ax] + pshape[ax + 1:] if ndim else ()
    pt = np.zeros(psample if kind == _INDEX else pshape, tarr.dtype)
    opts = dict(weight=weight, ignore_index=ig, reduction=reduction,
                label_smoothing=label_smoothing, z_loss=z_loss)
    sample_shape = shape[:ax] + shape[ax + 1:] if ndim else ()
    go = None
    if want_grad:
        go = _raw(grad_output)
        if isinstance(go, da.Array) and reduction != "none" and go.ndim != 0:
            raise ValueError(f"grad_output must be a real scalar with reduction={reduction!r}, "
                             f"got shape {go.shape} and dtype {go.dtype}")
        if isinstance(go, da.Array) or reduction == "none":
            pgo = np.zeros((), go.dtype)
        else:
            pgo = grad_output
        loss, _ = _ceg_mem(np.zeros(pshape, arr.dtype), pt, ax, grad_output=pgo, **opts)
        if reduction == "none":
            try:
                ok = np.broadcast_shapes(go.shape, sample_shape) == sample_shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"grad_output has shape {go.shape}; with reduction='none' it "
                                 f"must broadcast to the per-sample shape {sample_shape}")
    else:
        loss = _ce_mem(np.zeros(pshape, arr.dtype), pt, ax, **opts)
    rdt = np.asarray(loss).dtype
    w = None if weight is None else np.ascontiguousarray(np.asarray(weight), dtype=np.float64)
    # align: logits (class axis whole), targets chunked like the logits' rows
    xd = _logits_dask(arr, ax, "logits")
    batch_chunks = xd.chunks[:ax] + xd.chunks[ax + 1:]
    if kind == _INDEX:
        td = _expand(_to_chunks(tarr, batch_chunks), ax)
    else:
        tt = tarr.reshape(1) if ndim == 0 else tarr
        td = _to_chunks(tt, xd.chunks)
    z = float(z_loss)
    o = dict(kind=kind, n=n, weight=w, ig=ig, reduction=reduction, eps=float(label_smoothing),
             z=z, rdt=rdt,
             split=(kind == _INDEX and reduction == "mean" and w is not None and z != 0.0))
    return dict(xd=xd, td=td, ax=ax, ndim=ndim, rdt=rdt, o=o, go=go, kind=kind,
                batch_chunks=batch_chunks, n_samples=math.prod(sample_shape))


def _parts_chunks(xd, ax, k):
    return tuple((k,) if i == ax else (1,) * len(c) for i, c in enumerate(xd.chunks))


def _whole(arr):
    """All of a small Dask array in one block (the block partials, in block order)."""
    return arr.rechunk(tuple(-1 for _ in range(arr.ndim)))


def _loss_from_parts(parts, p, reduction):
    # plain array layers (no dask.delayed), so that computing the loss and the gradient
    # together shares the per-block tasks instead of fusing a copy into each
    rdt = p["rdt"]
    return da.map_blocks(_ce_finish, _whole(parts), axis=p["ax"], reduction=reduction,
                         kind=p["kind"], rdt=rdt, drop_axis=tuple(range(parts.ndim)),
                         dtype=rdt, meta=np.empty((), rdt), token="fastsoftmax-ce-loss")


def cross_entropy(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0, z_loss=0.0):
    """:func:`fastsoftmax.cross_entropy` of Dask arrays, block by block.

    ``logits`` chunked along the rows (the class axis ``axis`` in one chunk);
    ``target`` a Dask or NumPy array of class indices (the per-sample shape)
    or of class distributions (the logits' shape), rechunked to match.
    Options and their meaning as in memory.

    Returns a 0-d Dask array of the result dtype for "mean"/"sum" (exact
    across blocks: totals over totals, see the module notes), or a Dask array
    of the per-sample shape, chunked like the logits' rows, for "none".
    """
    p = _prepare_ce(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                    z_loss, False, None)
    xd, td, ax, rdt, o = p["xd"], p["td"], p["ax"], p["rdt"], p["o"]
    if reduction == "none":
        res = da.map_blocks(_ce_loss_block, xd, td, axis=ax, o=o, drop_axis=ax, dtype=rdt,
                            meta=_meta(xd.ndim - 1, rdt), token="fastsoftmax-cross_entropy")
        return res
    parts = da.map_blocks(_ce_loss_block, xd, td, axis=ax, o=o, dtype=np.float64,
                          chunks=_parts_chunks(xd, ax, _NPART), meta=_meta(xd.ndim, np.float64),
                          token="fastsoftmax-cross_entropy-parts")
    return _loss_from_parts(parts, p, reduction)


def cross_entropy_with_grad(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, z_loss=0.0, grad_output=1.0):
    """:func:`fastsoftmax.cross_entropy_with_grad` of Dask arrays, block by block.

    Returns ``(loss, grad)``: ``loss`` as :func:`cross_entropy` returns it,
    ``grad`` a Dask array chunked like the logits, the gradient of the
    returned loss times ``grad_output``. ``grad_output`` is a scalar (or a
    0-d Dask array) for "mean"/"sum", and for "none" a scalar or a Dask or
    NumPy array broadcastable to the per-sample shape.

    With "mean" and index targets the graph has two stages: the targets'
    weight sum and count over all blocks first (read from the targets only),
    then each block's fused loss-and-gradient with the global scales. The
    loss and the gradient of a block come from one task: computing both
    together (``dask.compute(loss, grad)``) reads the logits once.
    """
    p = _prepare_ce(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                    z_loss, True, grad_output)
    xd, td, ax, rdt, o, go = p["xd"], p["td"], p["ax"], p["rdt"], p["o"], p["go"]
    pair_meta = _meta(xd.ndim, object)
    if reduction == "none":
        if isinstance(go, da.Array) or go.ndim:
            gd = da.broadcast_to(go if isinstance(go, da.Array) else da.from_array(go, chunks=-1),
                                 tuple(s for i, s in enumerate(xd.shape) if i != ax))
            gob = _expand(gd.rechunk(p["batch_chunks"]), ax)
        else:
            gob = float(go)    # a Python float: Dask would take a NumPy scalar for an array
        pair = da.map_blocks(_ce_grad_block, xd, td, gob, None, axis=ax, o=o, dtype=object,
                             meta=pair_meta, token="fastsoftmax-cross_entropy_with_grad")
        # (drop_axis would make Dask concatenate the tuples along the class axis)
        loss = da.map_blocks(_pick_expanded, pair, 0, ax, dtype=rdt,
                             chunks=tuple((1,) if i == ax else c for i, c in enumerate(xd.chunks)),
                             meta=_meta(xd.ndim, rdt), token="fastsoftmax-ce-loss")
        loss = da.squeeze(loss, axis=ax)
    else:
        go_arg = go if isinstance(go, da.Array) else float(go)
        if reduction == "mean" and p["kind"] == _INDEX:
            tparts = da.map_blocks(_target_block, td, axis=ax, o=o, dtype=np.float64,
                                   chunks=_parts_chunks(td, ax, 2),
                                   meta=_meta(td.ndim, np.float64),
                                   token="fastsoftmax-ce-target-sums")
        else:
            tparts = None
        skw = dict(axis=ax, reduction=reduction, kind=p["kind"], n_samples=p["n_samples"])
        if tparts is None and not isinstance(go_arg, da.Array):
            scale = _ce_scales(None, go_arg, **skw)
        else:
            # a 0-d array whose one block is the tuple (alpha, beta)
            args = (_whole(tparts),) if tparts is not None else (None,)
            scale = da.map_blocks(_ce_scales, *args, go_arg, dtype=object,
                                  drop_axis=tuple(range(td.ndim)) if tparts is not None else (),
                                  meta=np.empty((), object), token="fastsoftmax-ce-scales", **skw)
        pair = da.map_blocks(_ce_grad_block, xd, td, None, scale, axis=ax, o=o, dtype=object,
                             meta=pair_meta, token="fastsoftmax-cross_entropy_with_grad")
        parts = da.map_blocks(_pick, pair, 0, dtype=np.float64,
                              chunks=_parts_chunks(xd, ax, _NPART),
                              meta=_meta(xd.ndim, np.float64), token="fastsoftmax-ce-parts")
        loss = _loss_from_parts(parts, p, reduction)
    grad = da.map_blocks(_pick, pair, 1, dtype=rdt, meta=_meta(xd.ndim, rdt),
                         token="fastsoftmax-ce-grad")
    if p["ndim"] == 0:
        grad = grad.reshape(())
    return loss, grad
