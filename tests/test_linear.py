"""linear_cross_entropy: equal to the unchunked computation for every chunk size
(dividing N and V or not), to PyTorch's autograd of ``F.cross_entropy(h @ W.T + b)``
and to ``F.linear_cross_entropy`` when PyTorch is importable."""

import numpy as np
import pytest

import fastsoftmax as fs

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

N, H, V = 37, 9, 53
# rows per block, or (rows, vocabulary) per block: dividing and not dividing N = 37, V = 53
CHUNKS = [None, 1, 5, 37, 64, (8, 1), (6, 7), (37, 53), (13, 20), (100, 100)]


def _problem(rng, dtype, targets, bias=True, ignored=True):
    h = rng.normal(size=(N, H)).astype(dtype)
    w = (rng.normal(size=(V, H)) / np.sqrt(H) * 4).astype(dtype)
    b = rng.normal(size=V).astype(dtype) if bias else None
    if targets == "index":
        t = rng.integers(0, V, N)
        if ignored:
            t[::5] = -100
    else:
        q = rng.random((N, V)) ** 4
        t = (q / q.sum(axis=1, keepdims=True)).astype(dtype)
    return h, w, b, t


def _unchunked(h, w, b, t, **kw):
    """The logits in memory: the fused kernel on them, then the gradient matmuls."""
    z = h @ w.T + (b if b is not None else 0)
    loss, dz = fs.cross_entropy_with_grad(z, t, **kw)
    return loss, (dz @ w, dz.T @ h, dz.sum(axis=0) if b is not None else None)


def _close(got, exp, dtype, what):
    got, exp = np.asarray(got, np.float64), np.asarray(exp, np.float64)
    scale = max(float(np.max(np.abs(exp), initial=0.0)), 1e-300)
    tol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-12
    err = float(np.max(np.abs(got - exp), initial=0.0)) / scale
    assert err <= tol, f"{what}: max |difference| / max |expected| = {err:.3e} > {tol:.0e}"


OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"weight": "w"},
    {"weight": "w", "label_smoothing": 0.1, "z_loss": 1e-3},
    {"reduction": "none", "z_loss": 1e-2, "grad_output": "g"},
]


def _options(rng, opts, dtype):
    kw = dict(opts)
    if kw.get("weight") == "w":
        kw["weight"] = (rng.random(V) + 0.2).astype(dtype)
    if kw.get("grad_output") == "g":
        kw["grad_output"] = rng.normal(size=N)
    return kw


def _close_all(loss, grads, eloss, egrads, dtype, opts):
    """The loss and the three gradients (hidden, weight, bias) against expected ones."""
    _close(loss, eloss, dtype, f"loss {opts}")
    for name, g, e in zip(("hidden", "weight", "bias"), grads, egrads):
        assert g.dtype == dtype and g.shape == e.shape, name
        _close(g, e, dtype, f"grad_{name} {opts}")


