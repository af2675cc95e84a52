"""``python -m fastsoftmax warmup``: compile every kernel for float32 and float64.

Calls each public function once per variant that reaches a different compiled
kernel: a small array (the serial kernel) and one above
``fastsoftmax._api._common.PARALLEL_MIN_ELEMENTS`` (the ``parallel=True``
twin, when Numba has more than one thread), the class axis last (row kernels)
and not last (lane kernels), with and without a ``where=`` mask,
``temperature != 1``, index and distribution targets, ignored samples,
class weights, label smoothing, z-loss, reductions "mean"/"sum"/"none",
``inplace=True``, and the binary losses' ``weight`` / ``pos_weight``. The
kernels are cached (``cache=True``), so a fresh process then loads machine
code instead of compiling it. The package's own modules are byte-compiled
too (``write_bytecode``): what pip does when it installs a package, but an
editable install under ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile
every module from source in every process (60 ms of a 0.4 s cold start here).
Then it removes the cache files that only another version of the kernels
would load (``info.cache_inventory``; ``--keep-stale`` keeps them): Numba
never deletes them, and each release leaves about 60 MiB behind. The
command ends by timing a fresh process (``import fastsoftmax`` + a first
softmax call).
"""

import math
import os
import sys
import time

import numpy as np


def add_parser(p):
    p.add_argument("--dtypes", default="float32,float64",
                   help="comma-separated dtypes to compile for (default float32,float64)")
    p.add_argument("--no-check", action="store_true",
                   help="skip timing a fresh process's import + first softmax call")
    p.add_argument("--keep-stale", action="store_true",
                   help="keep the cache files left by other versions of the kernels "
                        "(removed by default, see `info`)")


def _dist(rng, shape, axis, dt):
    q = rng.random(shape)
    return (q / q.sum(axis=axis, keepdims=True)).astype(dt)


def _mask(rng, shape, axis):
    m = rng.random(shape) < 0.7
    idx = [slice(None)] * len(shape)
    idx[axis] = 0
    m[tuple(idx)] = True          # no fully masked row (those are fine, but keep it typical)
    return m


