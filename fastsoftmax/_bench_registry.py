"""One registry of benchmark cases, shared by ``python -m fastsoftmax bench`` and asv.

For every kernel the registry knows how to build seeded inputs for a shape,
dtype and class axis (:func:`make_inputs`), and how to turn those inputs into a
zero-argument callable for each implementation (:func:`make_callable`):

``fastsoftmax``
    the public function.
``reference``
    :mod:`fastsoftmax.reference` (plain NumPy, float64): SPEC §6's baseline.
``scipy``
    ``scipy.special`` where it has the function (softmax, log_softmax,
    logsumexp, expit, log_expit).
``torch``
    the PyTorch CPU operator; for the "with_grad" kernels the forward and the
    ``.backward()`` of autograd (``x.grad`` is reset before each call).
    Backward kernels use ``torch._softmax_backward_data`` /
    ``torch._log_softmax_backward_data`` / ``aten.sigmoid_backward``, the
    operators autograd itself calls.
``jax``
    ``jax.jit`` of the ``jax.nn`` function (or of ``jax.value_and_grad`` of the
    integer-label mean cross-entropy for the fused kernel); every timed call
    ends with ``.block_until_ready()``. Backward kernels jit the closed-form
    vector-Jacobian product, which is what XLA compiles for the VJP.
``copy``
    ``np.copyto`` of the same array into a preallocated one: the memory
    bandwidth floor of a kernel that reads and writes every element (softmax,
    and the fused loss, which reads the logits and writes a gradient as large).

Peers are imported lazily, only when a callable for them is first built; a
missing peer raises :class:`Unavailable` with a note, and callers skip it.

Threads: :func:`configure_threads` gives every library the same thread count
(Numba's ``numba.get_num_threads()`` unless told otherwise): PyTorch through
``torch.set_num_threads``; JAX/XLA through ``XLA_FLAGS``, which must be set
before JAX is imported: unless the user already set ``XLA_FLAGS``, it becomes
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N``. (On the
2-core development machine XLA:CPU ran these fusions on one core with or
without the flags; measured CPU time / wall time was 1.0 either way.) JAX is
also switched to 64-bit mode (``jax_enable_x64``) so float64 inputs stay
float64; float32 inputs are unaffected.
"""

import functools
import importlib
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

__all__ = [
    "SPEC_GRID", "QUICK_GRID", "KERNELS", "EXTRA_KERNELS", "ALL_KERNELS", "IMPLS", "PEERS",
    "Unavailable", "Inputs", "impls_for", "applies", "grid_for", "make_inputs",
    "make_callable", "configure_threads", "peer_status", "versions", "cold_start_seconds",
    "tracemalloc_peak", "shape_label", "subprocess_extra_rss", "case_extra_rss",
]

# (shape, axis): SPEC §6's grid, float32, class axis last unless noted
SPEC_GRID = (
    ((65536, 10), -1),
    ((4096, 1000), -1),
    ((1024, 4096), -1),
    ((256, 32000), -1),
    ((32, 128000), -1),
    ((64, 1000, 64), 1),
)
# small shapes of the same kinds (many short rows, long rows, a non-last axis)
QUICK_GRID = (
    ((4096, 10), -1),
    ((256, 1000), -1),
    ((8, 16000), -1),
    ((8, 100, 16), 1),
)
# softmax_jacobian returns (rows, C, C): it gets a grid of its own
JACOBIAN_GRID = (((4096, 10), -1), ((512, 100), -1), ((8, 1000), -1))
JACOBIAN_QUICK_GRID = (((256, 10), -1), ((16, 100), -1))

# the kernels SPEC §6 times (the bench default), then the other public ones
KERNELS = (
    "softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward",
    "cross_entropy", "cross_entropy_with_grad", "nll_loss", "sigmoid",
    "binary_cross_entropy_with_grad",
)
EXTRA_KERNELS = ("log_sigmoid", "sigmoid_backward", "binary_cross_entropy_with_logits",
                 "softmax_jacobian", "linear_cross_entropy")