@pytest.mark.parametrize("chunk", CHUNKS, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("targets", ["index", "dist"])
def test_equals_unchunked(chunk, dtype, targets):
    rng = np.random.default_rng(11)
    h, w, b, t = _problem(rng, dtype, targets)
    for opts in OPTIONS:
        kw = _options(rng, opts, dtype)
        loss, grads = fs.linear_cross_entropy(h, w, t, linear_bias=b, chunk_size=chunk, **kw)
        eloss, egrads = _unchunked(h, w, b, t, **kw)
        assert np.asarray(loss).dtype == dtype and np.shape(loss) == np.shape(eloss)
        _close_all(loss, grads, eloss, egrads, dtype, opts)


def test_no_bias_gives_none_and_leading_axes():
    rng = np.random.default_rng(12)
    h, w, _, t = _problem(rng, np.float64, "index", bias=False)
    h3, t3 = h[:36].reshape(4, 9, H), t[:36].reshape(4, 9)
    loss, (gh, gw, gb) = fs.linear_cross_entropy(h3, w, t3, chunk_size=(5, 11))
    eloss, (egh, egw, _) = _unchunked(h3.reshape(36, H), w, None, t3.reshape(36))
    assert gb is None and gh.shape == h3.shape
    _close(loss, eloss, np.float64, "loss")
    _close(gh.reshape(36, H), egh, np.float64, "grad_hidden")
    _close(gw, egw, np.float64, "grad_weight")


def _torch_grads(h, w, b, t, kw):
    th = torch.tensor(h, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if b is not None else None
    z = th @ tw.T + (tb if tb is not None else 0)
    weight = torch.tensor(kw["weight"]) if "weight" in kw else None
    loss = F.cross_entropy(z, torch.tensor(t), weight=weight,
                           reduction=kw.get("reduction", "mean"),
                           label_smoothing=kw.get("label_smoothing", 0.0))
    go = kw.get("grad_output")
    loss.backward(torch.tensor(go) if go is not None else torch.ones_like(loss))
    return loss.detach().numpy(), (th.grad.numpy(), tw.grad.numpy(),
                                   tb.grad.numpy() if tb is not None else None)


@needs_torch
@pytest.mark.parametrize("chunk", [None, 4, (7, 10), (37, 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("targets", ["index", "dist"])
def test_matches_torch_autograd(chunk, dtype, targets):
    rng = np.random.default_rng(13)
    h, w, b, t = _problem(rng, dtype, targets)
    for opts in OPTIONS:
        if "z_loss" in opts:
            continue                     # PyTorch has no z-loss
        kw = _options(rng, opts, dtype)
        loss, grads = fs.linear_cross_entropy(h, w, t, linear_bias=b, chunk_size=chunk, **kw)
        eloss, egrads = _torch_grads(h, w, b, t, kw)
        _close_all(loss, grads, eloss, egrads, dtype, opts)


@needs_torch
@pytest.mark.skipif(torch is not None and not hasattr(F, "linear_cross_entropy"),
                    reason="this PyTorch has no F.linear_cross_entropy")
@pytest.mark.parametrize("chunk", [None, 3, (9, 17)], ids=str)
@pytest.mark.parametrize("opts", [{}, {"reduction": "sum"}, {"reduction": "none"},
                                  {"label_smoothing": 0.1}, {"ignore_index": 7}], ids=str)
def test_matches_torch_linear_cross_entropy(chunk, opts):
    rng = np.random.default_rng(14)
    h, w, b, t = _problem(rng, np.float64, "index", ignored=False)
    t[::6] = 7
    th = torch.tensor(h, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    tl = F.linear_cross_entropy(th, tw, torch.tensor(t), linear_bias=tb, **opts)
    tl.backward(torch.ones_like(tl))
    loss, (gh, gw, gb) = fs.linear_cross_entropy(h, w, t, linear_bias=b, chunk_size=chunk, **opts)
    _close(loss, tl.detach().numpy(), np.float64, "loss")
    for name, g, e in (("hidden", gh, th.grad), ("weight", gw, tw.grad), ("bias", gb, tb.grad)):
        _close(g, e.numpy(), np.float64, f"grad_{name}")


@pytest.mark.parametrize("chunk", [(4, 6), 5])
def test_extreme_logits_stay_finite(chunk):
    # logits of +-1e30 in some rows: finite loss and gradients, as the in-memory kernel
    rng = np.random.default_rng(15)
    h, w, b, t = _problem(rng, np.float64, "index", ignored=False)
    h[3] *= 1e30
    b[5] = 1e300
    loss, grads = fs.linear_cross_entropy(h, w, t, linear_bias=b, chunk_size=chunk,
                                          reduction="none")
    eloss, egrads = _unchunked(h, w, b, t, reduction="none")
    assert np.all(np.isfinite(loss)) and all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(loss, eloss, rtol=1e-12)
    for g, e in zip(grads, egrads):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-9 * np.abs(e).max())


@pytest.mark.parametrize("chunk", CHUNKS, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_rows_stay_nan(chunk, dtype):
    """A sample whose hidden row holds a NaN (of either sign) has NaN logits
    in every vocabulary chunk: its loss and its hidden gradient must be NaN,
    wherever the chunks split the vocabulary, and the other samples must be
    what the unchunked computation gives."""
    rng = np.random.default_rng(13)
    h, w, b, t = _problem(rng, dtype, "index", ignored=False)
    h[3, 2] = np.nan
    h[4, 5] = np.copysign(dtype(np.nan), dtype(-1))
    loss, grads = fs.linear_cross_entropy(h, w, t, linear_bias=b, chunk_size=chunk,
                                          reduction="none")
    eloss, egrads = _unchunked(h, w, b, t, reduction="none")
    bad = np.zeros(N, bool)
    bad[[3, 4]] = True
    assert np.array_equal(np.isnan(loss), bad)
    assert np.array_equal(np.isnan(grads[0]).any(axis=1), bad)
    _close(np.asarray(loss)[~bad], np.asarray(eloss)[~bad], dtype, "loss")
    _close(grads[0][~bad], egrads[0][~bad], dtype, "grad_hidden")