def calls(dtype, threshold=None):
    """``[(label, thunk)]``: one call per kernel variant for ``dtype``."""
    import fastsoftmax as fs
    from fastsoftmax._api._common import PARALLEL_MIN_ELEMENTS
    thr = PARALLEL_MIN_ELEMENTS if threshold is None else threshold
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    c_rows, c_lanes, k_lanes = 256, 64, 16
    layouts = {
        ("rows", "small"): ((4, 16), 1),
        ("rows", "large"): ((max(8, math.ceil(2 * thr / c_rows)), c_rows), 1),
        ("lanes", "small"): ((2, 8, 3), 1),
        ("lanes", "large"): ((max(2, math.ceil(2 * thr / (c_lanes * k_lanes))), c_lanes,
                              k_lanes), 1),
    }
    out = []

    def add(label, fn):
        out.append((f"{dt.name} {label}", fn))

    for (layout, size), (shape, ax) in layouts.items():
        tag = f"{layout} {size}"
        x = (rng.standard_normal(shape) * 3).astype(dt)
        n = shape[ax]
        sample = shape[:ax] + shape[ax + 1:]
        mask = _mask(rng, shape, ax)
        t = rng.integers(0, n, size=sample)
        t_ign = t.copy()
        t_ign.flat[::3] = -100
        q = _dist(rng, shape, ax, dt)
        w = rng.random(n).astype(dt) + 0.5
        g = rng.standard_normal(shape).astype(dt)
        z = x - x.max(axis=ax, keepdims=True)        # plain NumPy: nothing compiles here
        ly = (z - np.log(np.exp(z).sum(axis=ax, keepdims=True))).astype(dt)
        y = np.exp(ly)
        go = rng.random(sample).astype(dt)
        for name in ("softmax", "log_softmax"):
            f = getattr(fs, name)
            add(f"{name} {tag}", lambda f=f, x=x, ax=ax: f(x, ax))
            add(f"{name} where {tag}", lambda f=f, x=x, ax=ax, m=mask: f(x, ax, where=m))
            add(f"{name} temperature {tag}", lambda f=f, x=x, ax=ax: f(x, ax, temperature=0.7))
            add(f"{name} out= {tag}",
                lambda f=f, x=x, ax=ax: f(x, ax, out=np.empty_like(x)))
        add(f"logsumexp {tag}", lambda x=x, ax=ax: fs.logsumexp(x, ax))
        add(f"logsumexp where {tag}", lambda x=x, ax=ax, m=mask: fs.logsumexp(x, ax, where=m))
        add(f"logsumexp keepdims {tag}", lambda x=x, ax=ax: fs.logsumexp(x, ax, keepdims=True))
        add(f"softmax_backward {tag}", lambda g=g, y=y, ax=ax: fs.softmax_backward(g, y, ax))
        add(f"log_softmax_backward {tag}",
            lambda g=g, y=ly, ax=ax: fs.log_softmax_backward(g, y, ax))
        for fname in ("cross_entropy", "cross_entropy_with_grad"):
            f = getattr(fs, fname)
            variants = {
                "index": dict(target=t),
                "index ignore": dict(target=t_ign),
                "index weight": dict(target=t_ign, weight=w),
                "index none": dict(target=t, reduction="none"),
                "index sum": dict(target=t, reduction="sum"),
                "index smoothing z_loss": dict(target=t, label_smoothing=0.1, z_loss=1e-4),
                "dist": dict(target=q),
                "dist weight none": dict(target=q, weight=w, reduction="none"),
            }
            if fname == "cross_entropy_with_grad":
                variants["index none grad_output"] = dict(target=t, reduction="none",
                                                          grad_output=go)
            for vname, kw in variants.items():
                kw = dict(kw)
                tgt = kw.pop("target")
                add(f"{fname} {vname} {tag}",
                    lambda f=f, x=x, tgt=tgt, ax=ax, kw=kw: f(x, tgt, ax, **kw))
            if fname == "cross_entropy_with_grad":
                add(f"{fname} inplace {tag}",
                    lambda f=f, x=x, t=t, ax=ax: f(x.copy(), t, ax, inplace=True))
        for vname, kw in {"index": dict(target=t), "index weight none":
                          dict(target=t_ign, weight=w, reduction="none"),
                          "dist": dict(target=q)}.items():
            kw = dict(kw)
            tgt = kw.pop("target")
            add(f"nll_loss {vname} {tag}",
                lambda x=ly, tgt=tgt, ax=ax, kw=kw: fs.nll_loss(x, tgt, ax, **kw))
        if layout == "rows":
            yb = (1 / (1 + np.exp(-x))).astype(dt)
            tb = (rng.random(shape) < 0.5).astype(dt)
            pw = (rng.random(shape[-1]) + 0.5).astype(dt)
            add(f"sigmoid {tag}", lambda x=x: fs.sigmoid(x))
            add(f"log_sigmoid {tag}", lambda x=x: fs.log_sigmoid(x))
            add(f"sigmoid_backward {tag}", lambda g=g, y=yb: fs.sigmoid_backward(g, y))
            for fname in ("binary_cross_entropy_with_logits", "binary_cross_entropy_with_grad"):
                f = getattr(fs, fname)
                add(f"{fname} {tag}", lambda f=f, x=x, tb=tb: f(x, tb))
                add(f"{fname} weight pos_weight none {tag}",
                    lambda f=f, x=x, tb=tb, w=pw: f(x, tb, weight=w, pos_weight=w,
                                                    reduction="none"))
            jac_shape = (4, 16) if size == "small" else (max(2, math.ceil(2 * thr / 4096)), 64)
            xj = rng.standard_normal(jac_shape).astype(dt)
            add(f"softmax_jacobian {tag}", lambda x=xj: fs.softmax_jacobian(x))
            lce = getattr(fs, "linear_cross_entropy", None)
            if lce is not None:
                nh = 8 if size == "small" else 64
                h = rng.standard_normal((shape[0], nh)).astype(dt)
                wl = rng.standard_normal((n, nh)).astype(dt)
                add(f"linear_cross_entropy {tag}", lambda h=h, wl=wl, t=t: lce(h, wl, t))
                add(f"linear_cross_entropy bias weight none {tag}",
                    lambda h=h, wl=wl, t=t_ign, w=w: lce(h, wl, t, linear_bias=w, weight=w,
                                                          reduction="none"))
    return out


