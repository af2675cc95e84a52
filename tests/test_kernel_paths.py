"""Every kernel code path on small inputs, against the reference.

Small enough to run with the kernels as plain Python (``NUMBA_DISABLE_JIT=1``,
the coverage run) and under ``NUMBA_BOUNDSCHECK=1`` (any index outside an
array raises), which ``.ci/run`` both do. The sizes are chosen to reach each
branch: rows shorter than the vector block (transposed into lanes), rows with
and without a tail, rows longer than one superblock, lanes blocks of both
sizes, the parallel twins (above ``PARALLEL_MIN_ELEMENTS``), masks,
temperature, non-finite rows in every path, every loss option, and both
linear_cross_entropy strategies.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from numba import config as numba_config
from numba import njit

import fastsoftmax as fs
import fastsoftmax.reference as ref
from fastsoftmax._api._common import PARALLEL_MIN_ELEMENTS
from fastsoftmax._kernels._jit import PYTHON_MODE, VEC_BYTES, shift_rows, transpose_block

# (70, 10) and (37, 17): short rows past the tiny-array path, transposed in
# vector registers (float32; 17 classes in two column blocks, 37 rows in
# groups of 16, 16 and 5, the last rows at the end of the array)
ROW_SHAPES = [(5, 3), (70, 10), (37, 17), (3, 64), (2, 100), (2, 1100), (1, 2200)]
LANE_SHAPES = [(2, 5, 3), (1, 4, 300)]


def _x(shape, seed=0, specials=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 4
    if specials and x.ndim == 2 and x.shape[0] >= 2:
        x[0, 1] = np.inf
        x[-1, :] = -np.inf
    if specials and x.ndim == 3:
        x[0, 1, 0] = np.nan
        x[0, :, -1] = -np.inf
    return x


def _close(a, b, rtol=1e-9):
    """Close to rtol, and to rtol of the largest entry (gradients are differences)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    finite = np.abs(b[np.isfinite(b)]) if b.size else np.zeros(1)
    scale = finite.max() if finite.size else 0.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=max(1e-12, rtol * 0.1 * scale),
                               equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", ROW_SHAPES + LANE_SHAPES)
def test_forward_paths(dtype, shape):
    x = _x(shape).astype(dtype)
    axis = 1 if len(shape) == 3 else -1
    rtol = 1e-5 if dtype == np.float32 else 1e-9
    mask = np.ones(shape, bool)
    mask[..., ::3] = False
    for kw in ({}, {"where": mask}, {"temperature": 0.7}):
        _close(fs.softmax(x, axis=axis, **kw), ref.softmax(x, axis=axis, **kw), rtol)
        _close(fs.log_softmax(x, axis=axis, **kw), ref.log_softmax(x, axis=axis, **kw), rtol)
    _close(fs.logsumexp(x, axis=axis), ref.logsumexp(x, axis=axis), rtol)
    _close(fs.logsumexp(x, axis=axis, where=mask), ref.logsumexp(x, axis=axis, where=mask), rtol)
    xi = x.copy()
    fs.softmax(xi, axis=axis, out=xi)
    _close(xi, ref.softmax(x, axis=axis), rtol)


