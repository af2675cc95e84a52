"""``python -m fastsoftmax info``: versions, threads, CPU SIMD level, cache directory.

The helpers here (CPU model, SIMD level, cache directory, threading layer)
are also used by ``bench`` for its machine line.
"""

import os
import platform
import sys

SIMD_LEVELS = ("avx512f", "avx2", "avx", "sse4_2")


def add_parser(p):
    p.add_argument("--no-init", action="store_true",
                   help="do not run a small parallel kernel first (the threading layer "
                        "then shows as not initialised)")


# ---------------------------------------------------------------------- CPU
def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``)."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags():
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def simd_level(flags=None):
    """The widest of avx512f / avx2 / avx / sse4_2 the CPU reports, else None.

    Falls back to LLVM's host feature list when ``/proc/cpuinfo`` is absent.
    """
    flags = cpu_flags() if flags is None else flags
    if not flags:
        try:
            from llvmlite import binding
            feats = binding.get_host_cpu_features()
            flags = {name.replace(".", "_") for name, on in feats.items() if on}
        except Exception:  # pragma: no cover
            flags = set()
    for level in SIMD_LEVELS:
        if level in flags:
            return level
    return None


def host_cpu_name():
    """LLVM's name for the host CPU (what Numba compiles for, unless NUMBA_CPU_NAME is set)."""
    try:
        from llvmlite import binding
        return binding.get_host_cpu_name()
    except Exception:  # pragma: no cover
        return "unknown"


def core_count():
    """(logical CPUs usable by this process, logical CPUs on the machine)."""
    total = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        usable = total
    return usable, total


# ------------------------------------------------------------------ threads
def threading_layer(init=True):
    """Numba's threading layer; with ``init``, run a parallel softmax first so it is defined."""
    import numba
    if init:
        import numpy as np

        import fastsoftmax
        fastsoftmax.softmax(np.ones((512, 1024), np.float32))
    try:
        return numba.threading_layer()
    except ValueError:
        if numba.get_num_threads() <= 1:
            return "not initialised (1 thread: kernels run serially)"
        return "not initialised (no parallel kernel has run)"


# -------------------------------------------------------------------- cache
def cache_dir():
    """``(directory, how it was chosen)`` of the Numba cache the kernels actually use."""
    try:
        from fastsoftmax._kernels import forward
        path = forward.forward_rows._cache._cache_path
    except Exception:
        path = None
    if os.environ.get("NUMBA_CACHE_DIR"):
        return (path or os.environ["NUMBA_CACHE_DIR"]), "NUMBA_CACHE_DIR"
    import fastsoftmax
    in_tree = os.path.join(os.path.dirname(os.path.abspath(fastsoftmax.__file__)),
                           "_kernels", "__pycache__")
    if path is None:
        parent = in_tree if os.path.isdir(in_tree) else os.path.dirname(in_tree)
        if os.access(parent, os.W_OK):
            path = in_tree
        else:
            from numba.core.caching import UserWideCacheLocator
            from numba.misc.appdirs import AppDirs
            sub = UserWideCacheLocator.get_suitable_cache_subpath(
                os.path.join(os.path.dirname(in_tree), "forward.py"))
            path = os.path.join(AppDirs(appname="numba", appauthor=False).user_cache_dir, sub)
    if os.path.abspath(path) == os.path.abspath(in_tree):
        return path, "in-tree (the package's _kernels/__pycache__ is writable)"
    return path, "user-wide (the package directory is not writable)"


def _sizes(path, names):
    total = 0
    for n in names:
        try:
            total += os.path.getsize(os.path.join(path, n))
        except OSError:     # removed meanwhile (another process pruning)
            pass
    return total


