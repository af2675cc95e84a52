"""SPEC §2 conventions for every public function: dtypes, layouts, axes, 0-d,
empty shapes, out=, inputs never modified, no RuntimeWarning (conftest turns
them into errors)."""

import re

import numpy as np
import pytest

import fastsoftmax as fs
import fastsoftmax.reference as ref
from adversarial import layouts, shape_cases
from numpy.exceptions import AxisError

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
INPUT_DTYPES = [np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_]


def result_dtype(dt):
    dt = np.dtype(dt)
    if dt.kind == "f":
        return dt
    return F64


def rtol_for(dt):
    return {F16: 2e-3, F32: 2e-6, F64: 1e-13}[result_dtype(dt)]


# name -> (fastsoftmax callable, reference callable); both receive the same
# arrays: f(x, axis) where the extra operands are derived from x's values.
def _fwd(name):
    return (lambda x, axis: getattr(fs, name)(x, axis=axis),
            lambda x, axis: getattr(ref, name)(x, axis=axis))


def _bwd(name, y_of, with_axis=True):
    def call(mod):
        def run(x, axis):
            g, y = _grad(x), y_of(x)
            if with_axis:
                return getattr(mod, name)(g, y, axis=axis)
            return getattr(mod, name)(g, y)
        return run
    return call(fs), call(ref)


FUNCS = {
    "softmax": _fwd("softmax"),
    "log_softmax": _fwd("log_softmax"),
    "logsumexp": _fwd("logsumexp"),
    "softmax_t": (lambda x, axis: fs.softmax(x, axis=axis, temperature=2.5),
                  lambda x, axis: ref.softmax(x, axis=axis, temperature=2.5)),
    "log_softmax_where": (
        lambda x, axis: fs.log_softmax(x, axis=axis, where=_mask(x)),
        lambda x, axis: ref.log_softmax(x, axis=axis, where=_mask(x))),
    "sigmoid": (lambda x, axis: fs.sigmoid(x), lambda x, axis: ref.sigmoid(x)),
    "log_sigmoid": (lambda x, axis: fs.log_sigmoid(x), lambda x, axis: ref.log_sigmoid(x)),
    "softmax_backward": _bwd("softmax_backward", lambda x: x),
    "log_softmax_backward": _bwd("log_softmax_backward", lambda x: _neg(x)),
    "sigmoid_backward": _bwd("sigmoid_backward", lambda x: x, with_axis=False),
    "jacobian": (lambda x, axis: fs.softmax_jacobian(x, axis=axis),
                 lambda x, axis: ref.softmax_jacobian(x, axis=axis)),
}
LOSS_FUNCS = ["cross_entropy", "cross_entropy_with_grad", "nll_loss",
              "binary_cross_entropy_with_logits", "binary_cross_entropy_with_grad"]


def _mask(x):
    x = np.asarray(x)
    m = np.ones(x.shape, bool)
    if x.size:
        m.reshape(-1)[::3] = False
    return m


def _neg(x):
    """-|x| in x's dtype (int64 for integer and bool data): a log-probability."""
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        return -np.abs(x.astype(np.int64))
    return -np.abs(x)


def _grad(x):
    """An upstream gradient with x's shape, in x's result dtype."""
    x = np.asarray(x)
    g = np.cos(np.arange(x.size, dtype=np.float64)).reshape(x.shape)
    return g.astype(result_dtype(x.dtype))


def _values(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 7, shape).astype(dtype)
    return (rng.normal(size=shape) * 3).astype(dtype)


def _as_float64(a):
    return np.asarray(a, dtype=np.float64)


SHAPES = [s for s in shape_cases() if s[0] != "long_row"]


@pytest.mark.parametrize("fname", sorted(FUNCS))
@pytest.mark.parametrize("dtype", INPUT_DTYPES)
@pytest.mark.parametrize("case", SHAPES, ids=[s[0] for s in SHAPES])
def test_against_reference_all_layouts(fname, dtype, case):
    name, shape, axis = case
    f, r = FUNCS[fname]
    if fname == "jacobian" and np.prod(shape, dtype=int) > 2000:
        pytest.skip("jacobian is quadratic")
    x = _values(shape, dtype)
    expected = r(np.asarray(x), axis)
    base = None
    for lname, xl in layouts(x):
        before = np.array(xl, copy=True)
        got = f(xl, axis)
        # inputs are never modified
        assert np.array_equal(before, xl, equal_nan=True), lname
        got_arr = np.asarray(got)
        assert got_arr.dtype == result_dtype(dtype), (lname, got_arr.dtype)
        assert got_arr.shape == np.shape(expected), (lname, got_arr.shape)
        # the reference's Jacobian diagonal p (1 - p) cancels where p is near 1
        # (ours does not), so that comparison gets a float64-level tolerance
        rtol = max(rtol_for(dtype), 1e-10) if fname == "jacobian" else rtol_for(dtype)
        # backward results are differences (g - sum): compare them on the
        # scale of their terms
        scale = np.max(np.abs(expected), initial=1.0) if "backward" in fname else 0.0
        atol = max(1e-6 if result_dtype(dtype) == F16 else 1e-300, rtol * scale)
        np.testing.assert_allclose(got_arr.astype(np.float64), expected, rtol=rtol, atol=atol,
                                   err_msg=f"{fname} {name} {lname}")
        if base is None:
            base = got_arr
        else:
            # every layout gives bit-identical results to the C-contiguous case
            assert np.array_equal(got_arr, base, equal_nan=True), (fname, name, lname)
    if x.ndim == 0 and fname not in ("jacobian",):
        assert np.ndim(got) == 0 and not isinstance(got, np.ndarray)   # NumPy scalar