@pytest.mark.skipif(PYTHON_MODE, reason="with NUMBA_DISABLE_JIT the parallel twins are the "
                    "serial kernels (prange is range): no new line, 2 minutes of the run")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_twins(dtype):
    n = PARALLEL_MIN_ELEMENTS // 64 + 1
    x = _x((n, 64), specials=False).astype(dtype)
    t = np.arange(n) % 64
    rtol = 1e-5 if dtype == np.float32 else 1e-9
    _close(fs.softmax(x), ref.softmax(x), rtol)
    _close(fs.log_softmax(x, temperature=2.0), ref.log_softmax(x, temperature=2.0), rtol)
    x3 = x.reshape(n // 2 if n % 2 == 0 else n, -1, 1)[:, :32]
    _close(fs.softmax(x3, axis=1), ref.softmax(x3, axis=1), rtol)
    loss, g = fs.cross_entropy_with_grad(x, t)
    rl, rg = ref.cross_entropy_with_grad(x, t)
    _close(loss, rl, rtol)
    _close(g, rg, rtol)
    _close(fs.softmax_backward(x, x), ref.softmax_backward(x, x), rtol)
    _close(fs.sigmoid(x), ref.sigmoid(x), rtol)
    _close(fs.binary_cross_entropy_with_grad(x, x > 0)[1],
           ref.binary_cross_entropy_with_grad(x, (x > 0) * 1.0)[1], rtol)


@pytest.mark.parametrize("shape", ROW_SHAPES + LANE_SHAPES)
def test_backward_and_elementwise_paths(shape):
    x = _x(shape, specials=False)
    g = _x(shape, seed=1, specials=False)
    axis = 1 if len(shape) == 3 else -1
    for f in ("softmax_backward", "log_softmax_backward"):
        y = -np.abs(x)
        _close(getattr(fs, f)(g, y, axis=axis), getattr(ref, f)(g, y, axis=axis))
        _close(getattr(fs, f)(g.astype(np.float32), y.astype(np.float32), axis=axis),
               getattr(ref, f)(g.astype(np.float32), y.astype(np.float32), axis=axis), 1e-5)
    _close(fs.sigmoid_backward(g, x), ref.sigmoid_backward(g, x))
    _close(fs.sigmoid(x * 20), ref.sigmoid(x * 20))
    _close(fs.log_sigmoid(x * 20), ref.log_sigmoid(x * 20))
    if x.size <= 600:
        _close(fs.softmax_jacobian(_x(shape), axis=axis), ref.softmax_jacobian(_x(shape),
                                                                             axis=axis))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 10), (70, 63), (1, 63), pytest.param(
    (3300, 10), marks=pytest.mark.skipif(PYTHON_MODE, reason="parallel twin (see above)"))])
def test_log_softmax_backward_short_rows(dtype, shape):
    """Rows shorter than backward.SHORT_C: exponentials in flat blocks of 2048
    entries (300 x 10: a full and a partial block; 3300 x 10: the parallel twin,
    whose chunks end inside a block); in place on either input, bit for bit."""
    x = _x(shape, specials=False)
    y = fs.log_softmax(x).astype(dtype)
    g = _x(shape, seed=3, specials=False).astype(dtype)
    want = fs.log_softmax_backward(g, y)
    _close(want, ref.log_softmax_backward(g, y), 1e-5 if dtype == np.float32 else 1e-9)
    for which in (0, 1):
        a, b = g.copy(), y.copy()
        res = fs.log_softmax_backward(a, b, out=(a, b)[which])
        assert res is (a, b)[which] and np.array_equal(res, want)


CE_OPTIONS = [
    {},
    {"label_smoothing": 0.2},
    {"weight": "w", "label_smoothing": 0.1, "z_loss": 1e-2},
    {"reduction": "none", "z_loss": 1e-3, "grad_output": "go"},
    {"reduction": "sum", "ignore_index": 1},
]


@pytest.mark.parametrize("shape", ROW_SHAPES + LANE_SHAPES)
@pytest.mark.parametrize("opt", range(len(CE_OPTIONS)))
@pytest.mark.parametrize("targets", ["index", "dist"])
def test_cross_entropy_paths(shape, opt, targets):
    kw = dict(CE_OPTIONS[opt])
    axis = 1 if len(shape) == 3 else -1
    x = _x(shape)
    c = shape[axis]
    rng = np.random.default_rng(3)
    sample = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    if targets == "index":
        t = rng.integers(0, c, sample)
        if "ignore_index" not in kw:
            t.reshape(-1)[::3] = -100
    else:
        if "ignore_index" in kw:
            return
        q = rng.random(shape)
        t = q / q.sum(axis=axis, keepdims=True)
    if kw.get("weight") == "w":
        kw["weight"] = rng.random(c) + 0.1
    if kw.get("grad_output") == "go":
        kw["grad_output"] = rng.random(sample)
    loss, g = fs.cross_entropy_with_grad(x, t, axis=axis, **kw)
    rl, rg = ref.cross_entropy_with_grad(x, t, axis=axis, **kw)
    _close(loss, rl)
    _close(g, rg)
    xi = x.copy()
    fs.cross_entropy_with_grad(xi, t, axis=axis, inplace=True, **kw)
    _close(xi, rg)
    kw.pop("grad_output", None)
    _close(fs.cross_entropy(x, t, axis=axis, **kw), rl)
    xf = x.astype(np.float32)
    lf, gf = fs.cross_entropy_with_grad(xf, t, axis=axis, **kw)
    rl2, rg2 = ref.cross_entropy_with_grad(xf, t, axis=axis, **kw)
    _close(lf, rl2, 1e-5)
    _close(gf, rg2, 1e-5)


