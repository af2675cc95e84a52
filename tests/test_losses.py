"""Losses: the differential grid against PyTorch (when importable) and the
reference, the deliberate differences of SPEC §3, z-loss, layouts."""

import numpy as np
import pytest

import fastsoftmax as fs
import fastsoftmax.reference as ref

from _helpers import through_both_paths

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def _case(rng, kind, ignored, layout, dtype, n=23, c=7, d=3):
    shape = (n, c) if layout == "2d" else (n, c, d)
    x = (rng.normal(size=shape) * 3).astype(dtype)
    sample = (n,) if layout == "2d" else (n, d)
    t = rng.integers(0, c, sample)
    if kind == "index":
        if ignored == "some":
            t.reshape(-1)[::4] = -100
        elif ignored == "all":
            t[...] = -100
        target = t
    elif kind == "onehot":
        target = np.moveaxis(np.eye(c, dtype=np.int64)[t], -1, 1)
    else:
        q = rng.random(shape)
        target = (q / q.sum(axis=1, keepdims=True)).astype(dtype)
    return x, target


def _torch_ce(x, target, kind, weight, reduction, ls):
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    if kind == "index":
        tt = torch.tensor(target)
    else:
        tt = torch.tensor(np.asarray(target, dtype=np.float64))
    w = None if weight is None else torch.tensor(weight)
    loss = F.cross_entropy(tx, tt, weight=w, reduction=reduction, label_smoothing=ls)
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach().numpy(), tx.grad.numpy()


@needs_torch
@pytest.mark.parametrize("kind", ["index", "onehot", "prob"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignored", ["none", "some", "all"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["2d", "nc_d"])
def test_cross_entropy_matches_torch(rng, kind, weighted, ignored, reduction, ls, dtype, layout):
    if kind != "index" and ignored != "none":
        pytest.skip("ignore_index applies to class-index targets only")
    x, target = _case(rng, kind, ignored, layout, dtype)
    c = x.shape[1]
    weight = rng.random(c) + 0.1 if weighted else None
    axis = 1
    loss, grad = fs.cross_entropy_with_grad(x, target, axis=axis, weight=weight,
                                            reduction=reduction, label_smoothing=ls)
    loss_only = fs.cross_entropy(x, target, axis=axis, weight=weight, reduction=reduction,
                                 label_smoothing=ls)
    assert np.array_equal(loss_only, loss)
    tl, tg = _torch_ce(x, target, kind, weight, reduction, ls)
    if kind == "index" and ignored == "all" and reduction == "mean":
        # deliberate difference: a mean over no contributing sample is 0, not NaN
        assert np.isnan(tl) and loss == 0 and not np.any(grad)
        return
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(np.asarray(loss, np.float64), tl, **TOL[dtype])
    np.testing.assert_allclose(grad.astype(np.float64), tg, **TOL[dtype])
    # the reference agrees too
    rl, rg = ref.cross_entropy_with_grad(x, target, axis=axis, weight=weight,
                                         reduction=reduction, label_smoothing=ls)
    np.testing.assert_allclose(np.asarray(loss, np.float64), rl, **TOL[dtype])
    np.testing.assert_allclose(grad.astype(np.float64), rg, **TOL[dtype])


@needs_torch
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignored", ["none", "some", "all"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["2d", "nc_d"])
def test_nll_loss_matches_torch(rng, weighted, ignored, reduction, dtype, layout):
    x, t = _case(rng, "index", ignored, layout, dtype)
    lp = fs.log_softmax(x, axis=1)
    weight = rng.random(x.shape[1]) + 0.1 if weighted else None
    got = fs.nll_loss(lp, t, axis=1, weight=weight, reduction=reduction)
    exp = F.nll_loss(torch.tensor(lp.astype(np.float64)), torch.tensor(t),
                     weight=None if weight is None else torch.tensor(weight),
                     reduction=reduction).numpy()
    if ignored == "all" and reduction == "mean":
        assert np.isnan(exp) and got == 0
        return
    np.testing.assert_allclose(np.asarray(got, np.float64), exp, **TOL[dtype])
    # cross_entropy(x) == nll_loss(log_softmax(x))
    ce = fs.cross_entropy(x, t, axis=1, weight=weight, reduction=reduction)
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(ce, np.float64),
                               **TOL[dtype])


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params", ["none", "weight", "pos_weight", "both"])
def test_bce_matches_torch(rng, reduction, dtype, params):
    x = (rng.normal(size=(9, 6)) * 5).astype(dtype)
    t = rng.random((9, 6)).astype(dtype)
    t[::2] = np.round(t[::2])
    w = rng.random((9, 1)) + 0.2 if params in ("weight", "both") else None   # broadcasts
    pw = rng.random(6) + 0.5 if params in ("pos_weight", "both") else None
    loss, grad = fs.binary_cross_entropy_with_grad(x, t, weight=w, pos_weight=pw,
                                                   reduction=reduction)
    only = fs.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw,
                                               reduction=reduction)
    assert np.array_equal(only, loss)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tl = F.binary_cross_entropy_with_logits(
        tx, torch.tensor(t, dtype=torch.float64),
        weight=None if w is None else torch.tensor(w),
        pos_weight=None if pw is None else torch.tensor(pw), reduction=reduction)
    (tl.sum() if reduction == "none" else tl).backward()
    np.testing.assert_allclose(np.asarray(loss, np.float64), tl.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(grad.astype(np.float64), tx.grad.numpy(), **TOL[dtype])


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignored", ["none", "some"])
def test_z_loss_gradient_matches_autograd(rng, reduction, ignored):
    x, t = _case(rng, "index", ignored, "2d", np.float64)
    z = 1e-2
    w = rng.random(x.shape[1]) + 0.1
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, reduction=reduction, z_loss=z,
                                            label_smoothing=0.05)
    tx = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t)
    ce = F.cross_entropy(tx, tt, weight=torch.tensor(w), reduction=reduction,
                         label_smoothing=0.05)
    lse = torch.logsumexp(tx, dim=1)
    valid = tt != -100
    zt = z * lse ** 2 * valid
    if reduction == "mean":
        total = ce + zt.sum() / valid.sum()
    elif reduction == "sum":
        total = ce + zt.sum()
    else:
        total = ce + zt
    (total.sum() if reduction == "none" else total).backward()
    np.testing.assert_allclose(np.asarray(loss), total.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-11, atol=1e-14)


