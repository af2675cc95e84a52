"""SPEC §4 accuracy bounds, in ULP against higher-precision references."""

import numpy as np
import pytest

import fastsoftmax as fs
from _helpers import (LONGDOUBLE_OK, hp_ce_grad_rows, hp_cross_entropy_rows, hp_log_softmax,
                      hp_logsumexp, hp_softmax, max_ulp, representable)

pytestmark = pytest.mark.skipif(not LONGDOUBLE_OK, reason="needs an extended long double")

BOUND = 4.0
CASES = [(10, 1.0), (10, 30.0), (10, 1e4), (1000, 1.0), (1000, 30.0), (1000, 1e4),
         (32000, 1.0), (32000, 30.0), (32000, 1e4)]


def _data(rng, n, spread, dtype, rows=None):
    rows = rows or max(2, 120_000 // n)
    x = rng.uniform(-spread, spread, (rows, n)).astype(dtype)
    # adversarial rows: a dominant maximum (tiny s), ties at the maximum,
    # a large common offset, and values near the maximum.
    x[0] = x[0] - 60.0
    x[0, 0] = np.max(x[0]) + 60.0 if spread < 100 else x[0, 0] + spread
    x[1, : min(3, n)] = np.max(x[1])
    x[-1] = x[-1] + dtype(3e3)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,spread", CASES)
def test_softmax_ulp(rng, dtype, n, spread):
    x = _data(rng, n, spread, dtype)
    ref = hp_softmax(x)
    y = fs.softmax(x)
    normal = ref >= np.finfo(dtype).tiny
    assert max_ulp(y, ref, dtype, normal) <= BOUND
    # rows sum to one within a few ULP of 1, whatever the spread
    assert np.all(np.abs(y.astype(np.float64).sum(-1) - 1) < 10 * n * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,spread", CASES)
def test_log_softmax_ulp(rng, dtype, n, spread):
    x = _data(rng, n, spread, dtype)
    ref = hp_log_softmax(x)
    y = fs.log_softmax(x)
    finite = representable(ref, dtype) & (ref != 0)
    assert max_ulp(y, ref, dtype, finite) <= BOUND


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,spread", CASES)
def test_logsumexp_ulp(rng, dtype, n, spread):
    x = _data(rng, n, spread, dtype)
    assert max_ulp(fs.logsumexp(x), hp_logsumexp(x), dtype) <= BOUND


@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((2000, 10), -1), ((300, 1000), -1),
                                        ((4, 5000), -1), ((20, 300, 17), 1), ((40, 9, 3), 0)])
def test_logsumexp_float32_ill_conditioned_rows(rng, shape, axis):
    """Float32 rows whose logsumexp cancels (log-probabilities: the result is
    ~0 from a negative maximum) are recomputed in float64: bit for bit the
    float64 computation rounded to float32, also next to well-conditioned
    rows, under a mask and with a NaN row; the others stay within the bound."""
    z = rng.normal(size=shape) * 3
    x = fs.log_softmax(z, axis=axis).astype(np.float32)
    xm = np.moveaxis(x, axis, -1)
    xm[..., ::2, :] += np.float32(5.0)          # every other row well-conditioned
    xm[(0,) * (x.ndim - 1)][0] = np.nan
    got = fs.logsumexp(x, axis=axis)
    want = fs.logsumexp(x.astype(np.float64), axis=axis).astype(np.float32)
    bad = np.moveaxis(np.ones(x.shape, bool), axis, -1)[..., 0].copy()
    bad[..., ::2] = False
    assert np.array_equal(got[bad], want[bad], equal_nan=True)
    assert np.isnan(got[(0,) * got.ndim])
    good = ~bad
    good[(0,) * got.ndim] = False
    ref = hp_logsumexp(x, axis=axis)
    assert max_ulp(got[good], ref[good], np.float32) <= BOUND
    # masked log-probabilities, always without the row's largest (a row that
    # keeps nearly all its mass cancels beyond what float64 absorbs)
    mask = rng.random(x.shape) < 0.7
    top = np.argmax(np.nan_to_num(x, nan=-np.inf), axis=axis)
    np.put_along_axis(mask, np.expand_dims(top, axis), False, axis)
    mask[(0,) * x.ndim] = False                  # (the NaN entry)
    got_m = fs.logsumexp(x, axis=axis, where=mask)
    ref_m = hp_logsumexp(np.where(mask, x, -np.inf), axis=axis)
    assert max_ulp(got_m, ref_m, np.float32) <= BOUND


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,spread", [(10, 30.0), (1000, 30.0), (1000, 1e4), (32000, 30.0)])
def test_cross_entropy_ulp(rng, dtype, n, spread):
    x = _data(rng, n, spread, dtype)
    t = rng.integers(0, n, x.shape[0])
    t[0] = 0                     # the dominant maximum: a loss far below 1e-7
    ref = hp_cross_entropy_rows(x, t)
    loss = fs.cross_entropy(x, t, reduction="none")
    assert max_ulp(loss, ref, dtype) <= BOUND
    loss2, g = fs.cross_entropy_with_grad(x, t, reduction="none")
    assert np.array_equal(loss, loss2)
    gref = hp_ce_grad_rows(x, t, 1.0)
    normal = np.abs(gref) >= np.finfo(dtype).tiny
    assert max_ulp(g, gref, dtype, normal) <= BOUND