# linear_cross_entropy's cases are (N, H, V): hidden (N, H) @ linear_weight (V, H).T; the
# full grid is the language-model head of the scale-out issue (1 GiB of float32 logits)
LINEAR_GRID = (((8192, 1024, 32000), -1),)
LINEAR_QUICK_GRID = (((1024, 256, 4000), -1),)
ALL_KERNELS = KERNELS + EXTRA_KERNELS
# kernels timed against np.copyto too: one read and one write of every element
COPY_FLOOR = frozenset({"softmax", "cross_entropy_with_grad"})
ELEMENTWISE = frozenset({"sigmoid", "log_sigmoid", "sigmoid_backward",
                         "binary_cross_entropy_with_grad", "binary_cross_entropy_with_logits"})

# "unfused" (linear_cross_entropy only): the logits in memory, matmul then
# fastsoftmax.cross_entropy_with_grad, then the gradient matmuls
IMPLS = ("fastsoftmax", "reference", "unfused", "scipy", "torch", "jax", "copy")
PEERS = IMPLS[1:]

_SCIPY_NAMES = {"softmax": "softmax", "log_softmax": "log_softmax", "logsumexp": "logsumexp",
                "sigmoid": "expit", "log_sigmoid": "log_expit"}


class Unavailable(Exception):
    """This implementation cannot run this case (peer missing, or no such function)."""


# ---------------------------------------------------------------------------
# the case space
# ---------------------------------------------------------------------------

def impls_for(kernel):
    """The implementations the registry defines for ``kernel`` (installed or not)."""
    _check_kernel(kernel)
    impls = ["fastsoftmax", "reference"]
    if kernel == "linear_cross_entropy":
        impls.append("unfused")
    if kernel in _SCIPY_NAMES:
        impls.append("scipy")
    impls += ["torch", "jax"]
    if kernel in COPY_FLOOR:
        impls.append("copy")
    return tuple(impls)


def applies(kernel, shape, axis):
    """Whether (shape, axis) is a meaningful case for ``kernel``.

    Elementwise kernels have no class axis: a non-last axis would repeat the
    same work, so those cases are left out. linear_cross_entropy takes
    (N, H, V) shapes only (samples, hidden size, vocabulary).
    """
    if kernel in ELEMENTWISE and axis not in (-1, len(shape) - 1):
        return False
    if kernel == "linear_cross_entropy":
        return len(shape) == 3 and axis in (-1, 2)
    return True


def grid_for(kernel, quick=False):
    """The default (shape, axis) grid of ``kernel``."""
    _check_kernel(kernel)
    if kernel == "softmax_jacobian":
        return JACOBIAN_QUICK_GRID if quick else JACOBIAN_GRID
    if kernel == "linear_cross_entropy":
        return LINEAR_QUICK_GRID if quick else LINEAR_GRID
    grid = QUICK_GRID if quick else SPEC_GRID
    return tuple(c for c in grid if applies(kernel, *c))


def shape_label(shape, axis=-1):
    """``"4096x1000"``, or ``"64x1000x64 ax1"`` for a class axis that is not last."""
    s = "x".join(str(d) for d in shape)
    if axis not in (-1, len(shape) - 1):
        s += f" ax{axis % len(shape)}"
    return s


def _check_kernel(kernel):
    if kernel not in ALL_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose from {', '.join(ALL_KERNELS)}")


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------

class Inputs:
    """Seeded NumPy inputs of one case, plus lazily converted peer copies."""

    def __init__(self, kernel, shape, axis, dtype, arrays):
        self.kernel = kernel
        self.shape = tuple(shape)
        self.axis = axis
        self.dtype = np.dtype(dtype)
        self.arrays = arrays
        self._torch = {}
        self._jax = {}

    def __getitem__(self, name):
        return self.arrays[name]

    @property
    def nbytes(self):
        return sum(a.nbytes for a in self.arrays.values())

    def torch(self, name):
        if name not in self._torch:
            self._torch[name] = _torch().from_numpy(self.arrays[name])
        return self._torch[name]

    def jax(self, name):
        if name not in self._jax:
            jax = _jax()
            self._jax[name] = jax.device_put(self.arrays[name])
        return self._jax[name]

    def release(self):
        """Drop every array (peer copies included)."""
        for a in self._jax.values():
            try:
                a.delete()
            except Exception:  # pragma: no cover
                pass
        self._jax.clear()
        self._torch.clear()
        self.arrays.clear()


def _softmax_np(x, axis, log=False):
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=axis, keepdims=True)
    return (z - np.log(s)) if log else e / s