def write_bytecode(pkg_dir):
    """Byte-compile the package's modules whose ``.pyc`` is missing or stale.

    True when every module's bytecode is in place, False when some could not
    be written (a read-only install: pip compiled it when it installed it).
    ``sys.dont_write_bytecode`` (``PYTHONDONTWRITEBYTECODE``) governs the
    bytecode Python writes as it imports; this is the explicit, install-time
    kind that ``pip install`` and ``python -m compileall`` write.
    """
    import compileall
    return bool(compileall.compile_dir(pkg_dir, quiet=2))


def run(args):
    import numba

    from .._bench_registry import cold_start_seconds
    from .bench import Progress
    from .info import cache_dir, prune_cache
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad:
        print(f"warmup: unknown dtype {', '.join(bad)}; choose float32 and/or float64",
              file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    import fastsoftmax  # noqa: F401  (its import time is part of the total)
    path, how = cache_dir()
    print(f"warmup: compiling (or loading from the cache) every fastsoftmax kernel for "
          f"{' and '.join(dtypes)}")
    print(f"cache directory: {path} [{how}]")
    if numba.get_num_threads() <= 1:
        print("note: Numba runs 1 thread here, so the parallel kernels are neither used nor "
              "compiled; a process with more threads compiles them on first use")
    per = {d: calls(d) for d in dtypes}
    progress = Progress(sum(len(v) for v in per.values()))
    failures, slow = [], []
    totals = {}
    try:
        for d in dtypes:
            t0 = time.perf_counter()
            for label, fn in per[d]:
                progress.update(label, 0)
                c0 = time.perf_counter()
                try:
                    fn()
                except Exception as e:   # report every failure, keep compiling the rest
                    failures.append((label, f"{type(e).__name__}: {e}"))
                slow.append((time.perf_counter() - c0, label))
                progress.update(label)
            totals[d] = time.perf_counter() - t0
    finally:
        progress.close()
    for d in dtypes:
        print(f"{d}: {len(per[d])} calls in {totals[d]:.1f} s")
    slow.sort(reverse=True)
    if slow and slow[0][0] > 0.5:
        print("slowest: " + "; ".join(f"{lab} {s:.1f} s" for s, lab in slow[:3]))
    if not getattr(args, "keep_stale", False):
        removed, freed = prune_cache(path)
        if removed:
            print(f"cache: removed {removed} stale files ({freed / 2**20:.1f} MiB) left by "
                  f"other versions of the kernels")
    ok = write_bytecode(os.path.dirname(os.path.abspath(fastsoftmax.__file__)))
    print("bytecode: " + ("the package's modules are byte-compiled" if ok else
                          "could not write the package's .pyc files (read-only install?)"))
    print(f"total: {time.perf_counter() - t_start:.1f} s")
    for label, err in failures:
        print(f"FAILED {label}: {err}")
    if not getattr(args, "no_check", False):
        try:
            s = cold_start_seconds(repeat=2)
        except Exception as e:  # pragma: no cover
            print(f"fresh-process check failed: {type(e).__name__}: {e}")
            return 1
        print(f"fresh process, import fastsoftmax + first softmax call: {s:.3f} s")
    return 1 if failures else 0
