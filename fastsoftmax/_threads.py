"""Threading-layer policy.

Numba's ``workqueue`` layer aborts the process when two Python threads enter
parallel kernels at once (GUIDE §2). At import, unless the user chose a
layer (``NUMBA_THREADING_LAYER``), fastsoftmax asks Numba for a thread-safe
one (``omp`` or ``tbb``) when one is installed. If the process still ends up
on ``workqueue`` (nothing else available, or the user's choice), parallel
kernels are serialised by a lock, so concurrent calls stay safe.
"""

import importlib
import os
import threading

import numba

_LOCK = threading.Lock()
_SAFE_LAYERS = ("omp", "tbb")


def _available(layer):
    try:
        importlib.import_module(f"numba.np.ufunc.{layer}pool")
    except Exception:
        return False
    return True


def configure():
    """Prefer a thread-safe layer unless the user picked one (called at import)."""
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return
    if numba.config.THREADING_LAYER not in ("default", "", None):
        return
    if any(_available(layer) for layer in _SAFE_LAYERS):
        numba.config.THREADING_LAYER = "threadsafe"


def current_layer():
    """The layer in use, or None before any parallel kernel has run."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


_safe = False   # set once a thread-safe layer is known to be in use (it cannot change after)


def launch(kernel, args):
    """Call a parallel kernel: directly on a thread-safe layer, else under the lock
    (the layer is unknown before the first launch, and workqueue is not safe).

    A plain function, not a context manager: a generator-based ``with`` block
    allocates about 1 KB per call, which SPEC §6's ``out=`` memory budget counts.
    """
    global _safe
    if _safe:
        return kernel(*args)
    if current_layer() in _SAFE_LAYERS:
        _safe = True
        return kernel(*args)
    with _LOCK:
        return kernel(*args)
