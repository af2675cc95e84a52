"""fastsoftmax.dask on a real distributed.LocalCluster (2 worker processes).

Every function and option is compared with the in-memory fastsoftmax result on
the whole array: element-wise and per-sample results to ~1 ULP, reductions to a
relative 1e-13 (float64) or ~2 ULP (float32).
"""

import math
import os
import sys

import numba
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import fastsoftmax as fs  # noqa: E402
import fastsoftmax.dask as fd  # noqa: E402

N, C, ROWS = 10_000, 50, 500          # 20 row-chunks of 500 x 50
EPS64 = np.finfo(np.float64).eps


# ---------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def client():
    # worker processes are spawned with this process's sys.path: make sure it
    # holds the directory fastsoftmax was imported from (also when not installed)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fs.__file__)))
    if root not in [os.path.abspath(p or ".") for p in sys.path]:
        sys.path.insert(0, root)
    # The in-memory references run on one Numba thread here: results do not depend
    # on the thread count (SPEC §2), and the blocks in the workers are below the
    # kernels' parallel threshold, so no parallel twin needs compiling for this module.
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    # compile here first: the workers then load the kernels from Numba's cache
    # instead of compiling them twice side by side
    _warm_kernels()
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None)
    cl = distributed.Client(cluster)
    try:
        cl.run(_warm_kernels)
        yield cl
    finally:
        cl.close()
        cluster.close()
        numba.set_num_threads(threads)


def _warm_kernels():
    """Run each (serial) kernel specialisation the tests use once, in this process."""
    import numpy as np
    import fastsoftmax as f
    for dt in (np.float32, np.float64):
        for shape, ax in (((70, 8), -1), ((3, 70), -1), ((5, 8, 3), 1)):
            x = np.zeros(shape, dt)
            t = np.zeros(x.shape[:ax % x.ndim] + x.shape[ax % x.ndim + 1:], np.int64)
            w = np.ones(x.shape[ax])
            # read-only and writeable arrays are distinct Numba specialisations:
            # a full-shape mask reaches the kernels read-only, a broadcast one copied
            for m in (None, np.ones(x.shape, bool), np.ones((1,) + x.shape[1:], bool)):
                f.softmax(x, ax, where=m)
                f.log_softmax(x, ax, where=m, temperature=0.5)
                f.logsumexp(x, ax, where=m)
            for tgt in (t, x):
                for red in ("none", "mean"):
                    f.cross_entropy(x, tgt, ax, weight=w, reduction=red)
                    f.cross_entropy_with_grad(x, tgt, ax, reduction=red, z_loss=0.1)
                f.cross_entropy_with_grad(x, tgt, ax, reduction="none",
                                          grad_output=np.ones(t.shape))
    return True


def run(client, *objs):
    """Compute Dask collections together on the cluster."""
    return client.gather(client.compute(list(objs)))


# ---------------------------------------------------------------- data
def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def data(client):
    rng = _rng(0)
    x = rng.standard_normal((N, C)) * 4.0
    x[3, 7] = 40.0                               # a confident row
    t = rng.integers(0, C, N)
    t[rng.random(N) < 0.1] = -100                # some ignored samples
    t[ROWS:2 * ROWS] = -100                      # one block entirely ignored
    w = rng.random(C) + 0.05
    q = rng.random((N, C)) ** 3
    q /= q.sum(axis=1, keepdims=True)
    # held in the workers' memory once (not shipped with every graph)
    xd = da.from_array(x, chunks=(ROWS, C))
    td = da.from_array(t, chunks=700)            # chunked differently: rechunked to match
    qd = da.from_array(q, chunks=(1000, 25))     # also split along the class axis
    xd, td, qd = client.persist([xd, td, qd])
    distributed.wait([xd, td, qd])
    assert xd.numblocks == (20, 1)
    return dict(x=x, t=t, w=w, q=q, xd=xd, td=td, qd=qd)