@pytest.mark.parametrize("shape", [(3, 64), (3, 100), (2, 1100), (1, 2200)])
def test_float32_split_sums_both_ways(shape):
    """Float32 split sums (log-softmax, logsumexp, the losses) are first taken
    plain and summed again split for a dominant maximum
    (``_rows.split_from_plain``): rows of both kinds, with ties at the
    maximum, rows with and without a tail, one and two superblocks."""
    x = _x(shape, specials=False).astype(np.float32)
    x[0, 0] = x[0].max() + 40              # a dominant maximum: summed again
    if shape[0] > 1:
        x[1, :3] = x[1].max()              # three maxima, taken plain as 1 + s
    if shape[0] > 2:
        x[2, 5] = x[2].max() + 30          # dominant, target elsewhere
    t = np.arange(shape[0]) % 2            # targets 0, 1, 0: at the maxima, then not
    for got, want in ((fs.log_softmax(x), ref.log_softmax(x)),
                      (fs.logsumexp(x), ref.logsumexp(x)),
                      (fs.cross_entropy(x, t, reduction="none"),
                       ref.cross_entropy(x, t, reduction="none"))):
        _close(got, want, 1e-5)
    loss, g = fs.cross_entropy_with_grad(x, t, reduction="sum")
    rl, rg = ref.cross_entropy_with_grad(x, t, reduction="sum")
    _close(loss, rl, 1e-5)
    _close(g, rg, 1e-5)
    xi = x.copy()
    fs.cross_entropy_with_grad(xi, t, reduction="sum", inplace=True)
    np.testing.assert_array_equal(xi, g)


@pytest.mark.parametrize("shape", [(2, 100, 20), (1, 70, 300)])
def test_float32_lane_sums_both_ways(shape):
    """The lanes kernel (class axis not last) of the float32 losses: plain sums
    first, the split sums again for the block when a live lane has a
    dominant maximum (``losses._lanes_from_plain``); lanes of both kinds in
    one block, ties at the maximum, an ignored lane, with and without a
    gradient, in place."""
    x = _x(shape, specials=False).astype(np.float32)
    x[0, 0, 0] = x[0, :, 0].max() + 40        # dominant, target at it: summed again
    x[0, :3, 1] = x[0, :, 1].max()            # three maxima, taken plain as 1 + s
    x[0, 5, 2] = x[0, :, 2].max() + 30        # dominant, target elsewhere
    x[0, 7, 3] = x[0, :, 3].max() + 40        # dominant, lane ignored
    t = np.zeros((shape[0], shape[2]), np.int64)
    t[0, 1] = 2
    t[0, 3] = -100
    for red in ("none", "sum"):
        _close(fs.cross_entropy(x, t, axis=1, reduction=red),
               ref.cross_entropy(x, t, axis=1, reduction=red), 1e-5)
        loss, g = fs.cross_entropy_with_grad(x, t, axis=1, reduction=red)
        rl, rg = ref.cross_entropy_with_grad(x, t, axis=1, reduction=red)
        _close(loss, rl, 1e-5)
        _close(g, rg, 1e-5)
    assert not g[0, :, 3].any()               # the ignored lane
    xi = x.copy()
    fs.cross_entropy_with_grad(xi, t, axis=1, reduction="sum", inplace=True)
    np.testing.assert_array_equal(xi, g)
    # the lanes and the rows kernels agree (the same samples as rows)
    xr = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    lr, gr = fs.cross_entropy_with_grad(xr, t, reduction="none")
    ll, gl = fs.cross_entropy_with_grad(x, t, axis=1, reduction="none")
    _close(ll, lr, 1e-6)
    _close(np.moveaxis(gl, 1, -1), gr, 1e-6)


