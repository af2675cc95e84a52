"""The layers against the formulas and code of the source notes (../shared/seeds/).

Note 004 ("deep learning from scratch"): the Softmax and SoftmaxWithLoss
classes with ``params``/``grads``/``forward``/``backward``, the softmax
backward ``y * (dout - sum(dout * y))`` and the Softmax-with-Loss backward
``(y - t) * dout / N``, one-hot or index targets. Note 003: for two classes,
softmax is the sigmoid of the logit difference; ``nll_loss`` with reductions
"none" / "sum". The notes' own NumPy code is transcribed below (``seed_*``)
and the layers are compared with it in float64. Finite-difference checks of
every layer's backward are in ``test_gradcheck.py``.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.layers import LogSoftmax, Sigmoid, SigmoidWithLoss, Softmax, SoftmaxWithLoss

LAYERS = (Softmax, LogSoftmax, Sigmoid, SoftmaxWithLoss, SigmoidWithLoss)


# ----------------------------------------------------------------- the notes' code (note 004)
def seed_softmax(a):
    """softmax_1 of note 004: per-row max subtracted (2-D), or the whole-vector max (1-D)."""
    if a.ndim == 2:
        a = a - a.max(axis=1, keepdims=True)
        a = np.exp(a)
        return a / np.sum(a, axis=1, keepdims=True)
    a = a - np.max(a)
    return np.exp(a) / np.sum(np.exp(a))


class SeedSoftmax:
    def __init__(self):
        self.params, self.grads = [], []
        self.out = None

    def forward(self, a):
        self.out = seed_softmax(a)
        return self.out

    def backward(self, dout):
        da = self.out * dout
        sumda = np.sum(da, axis=1, keepdims=True)
        da -= self.out * sumda
        return da


class SeedSoftmaxWithLoss:
    """Note 004's class, with the exact loss (no ``+ 1e-7`` inside the log)."""

    def __init__(self):
        self.params, self.grads = [], []
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = seed_softmax(x)
        if self.t.size == self.y.size:       # one-hot -> label indices
            self.t = self.t.argmax(axis=1)
        batch = self.y.shape[0]
        return -np.sum(np.log(self.y[np.arange(batch), self.t])) / batch

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        dx *= dout
        dx = dx / batch_size
        return dx


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def _close(a, b, rtol=1e-13, atol=1e-16):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=rtol, atol=atol)


# ----------------------------------------------------------------- interface
@pytest.mark.parametrize("cls", LAYERS)
def test_interface(cls):
    layer = cls()
    assert layer.params == [] and isinstance(layer.params, list)
    assert layer.grads == [] and isinstance(layer.grads, list)
    assert layer.params is not layer.grads
    assert callable(layer.forward) and callable(layer.backward)


def test_layers_do_not_share_state(rng):
    a, b = Softmax(), Softmax()
    a.forward(rng.standard_normal((2, 3)))
    assert b.out is None and a.params is not b.params


# ----------------------------------------------------------------- note 004: worked examples
def test_note_004_softmax_examples():
    _close(fs.softmax(np.array([1, 2, 3, 4])),
           [0.0320586, 0.08714432, 0.23688282, 0.64391426], rtol=0, atol=5e-9)
    a_2 = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 13]])
    expected = [[0.0320586, 0.08714432, 0.23688282, 0.64391426],
                [0.0320586, 0.08714432, 0.23688282, 0.64391426],
                [0.01521943, 0.0413707, 0.11245721, 0.83095266]]
    _close(Softmax().forward(a_2), expected, rtol=0, atol=5e-9)
    # the note's observation: shifting a row leaves its softmax unchanged (rows 0 and 1)
    y = fs.softmax(a_2)
    np.testing.assert_array_equal(y[0], y[1])
    # "axis=0" variant (softmax_2 of the note, the transposed layout)
    _close(fs.softmax(a_2.T, axis=0), np.asarray(expected).T, rtol=0, atol=5e-9)


def test_note_004_cross_entropy_error_example():
    y = np.array([[0.1, 0.2, 0.7], [0.2, 0.3, 0.5]])
    t = np.array([[1, 0, 0], [0, 1, 0]])
    expected = -(np.log(0.1) + np.log(0.3)) / 2
    _close(fs.nll_loss(np.log(y), t), expected)                 # one-hot rows
    _close(fs.nll_loss(np.log(y), t.argmax(axis=1)), expected)  # label indices