def make_inputs(kernel, shape, axis=-1, dtype="float32", seed=0):
    """Seeded inputs of ``kernel`` for one case (logits ~ N(0, 2^2), uniform labels)."""
    _check_kernel(kernel)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"benchmark dtype must be float32 or float64, got {dt}")
    shape = tuple(int(s) for s in shape)
    ax = axis % len(shape)
    rng = np.random.default_rng(seed)
    if kernel == "linear_cross_entropy":
        if len(shape) != 3:
            raise ValueError(f"linear_cross_entropy cases are (N, H, V) shapes, got {shape}")
        n, h, v = shape
        rdt = np.float32 if dt == np.float32 else np.float64
        arrays = {"hidden": rng.standard_normal((n, h), dtype=rdt).astype(dt, copy=False),
                  "linear_weight": (rng.standard_normal((v, h), dtype=rdt)
                                    * rdt(1 / np.sqrt(h))).astype(dt, copy=False),
                  "target": rng.integers(0, v, size=n, dtype=np.int64)}
        return Inputs(kernel, shape, 1, dt, arrays)      # the class axis of the N x V logits
    x = (rng.standard_normal(shape, dtype=np.float32 if dt == np.float32 else np.float64)
         * 2).astype(dt, copy=False)
    arrays = {"x": x}
    if kernel in ("softmax_backward", "log_softmax_backward"):
        arrays["grad"] = rng.standard_normal(shape).astype(dt)
        arrays["y"] = _softmax_np(x, ax, log=kernel == "log_softmax_backward").astype(dt)
        del arrays["x"]
    elif kernel in ("cross_entropy", "cross_entropy_with_grad", "nll_loss"):
        sample_shape = shape[:ax] + shape[ax + 1:]
        arrays["target"] = rng.integers(0, shape[ax], size=sample_shape, dtype=np.int64)
        if kernel == "nll_loss":
            arrays["x"] = _softmax_np(x, ax, log=True).astype(dt)
        if kernel in COPY_FLOOR:
            arrays["dst"] = np.zeros_like(x)     # for the np.copyto floor
    elif kernel == "sigmoid_backward":
        arrays["grad"] = rng.standard_normal(shape).astype(dt)
        arrays["y"] = (1.0 / (1.0 + np.exp(-x))).astype(dt)
        del arrays["x"]
    elif kernel in ("binary_cross_entropy_with_grad", "binary_cross_entropy_with_logits"):
        arrays["target"] = (rng.random(shape) < 0.5).astype(dt)
    elif kernel in COPY_FLOOR:
        arrays["dst"] = np.zeros_like(x)     # for the np.copyto floor
    return Inputs(kernel, shape, ax, dt, arrays)


# ---------------------------------------------------------------------------
# threads and lazy peers
# ---------------------------------------------------------------------------

_THREADS = None


def configure_threads(n=None):
    """Give Numba, PyTorch and XLA the same thread count; returns it.

    ``n=None`` keeps Numba's current count. Raises ValueError when ``n``
    exceeds the thread pool Numba was started with (``NUMBA_NUM_THREADS``).
    """
    global _THREADS
    import numba
    if n is not None:
        n = int(n)
        if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
            raise ValueError(f"--threads {n}: Numba was started with NUMBA_NUM_THREADS="
                             f"{numba.config.NUMBA_NUM_THREADS}; use 1..that (set the "
                             f"environment variable for more)")
        numba.set_num_threads(n)
    _THREADS = numba.get_num_threads()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_THREADS)
    if "jax" not in sys.modules:
        os.environ.setdefault("XLA_FLAGS", _xla_flags(_THREADS))
    return _THREADS


def _xla_flags(n):
    return f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={n}"


def _threads():
    return _THREADS if _THREADS is not None else configure_threads()


@functools.lru_cache(maxsize=None)
def _import(name):
    if name == "jax":
        _threads()                           # sets XLA_FLAGS before the import
    try:
        mod = importlib.import_module(name)
    except Exception as e:                   # ImportError, or a broken install
        raise Unavailable(f"{name} is not importable ({type(e).__name__}: {e})") from None
    if name == "torch":
        mod.set_num_threads(_threads())
    if name == "jax":
        mod.config.update("jax_enable_x64", True)
    return mod


def _torch():
    return _import("torch")


def _jax():
    return _import("jax")


def peer_status(impl):
    """``(available, note)`` without importing the peer (a find_spec check)."""
    module = {"scipy": "scipy", "torch": "torch", "jax": "jax"}.get(impl)
    if module is None:
        return True, ""
    if importlib.util.find_spec(module) is None:
        return False, f"{module} is not installed"
    return True, ""