def test_float32_lane_gradient_scaling_matches_float64():
    """The lanes kernel scales a float32 block's gradient by double-word
    factors in float32 (``fma(e, kh, e * kl)``) when every lane's factor is
    in range, else in float64: the two round alike (a tie between them can
    differ by one unit, rarely). One more lane with a grad_output of 1e-30
    sends the block to the float64 loop; the other lanes must not change."""
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(1, 500, 17)) * 3).astype(np.float32)
    t = rng.integers(0, 500, (1, 17))
    go = rng.uniform(0.5, 2.0, (1, 17)).astype(np.float32)
    _, g32 = fs.cross_entropy_with_grad(x[:, :, :16].copy(), t[:, :16], axis=1,
                                        reduction="none", grad_output=go[:, :16])
    go[0, 16] = 1e-30
    _, g64 = fs.cross_entropy_with_grad(x, t, axis=1, reduction="none", grad_output=go)
    a, b = g32, g64[:, :, :16]
    ulps = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    assert np.count_nonzero(ulps) <= a.size // 1000


def test_split_from_plain_bound():
    from fastsoftmax._kernels._rows import PLAIN_SPLIT_MIN, VB, split_from_plain
    n = 1000
    b = (n + VB) * PLAIN_SPLIT_MIN           # 1 + b is exact
    assert tuple(split_from_plain(1.0 + b, 0.0, n)) == (b, 0.0, True)
    assert not split_from_plain(1.0 + b * (1 - 2.0 ** -20), 0.0, n)[2]
    assert not split_from_plain(1.0, 0.0, n)[2]                 # nothing but maxima
    assert not split_from_plain(np.nan, 0.0, n)[2]
    # s = th + tl - 1 as a double-word, exactly
    th, tl = 2.0 ** 60, 3.0
    s, slo, ok = split_from_plain(th, tl, n)
    assert ok and s == th and slo == 2.0


@pytest.mark.parametrize("shape", [(6, 5), (2, 100), (2, 4, 3)])
def test_nll_paths(shape):
    axis = 1 if len(shape) == 3 else -1
    lp = fs.log_softmax(_x(shape, specials=False), axis=axis)
    c = shape[axis]
    rng = np.random.default_rng(4)
    sample = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    t = rng.integers(0, c, sample)
    t.reshape(-1)[0] = -100
    w = rng.random(c) + 0.1
    for red in ("mean", "sum", "none"):
        _close(fs.nll_loss(lp, t, axis=axis, weight=w, reduction=red),
               ref.nll_loss(lp, t, axis=axis, weight=w, reduction=red))
    q = np.moveaxis(np.eye(c)[np.where(t < 0, 0, t)], -1, axis)
    _close(fs.nll_loss(lp, q, axis=axis), ref.nll_loss(lp, q, axis=axis))


@pytest.mark.parametrize("chunk", [None, 4, (3, 7), (5, 40)])
@pytest.mark.parametrize("targets", ["index", "dist"])
def test_linear_cross_entropy_paths(chunk, targets):
    rng = np.random.default_rng(5)
    h = rng.normal(size=(11, 6))
    w = rng.normal(size=(40, 6))
    b = rng.normal(size=40)
    if targets == "index":
        t = rng.integers(0, 40, 11)
        t[2] = -100
    else:
        q = rng.random((11, 40))
        t = q / q.sum(axis=1, keepdims=True)
    for kw in ({}, {"label_smoothing": 0.1, "z_loss": 1e-3, "weight": rng.random(40) + 0.1},
               {"reduction": "none"}):
        got = fs.linear_cross_entropy(h, w, t, linear_bias=b, chunk_size=chunk, **kw)
        exp = ref.linear_cross_entropy(h, w, t, linear_bias=b, **kw)
        _close(got[0], exp[0])
        for a, e in zip(got[1], exp[1]):
            _close(a, e)