def assert_close(got, want, rtol, atol_rel=0.0):
    """Element-wise: |got - want| <= rtol |want| + atol_rel max|want| (inf/nan must match)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin], want[~fin])
    g = got[fin].astype(np.float64)
    w = want[fin].astype(np.float64)
    scale = np.max(np.abs(w)) if w.size else 0.0
    err = np.abs(g - w)
    bound = rtol * np.abs(w) + atol_rel * scale
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}, max error {np.max(err)}"


def assert_loss(got, want, reduction, rtol_red, rtol_elem):
    if reduction == "none":
        assert_close(got, want, rtol_elem)
    else:
        assert np.ndim(got) == 0 and np.asarray(got).dtype == np.asarray(want).dtype
        g, w = float(got), float(want)
        assert abs(g - w) <= rtol_red * abs(w) + 1e-300, (g, w)


# ---------------------------------------------------------------- cluster shape
def test_cluster_has_two_worker_processes(client):
    info = client.scheduler_info()
    workers = info["workers"]
    assert len(workers) == 2
    assert all(w["nthreads"] == 1 for w in workers.values())
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


# ---------------------------------------------------------------- forward
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_like(client, data, fn):
    x, xd = data["x"], data["xd"]
    mask_np = _rng(1).random(C) < 0.7                       # broadcast (C,) NumPy mask
    mask_full = _rng(2).random((N, C)) < 0.8
    mask_full[10] = False                                   # a fully masked row
    mask_d = da.from_array(mask_full, chunks=(1234, C))     # Dask mask, other chunks
    f, g = getattr(fd, fn), getattr(fs, fn)
    outs = [f(xd), f(xd, temperature=0.3), f(xd, where=mask_np), f(xd, where=mask_d,
                                                                     temperature=2.5)]
    for o in outs:
        assert isinstance(o, da.Array) and o.chunks == xd.chunks and o.dtype == np.float64
    got = run(client, *outs)
    want = [g(x), g(x, temperature=0.3), g(x, where=mask_np), g(x, where=mask_full,
                                                                 temperature=2.5)]
    for a, b in zip(got, want):
        assert_close(a, b, 2 * EPS64)


def test_logsumexp(client, data):
    x, xd = data["x"], data["xd"]
    mask = _rng(3).random((N, C)) < 0.5
    mask[5] = False
    outs = [fd.logsumexp(xd), fd.logsumexp(xd, keepdims=True),
            fd.logsumexp(xd, where=da.from_array(mask, chunks=(2500, C)))]
    assert outs[0].chunks == (xd.chunks[0],)
    assert outs[1].chunks == (xd.chunks[0], (1,))
    got = run(client, *outs)
    want = [fs.logsumexp(x), fs.logsumexp(x, keepdims=True), fs.logsumexp(x, where=mask)]
    for a, b in zip(got, want):
        assert_close(a, b, 2 * EPS64)


def test_forward_non_last_axis(client):
    rng = _rng(4)
    x = rng.standard_normal((400, 9, 30)) * 3
    xd = da.from_array(x, chunks=(40, 9, 15))               # 20 blocks, axis 1 whole
    mask = rng.random((9, 1)) < 0.6                         # broadcasts over rows and lanes
    outs = [fd.softmax(xd, axis=1), fd.log_softmax(xd, axis=-2, where=mask),
            fd.logsumexp(xd, axis=1), fd.logsumexp(xd, axis=1, keepdims=True)]
    got = run(client, *outs)
    want = [fs.softmax(x, axis=1), fs.log_softmax(x, axis=-2, where=mask),
            fs.logsumexp(x, axis=1), fs.logsumexp(x, axis=1, keepdims=True)]
    for a, b in zip(got, want):
        assert_close(a, b, 2 * EPS64)


# ---------------------------------------------------------------- cross-entropy, index targets
SMOOTHING_AND_Z = [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-3), (0.1, 1e-3)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_index(client, data, reduction, weighted):
    # every (label_smoothing, z_loss) pair of SMOOTHING_AND_Z, in one round trip
    x, t, xd, td = data["x"], data["t"], data["xd"], data["td"]
    go = 0.75 if reduction != "none" else _rng(5).random(N)
    go_d = go if reduction != "none" else da.from_array(go, chunks=3000)
    outs = []
    for eps, z in SMOOTHING_AND_Z:
        kw = dict(weight=data["w"] if weighted else None, reduction=reduction,
                  label_smoothing=eps, z_loss=z)
        loss = fd.cross_entropy(xd, td, **kw)
        gloss, grad = fd.cross_entropy_with_grad(xd, td, grad_output=go_d, **kw)
        assert isinstance(loss, da.Array) and isinstance(grad, da.Array)
        assert grad.chunks == xd.chunks
        assert loss.ndim == (0 if reduction != "none" else 1)
        outs += [loss, gloss, grad]
    got = run(client, *outs)
    for i, (eps, z) in enumerate(SMOOTHING_AND_Z):
        kw = dict(weight=data["w"] if weighted else None, reduction=reduction,
                  label_smoothing=eps, z_loss=z)
        got_loss, got_gloss, got_grad = got[3 * i:3 * i + 3]
        want_loss = fs.cross_entropy(x, t, **kw)
        want_gloss, want_grad = fs.cross_entropy_with_grad(x, t, grad_output=go, **kw)
        assert_loss(got_loss, want_loss, reduction, 1e-13, 2 * EPS64)
        assert_loss(got_gloss, want_gloss, reduction, 1e-13, 2 * EPS64)
        # the weighted "mean" with z_loss adds two gradient parts (see fastsoftmax.dask)
        split = reduction == "mean" and weighted and z
        assert_close(got_grad, want_grad, 4 * EPS64, 4 * EPS64 if split else 0.0)


def test_cross_entropy_wide_rows_custom_ignore_index(client):
    # C >= 64 takes the kernels' row path (C = 50 above takes the lanes path)
    rng = _rng(6)
    x = rng.standard_normal((2000, 300)) * 5
    t = rng.integers(0, 300, 2000).astype(np.uint16)
    t[rng.random(2000) < 0.3] = 299                         # ignore_index is a class value
    t[400:500] = 299                                        # a block with every target ignored
    w = rng.random(300)
    xd = da.from_array(x, chunks=(100, 300))
    kw = dict(weight=w, ignore_index=299, label_smoothing=0.05, z_loss=1e-2)
    outs = []
    for red in ("mean", "sum", "none"):
        outs += [fd.cross_entropy(xd, t, reduction=red, **kw),
                 *fd.cross_entropy_with_grad(xd, t, reduction=red, grad_output=1.5, **kw)]
    got = run(client, *outs)
    for i, red in enumerate(("mean", "sum", "none")):
        want_loss = fs.cross_entropy(x, t, reduction=red, **kw)
        want_gloss, want_grad = fs.cross_entropy_with_grad(x, t, reduction=red, grad_output=1.5,
                                                           **kw)
        assert_loss(got[3 * i], want_loss, red, 1e-13, 2 * EPS64)
        assert_loss(got[3 * i + 1], want_gloss, red, 1e-13, 2 * EPS64)
        assert_close(got[3 * i + 2], want_grad, 4 * EPS64, 4 * EPS64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [dict(), dict(weighted=True, label_smoothing=0.2, z_loss=0.05)])
def test_cross_entropy_non_last_axis(client, reduction, opts):
    rng = _rng(7)
    x = rng.standard_normal((600, 7, 40)) * 3
    t = rng.integers(0, 7, (600, 40))
    t[rng.random((600, 40)) < 0.15] = -100
    t[:60] = -100                                           # the first row-block all ignored
    xd = da.from_array(x, chunks=(60, 7, 20))               # 20 blocks
    assert xd.numblocks == (10, 1, 2)
    opts = dict(opts)
    kw = dict(weight=rng.random(7) if opts.pop("weighted", False) else None,
              reduction=reduction, **opts)
    go = 2.0 if reduction != "none" else rng.random(40)    # broadcasts over the rows
    q = rng.random((600, 7, 40))
    q /= q.sum(axis=1, keepdims=True)
    qd = da.from_array(q, chunks=(100, 7, 40))              # rechunked to the logits' chunks
    kw_q = dict(kw, weight=None)
    outs = [fd.cross_entropy(xd, t, axis=1, **kw),
            *fd.cross_entropy_with_grad(xd, t, axis=1, grad_output=go, **kw),
            fd.cross_entropy(xd, qd, axis=1, **kw_q),
            *fd.cross_entropy_with_grad(xd, qd, axis=1, grad_output=go, **kw_q)]
    assert outs[2].chunks == xd.chunks and outs[5].chunks == xd.chunks
    got = run(client, *outs)
    for i, (tgt, k) in enumerate(((t, kw), (q, kw_q))):
        want_loss = fs.cross_entropy(x, tgt, axis=1, **k)
        want_gloss, want_grad = fs.cross_entropy_with_grad(x, tgt, axis=1, grad_output=go, **k)
        assert_loss(got[3 * i], want_loss, reduction, 1e-13, 2 * EPS64)
        assert_loss(got[3 * i + 1], want_gloss, reduction, 1e-13, 2 * EPS64)
        assert_close(got[3 * i + 2], want_grad, 4 * EPS64, 4 * EPS64)


# ---------------------------------------------------------------- distribution targets
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [dict(), dict(weighted=True, label_smoothing=0.1, z_loss=1e-3)])
def test_cross_entropy_distribution(client, data, reduction, opts):
    x, q, xd, qd = data["x"], data["q"], data["xd"], data["qd"]
    opts = dict(opts)
    kw = dict(weight=data["w"] if opts.pop("weighted", False) else None, reduction=reduction,
              **opts)
    go = -1.25 if reduction != "none" else 0.5
    loss = fd.cross_entropy(xd, qd, **kw)
    gloss, grad = fd.cross_entropy_with_grad(xd, qd, grad_output=go, **kw)
    got = run(client, loss, gloss, grad)
    want_loss = fs.cross_entropy(x, q, **kw)
    want_gloss, want_grad = fs.cross_entropy_with_grad(x, q, grad_output=go, **kw)
    assert_loss(got[0], want_loss, reduction, 1e-13, 2 * EPS64)
    assert_loss(got[1], want_gloss, reduction, 1e-13, 2 * EPS64)
    assert_close(got[2], want_grad, 4 * EPS64)


# ---------------------------------------------------------------- exact reductions
def test_mean_is_total_over_count_not_mean_of_means(client):
    rng = _rng(8)
    sizes = (37, 500, 3, 260, 200)                         # unequal blocks
    n = sum(sizes)
    x = rng.standard_normal((n, 12)) * 3
    t = rng.integers(0, 12, n)
    t[37:537:2] = -100
    w = np.linspace(0.1, 3.0, 12)
    xd = da.from_array(x, chunks=(sizes, 12))
    td = da.from_array(t, chunks=(sizes,))
    loss, grad = fd.cross_entropy_with_grad(xd, td, weight=w, z_loss=0.01)
    got_loss, got_grad = run(client, loss, grad)
    per_ce = fs.cross_entropy(x, t, weight=w, reduction="none")
    per_z = fs.cross_entropy(x, t, weight=np.zeros(12), reduction="none", z_loss=0.01)
    valid = t != -100
    total = (math.fsum(per_ce) / math.fsum(w[t[valid]]) + math.fsum(per_z) / valid.sum())
    assert abs(got_loss - total) <= 1e-14 * abs(total)
    assert abs(got_loss - fs.cross_entropy(x, t, weight=w, z_loss=0.01)) <= 1e-14 * total
    # a mean of the block means is a different number
    bounds = np.cumsum((0,) + sizes)
    means = [fs.cross_entropy(x[a:b], t[a:b], weight=w, z_loss=0.01)
             for a, b in zip(bounds[:-1], bounds[1:])]
    assert abs(np.mean(means) - total) > 1e-3 * total
    # the gradient uses the global scale
    assert_close(got_grad, fs.cross_entropy_with_grad(x, t, weight=w, z_loss=0.01)[1],
                 4 * EPS64, 4 * EPS64)


def test_every_target_ignored(client, data):
    x, xd = data["x"], data["xd"]
    t = np.full(N, -100)
    outs = [fd.cross_entropy(xd, t), fd.cross_entropy(xd, t, reduction="sum"),
            *fd.cross_entropy_with_grad(xd, t, weight=data["w"], z_loss=0.1)]
    mean, total, gmean, grad = run(client, *outs)
    assert mean == 0.0 and total == 0.0 and gmean == 0.0
    assert type(mean) is np.float64
    assert not np.any(grad)
    assert fs.cross_entropy(x, t) == 0.0


def test_grad_output_as_dask_scalar(client, data):
    x, t, xd = data["x"], data["t"], data["xd"]
    go = da.from_array(np.array(3.5))
    outs = [*fd.cross_entropy_with_grad(xd, t, grad_output=go),
            *fd.cross_entropy_with_grad(xd, t, reduction="sum", grad_output=go)]
    got = run(client, *outs)
    for (gl, gg), red in ((got[:2], "mean"), (got[2:], "sum")):
        wl, wg = fs.cross_entropy_with_grad(x, t, reduction=red, grad_output=3.5)
        assert abs(gl - wl) <= 1e-13 * abs(wl)
        assert_close(gg, wg, 2 * EPS64)


# ---------------------------------------------------------------- float32 / float16
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision(client, data, dtype):
    # float16: 4000 rows (8 blocks), so that the "sum" stays below float16's maximum
    rows = N if dtype == np.float32 else 4000
    mem = dict(x=data["x"][:rows].astype(dtype), t=data["t"][:rows],
               q=data["q"][:rows].astype(dtype))
    lazy = dict(x=data["xd"][:rows].astype(dtype), t=data["td"][:rows],
                q=data["qd"][:rows].astype(dtype))
    x, xd, w = mem["x"], lazy["x"], data["w"]
    eps = np.finfo(dtype).eps
    outs = [fd.softmax(xd), fd.log_softmax(xd, temperature=0.5), fd.logsumexp(xd)]
    cases = ([("t", dict(reduction=r, weight=w, label_smoothing=0.1, z_loss=1e-3))
              for r in ("mean", "sum", "none")]
             + [("t", dict(reduction="mean")), ("t", dict(reduction="sum")),
                ("q", dict(reduction="mean")), ("q", dict(reduction="sum", z_loss=0.01))])
    for tgt, kw in cases:
        outs += [fd.cross_entropy(xd, lazy[tgt], **kw),
                 *fd.cross_entropy_with_grad(xd, lazy[tgt], **kw)]
    got = run(client, *outs)
    for o in got[:3]:
        assert o.dtype == dtype
    assert_close(got[0], fs.softmax(x), 2 * eps)
    assert_close(got[1], fs.log_softmax(x, temperature=0.5), 2 * eps)
    assert_close(got[2], fs.logsumexp(x), 2 * eps)
    for i, (tgt, kw) in enumerate(cases):
        red = kw["reduction"]
        loss, gloss, grad = got[3 + 3 * i:6 + 3 * i]
        wl, wg = fs.cross_entropy_with_grad(x, mem[tgt], **kw)
        assert_loss(loss, fs.cross_entropy(x, mem[tgt], **kw), red, 2.5 * eps, 2 * eps)
        assert_loss(gloss, wl, red, 2.5 * eps, 2 * eps)
        assert grad.dtype == dtype and grad.shape == x.shape
        assert_close(grad, wg, 2 * eps, 2 * eps)


# ---------------------------------------------------------------- layout and laziness
def test_class_axis_split_is_refused_with_the_fix(data):
    x = data["x"]
    bad = da.from_array(x, chunks=(ROWS, 20))
    for call in (lambda: fd.softmax(bad), lambda: fd.log_softmax(bad),
                 lambda: fd.logsumexp(bad), lambda: fd.cross_entropy(bad, data["t"]),
                 lambda: fd.cross_entropy_with_grad(bad, data["t"])):
        with pytest.raises(ValueError, match=r"rechunk\(\{1: -1\}\)"):
            call()
    x3 = da.zeros((10, 8, 6), chunks=(5, 4, 6))
    with pytest.raises(ValueError, match=r"rechunk\(\{1: -1\}\)"):
        fd.softmax(x3, axis=1)
    # the suggested fix works
    fixed = bad.rechunk({1: -1})
    assert fd.softmax(fixed).chunks == fixed.chunks


def test_bad_options_fail_before_compute(data):
    xd, t = data["xd"], data["t"]
    with pytest.raises(ValueError, match="reduction must be one of"):
        fd.cross_entropy(xd, t, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        fd.cross_entropy_with_grad(xd, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        fd.cross_entropy(xd, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="z_loss"):
        fd.cross_entropy_with_grad(xd, t, z_loss=-1.0)
    with pytest.raises(ValueError, match="weight has shape"):
        fd.cross_entropy(xd, t, weight=np.ones(C + 1))
    with pytest.raises(TypeError, match="class indices must be integers"):
        fd.cross_entropy(xd, t.astype(np.float64))
    with pytest.raises(ValueError, match="target has shape"):
        fd.cross_entropy(xd, t[:-1])
    with pytest.raises(ValueError, match="ignore_index=3"):
        fd.cross_entropy(xd, data["qd"], ignore_index=3)
    with pytest.raises(ValueError, match="grad_output"):
        fd.cross_entropy_with_grad(xd, t, grad_output=np.ones(3))
    with pytest.raises(ValueError, match="per-sample shape"):
        fd.cross_entropy_with_grad(xd, t, reduction="none", grad_output=np.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        fd.softmax(xd, temperature=0.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        fd.log_softmax(xd, where=np.ones(C + 1, bool))
    with pytest.raises(TypeError, match="boolean mask"):
        fd.softmax(xd, where=np.ones(C, np.int8))
    with pytest.raises(TypeError, match="complex128"):
        fd.logsumexp(xd.astype(np.complex128))
    with pytest.raises(np.exceptions.AxisError):
        fd.cross_entropy(xd, t, axis=2)
    with pytest.raises(ValueError, match="zero classes"):
        fd.cross_entropy(da.zeros((10, 0)), np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fd.softmax(xd[xd[:, 0] > 0])


def test_target_out_of_range_reports_the_global_position(client, data):
    xd = data["xd"]
    t = data["t"].copy()
    t[7321] = C
    loss = fd.cross_entropy(xd, t)                  # lazily: raised when the block runs
    with pytest.raises(IndexError, match=r"target 50 at position \(7321,\)"):
        run(client, loss)
    with pytest.raises(IndexError, match=r"target 50 at position \(7321,\)"):
        fs.cross_entropy(data["x"], t)
    x3 = da.zeros((20, 4, 10), chunks=(5, 4, 5))
    t3 = np.zeros((20, 10), np.int64)
    t3[13, 8] = -1
    with pytest.raises(IndexError, match=r"target -1 at position \(13, 8\)"):
        run(client, fd.cross_entropy_with_grad(x3, t3, axis=1, reduction="none")[1])


def test_results_are_lazy_and_numpy_inputs_work(client):
    rng = _rng(9)
    x = rng.standard_normal((300, 5))
    t = rng.integers(0, 5, 300)
    loss, grad = fd.cross_entropy_with_grad(x, t)           # NumPy in, Dask out
    assert isinstance(loss, da.Array) and loss.shape == () and loss.dtype == np.float64
    assert isinstance(grad, da.Array) and grad.shape == x.shape
    got_loss, got_grad = run(client, loss, grad)
    assert type(got_loss) is np.float64
    wl, wg = fs.cross_entropy_with_grad(x, t)
    assert abs(got_loss - wl) <= 1e-14 * wl
    assert_close(got_grad, wg, 2 * EPS64)
    # a 0-d input is one row of one class, as in memory
    assert run(client, fd.softmax(np.float64(3.0)))[0] == fs.softmax(np.float64(3.0))
    assert run(client, fd.logsumexp(np.float64(2.0)))[0] == 2.0


def test_loss_and_grad_share_one_pass_per_block(data, monkeypatch):
    # the loss and the gradient of a block come out of one task: computing them
    # together runs the fused kernel once per block (synchronous scheduler, to count)
    calls = []
    real = fd._ceg_mem

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fd, "_ceg_mem", counting)
    xd = da.from_array(data["x"], chunks=(ROWS, C))
    td = da.from_array(data["t"], chunks=700)
    for red in ("mean", "sum", "none"):
        calls.clear()
        loss, grad = fd.cross_entropy_with_grad(xd, td, reduction=red)
        n_probe = len(calls)
        dask.compute(loss, grad, scheduler="sync")
        assert len(calls) - n_probe == xd.numblocks[0]