def cache_inventory(path, stamp=None):
    """``(live, stale)``: sorted names of the Numba cache files in ``path``.

    Live: the index files (``.nbi``) this Numba and this version of the
    package read (their source stamp is the package's, see
    ``fastsoftmax._kernels._jit``) and the data files (``.nbc``) they list.
    Stale: every other index or data file. Numba keeps such files for ever:
    it ignores an index whose stamp is out of date and reuses data file
    names only for a function at the same line, so each release (or edit) of
    the kernels leaves its whole cache behind (about 60 MiB). An index that
    cannot be read is left alone, with every data file of its function, and
    so are the files of other Python versions (their names carry the version:
    another interpreter may share this directory with another Numba).

    The directory is listed before any index is read: Numba writes an index
    entry before its data file, so a data file that appears in the listing
    while another process compiles is already in the index read after it.
    """
    import pickle

    import numba
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith((".nbi", ".nbc")))
    except OSError:
        return [], []
    if stamp is None:
        from .._kernels import _jit
        if _jit._CACHE_CLASS is None:   # pragma: no cover (Numba's own stamps in use)
            return names, []
        stamp = _jit._package_stamp()
    tag = ".py%d%d%s." % (sys.version_info[0], sys.version_info[1], sys.abiflags)
    live = {n for n in names if tag not in n}
    unreadable = []
    for n in names:
        if not n.endswith(".nbi") or n in live:
            continue
        try:
            with open(os.path.join(path, n), "rb") as f:
                version = pickle.load(f)
                data = f.read()
            if version != numba.__version__:
                continue            # Numba ignores it (another Numba release)
            index_stamp, overloads = pickle.loads(data)
        except FileNotFoundError:
            continue
        except Exception:
            unreadable.append(n[:-len(".nbi")] + ".")
            live.add(n)
            continue
        if index_stamp == stamp:
            live.add(n)
            live.update(overloads.values())
    for n in names:
        if any(n.startswith(base) for base in unreadable):
            live.add(n)
    return [n for n in names if n in live], [n for n in names if n not in live]


def prune_cache(path, stamp=None):
    """Remove the stale files of ``cache_inventory``; returns (files removed, bytes)."""
    _, stale = cache_inventory(path, stamp)
    removed = freed = 0
    for n in stale:
        full = os.path.join(path, n)
        try:
            size = os.path.getsize(full)
            os.remove(full)
        except OSError:
            continue
        removed += 1
        freed += size
    return removed, freed


def _cache_stats(path):
    if not os.path.isdir(path):
        return "not created yet"
    live, stale = cache_inventory(path)
    size = _sizes(path, live)
    nbi = sum(n.endswith(".nbi") for n in live)
    text = f"{nbi} kernels indexed, {len(live) - nbi} compiled variants, {size / 2**20:.1f} MiB"
    if stale:
        text += (f"; plus {len(stale)} stale files ({_sizes(path, stale) / 2**20:.1f} MiB) left "
                 f"by other versions of the kernels, which `python -m fastsoftmax warmup` "
                 f"removes")
    return text


# ----------------------------------------------------------------- the report
def collect(init=True):
    """Everything ``info`` prints, as an ordered list of (label, value)."""
    import numba

    from .._bench_registry import versions
    v = versions()
    layer = threading_layer(init)
    usable, total = core_count()
    flags = cpu_flags()
    level = simd_level(flags)
    present = [lv for lv in SIMD_LEVELS if lv in flags]
    path, how = cache_dir()
    rows = [
        ("fastsoftmax", v["fastsoftmax"]),
        ("python", f"{v['python']} ({sys.executable})"),
        ("numba", v["numba"]),
        ("llvmlite", v["llvmlite"]),
        ("numpy", v["numpy"]),
    ]
    for name in ("scipy", "torch", "jax", "jaxlib"):
        rows.append((name, v.get(name, "not installed")))
    rows += [
        ("threading layer", f"{layer} (requested: {numba.config.THREADING_LAYER})"),
        ("threads", f"{numba.get_num_threads()} (pool started with NUMBA_NUM_THREADS="
                    f"{numba.config.NUMBA_NUM_THREADS})"),
        ("CPU", cpu_model()),
        ("cores", f"{usable} usable of {total} logical CPUs"),
        ("SIMD level", (level or "none of " + "/".join(SIMD_LEVELS))
         + (f" (cpuinfo flags: {' '.join(present)})" if present else "")),
        ("LLVM host CPU", host_cpu_name()
         + (f" (NUMBA_CPU_NAME={os.environ['NUMBA_CPU_NAME']})"
            if os.environ.get("NUMBA_CPU_NAME") else "")),
        ("platform", platform.platform()),
        ("cache directory", f"{path} [{how}]"),
        ("cache contents", _cache_stats(path)),
        ("cache loading", _cache_loading()),
    ]
    return rows


def _cache_loading():
    from fastsoftmax._kernels import _jit
    if _jit.PYTHON_MODE:
        return "none (NUMBA_DISABLE_JIT: kernels run as Python)"
    if _jit.LEAN_CACHE_LOAD:
        return "lean (cached kernels load without Numba's context refresh)"
    checked = ", ".join("%d.%d" % v for v in _jit.LEAN_LOAD_CHECKED)
    return f"Numba's own (full context refresh; lean loading is checked on numba {checked})"


def run(args):
    rows = collect(init=not getattr(args, "no_init", False))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k + ':':<{width + 1}} {v}")
    return 0