def _dist_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions():
    """Versions of fastsoftmax, its dependencies and the peers (no peer is imported)."""
    import llvmlite
    import numba

    import fastsoftmax
    out = {"python": sys.version.split()[0], "fastsoftmax": fastsoftmax.__version__,
           "numba": numba.__version__, "llvmlite": llvmlite.__version__,
           "numpy": np.__version__}
    for name in ("scipy", "torch", "jax", "jaxlib"):
        v = _dist_version(name)
        if v is not None:
            out[name] = v
    return out


# ---------------------------------------------------------------------------
# callables
# ---------------------------------------------------------------------------

def make_callable(kernel, impl, inp):
    """A zero-argument callable running ``kernel`` with ``impl`` on ``inp``.

    Raises :class:`Unavailable` when the implementation is missing or has no
    such function.
    """
    _check_kernel(kernel)
    if impl not in impls_for(kernel):
        raise Unavailable(f"{impl} has no {kernel}")
    return _FACTORIES[impl](kernel, inp)


def _fastsoftmax(kernel, inp):
    import fastsoftmax as fs
    return _numpy_style(fs, kernel, inp)


def _reference(kernel, inp):
    from fastsoftmax import reference
    return _numpy_style(reference, kernel, inp)


def _numpy_style(mod, kernel, inp):
    f = getattr(mod, kernel, None)
    if f is None:
        raise Unavailable(f"{mod.__name__} has no {kernel}")
    ax = inp.axis
    if kernel in ("softmax", "log_softmax", "logsumexp", "softmax_jacobian"):
        x = inp["x"]
        return lambda: f(x, ax)
    if kernel in ("softmax_backward", "log_softmax_backward"):
        g, y = inp["grad"], inp["y"]
        return lambda: f(g, y, ax)
    if kernel in ("cross_entropy", "cross_entropy_with_grad", "nll_loss"):
        x, t = inp["x"], inp["target"]
        return lambda: f(x, t, ax)
    if kernel in ("sigmoid", "log_sigmoid"):
        x = inp["x"]
        return lambda: f(x)
    if kernel == "sigmoid_backward":
        g, y = inp["grad"], inp["y"]
        return lambda: f(g, y)
    if kernel == "linear_cross_entropy":
        h, w, t = inp["hidden"], inp["linear_weight"], inp["target"]
        return lambda: f(h, w, t)
    x, t = inp["x"], inp["target"]            # the binary losses
    return lambda: f(x, t)


def _scipy(kernel, inp):
    special = _import("scipy.special")
    f = getattr(special, _SCIPY_NAMES[kernel], None)
    if f is None:
        raise Unavailable(f"scipy.special has no {_SCIPY_NAMES[kernel]}")
    x, ax = inp["x"], inp.axis
    if kernel in ("sigmoid", "log_sigmoid"):
        return lambda: f(x)
    return lambda: f(x, axis=ax)


def _unfused(kernel, inp):
    """The logits in memory: matmul, the fused cross-entropy kernel, two gradient matmuls."""
    import fastsoftmax as fs
    h, w, t = inp["hidden"], inp["linear_weight"], inp["target"]

    def lce():
        loss, dz = fs.cross_entropy_with_grad(h @ w.T, t, inplace=True)
        return loss, (dz @ w, dz.T @ h)
    return lce


def _copy(kernel, inp):
    x, dst = inp["x"], inp["dst"]
    return lambda: np.copyto(dst, x)


def _torch_class_first(t, axis):
    """PyTorch's losses want the class axis at dim 1 (a view, no copy)."""
    return t if axis == 1 else t.movedim(axis, 1)


