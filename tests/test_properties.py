"""hypothesis properties of every function (SPEC §4 and the issue's list)."""

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from fastsoftmax.testing import check_grad, check_vjp

FLOAT_DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def logits(draw, min_side=1, max_side=40, elements=None, dtype=None, ndim=(1, 3)):
    dt = draw(FLOAT_DTYPES) if dtype is None else dtype
    shape = draw(hnp.array_shapes(min_dims=ndim[0], max_dims=ndim[1], min_side=min_side,
                                  max_side=max_side))
    el = elements if elements is not None else st.floats(-80, 80, allow_nan=False,
                                                         allow_infinity=False, width=32)
    x = draw(hnp.arrays(dt, shape, elements=el))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


def _tol(dt):
    return dict(rtol=1e-5, atol=1e-7) if np.dtype(dt) == np.float32 else dict(rtol=1e-12,
                                                                           atol=1e-14)


@given(logits())
def test_softmax_rows_sum_to_one_and_log_softmax_le_zero(data):
    x, axis = data
    p = fs.softmax(x, axis=axis)
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=axis), 1.0,
                               rtol=x.shape[axis] * 4 * np.finfo(x.dtype).eps)
    lp = fs.log_softmax(x, axis=axis)
    assert np.all(lp <= 0)
    lse = fs.logsumexp(x, axis=axis)
    assert np.all(lse >= x.max(axis=axis))
    np.testing.assert_allclose(np.exp(lp.astype(np.float64)), p, **_tol(x.dtype))


@given(logits(), st.integers(-40, 40))
def test_shift_invariance(data, shift):
    x, axis = data
    c = x.dtype.type(shift)                     # small integers: x + c is exact here
    assume(np.all((x + c) - c == x))
    np.testing.assert_allclose(fs.softmax(x + c, axis=axis), fs.softmax(x, axis=axis),
                               **_tol(x.dtype))
    np.testing.assert_allclose(fs.log_softmax(x + c, axis=axis), fs.log_softmax(x, axis=axis),
                               **_tol(x.dtype))
    np.testing.assert_allclose(fs.logsumexp(x + c, axis=axis) - c, fs.logsumexp(x, axis=axis),
                               **_tol(x.dtype))


@given(logits(), st.randoms(use_true_random=False))
def test_permutation_equivariance(data, rnd):
    x, axis = data
    perm = list(range(x.shape[axis]))
    rnd.shuffle(perm)
    xp = np.take(x, perm, axis=axis)
    np.testing.assert_allclose(fs.softmax(xp, axis=axis), np.take(fs.softmax(x, axis=axis), perm,
                                                                  axis=axis), **_tol(x.dtype))
    np.testing.assert_allclose(fs.logsumexp(xp, axis=axis), fs.logsumexp(x, axis=axis),
                               **_tol(x.dtype))


@given(logits(), st.data())
def test_where_equals_minus_inf_masking(data, d):
    x, axis = data
    mask = d.draw(hnp.arrays(np.bool_, x.shape))
    xm = np.where(mask, x, -np.inf).astype(x.dtype)
    assert np.array_equal(fs.softmax(x, axis=axis, where=mask), fs.softmax(xm, axis=axis))
    assert np.array_equal(fs.log_softmax(x, axis=axis, where=mask),
                          fs.log_softmax(xm, axis=axis))
    assert np.array_equal(fs.logsumexp(x, axis=axis, where=mask), fs.logsumexp(xm, axis=axis))


@given(logits(elements=st.integers(-20, 20).map(float), ndim=(1, 2)))
def test_temperature_limits(data):
    x, axis = data
    x = x.astype(np.float64)
    # T -> 0: the uniform distribution over the maxima; T -> inf: uniform
    p0 = fs.softmax(x, axis=axis, temperature=1e-3)
    is_max = x == x.max(axis=axis, keepdims=True)
    np.testing.assert_allclose(p0, is_max / is_max.sum(axis=axis, keepdims=True), atol=1e-300)
    pinf = fs.softmax(x, axis=axis, temperature=1e9)
    np.testing.assert_allclose(pinf, 1.0 / x.shape[axis], rtol=1e-7)
    np.testing.assert_allclose(fs.softmax(x, axis=axis, temperature=2.0),
                               fs.softmax(x / 2.0, axis=axis), rtol=1e-13)


@given(logits(max_side=8, dtype=np.float64, ndim=(1, 3)))
def test_backward_equals_finite_difference_vjp(data):
    """A coarse check (finite differences lose digits on entries of 1e-9 next
    to O(1) values); the exact values are covered by the ULP tests."""
    x, axis = data
    v = np.cos(np.arange(x.size)).reshape(x.shape)
    y = fs.softmax(x, axis=axis)
    check_vjp(lambda z: fs.softmax(z, axis=axis), x,
              lambda u: fs.softmax_backward(u, y, axis=axis), rtol=1e-3, cotangent=v)
    ly = fs.log_softmax(x, axis=axis)
    check_vjp(lambda z: fs.log_softmax(z, axis=axis), x,
              lambda u: fs.log_softmax_backward(u, ly, axis=axis), rtol=1e-3, cotangent=v)
    s = fs.sigmoid(x)
    check_vjp(fs.sigmoid, x, lambda u: fs.sigmoid_backward(u, s), rtol=1e-3, cotangent=v)


@st.composite
def ce_case(draw):
    n = draw(st.integers(1, 12))
    c = draw(st.integers(1, 9))
    x = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-30, 30, allow_nan=False)))
    t = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    ls = draw(st.sampled_from([0.0, 0.1, 0.5]))
    z = draw(st.sampled_from([0.0, 1e-3]))
    w = draw(st.none() | hnp.arrays(np.float64, (c,), elements=st.floats(0.1, 3)))
    red = draw(st.sampled_from(["mean", "sum", "none"]))
    return x, t, ls, z, w, red


@given(ce_case())
def test_fused_gradient_is_the_gradient_of_the_loss(case):
    x, t, ls, z, w, red = case
    kw = dict(label_smoothing=ls, z_loss=z, weight=w)
    loss, g = fs.cross_entropy_with_grad(x, t, reduction=red, **kw)
    go = np.linspace(0.5, 1.5, x.shape[0]) if red == "none" else 1.0
    if red == "none":
        loss_, g = fs.cross_entropy_with_grad(x, t, reduction=red, grad_output=go, **kw)

        def f(z_):
            return float(np.dot(fs.cross_entropy(z_, t, reduction="none", **kw), go))
    else:
        def f(z_):
            return float(fs.cross_entropy(z_, t, reduction=red, **kw))
    check_grad(f, x, g, rtol=1e-3)
    assert np.all(np.asarray(loss) >= 0)
    # gradient rows sum to zero without z-loss (softmax's shift invariance)
    if z == 0:
        np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-12)


@given(ce_case())
def test_fused_gradient_equals_log_softmax_backward(case):
    x, t, ls, z, w, red = case
    c = x.shape[1]
    loss, g = fs.cross_entropy_with_grad(x, t, reduction="sum", label_smoothing=ls, weight=w)
    ww = np.ones(c) if w is None else w
    mass = ls / c * ww[None, :] + (1 - ls) * np.eye(c)[t] * ww[None, :]
    lp = fs.log_softmax(x)
    np.testing.assert_allclose(g, fs.log_softmax_backward(-mass, lp), rtol=1e-10, atol=1e-13)