@pytest.mark.parametrize("layout", ["rows", "lanes"])
@pytest.mark.parametrize("n", [10, 100, 1000, 1003])
def test_float32_split_sums_around_the_plain_sum_bound(rng, n, layout):
    """Float32 rows whose non-maximal mass ``s`` lies on both sides of the bound
    below which the kernels stop trusting a plain sum of the exponentials
    (``_rows.split_from_plain``, ``losses._lanes_from_plain``), with 1, 2 and
    3 maxima and the target at a maximum or not: log-softmax, logsumexp, the
    loss and its gradient. "lanes": the same samples along axis 1 of a
    (1, C, N) array (the class axis not last); rows of 10 classes take the
    lanes kernel in both layouts."""
    from fastsoftmax._kernels._rows import PLAIN_SPLIT_MIN, VB
    bound = (n + VB) * PLAIN_SPLIT_MIN
    rows, targets = [], []
    for c in (1, 2, 3):
        for f in (2.0 ** -20, 1 / 64, 0.5, 0.9, 1.1, 2.0, 64.0):
            x = np.full(n, np.log(f * bound / (n - c)))
            x = x + rng.uniform(-0.3, 0.3, n)
            top = rng.choice(n, c, replace=False)
            x[top] = 0.0
            rows.append(x.astype(np.float32))
            targets.append(top[0] if len(rows) % 2 else (top[0] + 1) % n)
    x = np.stack(rows)
    t = np.array(targets)
    if layout == "rows":
        call, back = (lambda f, *a, **k: f(x, *a, **k)), (lambda v: v)
    else:
        x3 = np.ascontiguousarray(x.T)[None]
        call = lambda f, *a, **k: f(x3, *[v[None] for v in a], axis=1, **k)  # noqa: E731
        back = lambda v: np.moveaxis(v, 1, -1)[0] if v.ndim == 3 else v[0]  # noqa: E731
    fin = representable(hp_log_softmax(x), np.float32)
    assert max_ulp(back(call(fs.log_softmax)), hp_log_softmax(x), np.float32, fin) <= BOUND
    assert max_ulp(back(call(fs.logsumexp)), hp_logsumexp(x), np.float32) <= BOUND
    ref = hp_cross_entropy_rows(x, t)
    loss = back(call(fs.cross_entropy, t, reduction="none"))
    assert max_ulp(loss, ref, np.float32) <= BOUND
    loss, g = call(fs.cross_entropy_with_grad, t, reduction="none")
    loss, g = back(loss), back(g)
    assert max_ulp(loss, ref, np.float32) <= BOUND
    gref = hp_ce_grad_rows(x, t, 1.0)
    normal = np.abs(gref) >= np.finfo(np.float32).tiny
    assert max_ulp(g, gref, np.float32, normal) <= BOUND