def _loss_inputs(fname, shape, axis, dtype):
    x = _values(shape, dtype, seed=1)
    if fname.startswith("binary"):
        t = (_values(shape, np.float64, seed=2) > 0).astype(np.float64)
        return x, t, {}
    ax = axis % max(len(shape), 1)
    n = shape[ax] if shape else 1
    sample = tuple(s for i, s in enumerate(shape) if i != ax)
    t = np.random.default_rng(3).integers(0, max(n, 1), sample) if n else np.zeros(sample, int)
    if fname == "nll_loss":
        x = fs.log_softmax(x, axis=axis) if x.size else x.astype(result_dtype(dtype))
    return x, t, {"axis": axis}


LOSS_SHAPES = [s for s in SHAPES if not (s[1] and s[1][s[2]] == 0)]   # zero classes raise


@pytest.mark.parametrize("fname", LOSS_FUNCS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("case", LOSS_SHAPES, ids=[s[0] for s in LOSS_SHAPES])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_against_reference_all_layouts(fname, dtype, case, reduction):
    name, shape, axis = case
    x, t, kw = _loss_inputs(fname, shape, axis, dtype)
    f, r = getattr(fs, fname), getattr(ref, fname)
    expected = r(_as_float64(x), t, reduction=reduction, **kw)
    base = None
    for lname, xl in layouts(x):
        before = np.array(xl, copy=True)
        got = f(xl, t, reduction=reduction, **kw)
        assert np.array_equal(before, xl, equal_nan=True)
        parts = got if isinstance(got, tuple) else (got,)
        exp_parts = expected if isinstance(expected, tuple) else (expected,)
        for g, e in zip(parts, exp_parts):
            ga = np.asarray(g)
            assert ga.dtype == result_dtype(dtype), (lname, ga.dtype)
            assert ga.shape == np.shape(e)
            np.testing.assert_allclose(ga.astype(np.float64), e, rtol=rtol_for(dtype) * 10,
                                       atol=1e-6 if result_dtype(dtype) == F16 else 1e-12,
                                       err_msg=f"{fname} {name} {lname}")
        if reduction != "none":
            assert isinstance(parts[0], np.generic) and np.ndim(parts[0]) == 0
        if base is None:
            base = parts
        else:
            for a, b in zip(parts, base):
                assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), (name, lname)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U3", "datetime64[s]",
                                   np.longdouble])
@pytest.mark.parametrize("fname", ["softmax", "log_softmax", "logsumexp", "sigmoid",
                                   "log_sigmoid", "softmax_jacobian"])
def test_unsupported_dtypes_raise_typeerror_naming_the_dtype(dtype, fname):
    if np.dtype(dtype) == np.float64:
        pytest.skip("long double is float64 on this platform")
    x = np.zeros((2, 3), dtype=dtype)
    with pytest.raises(TypeError, match=re.escape(str(np.dtype(dtype)))):
        getattr(fs, fname)(x)


def test_unsupported_dtypes_in_backward_and_losses():
    c = np.zeros((2, 3), np.complex128)
    for call in [lambda: fs.softmax_backward(c, np.zeros((2, 3))),
                 lambda: fs.log_softmax_backward(np.zeros((2, 3)), c),
                 lambda: fs.sigmoid_backward(c, c),
                 lambda: fs.cross_entropy(c, np.zeros(2, int)),
                 lambda: fs.binary_cross_entropy_with_logits(c, np.zeros((2, 3)))]:
        with pytest.raises(TypeError, match="complex128"):
            call()


@pytest.mark.parametrize("fname", ["softmax", "log_softmax", "logsumexp", "softmax_jacobian",
                                   "cross_entropy"])
def test_axis_out_of_range_is_axiserror(fname):
    x = np.zeros((2, 3))
    args = (np.zeros(2, int),) if fname == "cross_entropy" else ()
    for bad in (2, -3, 10):
        with pytest.raises(AxisError):
            getattr(fs, fname)(x, *args, axis=bad)


def test_negative_axes_count_from_the_end(rng):
    x = rng.normal(size=(3, 4, 5))
    for a in range(-3, 0):
        assert np.array_equal(fs.softmax(x, axis=a), fs.softmax(x, axis=a + 3))