def _torch_impl(kernel, inp):
    torch = _torch()
    F = torch.nn.functional
    ax = inp.axis
    if kernel in ("softmax", "log_softmax", "logsumexp", "sigmoid"):
        f = getattr(torch, kernel)
        x = inp.torch("x")
        if kernel == "sigmoid":
            return lambda: f(x)
        return lambda: f(x, ax)
    if kernel == "log_sigmoid":
        x = inp.torch("x")
        return lambda: F.logsigmoid(x)
    if kernel in ("softmax_backward", "log_softmax_backward"):
        f = (torch._softmax_backward_data if kernel == "softmax_backward"
             else torch._log_softmax_backward_data)
        g, y = inp.torch("grad"), inp.torch("y")
        return lambda: f(g, y, ax, y.dtype)
    if kernel == "sigmoid_backward":
        f = torch.ops.aten.sigmoid_backward
        g, y = inp.torch("grad"), inp.torch("y")
        return lambda: f(g, y)
    if kernel == "softmax_jacobian":
        x = inp.torch("x")

        def jac():
            p = torch.softmax(x, -1)
            return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
        return jac
    if kernel in ("cross_entropy", "nll_loss"):
        f = F.cross_entropy if kernel == "cross_entropy" else F.nll_loss
        x, t = _torch_class_first(inp.torch("x"), ax), inp.torch("target")
        return lambda: f(x, t)
    if kernel == "binary_cross_entropy_with_logits":
        x, t = inp.torch("x"), inp.torch("target")
        return lambda: F.binary_cross_entropy_with_logits(x, t)
    if kernel == "linear_cross_entropy":
        if not hasattr(F, "linear_cross_entropy"):
            raise Unavailable("this torch has no F.linear_cross_entropy")
        h = torch.from_numpy(inp["hidden"]).requires_grad_()
        w = torch.from_numpy(inp["linear_weight"]).requires_grad_()
        t = inp.torch("target")

        def lce():
            h.grad = w.grad = None
            value = F.linear_cross_entropy(h, w, t)
            value.backward()
            return value, (h.grad, w.grad)
        return lce
    return _torch_fwd_bwd(kernel, inp)   # the with_grad kernels


def _torch_fwd_bwd(kernel, inp):
    torch = _torch()
    F = torch.nn.functional
    ax = inp.axis
    leaf = torch.from_numpy(inp["x"]).requires_grad_()   # its own tensor, shared memory
    t = inp.torch("target")
    if kernel == "cross_entropy_with_grad":
        def loss():
            return F.cross_entropy(_torch_class_first(leaf, ax), t)
    else:
        def loss():
            return F.binary_cross_entropy_with_logits(leaf, t)

    def fwd_bwd():
        leaf.grad = None
        value = loss()
        value.backward()
        return value, leaf.grad
    return fwd_bwd


def _jax_impl(kernel, inp):
    jax = _jax()
    jnp = jax.numpy
    ax = inp.axis

    def run(f, *names):
        args = [inp.jax(n) for n in names]
        jf = jax.jit(f)

        def call():
            out = jf(*args)
            return jax.block_until_ready(out)
        return call

    if kernel in ("softmax", "log_softmax"):
        f = getattr(jax.nn, kernel)
        return run(lambda x: f(x, axis=ax), "x")
    if kernel == "logsumexp":
        return run(lambda x: jax.nn.logsumexp(x, axis=ax), "x")
    if kernel == "sigmoid":
        return run(jax.nn.sigmoid, "x")
    if kernel == "log_sigmoid":
        return run(jax.nn.log_sigmoid, "x")
    if kernel == "softmax_backward":
        return run(lambda g, y: y * (g - jnp.sum(g * y, axis=ax, keepdims=True)), "grad", "y")
    if kernel == "log_softmax_backward":
        return run(lambda g, y: g - jnp.exp(y) * jnp.sum(g, axis=ax, keepdims=True),
                   "grad", "y")
    if kernel == "sigmoid_backward":
        return run(lambda g, y: g * y * (1 - y), "grad", "y")
    if kernel == "softmax_jacobian":
        def jac(x):
            p = jax.nn.softmax(x, axis=-1)
            return p[..., :, None] * (jnp.eye(p.shape[-1], dtype=p.dtype) - p[..., None, :])
        return run(jac, "x")

    def nll(lp, t):
        picked = jnp.take_along_axis(lp, jnp.expand_dims(t, ax), axis=ax)
        return -jnp.mean(picked)

    def ce(x, t):
        return nll(jax.nn.log_softmax(x, axis=ax), t)

    def bce(x, t):   # optax.sigmoid_binary_cross_entropy, mean
        return jnp.mean(jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x))))

    if kernel == "cross_entropy":
        return run(ce, "x", "target")
    if kernel == "cross_entropy_with_grad":
        return run(jax.value_and_grad(ce), "x", "target")
    if kernel == "nll_loss":
        return run(nll, "x", "target")
    if kernel == "binary_cross_entropy_with_logits":
        return run(bce, "x", "target")
    if kernel == "binary_cross_entropy_with_grad":
        return run(jax.value_and_grad(bce), "x", "target")
    if kernel == "linear_cross_entropy":
        def lce(h, w, t):
            return nll(jax.nn.log_softmax(h @ w.T, axis=-1), t)
        return run(jax.value_and_grad(lce, argnums=(0, 1)), "hidden", "linear_weight", "target")
    raise Unavailable(f"jax has no {kernel}")  # pragma: no cover


