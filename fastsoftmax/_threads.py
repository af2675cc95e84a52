"""Threading-layer policy.

Numba's ``workqueue`` layer aborts the process when two Python threads enter
parallel kernels at once (GUIDE §2). At import, unless the user chose a
layer (``NUMBA_THREADING_LAYER``), fastsoftmax asks Numba for a thread-safe
one (``omp`` or ``tbb``) when one is installed. If the process still ends up
on ``workqueue`` (nothing else available, or the user's choice), parallel
kernels are serialised by a lock, so concurrent calls stay safe.
"""

import contextlib
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


@contextlib.contextmanager
def parallel_guard():
    layer = current_layer()
    if layer in _SAFE_LAYERS:
        yield
        return
    # unknown yet (first launch) or workqueue: serialise
    with _LOCK:
        yield
