"""Causal scaled dot-product attention, forward and backward, in NumPy with fastsoftmax.

For queries, keys and values of shape (batch, heads, T, d)::

    S = q @ k^T / sqrt(d)                      (batch, heads, T, T)
    P = softmax(S, where=causal)               causal[i, j] = j <= i
    O = P @ v

The mask is a (T, T) boolean array that ``fastsoftmax.softmax`` broadcasts over
batch and heads; masked-out scores act as -inf, so they get probability 0 (no
``-1e9`` fill, no NaN). The backward pass, given dO = dL/dO::

    dv = P^T @ dO
    dP = dO @ v^T
    dS = softmax_backward(dP, P) = P * (dP - sum(dP * P, axis=-1))
    dq = dS @ k / sqrt(d)
    dk = dS^T @ q / sqrt(d)

``softmax_backward`` needs only the forward output P (as PyTorch's autograd
does), and it gives 0 at the masked entries because P is 0 there.

The gradients are checked against PyTorch's autograd in float64 when torch is
importable, else against finite differences (``fastsoftmax.testing``); the
script prints the largest absolute differences. Run it with
``python examples/attention.py``.
"""

import sys
from pathlib import Path

import numpy as np

try:
    import fastsoftmax as fs
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastsoftmax as fs


def causal_mask(T):
    """(T, T) bool: query i may attend to keys 0..i."""
    return np.tril(np.ones((T, T), dtype=bool))


def attention_forward(q, k, v, mask):
    """Returns the output O and what the backward pass needs (the probabilities P)."""
    d = q.shape[-1]
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(d)
    p = fs.softmax(scores, axis=-1, where=mask)
    return p @ v, p


def attention_backward(d_out, q, k, v, p):
    """Gradients (dq, dk, dv) of the loss, given d_out = dL/dO."""
    d = q.shape[-1]
    dv = p.swapaxes(-1, -2) @ d_out
    dp = d_out @ v.swapaxes(-1, -2)
    ds = fs.softmax_backward(dp, p, axis=-1)
    dq = ds @ k / np.sqrt(d)
    dk = ds.swapaxes(-1, -2) @ q / np.sqrt(d)
    return dq, dk, dv


def _check_with_torch(q, k, v, d_out, mask, out, grads):
    import torch

    tq, tk, tv = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (q, k, v))
    scores = tq @ tk.transpose(-1, -2) / np.sqrt(q.shape[-1])
    scores = scores.masked_fill(~torch.tensor(mask), float("-inf"))
    t_out = torch.softmax(scores, dim=-1) @ tv
    t_out.backward(torch.tensor(d_out))
    diffs = {"O": np.max(np.abs(out - t_out.detach().numpy()))}
    for name, g, t in zip(("dq", "dk", "dv"), grads, (tq, tk, tv)):
        diffs[name] = np.max(np.abs(g - t.grad.numpy()))
    # PyTorch's fused kernel agrees too
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        torch.tensor(q), torch.tensor(k), torch.tensor(v), is_causal=True)
    diffs["O vs SDPA"] = np.max(np.abs(out - sdpa.numpy()))
    return "PyTorch autograd (float64)", diffs


def _check_with_finite_differences(q, k, v, d_out, mask, out, grads):
    from fastsoftmax.testing import numerical_grad

    def loss(q_, k_, v_):
        return float(np.sum(attention_forward(q_, k_, v_, mask)[0] * d_out))

    numeric = (numerical_grad(lambda a: loss(a, k, v), q),
               numerical_grad(lambda a: loss(q, a, v), k),
               numerical_grad(lambda a: loss(q, k, a), v))
    diffs = {name: np.max(np.abs(g - n)) for name, g, n in zip(("dq", "dk", "dv"), grads, numeric)}
    return "finite differences (float64)", diffs


def main(batch=2, heads=3, T=6, d=8, seed=0, use_torch=None):
    """Run the check; returns (what it was checked against, {name: max abs difference})."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((batch, heads, T, d)) for _ in range(3))
    d_out = rng.standard_normal((batch, heads, T, d))      # dL/dO for L = sum(O * d_out)
    mask = causal_mask(T)

    out, p = attention_forward(q, k, v, mask)
    grads = attention_backward(d_out, q, k, v, p)

    assert np.all(p[..., ~mask] == 0), "masked-out keys must get probability 0"
    assert np.allclose(p.sum(axis=-1), 1.0)

    if use_torch is None:
        try:
            import torch  # noqa: F401
            use_torch = True
        except ImportError:
            use_torch = False
    check = _check_with_torch if use_torch else _check_with_finite_differences
    against, diffs = check(q, k, v, d_out, mask, out, grads)

    print(f"causal attention, q/k/v of shape {q.shape}: row 2 of P attends to "
          f"{np.count_nonzero(p[0, 0, 2])} keys")
    print(f"checked against {against}:")
    for name, value in diffs.items():
        print(f"  max |difference| in {name:<10} {value:.2e}")
    worst = max(diffs.values())
    print(f"largest difference {worst:.2e}: {'OK' if worst < 1e-8 else 'MISMATCH'}")
    return against, diffs


if __name__ == "__main__":
    _, found = main()
    sys.exit(0 if max(found.values()) < 1e-8 else 1)