@pytest.mark.parametrize("layout", ["rows", "lanes"])
@pytest.mark.parametrize("decades", [37, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_scales_ulp(rng, dtype, decades, layout):
    """Per-sample grad_output over +-``decades`` decades: the gradient's
    scaling in the data's dtype (a double-word factor) and its float64
    fallback for factors beyond 2**+-100 (in the lanes kernel: for a block
    with any such lane) both stay within the bound. "lanes": the samples
    along axis 1 of a (1, C, N) array."""
    x = _data(rng, 1000, 30.0, dtype, rows=16)
    t = rng.integers(0, 1000, 16)
    go = ((10.0 ** np.linspace(-decades, decades, 16)).astype(dtype)
          * np.where(np.arange(16) % 2, 1, -1))
    if layout == "rows":
        _, g = fs.cross_entropy_with_grad(x, t, reduction="none", grad_output=go)
    else:
        _, g = fs.cross_entropy_with_grad(np.ascontiguousarray(x.T)[None], t[None], axis=1,
                                          reduction="none", grad_output=go[None])
        g = g[0].T
    gref = hp_ce_grad_rows(x, t, 1.0)
    gref = gref * np.asarray(go, gref.dtype)[:, None]
    normal = (np.abs(gref) >= np.finfo(dtype).tiny) & (np.abs(gref) <= np.finfo(dtype).max)
    assert max_ulp(g, gref, dtype, normal) <= BOUND


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_131072(rng, dtype):
    x = rng.uniform(-30, 30, (3, 131072)).astype(dtype)
    x[0, 7] = 200
    ref = hp_softmax(x)
    assert max_ulp(fs.softmax(x), ref, dtype, ref >= np.finfo(dtype).tiny) <= BOUND
    assert max_ulp(fs.log_softmax(x), hp_log_softmax(x), dtype) <= BOUND
    assert max_ulp(fs.logsumexp(x), hp_logsumexp(x), dtype) <= BOUND


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
def test_non_last_axis_ulp(rng, dtype, axis):
    x = rng.uniform(-30, 30, (40, 300, 17)).astype(dtype)
    for f, hp in [(fs.softmax, hp_softmax), (fs.log_softmax, hp_log_softmax)]:
        ref = hp(x, axis=axis)
        ok = np.abs(ref) >= np.finfo(dtype).tiny
        assert max_ulp(f(x, axis=axis), ref, dtype, ok) <= BOUND
    assert max_ulp(fs.logsumexp(x, axis=axis), hp_logsumexp(x, axis=axis), dtype) <= BOUND


def test_tiny_values_keep_their_digits():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    exact = -mp.log1p(mp.exp(-30))             # log_softmax([0, -30])[0]
    for dt in (np.float32, np.float64):
        got = fs.log_softmax(np.array([0, -30], dt))[0]
        assert got != 0
        assert abs(float(got) - float(exact)) <= 4 * abs(np.spacing(dt(float(exact))))
    ce_exact = mp.log1p(2 * mp.exp(-30))      # cross_entropy([[0, -30, -30]], [0])
    for dt in (np.float32, np.float64):
        got = fs.cross_entropy(np.array([[0, -30, -30]], dt), np.array([0]))
        assert abs(float(got) - float(ce_exact)) <= 4 * abs(np.spacing(dt(float(ce_exact))))
    # subnormal results: gradual underflow in exp
    got = fs.log_softmax(np.array([0.0, -90.0], np.float32))[0]
    assert abs(float(got) - float(-mp.exp(-90))) <= 4 * np.spacing(np.float32(1e-45))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_temperature_ulp(rng, dtype):
    x = rng.uniform(-30, 30, (500, 100)).astype(dtype)
    for t in (0.5, 3.0, 0.1):
        ref = hp_softmax(x.astype(np.longdouble) / np.longdouble(t))
        y = fs.softmax(x, temperature=t)
        ok = ref >= np.finfo(dtype).tiny
        assert max_ulp(y, ref, dtype, ok) <= BOUND


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_ulp(rng, dtype):
    """"mean"/"sum" within 4 ULP of the exact sum of the rounded per-sample values."""
    from fractions import Fraction
    x = rng.normal(size=(20000, 7)).astype(dtype) * 4
    t = rng.integers(0, 7, 20000)
    per = fs.cross_entropy(x, t, reduction="none")
    exact = sum(Fraction(float(v)) for v in per)
    s = fs.cross_entropy(x, t, reduction="sum")
    assert abs(Fraction(float(s)) - exact) <= 4 * Fraction(float(np.spacing(dtype(float(exact)))))
    m = fs.cross_entropy(x, t, reduction="mean")
    em = exact / len(per)
    assert abs(Fraction(float(m)) - em) <= 4 * Fraction(float(np.spacing(dtype(float(em)))))
