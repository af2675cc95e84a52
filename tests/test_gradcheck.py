"""Every backward, every fused gradient and every layer's backward against finite differences.

All in float64, with the class axis last and not last. The checker is
:mod:`fastsoftmax.testing` (five-point central differences); each test asserts
the largest relative difference between the analytic and the numerical
derivative, beyond the stencil's own rounding noise, is below ``RTOL``
(an entry that differs by less than that noise counts 0). The largest difference found per function is
printed in a "gradient check" section at the end of the pytest run (and by
``python tests/test_gradcheck.py``).
"""

import itertools
import sys
import zlib

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.layers import LogSoftmax, Sigmoid, SigmoidWithLoss, Softmax, SoftmaxWithLoss
from fastsoftmax.testing import (check_grad, check_jvp, check_vjp, max_relative_difference,
                                 numerical_grad, numerical_jacobian, numerical_jvp)

from _helpers import through_both_paths

RTOL = 1e-5          # a correct gradient shows 1e-6 or less (usually ~1e-9), a wrong one O(1)
SHAPE = (3, 4, 5)    # axis -1: 12 rows of 5 classes; axis 1: 15 rows of 4 classes (lanes kernel)
AXES = (-1, 1)

# largest relative difference found, per (function, variant)
WORST = {}


class _GradcheckReport:
    """Prints the WORST table in pytest's terminal summary."""

    def pytest_terminal_summary(self, terminalreporter):
        if not WORST:
            return
        terminalreporter.section("gradient check: largest relative difference vs finite "
                                 "differences, beyond their rounding noise (0 = within it)")
        for line in report_lines():
            terminalreporter.write_line(line)


def report_lines():
    by_func = {}
    for (func, variant), rel in WORST.items():
        by_func.setdefault(func, []).append((variant, rel))
    lines = []
    for func in sorted(by_func):
        items = sorted(by_func[func])
        worst = max(rel for _, rel in items)
        n = len(items)
        lines.append(f"{func:<34} {worst:.2e}  ({n} case{'s' * (n != 1)}, float64, "
                     f"rtol {RTOL:.0e})")
        per_variant = {}
        for variant, rel in items:
            key = variant.split(",")[0]
            per_variant[key] = max(per_variant.get(key, 0.0), rel)
        if len(per_variant) > 1:
            for key, rel in sorted(per_variant.items()):
                lines.append(f"    {key:<30} {rel:.2e}")
    return lines


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    plugin = _GradcheckReport()
    pm = request.config.pluginmanager
    if not pm.has_plugin("fastsoftmax-gradcheck-report"):
        pm.register(plugin, "fastsoftmax-gradcheck-report")
    yield


def record(func, variant, rel):
    key = (func, variant)
    WORST[key] = max(WORST.get(key, 0.0), rel)
    assert rel <= RTOL, f"{func} [{variant}]: relative difference {rel:.3e} > {RTOL:.0e}"


def rng_for(*labels):
    """A generator seeded by the test's labels, the same in every process."""
    return np.random.default_rng([12345, zlib.crc32(repr(labels).encode())])


def logits(rng, shape=SHAPE, scale=2.0):
    return rng.standard_normal(shape) * scale


def n_classes(axis, shape=SHAPE):
    return shape[axis]


def sample_shape(axis, shape=SHAPE):
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1:]