def test_mean_over_no_contributing_sample_is_zero():
    x = np.random.default_rng(0).normal(size=(5, 4))
    t = np.full(5, -100)
    loss, g = fs.cross_entropy_with_grad(x, t)
    assert loss == 0.0 and not np.any(g)
    loss, g = fs.cross_entropy_with_grad(np.zeros((0, 4)), np.zeros(0, int))
    assert loss == 0.0 and g.shape == (0, 4)
    assert fs.cross_entropy(np.zeros((0, 4)), np.zeros((0, 4))) == 0.0
    assert fs.binary_cross_entropy_with_logits(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    # every target weight zero: no contributing weight either
    loss, g = fs.cross_entropy_with_grad(x, np.zeros(5, int), weight=np.array([0, 1, 1, 1.0]))
    assert loss == 0.0 and not np.any(g)


def test_zero_mass_terms_contribute_zero():
    x = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]])
    w = np.array([1.0, 0.0, 1.0])
    # the -inf logit of class 1 has weight 0: no NaN (PyTorch gives NaN here)
    loss, g = fs.cross_entropy_with_grad(x, np.array([2, 0]), weight=w, label_smoothing=0.2,
                                         reduction="none")
    assert np.isfinite(loss[0]) and not np.any(np.isnan(g))
    assert loss[1] == np.inf          # class 2 (weight 1) sits at -inf: +inf
    q = np.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
    loss = fs.cross_entropy(x, q, reduction="none")
    assert np.all(np.isfinite(loss))
    expected = ref.cross_entropy(x, q, reduction="none")
    np.testing.assert_allclose(loss, expected)


def test_one_hot_equals_index_without_weights(rng):
    x = rng.normal(size=(30, 8))
    t = rng.integers(0, 8, 30)
    oh = np.eye(8, dtype=bool)[t]
    for red in ("mean", "sum", "none"):
        a = fs.cross_entropy_with_grad(x, t, reduction=red)
        b = fs.cross_entropy_with_grad(x, oh, reduction=red)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-14)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-13, atol=1e-17)


def test_index_target_dtypes(rng):
    x = rng.normal(size=(10, 6))
    t = rng.integers(0, 6, 10)
    base = fs.cross_entropy(x, t)
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64):
        assert fs.cross_entropy(x, t.astype(dt)) == base
    tb = (t % 2).astype(bool)
    assert fs.cross_entropy(x, tb) == fs.cross_entropy(x, tb.astype(int))


def test_inplace_and_out(rng):
    x = rng.normal(size=(50, 300)).astype(np.float32)
    t = rng.integers(0, 300, 50)
    loss, g = fs.cross_entropy_with_grad(x, t)
    xi = x.copy()
    loss2, g2 = fs.cross_entropy_with_grad(xi, t, inplace=True)
    assert g2 is xi and loss2 == loss and np.array_equal(g2, g)
    out = np.empty_like(x)
    loss3, g3 = fs.cross_entropy_with_grad(x, t, out=out)
    assert g3 is out and np.array_equal(out, g)
    outf = np.empty_like(x, order="F")
    assert np.array_equal(fs.cross_entropy_with_grad(x, t, out=outf)[1], g)


