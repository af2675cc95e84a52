"""Threads: results are bit-identical whatever the thread count and whether or
not other Python threads call fastsoftmax at the same time (SPEC §2), under
every threading layer available here."""

import os
import subprocess
import sys
import textwrap
import threading

import numba
import numpy as np
import pytest

import fastsoftmax as fs
from _helpers import result_arrays


def _workload(seed):
    """(name, callable) pairs large enough to run on the thread pool."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(700, 257)) * 4).astype(np.float32)
    x64 = rng.normal(size=(300, 130))
    x3 = rng.normal(size=(40, 50, 33))
    t = rng.integers(0, 257, 700)
    t[::5] = -100
    t3 = rng.integers(0, 50, (40, 33))
    w = rng.random(257)
    small = rng.normal(size=(3000, 11))
    ts = rng.integers(0, 11, 3000)
    wide = rng.normal(size=(9, 5000)).astype(np.float32)       # 3 blocks of 3 rows
    tw = rng.integers(0, 5000, 9)
    logp = fs.log_softmax(x)                                    # logsumexp ~ 0: float64 rows
    return [
        ("softmax", lambda: fs.softmax(x)),
        ("log_softmax_t", lambda: fs.log_softmax(x64, temperature=0.7)),
        ("logsumexp_lanes", lambda: fs.logsumexp(x3, axis=1)),
        ("softmax_where", lambda: fs.softmax(x, where=x > 0)),
        ("ce_grad", lambda: fs.cross_entropy_with_grad(x, t, weight=w, label_smoothing=0.1)),
        ("ce_lanes", lambda: fs.cross_entropy_with_grad(x3, t3, axis=1, z_loss=1e-3)),
        ("ce_small", lambda: fs.cross_entropy_with_grad(small, ts, reduction="sum")),
        ("ce_wide", lambda: fs.cross_entropy_with_grad(wide, tw, label_smoothing=0.1)),
        ("logsumexp_logp", lambda: fs.logsumexp(logp)),
        ("bce", lambda: fs.binary_cross_entropy_with_grad(x64, (x64 > 0) * 1.0)),
        ("backward", lambda: fs.softmax_backward(x64, fs.softmax(x64))),
        ("sigmoid", lambda: fs.log_sigmoid(x)),
    ]


def _same(a, b):
    fa, fb = result_arrays(a), result_arrays(b)
    return len(fa) == len(fb) and all(
        np.array_equal(u, v, equal_nan=True) and u.dtype == v.dtype for u, v in zip(fa, fb))


def test_bit_identical_for_any_thread_count():
    work = _workload(1)
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = {name: f() for name, f in work}
        for n in range(2, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(n)
            for name, f in work:
                assert _same(f(), serial[name]), (name, n)
    finally:
        numba.set_num_threads(saved)


@pytest.mark.parametrize("nthreads", [8, 16])
def test_concurrent_python_threads(nthreads):
    work = _workload(2)
    expected = {name: f() for name, f in work}
    errors = []
    barrier = threading.Barrier(nthreads)

    def run(k):
        try:
            barrier.wait()
            for rep in range(3):
                for name, f in work[k % len(work):] + work[:k % len(work)]:
                    if not _same(f(), expected[name]):
                        errors.append((k, rep, name))
        except Exception as exc:   # pragma: no cover - reported below
            errors.append((k, repr(exc)))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:5]


_SCRIPT = textwrap.dedent("""
    import threading, numba, numpy as np, fastsoftmax as fs
    x = np.random.default_rng(0).normal(size=(600, 300))
    t = np.random.default_rng(1).integers(0, 300, 600)
    ref = (fs.softmax(x), fs.cross_entropy_with_grad(x, t))
    bad = []
    def run():
        for _ in range(5):
            y = fs.softmax(x); l, g = fs.cross_entropy_with_grad(x, t)
            if not (np.array_equal(y, ref[0]) and l == ref[1][0] and np.array_equal(g, ref[1][1])):
                bad.append(1)
    ts = [threading.Thread(target=run) for _ in range(16)]
    [th.start() for th in ts]; [th.join() for th in ts]
    print(numba.threading_layer(), len(bad))
""")


def _layers():
    layers = []
    for name in ("omp", "tbb", "workqueue"):
        try:
            __import__(f"numba.np.ufunc.{name}pool")
            layers.append(name)
        except Exception:
            pass
    return layers


@pytest.mark.slow
@pytest.mark.parametrize("layer", _layers())
def test_every_threading_layer_survives_concurrent_calls(layer):
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    used, bad = proc.stdout.split()
    assert used == layer and bad == "0"


def test_default_layer_is_threadsafe_when_available():
    fs.softmax(np.zeros((1000, 100)))      # large enough to launch the pool
    if any(layer in ("omp", "tbb") for layer in _layers()) and not os.environ.get(
            "NUMBA_THREADING_LAYER"):
        assert numba.threading_layer() in ("omp", "tbb")