def test_binary_paths():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(7, 5)) * 10
    t = rng.random((7, 5))
    w = rng.random(5)
    pw = rng.random(5) + 0.5
    for red in ("mean", "sum", "none"):
        a = fs.binary_cross_entropy_with_grad(x, t, weight=w, pos_weight=pw, reduction=red)
        b = ref.binary_cross_entropy_with_grad(x, t, weight=w, pos_weight=pw, reduction=red)
        _close(a[0], b[0])
        _close(a[1], b[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((2, 1100), -1), ((3, 70), -1), ((40, 7), -1),
                                        ((37, 17), -1), ((2, 30, 5), 1), ((2, 9, 70), 1)])
def test_in_place_equals_out_of_place(dtype, shape, axis):
    """out=x (and inplace=True, and out= either input of the backward kernels)
    run separate single-array loops (no overlap check for LLVM to fail): they
    must give the out-of-place results bit for bit."""
    rng = np.random.default_rng(21)
    x = (rng.normal(size=shape) * 8).astype(dtype)
    mask = rng.random(shape) < 0.9
    for kw in ({}, {"temperature": 0.7}, {"where": mask}):
        for f in (fs.softmax, fs.log_softmax):
            want = f(x, axis=axis, **kw)
            xi = x.copy()
            assert f(xi, axis=axis, out=xi, **kw) is xi
            assert np.array_equal(xi, want), (f.__name__, kw)
    g = rng.normal(size=shape).astype(dtype)
    for f, y in ((fs.softmax_backward, fs.softmax(x, axis=axis)),
                 (fs.log_softmax_backward, fs.log_softmax(x, axis=axis))):
        want = f(g, y, axis=axis)
        for which in (0, 1):             # out= either input
            a, b = g.copy(), y.copy()
            res = f(a, b, axis=axis, out=(a, b)[which])
            assert res is (a, b)[which] and np.array_equal(res, want), (f.__name__, which)
    c = shape[axis]
    t = rng.integers(0, c, tuple(s for i, s in enumerate(shape) if i != axis % len(shape)))
    t.reshape(-1)[::4] = -100
    for kw in ({}, {"label_smoothing": 0.1, "z_loss": 1e-3}):
        loss, g = fs.cross_entropy_with_grad(x, t, axis=axis, **kw)
        xi = x.copy()
        li, gi = fs.cross_entropy_with_grad(xi, t, axis=axis, inplace=True, **kw)
        assert gi is xi and np.array_equal(gi, g) and li == loss, kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_order_keys(dtype):
    """row_max is an integer maximum of order-preserving keys: it must equal
    np.max on any finite row (signed zeros, subnormals, float max), give +inf
    for a row holding one, and a NaN with the sign bit clear must win."""
    from fastsoftmax._kernels._rows import row_max
    fi = np.finfo(dtype)
    rng = np.random.default_rng(5)
    pool = np.array([0.0, -0.0, fi.tiny, -fi.tiny, fi.smallest_subnormal, -fi.smallest_subnormal,
                     fi.max, -fi.max, 1.0, -1.0, 3.5e-3, -7e5], dtype)
    for n in (1, 3, 64, 65, 130, 1100):
        for trial in range(6):
            row = rng.choice(pool, n) if trial % 2 else (rng.normal(size=n) * 10.0 ** trial)
            x = row.astype(dtype).reshape(1, n)
            got = row_max(x, None, 0, n)
            assert got == x.max(), (n, trial, got, x.max())
            if got == 0.0 and np.any(x == 0):
                # the maximum is a zero: +0.0 when the row holds one
                assert np.signbit(got) == (not np.any((x == 0) & ~np.signbit(x)))
            y = x.copy()
            y[0, rng.integers(n)] = np.inf
            assert row_max(y, None, 0, n) == np.inf
            y[0, rng.integers(n)] = np.nan
            assert np.isnan(row_max(y, None, 0, n))
            mask = rng.random((1, n)) < 0.5
            want = x[mask].max() if mask.any() else -np.inf
            assert row_max(x, mask, 0, n) == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((40, 17), -1), ((3, 70), -1),
                                        ((2, 1100), -1), ((2, 9, 70), 1)])
