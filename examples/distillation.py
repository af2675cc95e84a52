"""Knowledge distillation: a small student learns a teacher's softened probabilities.

The teacher is a fixed, randomly initialised network 20-64-10 (tanh); its
logits ``z_t`` define the task. The student, a smaller 20-16-10 network (ReLU),
never sees a hard label: it is trained on the teacher's class probabilities at
temperature ``T`` (Hinton, Vinyals & Dean, "Distilling the knowledge in a neural
network", 2015)::

    p_t  = softmax(z_t / T)          fastsoftmax.softmax(z_t, temperature=T)
    loss = T^2 * CE(z_s / T, p_t)    cross-entropy with probability targets

Conventions:

* ``cross_entropy_with_grad`` has no temperature argument: the student's logits
  are divided by ``T`` before the call, so the gradient it returns is with
  respect to ``z_s / T``; the chain rule multiplies it by ``1 / T``.
* The ``T^2`` factor (Hinton et al.) keeps the gradient's size independent of
  the temperature: the gradient with respect to ``z_s`` scales like ``1/T^2``
  at high temperature, so the loss is multiplied by ``T^2``. Here it is passed
  as ``grad_output=T**2``; the printed losses are without it.
* ``CE(z_s / T, p_t) - H(p_t)`` is the KL divergence ``KL(p_t || p_s)``; the
  entropy ``H(p_t)`` is the cross-entropy of the teacher with itself. The KL
  falls towards 0 as the student learns, and the student's agreement with the
  teacher (same arg-max class, the temperature does not change it) rises.

Run it with ``python examples/distillation.py``.
"""

import sys
from pathlib import Path

import numpy as np

try:
    import fastsoftmax as fs
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastsoftmax as fs


def teacher_logits(x, rng_seed=1234, hidden=64, classes=10):
    """A fixed random network: its logits define the task (standard deviation about 2.4)."""
    rng = np.random.default_rng(rng_seed)
    W1 = rng.standard_normal((x.shape[1], hidden)) / np.sqrt(x.shape[1])
    W2 = rng.standard_normal((hidden, classes)) * 6.0 / np.sqrt(hidden)
    return (np.tanh(0.5 * (x @ W1)) @ W2).astype(np.float32)


class Student:
    """20-H-10 MLP with ReLU; ``backward(dz)`` fills ``grads`` for ``params``."""

    def __init__(self, n_in, hidden, n_out, rng):
        self.params = [
            (rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)).astype(np.float32),
            np.zeros(hidden, np.float32),
            (rng.standard_normal((hidden, n_out)) * np.sqrt(2.0 / hidden)).astype(np.float32),
            np.zeros(n_out, np.float32),
        ]
        self.grads = [np.zeros_like(p) for p in self.params]

    def forward(self, x):
        W1, b1, W2, b2 = self.params
        self.x = x
        self.h = np.maximum(x @ W1 + b1, 0)
        return self.h @ W2 + b2

    def backward(self, dz):
        W1, b1, W2, b2 = self.params
        dh = (dz @ W2.T) * (self.h > 0)
        self.grads[0][...] = self.x.T @ dh
        self.grads[1][...] = dh.sum(axis=0)
        self.grads[2][...] = self.h.T @ dz
        self.grads[3][...] = dz.sum(axis=0)


def adam(params, grads, state, lr=3e-3, b1=0.9, b2=0.999, eps=1e-8):
    state["t"] = t = state.get("t", 0) + 1
    ms = state.setdefault("m", [np.zeros_like(p) for p in params])
    vs = state.setdefault("v", [np.zeros_like(p) for p in params])
    lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    for p, g, m, v in zip(params, grads, ms, vs):
        m += (1 - b1) * (g - m)
        v += (1 - b2) * (g * g - v)
        p -= lr_t * m / (np.sqrt(v) + eps)


def distillation_step(student, x, p_teacher, T):
    """One forward/backward pass; returns the loss CE(z_s / T, p_t) (without the T^2)."""
    z_s = student.forward(x)
    ce, g = fs.cross_entropy_with_grad(z_s / T, p_teacher, grad_output=T ** 2)
    student.backward(g / T)          # d(z_s / T) / d z_s = 1 / T
    return float(ce)


def evaluate(student, x, z_t, p_t, T):
    """(KL(p_t || p_s) at temperature T, agreement of the arg-max classes)."""
    z_s = student.forward(x)
    kl = fs.cross_entropy(z_s / T, p_t) - fs.cross_entropy(z_t / T, p_t)   # CE - H(p_t)
    agreement = np.mean(z_s.argmax(axis=1) == z_t.argmax(axis=1))
    return float(kl), float(agreement)


def main(epochs=25, T=4.0, hidden=16, batch_size=64, seed=0, n_train=4000, n_test=1000):
    """Distil the teacher into the student; returns the history of (epoch, KL, agreement)."""
    rng = np.random.default_rng(seed)
    x_train = rng.standard_normal((n_train, 20)).astype(np.float32)
    x_test = rng.standard_normal((n_test, 20)).astype(np.float32)
    z_train, z_test = teacher_logits(x_train), teacher_logits(x_test)
    # the soft targets: probability rows, one per sample
    p_train = fs.softmax(z_train, temperature=T)
    p_test = fs.softmax(z_test, temperature=T)

    student = Student(20, hidden, z_train.shape[1], rng)
    state = {}
    kl, agree = evaluate(student, x_test, z_test, p_test, T)
    history = [(0, kl, agree)]
    print(f"temperature T={T:g}; teacher 20-64-10, student 20-{hidden}-10; "
          f"{n_train} training / {n_test} test inputs")
    print(f"before training: test KL(teacher || student) {kl:.4f}, agreement {agree:.3f}")
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n_train)
        losses = []
        for start in range(0, n_train, batch_size):
            idx = order[start:start + batch_size]
            losses.append(distillation_step(student, x_train[idx], p_train[idx], T))
            adam(student.params, student.grads, state)
        kl, agree = evaluate(student, x_test, z_test, p_test, T)
        history.append((epoch, kl, agree))
        if epoch % 5 == 0 or epoch == 1:
            print(f"epoch {epoch:3d}  train CE {np.mean(losses):.4f}  test KL {kl:.4f}  "
                  f"agreement with the teacher {agree:.3f}")
    first, last = history[0], history[-1]
    print(f"the student learned: KL {first[1]:.4f} -> {last[1]:.4f}, "
          f"agreement {first[2]:.3f} -> {last[2]:.3f}")
    return history


if __name__ == "__main__":
    main()