def test_out_overlapping_target_is_safe(rng):
    x = rng.normal(size=(6, 4))
    buf = np.zeros((6, 4))
    t = buf[:, 0].view(np.int64)
    t[:] = rng.integers(0, 4, 6)
    expected_loss, expected_grad = fs.cross_entropy_with_grad(x, t.copy())
    loss, g = fs.cross_entropy_with_grad(x, t, out=buf)
    assert g is buf
    assert loss == expected_loss and np.array_equal(buf, expected_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_smoothing_with_weight_and_ignore(rng, dtype):
    """Where PyTorch once had bugs (pytorch#73205, #69339): checked against the reference."""
    x = (rng.normal(size=(40, 9)) * 2).astype(dtype)
    t = rng.integers(0, 9, 40)
    t[::3] = 4     # ignore_index inside [0, C)
    w = rng.random(9) + 0.1
    for red in ("mean", "sum", "none"):
        a = fs.cross_entropy_with_grad(x, t, weight=w, ignore_index=4, label_smoothing=0.3,
                                       reduction=red)
        b = ref.cross_entropy_with_grad(x, t, weight=w, ignore_index=4, label_smoothing=0.3,
                                        reduction=red)
        np.testing.assert_allclose(np.asarray(a[0], np.float64), b[0], **TOL[dtype])
        np.testing.assert_allclose(a[1].astype(np.float64), b[1], **TOL[dtype])
        assert not np.any(a[1][t == 4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_output(rng, dtype):
    x = rng.normal(size=(12, 5)).astype(dtype)
    t = rng.integers(0, 5, 12)
    base_l, base_g = fs.cross_entropy_with_grad(x, t)
    l2, g2 = fs.cross_entropy_with_grad(x, t, grad_output=2.5)
    assert l2 == base_l
    np.testing.assert_allclose(g2, 2.5 * base_g, rtol=1e-6)
    go = rng.random(12)
    ln, gn = fs.cross_entropy_with_grad(x, t, reduction="none", grad_output=go)
    _, g1 = fs.cross_entropy_with_grad(x, t, reduction="none")
    np.testing.assert_allclose(gn, g1 * go[:, None].astype(dtype), rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_class_axis_anywhere(rng, axis):
    x = rng.normal(size=(4, 5, 6))
    c = x.shape[axis]
    sample = tuple(s for i, s in enumerate(x.shape) if i != axis % 3)
    t = rng.integers(0, c, sample)
    loss, g = fs.cross_entropy_with_grad(x, t, axis=axis, reduction="none", label_smoothing=0.1)
    xm = np.moveaxis(x, axis, -1)
    l2, g2 = fs.cross_entropy_with_grad(xm.reshape(-1, c), t.reshape(-1), reduction="none",
                                        label_smoothing=0.1)
    np.testing.assert_allclose(loss.reshape(-1), l2, rtol=1e-13)
    np.testing.assert_allclose(np.moveaxis(g, axis, -1).reshape(-1, c), g2, rtol=1e-12,
                               atol=1e-16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (4, 16), (23, 7), (5, 70), (3, 1000), (64, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_common_call_fast_path_is_bit_identical(rng, monkeypatch, dtype, shape, reduction, axis):
    """The common call (2-D logits, int64 indices, default options) skips the
    general path's plumbing; its results must be those of the general path,
    bit for bit, also with non-finite logits, an ignored label and
    grad_output. (64, 1000) takes the parallel kernel."""
    from fastsoftmax._api import losses as api_losses
    x = (rng.normal(size=shape) * 5).astype(dtype)
    if x.size > 4:
        x.reshape(-1)[1] = np.inf
        x[-1, 0] = -np.inf
    if shape[0] > 2:
        x[1, -1] = np.nan
    t = rng.integers(0, shape[1], shape[0])
    if shape[0] > 1:
        t[0] = -100          # ignored: the mean's denominator counts the rest
    outs = []

    def calls():
        xi, xo = x.copy(), x.copy()
        out = np.full_like(x, 7.0)
        res = [fs.cross_entropy(x, t, axis, reduction=reduction),
               *fs.cross_entropy_with_grad(x, t, axis, reduction=reduction),
               *fs.cross_entropy_with_grad(x, t, axis, reduction=reduction, grad_output=2.5),
               *fs.cross_entropy_with_grad(xi, t, axis, reduction=reduction, inplace=True),
               *fs.cross_entropy_with_grad(x, t, axis, reduction=reduction, out=out),
               *fs.cross_entropy_with_grad(xo, t, axis, reduction=reduction, out=xo)]
        outs.append((res[6] is xi, res[8] is out, res[10] is xo))
        return res + [xi, out, xo]
    taken, fast, slow = through_both_paths(monkeypatch, api_losses, "_ce_fast", calls)
    assert taken == [True] * 6
    assert outs == [(True, True, True)] * 2      # the arrays returned are those written
    if shape == (4, 16):    # negative zeros for the options take the fast path too
        kw = dict(reduction=reduction, label_smoothing=-0.0, z_loss=-0.0)
        taken0, fast0, slow0 = through_both_paths(monkeypatch, api_losses, "_ce_fast", lambda: [
            fs.cross_entropy(x, t, axis, **kw), *fs.cross_entropy_with_grad(x, t, axis, **kw)])
        assert taken0 == [True, True]
        fast += fast0
        slow += slow0
    for a, b in zip(fast, slow, strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(np.signbit(a), np.signbit(b))


@pytest.mark.parametrize("call", [
    dict(target_dtype=np.int32), dict(weight=True), dict(ignore_index=-1),
    dict(label_smoothing=0.1), dict(z_loss=1e-4), dict(reduction="none"),
    dict(fortran=True), dict(readonly=True), dict(axis=np.int64(-1)),
    dict(label_smoothing=np.float64(0.0)), dict(out="fortran"),
    dict(out="overlap"), dict(out="target"), dict(inplace=np.True_)])
def test_calls_outside_the_fast_path_match_the_general_path(rng, monkeypatch, call):
    """Every way out of the fast path is refused by it and gives the general path's result."""
    from fastsoftmax._api import losses as api_losses
    x = rng.normal(size=(9, 6))
    t = rng.integers(0, 6, 9).astype(call.get("target_dtype", np.int64))
    if call.get("fortran"):
        x = np.asfortranarray(x)
    if call.get("readonly"):
        x.flags.writeable = False
    kw = {k: call[k] for k in ("ignore_index", "label_smoothing", "z_loss", "reduction", "axis")
          if k in call}
    if call.get("weight"):
        kw["weight"] = rng.random(6)
    if "inplace" in call:
        kw["inplace"] = call["inplace"]
    # outs the fast path leaves to the general one: not C-contiguous,
    # overlapping the logits without being them, or overlapping the targets
    xbuf = np.zeros((10, 6))
    tbuf = np.zeros(54, np.int64)            # out="target": out's memory holds t
    t0 = t.copy()
    if call.get("out") == "target":
        t = tbuf[:9]
    make_out = {"fortran": lambda: np.empty((9, 6), order="F"),
                "overlap": lambda: xbuf[1:10],
                "target": lambda: tbuf.view(np.float64).reshape(9, 6)}

    def calls():
        if "out" in call:
            xbuf[:9] = x
            tbuf[:9] = t0
            xx = xbuf[:9] if call["out"] == "overlap" else x
            return list(fs.cross_entropy_with_grad(xx, t, out=make_out[call["out"]](), **kw))
        return list(fs.cross_entropy_with_grad(x.copy() if "inplace" in call else x, t, **kw))
    taken, got, want = through_both_paths(monkeypatch, api_losses, "_ce_fast", calls)
    assert taken == [False]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fast_path_bad_target_raises_the_general_error(rng):
    x = rng.normal(size=(3, 4)).astype(np.float32)
    with pytest.raises(IndexError, match=r"target 4 at position \(2,\) is out of range"):
        fs.cross_entropy(x, np.array([0, 1, 4]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (4, 16), (23, 7), (64, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_loss_fast_path_is_bit_identical(rng, monkeypatch, dtype, shape, reduction):
    """nll_loss's common call (as cross-entropy's: _index_call) matches the general
    path bit for bit, with an ignored label and a -inf log-probability."""
    from fastsoftmax._api import losses as api_losses
    lp = fs.log_softmax((rng.normal(size=shape) * 5).astype(dtype))
    lp[0, 0] = -np.inf
    t = rng.integers(0, shape[1], shape[0])
    if shape[0] > 1:
        t[-1] = -100
    taken, fast, slow = through_both_paths(monkeypatch, api_losses, "_index_call", lambda: [
        fs.nll_loss(lp, t, reduction=reduction), fs.nll_loss(lp, t, 1, reduction=reduction)])
    assert taken == [True, True]
    for a, b in zip(fast, slow, strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