def test_nan_with_sign_bit(dtype, shape, axis):
    """A NaN with its sign bit set sorts below every key in row_max, so the row
    is not sent to the special path by its maximum: the NaN must still turn the
    row's outputs into NaN (through the sum), in every kernel, as NumPy's nan does."""
    rng = np.random.default_rng(8)
    x = (rng.normal(size=shape) * 3).astype(dtype)
    neg_nan = np.copysign(dtype(np.nan), dtype(-1))
    assert np.signbit(neg_nan)
    idx = [0] * len(shape)
    idx[axis] = 1
    x[tuple(idx)] = neg_nan
    bad = np.zeros(shape, bool)
    bad[tuple(idx)] = True
    bad_rows = np.any(bad, axis=axis)
    for f in (fs.softmax, fs.log_softmax):
        y = f(x, axis=axis)
        assert np.all(np.isnan(y) == np.expand_dims(bad_rows, axis).repeat(shape[axis], axis))
    lse = fs.logsumexp(x, axis=axis)
    assert np.array_equal(np.isnan(lse), bad_rows)
    t = rng.integers(0, shape[axis], bad_rows.shape)
    loss, g = fs.cross_entropy_with_grad(x, t, axis=axis, reduction="none")
    assert np.array_equal(np.isnan(loss), bad_rows)
    assert np.array_equal(np.isnan(fs.cross_entropy(x, t, axis=axis, reduction="none")),
                          bad_rows)
    assert np.all(np.isnan(g) == np.expand_dims(bad_rows, axis).repeat(shape[axis], axis))


_NRT_CHECK = """
import numpy as np
import fastsoftmax as fs
from numba import types
from fastsoftmax._kernels._jit import NO_NRT_DISPATCHERS
x = np.random.default_rng(3).normal(size=(40, 1100)).astype(np.float32)
t = np.arange(40) % 1100
fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x, axis=-1)
fs.cross_entropy_with_grad(x, t), fs.cross_entropy_with_grad(x[:, :7], t % 7)
fs.log_softmax_backward(x, fs.log_softmax(x))


def holds_array(ty):
    if isinstance(ty, types.Array):
        return True
    return isinstance(ty, types.BaseTuple) and any(holds_array(e) for e in ty.types)


checked = 0
for d in NO_NRT_DISPATCHERS:
    for sig in d.nopython_signatures:
        checked += 1
        assert not holds_array(sig.return_type), (d.py_func.__qualname__, sig)
print(checked)
"""


@pytest.mark.skipif(PYTHON_MODE, reason="compiled helpers only")
def test_helpers_without_runtime_return_no_arrays(tmp_path):
    """Helpers compiled without Numba's runtime do no reference counting: one
    returning an array would hand its caller a reference it never took (a
    use-after-free later). Every compiled signature must return no array.

    A helper's signatures exist only once it has been compiled: kernels loaded
    from the cache never compile their helpers, so the check runs in a fresh
    process with an empty cache directory (about 50 s of compiling)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", _NRT_CHECK], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.split()[-1]) > 20


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [64, 1000, 4100])
def test_fused_loss_equals_forward_loss(dtype, n):
    """The fused loss computes a wide row's loss after its gradient unless the
    z-loss needs the logsumexp first (``losses._ce_wide_row``): either way the
    per-sample losses equal the forward-only kernel's bit for bit, and the
    gradient's z-loss part matches the reference."""
    rng = np.random.default_rng(33)
    x = (rng.normal(size=(6, n)) * 6).astype(dtype)
    x[1] -= 500                          # a large common offset
    x[2, 5] = x[2].max() + 40            # a dominant maximum: a loss far below 1e-7
    t = rng.integers(0, n, 6)
    t[2] = 5
    t[4] = -100
    go = np.linspace(-2, 3, 6).astype(dtype)
    for kw in ({}, {"z_loss": 1e-3}, {"label_smoothing": 0.1}):
        loss, g = fs.cross_entropy_with_grad(x, t, reduction="none", grad_output=go, **kw)
        assert np.array_equal(loss, fs.cross_entropy(x, t, reduction="none", **kw)), kw
        rl, rg = ref.cross_entropy_with_grad(x, t, reduction="none", grad_output=go, **kw)
        # a path check against the float64-evaluated reference (a few float32
        # ULP); the SPEC's ULP bounds are tests/test_accuracy.py's
        rtol = 1e-9 if dtype == np.float64 else 1e-6
        _close(loss, rl, rtol)
        _close(g, rg, rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [70] + [pytest.param(n, marks=pytest.mark.skipif(
    PYTHON_MODE, reason="too slow as plain Python; n=70 covers the paths")) for n in
    (1100, 1024, 2048, 2049)])
