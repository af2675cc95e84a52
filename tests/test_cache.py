"""Kernels loaded from Numba's on-disk cache in a fresh process.

fastsoftmax's cache class loads a cached kernel without Numba's full context
refresh (fastsoftmax._kernels._jit, ``load_overload``). A fresh process that
loads every kernel variant ``python -m fastsoftmax warmup`` builds (serial and
parallel, row and lane kernels, every loss option, float32 and float64) that
way must get the same bits as a process that loads them with Numba's own
``load_overload``, must compile nothing, and must not pay for the refresh.

The reference is a second loading process, not the process that compiled the
kernels: on this Numba (0.68) a few float64 distribution-target loss kernels,
freshly compiled, differ in the last bit from the same kernels loaded from the
cache (with Numba's own loader as well), deterministically; the rest of the
suite checks the accuracy of both.
"""

import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from fastsoftmax._cli.warmup import calls
from fastsoftmax._kernels import _jit
from _helpers import result_arrays

pytestmark = pytest.mark.skipif(_jit.PYTHON_MODE, reason="needs compiled kernels")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = ("float32", "float64")

_CHILD = textwrap.dedent("""
    import pickle, sys
    import numba
    from fastsoftmax._kernels import _jit
    if sys.argv[2] == "numba":                    # Numba's own load_overload
        del _jit._CACHE_CLASS.load_overload
    from fastsoftmax._cli.warmup import calls
    results = {label: thunk() for dt in DTYPES for label, thunk in calls(dt)}
    misses = 0
    for name, mod in list(sys.modules.items()):
        if name.startswith("fastsoftmax."):
            for obj in vars(mod).values():
                if isinstance(obj, numba.core.registry.CPUDispatcher):
                    misses += sum(obj.stats.cache_misses.values())
    refreshed = "numba.np.arraymath" in sys.modules
    with open(sys.argv[1], "wb") as f:
        pickle.dump((results, misses, refreshed), f)
""").replace("DTYPES", repr(DTYPES))


def _child(tmp_path, how):
    path = tmp_path / f"{how}.pkl"
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), how], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.mark.skipif(not _jit.LEAN_CACHE_LOAD, reason="this Numba loads kernels its own way")
def test_lean_cache_load_gives_the_bits_numba_own_load_gives(tmp_path):
    for dt in DTYPES:                      # compile what is not cached yet
        for _, thunk in calls(dt):
            thunk()
    lean, lean_misses, lean_refreshed = _child(tmp_path, "lean")
    full, full_misses, _ = _child(tmp_path, "numba")
    assert lean_misses == 0 and full_misses == 0, "a child compiled instead of loading"
    assert not lean_refreshed, "the lean child refreshed Numba's contexts"
    assert set(lean) == set(full)
    for label, value in lean.items():
        mine, theirs = result_arrays(value), result_arrays(full[label])
        assert len(mine) == len(theirs), label
        for a, b in zip(mine, theirs):
            assert a.dtype == b.dtype and a.shape == b.shape, label
            assert a.tobytes() == b.tobytes(), label