def test_scalars():
    assert fs.softmax(3.0) == 1.0
    assert fs.log_softmax(-2) == 0.0
    assert fs.logsumexp(3.0) == 3.0
    assert fs.softmax_jacobian(2.0).shape == (1, 1)
    assert fs.softmax(np.float32(1)).dtype == np.float32
    assert fs.logsumexp([1.0, 2.0]) == pytest.approx(np.logaddexp(1.0, 2.0))
    assert fs.softmax([1, 2, 3]).dtype == np.float64


def test_python_lists_and_keepdims():
    v = fs.logsumexp([[1.0, 2.0], [3.0, 4.0]], axis=0, keepdims=True)
    assert v.shape == (1, 2)
    np.testing.assert_allclose(v[0], np.logaddexp([1, 2], [3, 4]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_shapes(dtype):
    assert fs.softmax(np.zeros((0,), dtype)).shape == (0,)
    assert fs.softmax(np.zeros((0, 4), dtype)).shape == (0, 4)
    assert fs.log_softmax(np.zeros((4, 0), dtype)).shape == (4, 0)
    lse = fs.logsumexp(np.zeros((4, 0), dtype))
    assert lse.shape == (4,) and np.all(lse == -np.inf) and lse.dtype == dtype
    assert fs.logsumexp(np.zeros((0, 4), dtype)).shape == (0,)
    assert fs.logsumexp(np.zeros((0,), dtype)) == -np.inf


# ---------------------------------------------------------------- out=
OUT_FUNCS = {
    "softmax": lambda x, out: fs.softmax(x, out=out),
    "log_softmax": lambda x, out: fs.log_softmax(x, out=out),
    "sigmoid": lambda x, out: fs.sigmoid(x, out=out),
    "log_sigmoid": lambda x, out: fs.log_sigmoid(x, out=out),
    "softmax_backward": lambda x, out: fs.softmax_backward(x * 0.5, x, out=out),
    "log_softmax_backward": lambda x, out: fs.log_softmax_backward(x * 0.5, x, out=out),
    "sigmoid_backward": lambda x, out: fs.sigmoid_backward(x * 0.5, x, out=out),
}


@pytest.mark.parametrize("fname", sorted(OUT_FUNCS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_parameter(fname, dtype, rng):
    f = OUT_FUNCS[fname]
    x = rng.normal(size=(5, 70)).astype(dtype)
    expected = f(x, None)
    out = np.empty_like(x)
    res = f(x, out)
    assert res is out
    assert np.array_equal(out, expected)
    # F-ordered and strided out arrays receive the same values
    outf = np.empty_like(x, order="F")
    assert f(x, outf) is outf and np.array_equal(outf, expected)
    buf = np.empty((5, 140), dtype)
    assert np.array_equal(f(x, buf[:, ::2]), expected)
    # in place: out may be the input itself
    xi = x.copy()
    assert f(xi, xi) is xi
    assert np.array_equal(xi, expected)
    with pytest.raises(ValueError, match="shape"):
        f(x, np.empty((5, 69), dtype))
    with pytest.raises(TypeError, match="dtype"):
        f(x, np.empty((5, 70), np.float16))
    ro = np.empty_like(x)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        f(x, ro)


def test_out_for_logsumexp_and_float16(rng):
    x = rng.normal(size=(4, 9)).astype(np.float16)
    out = np.empty(4, np.float16)
    assert fs.logsumexp(x, out=out) is out
    np.testing.assert_allclose(out.astype(float), ref.logsumexp(x.astype(float)), rtol=2e-3)
    out16 = np.empty((4, 9), np.float16)
    assert fs.softmax(x, out=out16) is out16
    with pytest.raises(TypeError):
        fs.softmax(x, out=np.empty((4, 9), np.float32))
    with pytest.raises(ValueError):
        fs.logsumexp(x, out=np.empty((4, 1), np.float16))
    assert fs.logsumexp(x, keepdims=True, out=np.empty((4, 1), np.float16)).shape == (4, 1)


def test_partially_overlapping_out_is_safe(rng):
    buf = rng.normal(size=(12, 80))
    x = buf[:10]
    expected = fs.softmax(x.copy())
    out = buf[2:]                   # overlaps the input, shifted by two rows
    fs.softmax(x, out=out)
    assert np.array_equal(out, expected)


def test_where_must_broadcast():
    with pytest.raises(ValueError, match="broadcast"):
        fs.softmax(np.zeros((3, 4)), where=np.ones((2, 4), bool))
    with pytest.raises(TypeError):
        fs.softmax(np.zeros((3, 4)), where=np.ones((3, 4), int))
    # a (C,) mask broadcasts over the rows; a row with nothing left is all zero
    y = fs.softmax(np.zeros((3, 4)), where=np.array([True, False, True, False]))
    assert np.array_equal(y, np.tile([0.5, 0, 0.5, 0], (3, 1)))
    assert np.array_equal(fs.softmax(np.zeros((2, 3)), where=False), np.zeros((2, 3)))