# ------------------------------------------------------------------------------- the checker
class TestChecker:
    """The checker itself must be able to fail, and be exact where it can be."""

    def test_quadratic_is_exact(self):
        rng = np.random.default_rng(0)
        A = rng.standard_normal((6, 6))
        x = rng.standard_normal(6)
        grad = numerical_grad(lambda z: z @ A @ z, x)
        np.testing.assert_allclose(grad, (A + A.T) @ x, rtol=1e-12, atol=1e-12)

    def test_detects_a_wrong_gradient(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((4, 6))
        t = rng.integers(0, 6, 4)
        _, g = fs.cross_entropy_with_grad(x, t)
        f = lambda z: fs.cross_entropy(z, t)  # noqa: E731
        assert check_grad(f, x, g) < 1e-8
        wrong = g.copy()
        wrong[np.arange(4), t] += 1.0 / 4      # the classic bug: forgetting "- onehot"
        assert check_grad(f, x, wrong) > 0.1
        assert check_grad(f, x, g * (1 + 1e-4)) > 5e-5   # even a small scale error shows
        with pytest.raises(AssertionError, match="largest relative difference"):
            check_grad(f, x, wrong, rtol=1e-6)

    def test_vjp_detects_a_missing_term(self):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((3, 5))
        y = fs.softmax(x)
        assert check_vjp(fs.softmax, x, lambda v: fs.softmax_backward(v, y)) < 1e-8
        assert check_vjp(fs.softmax, x, lambda v: y * v) > 0.1      # diagonal only
        with pytest.raises(AssertionError):
            check_vjp(fs.softmax, x, lambda v: y * v, rtol=1e-6)

    def test_jvp_and_jacobian(self):
        rng = np.random.default_rng(3)
        x = rng.standard_normal(5)
        J = numerical_jacobian(np.sin, x)
        np.testing.assert_allclose(J, np.diag(np.cos(x)), atol=1e-11)
        u = rng.standard_normal(5)
        np.testing.assert_allclose(numerical_jvp(np.sin, x, u), np.cos(x) * u, rtol=1e-10)
        assert check_jvp(np.sin, x, lambda v: np.cos(x) * v) < 1e-9
        assert check_jvp(np.sin, x, lambda v: np.sin(x) * v) > 0.1

    def test_second_order_stencil(self):
        x = np.linspace(-1, 1, 7)
        rel = check_grad(lambda z: np.sum(np.exp(z)), x, np.exp(x), order=2)
        assert rel < 1e-7
        with pytest.raises(ValueError, match="order"):
            numerical_grad(np.sum, x, order=3)
        with pytest.raises(ValueError, match="eps"):
            numerical_grad(np.sum, x, eps=0.0)

    def test_scalar_function_required(self):
        with pytest.raises(TypeError, match="scalar"):
            numerical_grad(np.sin, np.ones(3))

    def test_function_input_is_a_float64_copy(self):
        seen = []

        def f(z):
            seen.append(z.dtype)
            z += 1.0                       # must not corrupt the checker's point
            return float(np.sum(z * z))

        x = np.arange(3, dtype=np.float32)
        g = numerical_grad(f, x)
        np.testing.assert_allclose(g, 2 * (np.arange(3) + 1.0), rtol=1e-10)
        assert set(seen) == {np.dtype(np.float64)}
        np.testing.assert_array_equal(x, np.arange(3))

    def test_non_contiguous_point(self):
        x = np.moveaxis(np.random.default_rng(4).standard_normal((2, 3, 4)), -1, 0)
        assert not x.flags.c_contiguous
        w = np.random.default_rng(5).standard_normal(x.shape)
        np.testing.assert_allclose(numerical_grad(lambda z: np.sum(w * z * z), x), 2 * w * x,
                                   rtol=1e-10, atol=1e-12)
        J = numerical_jacobian(lambda z: 3.0 * z, x)
        np.testing.assert_allclose(J.reshape(x.size, x.size), 3.0 * np.eye(x.size), atol=1e-12)

    def test_max_relative_difference(self):
        assert max_relative_difference([1.0, 2.0], [1.0, 2.0]) == 0.0
        assert max_relative_difference([1.0, 0.0], [1.1, 0.0]) == pytest.approx(0.1 / 1.1)
        assert max_relative_difference([np.nan], [1.0]) == np.inf
        assert max_relative_difference([np.inf], [np.inf]) == 0.0
        assert max_relative_difference([np.inf], [1.0]) == np.inf
        assert max_relative_difference([], []) == 0.0
        # tiny entries are compared against the floor, not their own size
        assert max_relative_difference([1.0, 1e-12], [1.0, 2e-12]) < 1e-5
        assert max_relative_difference([1.0, 1e-12], [1.0, 2e-12], floor=0.0) == 0.5
        with pytest.raises(ValueError, match="shapes differ"):
            max_relative_difference(np.ones(2), np.ones(3))


# ------------------------------------------------------------------------------- backward
SOFTMAX_VARIANTS = ("plain", "temperature", "where")


def _mask(rng, axis):
    m = rng.random(SHAPE) < 0.6
    # keep at least one entry per row so no row is fully masked
    first = [slice(None)] * len(SHAPE)
    first[axis] = 0
    m[tuple(first)] = True
    return m


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("variant", SOFTMAX_VARIANTS)
def test_softmax_backward(axis, variant):
    rng = rng_for("softmax_backward", axis, variant)
    x = logits(rng)
    kw, T = {}, 1.0
    if variant == "temperature":
        T = 2.5
        kw["temperature"] = T
    elif variant == "where":
        kw["where"] = _mask(rng, axis)
    y = fs.softmax(x, axis, **kw)

    def vjp(v):
        # d softmax(x / T) / dx = (1 / T) * (the softmax VJP at y)
        return fs.softmax_backward(v, y, axis) / T

    rel = check_vjp(lambda z: fs.softmax(z, axis, **kw), x, vjp)
    record("softmax_backward", f"{variant}, axis={axis}", rel)
    v = rng.standard_normal(SHAPE)
    np.testing.assert_allclose(fs.softmax_backward(v, y, axis), ref.softmax_backward(v, y, axis),
                               rtol=1e-12, atol=1e-15)
    if variant == "where":
        assert np.all(fs.softmax_backward(v, y, axis)[~kw["where"]] == 0)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("variant", ("plain", "temperature"))
def test_log_softmax_backward(axis, variant):
    rng = rng_for("log_softmax_backward", axis, variant)
    x = logits(rng)
    T = 0.7 if variant == "temperature" else 1.0
    y = fs.log_softmax(x, axis, temperature=T)
    rel = check_vjp(lambda z: fs.log_softmax(z, axis, temperature=T), x,
                    lambda v: fs.log_softmax_backward(v, y, axis) / T)
    record("log_softmax_backward", f"{variant}, axis={axis}", rel)


@pytest.mark.parametrize("scale", (1.0, 6.0))
def test_sigmoid_backward(scale):
    rng = rng_for("sigmoid_backward", scale)
    x = logits(rng, scale=scale)
    y = fs.sigmoid(x)
    rel = check_vjp(fs.sigmoid, x, lambda v: fs.sigmoid_backward(v, y))
    record("sigmoid_backward", f"scale={scale}", rel)


@pytest.mark.parametrize("axis", AXES + (0,))
def test_softmax_jacobian(axis):
    rng = rng_for("softmax_jacobian", axis)
    x = logits(rng)
    J = fs.softmax_jacobian(x, axis)
    C = x.shape[axis]
    batch = sample_shape(axis)
    assert J.shape == batch + (C, C)

    def f_moved(xm):                         # class axis last, in and out
        return np.moveaxis(fs.softmax(np.moveaxis(xm, -1, axis), axis), axis, -1)

    xm = np.moveaxis(x, axis, -1)
    Jn = numerical_jacobian(f_moved, xm)     # batch + (C,) + batch + (C,)
    B = int(np.prod(batch))
    Jn = Jn.reshape(B, C, B, C)
    Jn_rows = np.stack([Jn[b, :, b, :] for b in range(B)]).reshape(batch + (C, C))
    # J[..., i, j] = d p_i / d x_j
    record("softmax_jacobian", f"axis={axis}", max_relative_difference(J, Jn_rows))
    # off-row blocks are zero: rows are independent
    off = Jn.copy()
    for b in range(B):
        off[b, :, b, :] = 0
    assert np.max(np.abs(off)) < 1e-12
    # and the Jacobian's transpose gives the VJP of softmax_backward
    v = rng.standard_normal(x.shape)
    vm = np.moveaxis(v, axis, -1)
    vjp = np.einsum("...ij,...i->...j", J, vm)
    np.testing.assert_allclose(np.moveaxis(vjp, -1, axis),
                               fs.softmax_backward(v, fs.softmax(x, axis), axis),
                               rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------- fused losses
TARGET_KINDS = ("index", "ignore_index", "onehot", "probability")
REDUCTIONS = ("mean", "sum", "none")


def make_target(kind, rng, axis, shape=SHAPE):
    C = shape[axis]
    ss = sample_shape(axis, shape)
    idx = rng.integers(0, C, ss)
    if kind == "index":
        return idx, {}
    if kind == "ignore_index":
        flat = idx.reshape(-1)
        flat[::3] = -1                      # a third of the samples ignored, custom ignore_index
        return idx, {"ignore_index": -1}
    if kind == "onehot":
        return np.moveaxis(np.eye(C, dtype=np.int64)[idx], -1, axis), {}
    q = rng.dirichlet(np.full(C, 0.7), size=ss)
    return np.moveaxis(q, -1, axis), {}


CE_CASES = list(itertools.product(TARGET_KINDS, (False, True), (0.0, 0.1), (0.0, 0.05),
                                  REDUCTIONS, AXES))


@pytest.mark.parametrize("kind,weighted,smoothing,z_loss,reduction,axis", CE_CASES)
def test_cross_entropy_with_grad(kind, weighted, smoothing, z_loss, reduction, axis):
    rng = rng_for("ce", kind, weighted, smoothing, z_loss, reduction, axis)
    x = logits(rng)
    t, extra = make_target(kind, rng, axis)
    C = n_classes(axis)
    kw = dict(label_smoothing=smoothing, z_loss=z_loss, reduction=reduction, **extra)
    if weighted:
        kw["weight"] = rng.uniform(0.5, 2.0, C)
    label = (f"{kind}, weight={weighted}, smoothing={smoothing}, z_loss={z_loss}, "
             f"{reduction}, axis={axis}")

    if reduction == "none":
        go = rng.standard_normal(sample_shape(axis))
    else:
        go = 0.75
    loss, g = fs.cross_entropy_with_grad(x, t, axis, grad_output=go, **kw)
    assert g.shape == x.shape and g.dtype == np.float64

    # the loss agrees with the loss-only function and with the reference
    np.testing.assert_allclose(loss, fs.cross_entropy(x, t, axis, **kw), rtol=1e-13)
    np.testing.assert_allclose(loss, ref.cross_entropy(x, t, axis, **kw), rtol=1e-12)

    if reduction == "none":
        rel = check_vjp(lambda z: fs.cross_entropy(z, t, axis, **kw), x, g, cotangent=go)
    else:
        rel = check_grad(lambda z: go * fs.cross_entropy(z, t, axis, **kw), x, g)
    record("cross_entropy_with_grad", f"{kind} targets, {label}", rel)

    # the reference's gradient agrees too
    _, g_ref = ref.cross_entropy_with_grad(x, t, axis, grad_output=go, **kw)
    assert max_relative_difference(g, g_ref) < 1e-10
    if kind == "ignore_index":
        ignored = np.expand_dims(t == -1, axis)
        assert np.all(np.where(np.broadcast_to(ignored, x.shape), g, 0.0) == 0.0)
        assert np.all(np.broadcast_to(ignored, x.shape) <= (g == 0))


@pytest.mark.parametrize("axis", AXES)
def test_cross_entropy_with_grad_inplace_and_out(axis):
    rng = rng_for("ce-inplace", axis)
    x = logits(rng)
    t, _ = make_target("index", rng, axis)
    loss, g = fs.cross_entropy_with_grad(x, t, axis)
    out = np.empty_like(x)
    loss2, g2 = fs.cross_entropy_with_grad(x, t, axis, out=out)
    assert g2 is out
    xi = x.copy()
    loss3, g3 = fs.cross_entropy_with_grad(xi, t, axis, inplace=True)
    for gi in (g2, g3):
        np.testing.assert_array_equal(gi, g)
    rel = check_grad(lambda z: fs.cross_entropy(z, t, axis), x, g3)
    record("cross_entropy_with_grad", f"out= / inplace=True, axis={axis}", rel)


BCE_WEIGHTS = ("none", "per-class", "full")
BCE_CASES = list(itertools.product(BCE_WEIGHTS, (False, True), REDUCTIONS, ("soft", "hard")))


@pytest.mark.parametrize("weight_kind,use_pos_weight,reduction,target_kind", BCE_CASES)
def test_binary_cross_entropy_with_grad(weight_kind, use_pos_weight, reduction, target_kind):
    rng = rng_for("bce", weight_kind, use_pos_weight, reduction, target_kind)
    x = logits(rng, scale=3.0)
    if target_kind == "soft":
        t = rng.random(SHAPE)
        t.reshape(-1)[:4] = [0.0, 1.0, 0.0, 1.0]
    else:
        t = rng.integers(0, 2, SHAPE)
    kw = {"reduction": reduction}
    if weight_kind == "per-class":
        kw["weight"] = rng.uniform(0.5, 2.0, SHAPE[-1])
    elif weight_kind == "full":
        kw["weight"] = rng.uniform(0.0, 2.0, SHAPE)
    if use_pos_weight:
        kw["pos_weight"] = rng.uniform(0.5, 3.0, SHAPE[-1])
    go = rng.standard_normal(SHAPE) if reduction == "none" else 1.3
    loss, g = fs.binary_cross_entropy_with_grad(x, t, grad_output=go, **kw)
    np.testing.assert_allclose(loss, fs.binary_cross_entropy_with_logits(x, t, **kw), rtol=1e-13)
    # (the reference's (1 - t) x + log(1 + exp(-x)) cancels for t = 0 and x << 0: 1e-12 relative)
    np.testing.assert_allclose(loss, ref.binary_cross_entropy_with_logits(x, t, **kw),
                               rtol=1e-10, atol=1e-300)
    if reduction == "none":
        rel = check_vjp(lambda z: fs.binary_cross_entropy_with_logits(z, t, **kw), x, g,
                        cotangent=go)
    else:
        rel = check_grad(lambda z: go * fs.binary_cross_entropy_with_logits(z, t, **kw), x, g)
    record("binary_cross_entropy_with_grad",
           f"weight={weight_kind}, pos_weight={use_pos_weight}, {reduction}, {target_kind}", rel)


# ------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("layer_cls", (Softmax, LogSoftmax))
def test_softmax_layers_backward(layer_cls, axis):
    rng = rng_for("layer", layer_cls.__name__, axis)
    x = logits(rng)
    layer = layer_cls(axis=axis)
    layer.forward(x)
    rel = check_vjp(lambda z: layer_cls(axis=axis).forward(z), x, layer.backward)
    record(f"layers.{layer_cls.__name__}.backward", f"axis={axis}", rel)


def test_sigmoid_layer_backward():
    rng = rng_for("layer", "Sigmoid")
    x = logits(rng, scale=3.0)
    layer = Sigmoid()
    layer.forward(x)
    rel = check_vjp(lambda z: Sigmoid().forward(z), x, layer.backward)
    record("layers.Sigmoid.backward", "", rel)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("kind", ("index", "onehot", "probability"))
@pytest.mark.parametrize("dout", (1, 0.5))
def test_softmax_with_loss_backward(kind, axis, dout):
    rng = rng_for("layer", "SoftmaxWithLoss", kind, axis, dout)
    x = logits(rng)
    t, _ = make_target(kind, rng, axis)
    layer = SoftmaxWithLoss(axis=axis)
    layer.forward(x, t)
    dx = layer.backward(dout) if dout != 1 else layer.backward()
    rel = check_grad(lambda z: dout * SoftmaxWithLoss(axis=axis).forward(z, t), x, dx)
    record("layers.SoftmaxWithLoss.backward", f"{kind} targets, dout={dout}, axis={axis}", rel)


@pytest.mark.parametrize("kind", ("soft", "hard"))
@pytest.mark.parametrize("dout", (1, 2.0))
def test_sigmoid_with_loss_backward(kind, dout):
    rng = rng_for("layer", "SigmoidWithLoss", kind, dout)
    x = logits(rng, scale=3.0)
    t = rng.random(SHAPE) if kind == "soft" else rng.integers(0, 2, SHAPE).astype(np.float64)
    layer = SigmoidWithLoss()
    layer.forward(x, t)
    dx = layer.backward(dout)
    rel = check_grad(lambda z: dout * SigmoidWithLoss().forward(z, t), x, dx)
    record("layers.SigmoidWithLoss.backward", f"{kind} targets, dout={dout}", rel)


# ------------------------------------------------- the backward's common-call path
@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (4, 16), (7, 300), (64, 1000), (0, 5), (3, 0)])
@pytest.mark.parametrize("axis", [-1, 1])
def test_backward_fast_path_is_bit_identical(rng, monkeypatch, name, dtype, shape, axis):
    """The common call (two C-contiguous arrays of one float dtype, classes last,
    no out=) skips the general path's plumbing; results must be bit-identical,
    also with non-finite entries and with grad and y the same array.
    (64, 1000) takes the parallel kernel."""
    from fastsoftmax._api import backward as api_backward
    f = getattr(fs, name)
    x = (rng.normal(size=shape) * 4).astype(dtype)
    y = fs.softmax(x) if name == "softmax_backward" else fs.log_softmax(x)
    g = rng.normal(size=shape).astype(dtype)
    if x.size > 4:
        g.reshape(-1)[2] = np.inf
        g.reshape(-1)[-1] = np.nan
    taken, fast, slow = through_both_paths(monkeypatch, api_backward, "_backward_fast",
                                           lambda: [f(g, y, axis), f(y, y, axis)])
    assert taken == [True, True]
    for a, b in zip(fast, slow, strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call", ["out", "axis0", "3d", "mixed", "fortran", "readonly",
                                  "np_axis", "list"])
def test_backward_calls_outside_the_fast_path_match_the_general_path(rng, monkeypatch, call):
    """Every way out of the backward's fast path is refused by it and gives the
    general path's result."""
    from fastsoftmax._api import backward as api_backward
    shape = (2, 5, 6) if call == "3d" else (5, 6)
    y = fs.softmax(rng.normal(size=shape))
    g = rng.normal(size=shape)
    kw = {}
    if call == "axis0":
        kw["axis"] = 0
    elif call == "np_axis":
        kw["axis"] = np.int64(-1)
    elif call == "mixed":
        g = g.astype(np.float32)
    elif call == "fortran":
        y = np.asfortranarray(y)
    elif call == "readonly":
        y.flags.writeable = False
    elif call == "list":
        g = g.tolist()

    def calls():
        out = {"out": np.empty(shape)} if call == "out" else {}
        return [fs.softmax_backward(g, y, **kw, **out)]
    taken, got, want = through_both_paths(monkeypatch, api_backward, "_backward_fast", calls)
    assert taken == [False]
    np.testing.assert_array_equal(got[0], want[0])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