# ----------------------------------------------------------------- Softmax layer
@pytest.mark.parametrize("shape", [(4, 7), (1, 3), (6, 2)])
def test_softmax_forward_backward_match_note(rng, shape):
    x = rng.standard_normal(shape) * 3
    dout = rng.standard_normal(shape)
    seed, layer = SeedSoftmax(), Softmax()
    _close(layer.forward(x), seed.forward(x))
    dx = layer.backward(dout)
    _close(dx, seed.backward(dout), rtol=1e-12, atol=1e-15)
    # the formula spelled out: y * (dout - sum(dout * y))
    y = layer.out
    _close(dx, y * (dout - np.sum(dout * y, axis=1, keepdims=True)), rtol=1e-12, atol=1e-15)


def test_softmax_backward_non_last_axis(rng):
    x = rng.standard_normal((3, 5, 4))
    dout = rng.standard_normal((3, 5, 4))
    layer = Softmax(axis=1)
    y = layer.forward(x)
    _close(y, ref.softmax(x, axis=1))
    _close(layer.backward(dout), y * (dout - np.sum(dout * y, axis=1, keepdims=True)),
           rtol=1e-12, atol=1e-15)


def test_softmax_backward_of_constant_dout_is_zero(rng):
    # the rows of the Jacobian sum to 0: a gradient that is constant along the row vanishes
    layer = Softmax()
    layer.forward(rng.standard_normal((3, 6)))
    assert np.max(np.abs(layer.backward(np.full((3, 6), 2.5)))) < 1e-15
    assert np.max(np.abs(layer.backward())) < 1e-15            # dout=1 broadcasts


def test_softmax_backward_equals_jacobian_product(rng):
    x = rng.standard_normal((4, 5))
    dout = rng.standard_normal((4, 5))
    layer = Softmax()
    layer.forward(x)
    J = fs.softmax_jacobian(x)                                   # J[n, i, j] = dp_i/dx_j
    _close(layer.backward(dout), np.einsum("nij,ni->nj", J, dout), rtol=1e-12, atol=1e-15)
    # note 000's entries: dp_i/dx_i = p_i (1 - p_i), dp_i/dx_j = -p_i p_j
    p = fs.softmax(x)
    _close(np.diagonal(J, axis1=1, axis2=2), p * (1 - p), rtol=1e-13)
    _close(J[:, 0, 1], -p[:, 0] * p[:, 1], rtol=1e-13)


# ----------------------------------------------------------------- SoftmaxWithLoss
@pytest.mark.parametrize("dout", [1, 0.5, 3.0])
def test_softmax_with_loss_matches_note(rng, dout):
    N, C = 8, 5
    x = rng.standard_normal((N, C)) * 2
    t = rng.integers(0, C, N)
    seed, layer = SeedSoftmaxWithLoss(), SoftmaxWithLoss()
    _close(layer.forward(x, t), seed.forward(x, t))
    dx = layer.backward(dout) if dout != 1 else layer.backward()
    _close(dx, seed.backward(dout), rtol=1e-12, atol=1e-17)
    # (y - t) * dout / N, spelled out
    onehot = np.eye(C)[t]
    _close(dx, (fs.softmax(x) - onehot) * dout / N, rtol=1e-12, atol=1e-17)
    _close(layer.y, fs.softmax(x))


def test_softmax_with_loss_one_hot_equals_index(rng):
    N, C = 10, 6
    x = rng.standard_normal((N, C)) * 3
    t = rng.integers(0, C, N)
    by_index = SoftmaxWithLoss()
    loss_i = by_index.forward(x, t)
    g_i = by_index.backward()
    for onehot in (np.eye(C, dtype=np.int64)[t], np.eye(C)[t], np.eye(C, dtype=bool)[t]):
        layer = SoftmaxWithLoss()
        _close(layer.forward(x, onehot), loss_i, rtol=1e-14)
        _close(layer.backward(), g_i, rtol=1e-13, atol=1e-17)
    # and the note's own class converts one-hot to indices with the same result
    seed = SeedSoftmaxWithLoss()
    _close(seed.forward(x, np.eye(C)[t]), loss_i)