def test_rows_do_not_depend_on_their_neighbours(dtype, n):
    """Rows up to NEXT_MAX_BYTES read the next row's maximum in their last
    sweep (forward._wide_row, losses._scale_big). A row's results must not
    depend on which rows come before or after it: rows of every kind (a +inf,
    a NaN of either sign, all -inf, an ignored target, a large offset, a
    dominant maximum, the maximum first or last) give the same bits in every
    order, out of place and in place, with and without a mask; a row alone
    gives them too."""
    from fastsoftmax._kernels._rows import NEXT_MAX_BYTES
    rng = np.random.default_rng(44)
    r = 10
    x = (rng.normal(size=(r, n)) * 5).astype(dtype)
    x[1, 3] = np.inf
    x[2, :] = -np.inf
    x[3, 7] = np.nan
    x[4, 9] = np.copysign(dtype(np.nan), dtype(-1))
    x[5] += dtype(3e4)
    x[6, 11] = x[6].max() + 60
    x[8, -1] = x[8].max() + 3            # the maximum in a row's tail block
    x[9, 0] = x[9].max() + 2             # and at its first entry
    t = rng.integers(0, n, r)
    t[7] = -100
    mask = rng.random((r, n)) < 0.8
    fused = n * np.dtype(dtype).itemsize <= NEXT_MAX_BYTES
    assert fused == (n <= (2048 if dtype == np.float32 else 1024))

    def run(p):
        xp, tp, mp = x[p], t[p], mask[p]
        res = [fs.softmax(xp), fs.log_softmax(xp), fs.softmax(xp, where=mp),
               fs.log_softmax(xp, temperature=0.7), fs.logsumexp(xp, axis=-1)]
        for f in (fs.softmax, fs.log_softmax):
            xi = xp.copy()
            res.append(f(xi, out=xi))
        for kw in ({}, {"label_smoothing": 0.1}, {"z_loss": 1e-3}):
            loss, g = fs.cross_entropy_with_grad(xp, tp, reduction="none", **kw)
            res += [loss, g]
        xi = xp.copy()
        loss, g = fs.cross_entropy_with_grad(xi, tp, reduction="none", inplace=True)
        res += [loss, g]
        inv = np.argsort(p)
        return [a[inv] for a in res]

    want = run(np.arange(r))
    for p in (np.arange(r)[::-1], rng.permutation(r), np.array([2, 3, 4, 1, 0, 9, 7, 8, 5, 6])):
        for a, b in zip(run(p), want):
            assert np.array_equal(a, b, equal_nan=True), p
    for i in (1, 3, 5, 6, 8):
        alone = run(np.array([i]))
        for a, b in zip(alone, want):
            assert np.array_equal(a[0], b[i], equal_nan=True), i


# ---------------------------------------------------------------- intrinsics
# The vector intrinsics of the short-row paths, on their own: every block size
# at the edges of exactly sized arrays (no slack past the last entry), so the
# masked loads and stores are what keeps them inside.
_CHECKED = PYTHON_MODE or bool(numba_config.BOUNDSCHECK)


def _tb(src, so, ss, nc, nr, dst, do, ds):
    transpose_block(src, so, ss, nc, nr, dst, do, ds)


def _sr(x, xo, cnt, mv, lv, mo, tbl, to, thc, out):
    shift_rows(x, xo, cnt, mv, lv, mo, tbl, to, thc, out)