_FACTORIES = {"fastsoftmax": _fastsoftmax, "reference": _reference, "unfused": _unfused,
              "scipy": _scipy, "torch": _torch_impl, "jax": _jax_impl, "copy": _copy}


# ---------------------------------------------------------------------------
# costs outside one call: cold start and extra memory
# ---------------------------------------------------------------------------

_COLD_START_CODE = """
import time
import numpy as np
x = np.ones((4, 16), np.float32)
t0 = time.perf_counter()
import fastsoftmax
fastsoftmax.softmax(x)
print(repr(time.perf_counter() - t0))
"""


def cold_start_seconds(repeat=3):
    """Best of ``repeat`` fresh processes: ``import fastsoftmax`` + the first softmax call.

    NumPy is imported before the clock starts (it is not ours); Numba's
    import is inside. The kernel cache is as it is: run ``warmup`` first.
    """
    import fastsoftmax
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastsoftmax.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _COLD_START_CODE], env=env,
                             capture_output=True, text=True, check=True)
        best = min(best, float(out.stdout.strip().splitlines()[-1]))
    return best


_RSS_CODE = r"""
import gc, json, os, resource, sys, time
spec = json.loads(sys.argv[1])

def rss_now():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:   # not Linux: the high-water mark so far (over-states the base)
        return peak(False)

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

def peak(reset):
    if reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024

ns = {}
exec(spec["setup"], ns)
exec(spec["warm"], ns)
gc.collect()
base = rss_now()
reset = reset_peak()
t0 = time.perf_counter()
exec(spec["call"], ns)
seconds = time.perf_counter() - t0
print(json.dumps({"extra_bytes": max(0, peak(reset) - base), "base_bytes": base,
                  "seconds": seconds}))
"""


def subprocess_extra_rss(setup, call, warm=""):
    """Peak resident memory one statement adds, measured in a fresh interpreter.

    ``setup`` (source) builds the inputs, ``warm`` runs first (give it a small
    call of the same function: code loading and thread pools are not the
    call's), then the peak resident set size is reset (Linux
    ``/proc/self/clear_refs``) and ``call`` runs once; keep its result in a
    variable so the outputs count. Returns ``{"extra_bytes": peak during the
    call minus the resident size before it, "base_bytes": that size,
    "seconds": the call's wall time}``. Unlike ``tracemalloc`` this sees every
    allocation, Numba's and BLAS's included. Where the peak cannot be reset,
    ``ru_maxrss`` is used, which over-states the extra by any earlier peak
    above the base (never under-states it).
    """
    import fastsoftmax
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastsoftmax.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    spec = json.dumps({"setup": setup, "warm": warm, "call": call})
    out = subprocess.run([sys.executable, "-c", _RSS_CODE, spec], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(f"the memory probe failed (exit {out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def case_extra_rss(kernel, shape, dtype, impl, warm_shape=None):
    """``subprocess_extra_rss`` of one registry case (inputs built in the child)."""
    warm_shape = warm_shape or grid_for(kernel, quick=True)[0][0]
    ax = -1
    setup = ("from fastsoftmax import _bench_registry as R\n"
             f"R.configure_threads({_THREADS!r})\n"
             f"small = R.make_inputs({kernel!r}, {tuple(warm_shape)!r}, {ax}, {str(dtype)!r})\n"
             f"inp = R.make_inputs({kernel!r}, {tuple(shape)!r}, {ax}, {str(dtype)!r})\n")
    warm = (f"R.make_callable({kernel!r}, {impl!r}, small)()\n"
            f"fn = R.make_callable({kernel!r}, {impl!r}, inp)\n")
    return subprocess_extra_rss(setup, "res = fn()", warm)


def tracemalloc_peak(fn):
    """Peak bytes traced by ``tracemalloc`` during one call of ``fn`` (after a warm call)."""
    import gc
    import tracemalloc
    fn()
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        res = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del res
    return max(0, peak - base)