def test_softmax_with_loss_one_hot_equals_index_non_last_axis(rng):
    x = rng.standard_normal((3, 4, 5))                 # classes on axis 1
    t = rng.integers(0, 4, (3, 5))
    onehot = np.moveaxis(np.eye(4)[t], -1, 1)
    a, b = SoftmaxWithLoss(axis=1), SoftmaxWithLoss(axis=1)
    _close(a.forward(x, t), b.forward(x, onehot), rtol=1e-14)
    _close(a.backward(2.0), b.backward(2.0), rtol=1e-13, atol=1e-17)
    # (y - t) / N with N the number of samples (3 * 5)
    _close(a.backward(), (fs.softmax(x, axis=1) - onehot) / 15, rtol=1e-12, atol=1e-17)


def test_softmax_with_loss_probability_targets(rng):
    N, C = 6, 4
    x = rng.standard_normal((N, C))
    t = rng.dirichlet(np.ones(C), size=N)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    _close(loss, -np.sum(t * np.log(fs.softmax(x))) / N, rtol=1e-13)
    _close(layer.backward(0.25), (fs.softmax(x) - t) * 0.25 / N, rtol=1e-12, atol=1e-17)


def test_softmax_with_loss_float32_keeps_dtype(rng):
    x = rng.standard_normal((5, 7)).astype(np.float32)
    t = rng.integers(0, 7, 5)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    dx = layer.backward()
    assert loss.dtype == np.float32 and dx.dtype == np.float32
    np.testing.assert_allclose(dx, (ref.softmax(x) - np.eye(7)[t]) / 5, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------- LogSoftmax, Sigmoid
def test_log_softmax_layer(rng):
    x = rng.standard_normal((4, 6)) * 4
    dout = rng.standard_normal((4, 6))
    layer = LogSoftmax()
    y = layer.forward(x)
    _close(y, np.log(seed_softmax(x)), rtol=1e-12)
    _close(layer.backward(dout), dout - np.exp(y) * dout.sum(axis=1, keepdims=True),
           rtol=1e-12, atol=1e-15)
    # LogSoftmax then the note's -t * (1/y) chain is the same as SoftmaxWithLoss
    t = rng.integers(0, 6, 4)
    g = np.zeros((4, 6))
    g[np.arange(4), t] = -1.0 / 4                   # d(mean NLL)/d(log-probabilities)
    sl = SoftmaxWithLoss()
    sl.forward(x, t)
    _close(layer.backward(g), sl.backward(), rtol=1e-12, atol=1e-17)


def test_log_softmax_layer_non_last_axis(rng):
    x = rng.standard_normal((2, 5, 3))
    dout = rng.standard_normal((2, 5, 3))
    layer = LogSoftmax(axis=1)
    y = layer.forward(x)
    _close(layer.backward(dout), dout - np.exp(y) * dout.sum(axis=1, keepdims=True),
           rtol=1e-12, atol=1e-15)


def test_sigmoid_layer(rng):
    x = rng.standard_normal((3, 4)) * 5
    dout = rng.standard_normal((3, 4))
    layer = Sigmoid()
    y = layer.forward(x)
    _close(y, 1 / (1 + np.exp(-x)), rtol=1e-14)
    _close(layer.backward(dout), dout * y * (1 - y), rtol=1e-13)


@pytest.mark.parametrize("dout", [1, 0.5])
def test_sigmoid_with_loss(rng, dout):
    x = rng.standard_normal((4, 3)) * 2
    t = rng.random((4, 3))
    layer = SigmoidWithLoss()
    loss = layer.forward(x, t)
    y = 1 / (1 + np.exp(-x))
    _close(loss, -np.mean(t * np.log(y) + (1 - t) * np.log(1 - y)), rtol=1e-12)
    # (sigmoid(x) - t) * dout / x.size: the mean over every element
    _close(layer.backward(dout), (y - t) * dout / x.size, rtol=1e-12, atol=1e-17)
    _close(layer.y, y, rtol=1e-14)


# ----------------------------------------------------------------- note 003: two classes
def test_two_class_softmax_is_sigmoid_of_difference(rng):
    x = rng.standard_normal((50, 2)) * 4
    d = x[:, 0] - x[:, 1]
    _close(fs.softmax(x)[:, 0], fs.sigmoid(d), rtol=1e-14)
    _close(fs.softmax(x)[:, 1], fs.sigmoid(-d), rtol=1e-14)
    _close(Softmax().forward(x)[:, 0], Sigmoid().forward(d), rtol=1e-14)
    _close(fs.log_softmax(x)[:, 0], fs.log_sigmoid(d), rtol=1e-14)
    # also far out, where 1 - p would round: both keep the tiny probability
    far = np.array([[0.0, 40.0], [-700.0, 0.0]])
    _close(fs.softmax(far)[:, 0], fs.sigmoid(far[:, 0] - far[:, 1]), rtol=1e-14)


def test_note_003_acts_example():
    acts = np.array([[0.1107, 1.0475], [1.9075, 1.7639], [0.8810, 0.9155],
                     [0.0714, 0.4593], [1.1286, 0.0719], [1.0509, 1.0387]])
    printed = [0.2815, 0.5358, 0.4914, 0.4042, 0.7421, 0.5031]  # (acts[:,0]-acts[:,1]).sigmoid()
    # the note prints acts and results to 4 decimals: allow for both roundings
    _close(fs.softmax(acts)[:, 0], printed, rtol=0, atol=1.5e-4)


def test_two_class_cross_entropy_is_binary_cross_entropy(rng):
    x = rng.standard_normal((20, 2)) * 3
    t = rng.integers(0, 2, 20)
    d = x[:, 1] - x[:, 0]                     # the logit of class 1
    ce, g = fs.cross_entropy_with_grad(x, t)
    bce, gb = fs.binary_cross_entropy_with_grad(d, t.astype(np.float64))
    _close(ce, bce, rtol=1e-13)
    _close(g[:, 1], gb, rtol=1e-12, atol=1e-17)
    _close(g[:, 0], -gb, rtol=1e-12, atol=1e-17)
    a, b = SoftmaxWithLoss(), SigmoidWithLoss()
    _close(a.forward(x, t), b.forward(d, t.astype(np.float64)), rtol=1e-13)
    _close(a.backward()[:, 1], b.backward(), rtol=1e-12, atol=1e-17)


def test_note_003_nll_loss_reductions():
    acts = np.array([[1.9065, 0.6177, 1.7182], [0.8220, 1.4084, 0.5280],
                     [0.6282, 0.6837, 1.5685], [1.3450, 0.9478, 0.8547],
                     [1.2426, 0.9204, 1.4648], [1.1413, 1.3553, 1.3754]])
    sm_acts = fs.softmax(acts)
    printed = [[0.4753, 0.1310, 0.3937], [0.2823, 0.5074, 0.2104], [0.2165, 0.2289, 0.5545],
               [0.4377, 0.2942, 0.2681], [0.3363, 0.2437, 0.4200], [0.2855, 0.3536, 0.3608]]
    _close(sm_acts, printed, rtol=0, atol=1.5e-4)       # acts and output printed to 4 decimals
    targ = np.array([2, 1, 2, 0, 0, 1])
    # F.nll_loss on probabilities (as the note does): minus the picked entries
    _close(fs.nll_loss(sm_acts, targ, reduction="none"), -sm_acts[np.arange(6), targ])
    _close(fs.nll_loss(sm_acts, targ, reduction="sum"), -2.5833, rtol=0, atol=5e-4)
    targ2 = np.array([1, 2, 0, 2, 1, 0])
    _close(fs.nll_loss(sm_acts, targ2, reduction="sum"), -1.3551, rtol=0, atol=5e-4)
    # and on log-probabilities it is the cross-entropy
    _close(fs.nll_loss(fs.log_softmax(acts), targ, reduction="none"),
           fs.cross_entropy(acts, targ, reduction="none"), rtol=1e-14)


# ----------------------------------------------------------------- reference agreement
@pytest.mark.parametrize("axis", [-1, 0])
def test_layers_agree_with_reference(rng, axis):
    x = rng.standard_normal((4, 5)) * 2
    dout = rng.standard_normal((4, 5))
    for cls, fwd, bwd in ((Softmax, ref.softmax, ref.softmax_backward),
                          (LogSoftmax, ref.log_softmax, ref.log_softmax_backward)):
        layer = cls(axis=axis)
        y = layer.forward(x)
        _close(y, fwd(x, axis), rtol=1e-13)
        _close(layer.backward(dout), bwd(dout, y, axis), rtol=1e-12, atol=1e-15)
    C = x.shape[axis]
    t = rng.integers(0, C, x.shape[1 - (axis % 2)])
    layer = SoftmaxWithLoss(axis=axis)
    loss_ref, g_ref = ref.cross_entropy_with_grad(x, t, axis)
    _close(layer.forward(x, t), loss_ref, rtol=1e-13)
    _close(layer.backward(), g_ref, rtol=1e-12, atol=1e-17)