_tb_jit = _tb if PYTHON_MODE else njit(_tb)
_sr_jit = _sr if PYTHON_MODE else njit(_sr)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_block(dtype):
    L = VEC_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(3)
    sizes = sorted({0, 1, 2, L // 2 - 1, L - 1, L})
    for nc in sizes:
        for nr in sizes:
            for ss in (max(nc, 1), L + 3):
                # src rows at stride ss, the last one ending the array
                src = rng.normal(size=(max(nr - 1, 0) * ss + nc) or 1).astype(dtype)
                for ds in (max(nr, 1), L + 5):
                    dst = np.full(max(nc - 1, 0) * ds + nr + 2, -7.0, dtype)
                    _tb_jit(src, 0, ss, nc, nr, dst, 1, ds)
                    want = np.full_like(dst, -7.0)
                    for r in range(nr):
                        for c in range(nc):
                            want[1 + c * ds + r] = src[r * ss + c]
                    assert np.array_equal(dst, want), (nc, nr, ss, ds)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shift_rows(dtype):
    """(x - m) * th - ell with each row's m and ell broadcast by a permute,
    against the same arithmetic in NumPy, for every entry count at the end
    of an exactly sized array."""
    L = VEC_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(4)
    n = 3
    tbl = (np.arange(L * n) // n).astype(dtype)
    mv = rng.normal(size=L).astype(dtype)
    lv = rng.random(size=L).astype(dtype)
    th = dtype(0.7)
    for cnt in range(L + 1):
        for v in (0, L * (n - 1)):
            x = rng.normal(size=v + cnt).astype(dtype)
            out = np.full(v + cnt, -7.0, dtype)
            _sr_jit(x, v, cnt, mv, lv, 0, tbl, v, th, out)
            rows = tbl[v:v + cnt].astype(int)
            want = np.full_like(out, -7.0)
            want[v:] = (x[v:] - mv[rows]) * th - lv[rows]
            assert np.array_equal(out, want), (cnt, v)
    x = rng.normal(size=2 * L).astype(dtype)
    x0 = x.copy()
    _sr_jit(x, 0, L, mv, lv, 0, tbl, 0, th, x)          # in place
    rows = tbl[:L].astype(int)
    assert np.array_equal(x[:L], (x0[:L] - mv[rows]) * th - lv[rows])
    assert np.array_equal(x[L:], x0[L:])


@pytest.mark.skipif(not _CHECKED, reason="checked under NUMBA_BOUNDSCHECK=1 and in Python mode")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_intrinsics_check_bounds(dtype):
    L = VEC_BYTES // np.dtype(dtype).itemsize
    a = np.zeros(4 * L, dtype)
    small = np.zeros(L - 1, dtype)
    with pytest.raises(IndexError, match="transpose_block"):
        _tb_jit(a, 0, L, L, L, a, 0, 2)             # reads past the end of src
    with pytest.raises(IndexError, match="transpose_block"):
        _tb_jit(a, 0, L, L, 1, a, 3 * L + 1, 1)     # writes past the end of dst
    with pytest.raises(IndexError, match="transpose_block"):
        _tb_jit(a, 2 * L, -L, L, 2, a, 0, L)        # a negative stride
    with pytest.raises(IndexError, match="transpose_block"):
        _tb_jit(a, 3 * L + 1, 1, L, 1, a, 0, L)     # reads past the end of src
    with pytest.raises(IndexError, match="transpose_block"):
        _tb_jit(a, 0, 1, L + 1, 1, a, 0, L)         # a block wider than L
    with pytest.raises(IndexError, match="shift_rows"):
        _sr_jit(a, 4 * L - 2, 3, a, a, 0, a, 0, dtype(1), a)
    with pytest.raises(IndexError, match="shift_rows"):
        _sr_jit(a, 0, L, small, a, 0, a, 0, dtype(1), a)
    with pytest.raises(IndexError, match="shift_rows"):
        _sr_jit(a, 0, L, a, a, 0, a, 3 * L + 1, dtype(1), a)
