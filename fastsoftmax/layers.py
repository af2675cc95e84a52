"""Layers with the interface of "deep learning from scratch": params, grads, forward, backward.

Each layer has ``params`` and ``grads`` (empty lists: these layers have no
parameters), ``forward(...)`` and ``backward(dout=1)``. They are thin: the
work is done by the fastsoftmax functions.
"""

import numpy as np

from . import _api  # noqa: F401  (import order: the package initialises threading first)
from ._api.backward import log_softmax_backward, softmax_backward
from ._api.binary import binary_cross_entropy_with_grad
from ._api.forward import log_softmax, softmax
from ._api.losses import cross_entropy_with_grad
from ._api.sigmoid import sigmoid, sigmoid_backward


def _dout_like(dout, out):
    d = np.asarray(dout)
    return np.broadcast_to(d, out.shape) if d.shape != out.shape else d


class Softmax:
    """``forward(x) = softmax(x)``; ``backward(dout) = y * (dout - sum(dout * y))``."""

    def __init__(self, axis=-1):
        self.params, self.grads = [], []
        self.axis = axis
        self.out = None

    def forward(self, x):
        self.out = softmax(x, axis=self.axis)
        return self.out

    def backward(self, dout=1):
        return softmax_backward(_dout_like(dout, self.out), self.out, axis=self.axis)


class LogSoftmax:
    """``forward(x) = log_softmax(x)``; ``backward(dout) = dout - exp(y) * sum(dout)``."""

    def __init__(self, axis=-1):
        self.params, self.grads = [], []
        self.axis = axis
        self.out = None

    def forward(self, x):
        self.out = log_softmax(x, axis=self.axis)
        return self.out

    def backward(self, dout=1):
        return log_softmax_backward(_dout_like(dout, self.out), self.out, axis=self.axis)


class Sigmoid:
    """``forward(x) = sigmoid(x)``; ``backward(dout) = dout * y * (1 - y)``."""

    def __init__(self):
        self.params, self.grads = [], []
        self.out = None

    def forward(self, x):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout=1):
        return sigmoid_backward(_dout_like(dout, self.out), self.out)


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy, with the fused kernel.

    ``forward(x, t)`` returns the mean loss over the N samples; ``t`` holds
    class indices, one-hot rows or probability rows. ``backward(dout=1)``
    returns ``(y - t) * dout / N`` (``t`` as one-hot rows for index targets):
    the gradient computed by the same pass as the loss. ``y`` (the softmax
    output) is computed on first access only.
    """

    def __init__(self, axis=-1):
        self.params, self.grads = [], []
        self.axis = axis
        self.t = None
        self.loss = None
        self._x = None
        self._y = None
        self._grad = None

    def forward(self, x, t):
        self._x = x
        self._y = None
        self.t = t
        self.loss, self._grad = cross_entropy_with_grad(x, t, axis=self.axis)
        return self.loss

    @property
    def y(self):
        if self._y is None and self._x is not None:
            self._y = softmax(self._x, axis=self.axis)
        return self._y

    def backward(self, dout=1):
        return self._grad * dout


class SigmoidWithLoss:
    """Sigmoid followed by the mean binary cross-entropy over every element.

    ``forward(x, t)`` returns the loss; ``backward(dout=1)`` returns
    ``(sigmoid(x) - t) * dout / x.size`` (PyTorch's mean over all elements).
    """

    def __init__(self):
        self.params, self.grads = [], []
        self.t = None
        self.loss = None
        self._x = None
        self._y = None
        self._grad = None

    def forward(self, x, t):
        self._x = x
        self._y = None
        self.t = t
        self.loss, self._grad = binary_cross_entropy_with_grad(x, t)
        return self.loss

    @property
    def y(self):
        if self._y is None and self._x is not None:
            self._y = sigmoid(self._x)
        return self._y

    def backward(self, dout=1):
        return self._grad * dout
