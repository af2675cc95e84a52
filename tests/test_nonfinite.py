"""SPEC §4's non-finite table, row by row, for every layout path.

Each case is a row; the expectations are written from the table (not from
the implementation): k entries +inf give 1/k there, -log k, lse +inf, and a
cross-entropy of log k at a +inf target; a NaN poisons the row; rows of
only -inf (or fully masked) give zeros, -inf, -inf and a +inf loss. The
rows are run as the last axis (wide and short rows) and as the middle axis
(lanes), in float32 and float64.
"""

import math

import numpy as np
import pytest

import fastsoftmax as fs

NEG, POS, NAN = -np.inf, np.inf, np.nan


def _embed(row, n, layout):
    """Put ``row`` (padded with -inf... no: repeated) in a 2-D or 3-D array."""
    row = np.asarray(row, np.float64)
    if layout == "short":
        return row[None, :], -1
    if layout == "wide":
        pad = n - row.size
        return np.concatenate([row, np.full(pad, NEG)])[None, :], -1
    if layout == "lanes":
        x = np.stack([row, row[::-1]], axis=-1)      # (C, 2): two lanes
        return x[None], 1
    raise ValueError(layout)


LAYOUTS = ["short", "wide", "lanes"]
DTYPES = [np.float32, np.float64]


def _first(y, layout):
    """The result for the original row (lanes: lane 0)."""
    y = np.asarray(y)
    if layout == "lanes":
        return y[0, :, 0]
    return y[0][: None]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_k_plus_inf(layout, dtype):
    row = [1.0, POS, 3.0, POS, -2.0, POS]          # k = 3
    x, ax = _embed(row, 100, layout)
    x = x.astype(dtype)
    p = _first(fs.softmax(x, axis=ax), layout)[:6]
    np.testing.assert_array_equal(p, np.array([0, 1 / 3, 0, 1 / 3, 0, 1 / 3], dtype))
    lp = _first(fs.log_softmax(x, axis=ax), layout)[:6]
    np.testing.assert_array_equal(lp, np.array([NEG, -math.log(3), NEG, -math.log(3), NEG,
                                                -math.log(3)], dtype))
    lse = np.asarray(fs.logsumexp(x, axis=ax)).reshape(-1)[0]
    assert lse == POS
    if layout != "lanes":
        t_at = np.array([1])
        t_off = np.array([0])
        assert fs.cross_entropy(x, t_at, axis=ax) == pytest.approx(math.log(3), rel=1e-6)
        assert fs.cross_entropy(x, t_off, axis=ax) == POS
        loss, g = fs.cross_entropy_with_grad(x, t_at, axis=ax)
        gr = g[0][:6]
        np.testing.assert_allclose(gr, [0, 1 / 3 - 1, 0, 1 / 3, 0, 1 / 3], rtol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_poisons_the_row(layout, dtype):
    row = [1.0, NAN, POS, -2.0]
    x, ax = _embed(row, 100, layout)
    x = x.astype(dtype)
    assert np.all(np.isnan(_first(fs.softmax(x, axis=ax), layout)))
    assert np.all(np.isnan(_first(fs.log_softmax(x, axis=ax), layout)))
    assert np.isnan(np.asarray(fs.logsumexp(x, axis=ax)).reshape(-1)[0])
    if layout != "lanes":
        loss, g = fs.cross_entropy_with_grad(x, np.array([0]), axis=ax)
        assert np.isnan(loss) and np.all(np.isnan(g))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_some_neg_inf_with_a_finite_max(layout, dtype):
    row = [0.5, NEG, 2.0, NEG, 1.0]
    x, ax = _embed(row, 100, layout)
    x = x.astype(dtype)
    p = _first(fs.softmax(x, axis=ax), layout)[:5]
    e = np.exp(np.array([0.5, NEG, 2.0, NEG, 1.0]) - 2.0)
    np.testing.assert_allclose(p, e / e.sum(), rtol=1e-6)
    assert p[1] == 0 and p[3] == 0
    lp = _first(fs.log_softmax(x, axis=ax), layout)[:5]
    assert lp[1] == NEG and lp[3] == NEG and np.all(np.isfinite(lp[[0, 2, 4]]))
    assert np.isfinite(np.asarray(fs.logsumexp(x, axis=ax)).reshape(-1)[0])
    if layout != "lanes":
        assert fs.cross_entropy(x, np.array([1]), axis=ax) == POS
        assert np.isfinite(fs.cross_entropy(x, np.array([2]), axis=ax))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_only_neg_inf(layout, dtype):
    row = [NEG] * 5
    x, ax = _embed(row, 100, layout)
    x = x.astype(dtype)
    np.testing.assert_array_equal(_first(fs.softmax(x, axis=ax), layout), 0)
    assert np.all(_first(fs.log_softmax(x, axis=ax), layout) == NEG)
    assert np.asarray(fs.logsumexp(x, axis=ax)).reshape(-1)[0] == NEG
    if layout != "lanes":
        loss, g = fs.cross_entropy_with_grad(x, np.array([0]), axis=ax)
        assert loss == POS
        assert not np.any(np.isnan(g))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows(layout, dtype, rng):
    x, ax = _embed(rng.normal(size=7), 100, layout)
    x = x.astype(dtype)
    mask = np.zeros(x.shape, bool)
    np.testing.assert_array_equal(fs.softmax(x, axis=ax, where=mask), 0)
    assert np.all(fs.log_softmax(x, axis=ax, where=mask) == NEG)
    assert np.all(np.asarray(fs.logsumexp(x, axis=ax, where=mask)) == NEG)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 100, 3000])
def test_finite_values_of_any_size(dtype, n, rng):
    big = np.finfo(dtype).max
    rows = [
        np.full(n, big), np.full(n, -big),
        np.r_[big, np.full(n - 1, -big)],            # x - m overflows to -inf
        rng.uniform(-1, 1, n) * big,
        rng.uniform(-1, 1, n) * np.finfo(dtype).tiny,
    ]
    x = np.stack(rows).astype(dtype)
    p = fs.softmax(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.astype(np.float64).sum(-1), 1.0, rtol=n * 1e-6)
    lp = fs.log_softmax(x)
    assert not np.any(np.isnan(lp)) and np.all(lp <= 0)
    # -inf only where the exact value is below -float max
    with np.errstate(over="ignore"):
        xl = x.astype(np.longdouble)
        exact_below = (xl.max(-1, keepdims=True) - xl) > np.longdouble(big)
    assert np.all(np.isfinite(lp) | exact_below)
    lse = fs.logsumexp(x)
    assert np.all(np.isfinite(lse))
    t = np.zeros(x.shape[0], int)
    loss, g = fs.cross_entropy_with_grad(x, t, reduction="none")
    assert not np.any(np.isnan(loss)) and not np.any(np.isnan(g))
    assert np.all(loss >= 0)


def test_float16_results_overflow_to_inf_silently():
    """A float16 loss whose exact value exceeds 65504 is +inf, without a warning."""
    x = np.array([[60000, -60000]], np.float16)
    t = np.array([1])
    assert fs.cross_entropy(x, t, reduction="sum") == np.inf
    assert fs.cross_entropy_with_grad(x, t)[0] == np.inf
    assert fs.cross_entropy(x, t, reduction="none")[0] == np.inf
    lp = np.array([[-60000.0, -60000.0]], np.float16)
    assert fs.nll_loss(lp, t, weight=np.array([2.0, 2.0]), reduction="sum") == np.inf
    assert np.isneginf(fs.log_softmax(x)[0, 1])
    assert fs.logsumexp(np.array([60000, 60000], np.float16)) == 60000
