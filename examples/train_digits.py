"""Train a small neural network on handwritten digits with fastsoftmax's loss.

A multilayer perceptron 64-100-10 written in plain NumPy, layer by layer in the
style of "deep learning from scratch": every layer has ``params``, ``grads``,
``forward`` and ``backward``. The last layer is
``fastsoftmax.layers.SoftmaxWithLoss``, whose forward computes the mean
cross-entropy and the gradient ``(softmax(x) - onehot(t)) / N`` in one fused
pass. Data: the 8x8 digits bundled with scikit-learn (no download).

Run it with ``python examples/train_digits.py`` (needs scikit-learn). This is the
readable version of ``python -m fastsoftmax demo``; copy it and change it.
"""

import sys
from pathlib import Path

import numpy as np

try:
    from fastsoftmax.layers import SoftmaxWithLoss
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastsoftmax.layers import SoftmaxWithLoss


class Affine:
    """Fully connected layer: ``out = x @ W + b``."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        W, b = self.params
        self.x = x
        return x @ W + b

    def backward(self, dout):
        W, b = self.params
        self.grads[0][...] = self.x.T @ dout      # dL/dW
        self.grads[1][...] = dout.sum(axis=0)     # dL/db
        return dout @ W.T                         # dL/dx


class ReLU:
    def __init__(self):
        self.params, self.grads = [], []
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        return np.where(self.mask, 0, x)

    def backward(self, dout):
        return np.where(self.mask, 0, dout)


class TwoLayerNet:
    """Affine -> ReLU -> Affine -> SoftmaxWithLoss, He-initialised."""

    def __init__(self, n_in, n_hidden, n_out, rng):
        def he(n_rows, n_cols):           # He initialisation, for ReLU
            w = rng.standard_normal((n_rows, n_cols)) * np.sqrt(2.0 / n_rows)
            return w.astype(np.float32)

        self.layers = [
            Affine(he(n_in, n_hidden), np.zeros(n_hidden, np.float32)),
            ReLU(),
            Affine(he(n_hidden, n_out), np.zeros(n_out, np.float32)),
        ]
        self.loss_layer = SoftmaxWithLoss()
        self.params = [p for layer in self.layers for p in layer.params]
        self.grads = [g for layer in self.layers for g in layer.grads]

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x                                   # the logits (scores)

    def forward(self, x, t):
        return self.loss_layer.forward(self.predict(x), t)

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)      # (softmax(x) - t) / N
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


class Adam:
    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m, self.v, self.iter = None, None, 0

    def update(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.iter += 1
        lr_t = self.lr * np.sqrt(1 - self.beta2 ** self.iter) / (1 - self.beta1 ** self.iter)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m += (1 - self.beta1) * (g - m)
            v += (1 - self.beta2) * (g * g - v)
            p -= lr_t * m / (np.sqrt(v) + self.eps)


def main(epochs=20, hidden=100, batch_size=32, seed=0):
    """Train and return the final test accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)     # pixels 0..16 -> 0..1
    t = digits.target                               # class indices 0..9
    x_train, x_test, t_train, t_test = train_test_split(
        x, t, test_size=0.2, stratify=t, random_state=seed)

    rng = np.random.default_rng(seed)
    net = TwoLayerNet(x.shape[1], hidden, 10, rng)
    optimizer = Adam(lr=1e-3)

    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = net.forward(x_train[idx], t_train[idx])
            net.backward()
            optimizer.update(net.params, net.grads)
            losses.append(float(loss))
        test_acc = np.mean(net.predict(x_test).argmax(axis=1) == t_test)
        print(f"epoch {epoch:2d}  train loss {np.mean(losses):.4f}  test acc {test_acc:.4f}")

    test_acc = float(np.mean(net.predict(x_test).argmax(axis=1) == t_test))
    print(f"test accuracy {test_acc:.4f}")
    return test_acc


if __name__ == "__main__":
    main()
