"""Shared NumPy-side plumbing: dtype policy, layouts, out=, serial/parallel.

A reduction along one axis is presented to the kernels as a C-contiguous
array of the compute dtype, viewed as rows ``(R, C)`` when the class axis is
last, or lanes ``(O, C, K)`` when it is not (vectorised across the
contiguous ``K``, never transposed). Input in any other layout (F-order,
strided, negative strides, byte-swapped, another dtype) is first copied once
into that C-contiguous form, so its results are bit-identical to those of
the C-contiguous array with the same values (SPEC §2). Elementwise functions
(``elementwise=True``) also accept F-contiguous input as it is, through its
transpose, and return F-ordered results, as NumPy's ufuncs do.
"""

import math
import threading

import numba
import numpy as np

from .. import _threads
from .._kernels import elementwise as _ek
from .._validate import F32, F64, as_array, check_out, check_where, float_policy, normalize_axis


NATIVE_FLOATS = (F32, F64)   # the dtypes the kernels compute in

# Stand-ins for the array arguments a kernel call does not use (never written,
# never read): (1, 1) "rows", (1, 1, 1) "lanes", and the empty (0,) / (0, 0)
# that tell a kernel to skip an output.
UNUSED = {dt: {"rows": np.empty((1, 1), dt), "lanes": np.empty((1, 1, 1), dt),
               "rows_empty": np.empty(0, dt), "lanes_empty": np.empty((0, 0), dt)}
          for dt in NATIVE_FLOATS}


def usable_as_is(a, dtype, shape):
    """Whether ``a`` reaches a kernel as it is: an ndarray of exactly ``dtype``
    (native byte order) and ``shape``, C-contiguous and writeable, i.e. one
    that ``Plan`` and ``_writeable_c`` would not copy (the common calls' short
    paths test their operands with it)."""
    return (type(a) is np.ndarray and a.dtype == dtype and a.shape == shape
            and a.flags.c_contiguous and a.flags.writeable)


class Plan:
    """A (possibly transposed) C-contiguous working view of one input."""

    __slots__ = ("work", "axis", "transposed", "outer", "n", "inner", "scalar")

    def __init__(self, a, axis, cdt, elementwise=False):
        self.scalar = a.ndim == 0
        if self.scalar:
            a = a.reshape(1)
        if a.dtype != cdt:
            a = a.astype(cdt, order="K")
        self.transposed = False
        if a.flags.c_contiguous:
            work = a
        elif elementwise and a.flags.f_contiguous:
            work = a.T
            axis = a.ndim - 1 - axis
            self.transposed = True
        else:
            work = np.ascontiguousarray(a)
        self.work = work
        self.axis = axis
        shape = work.shape
        self.n = shape[axis]
        self.outer = _prod(shape[:axis])
        self.inner = _prod(shape[axis + 1:])

    # ------------------------------------------------------------ views
    def kernel_view(self, arr):
        """``arr`` (shaped like ``work``, C-contiguous) as rows or lanes."""
        if self.inner == 1:
            return arr.reshape(self.outer, self.n)
        return arr.reshape(self.outer, self.n, self.inner)

    def mask_view(self, where, user_shape):
        """The broadcast mask in the working layout, C-contiguous bool."""
        w = check_where(where, user_shape if not self.scalar else (1,))
        if self.transposed:
            w = w.T
        return self.kernel_view(_writeable_c(w))

    def like(self, arr, cdt):
        """Another array of the input's shape, in the working layout (C-contiguous)."""
        if self.scalar:
            arr = arr.reshape(1)
        if self.transposed:
            arr = arr.T
        return _writeable_c(arr, cdt)

    def batch_like(self, arr, dtype):
        """A per-sample array (the input's shape without the axis), working layout."""
        if self.scalar:
            arr = arr.reshape(())
        if self.transposed:
            arr = arr.T
        arr = _writeable_c(arr, dtype)
        if self.inner == 1:
            return arr.reshape(self.outer)
        return arr.reshape(self.outer, self.inner)

    def batch_shape(self):
        """Shape of the per-row results in the working layout."""
        s = self.work.shape
        return s[:self.axis] + s[self.axis + 1:]

    def to_user(self, arr):
        """A result in working layout, turned back into the user's layout."""
        return arr.T if self.transposed else arr


def _writeable_c(arr, dtype=None):
    """A C-contiguous, writeable array (a broadcast view is read-only, and Numba
    compiles kernels separately for read-only arguments)."""
    if dtype is not None and arr.dtype != dtype:
        with np.errstate(over="ignore", invalid="ignore"):   # out of range: +-inf, silently
            arr = np.ascontiguousarray(arr, dtype=dtype)
    else:
        arr = np.ascontiguousarray(arr)
    return arr if arr.flags.writeable else arr.copy()


def _prod(shape):
    p = 1
    for s in shape:
        p *= s
    return p


def prepare(x, name="x"):
    """(array, compute dtype, result dtype) for an input under SPEC §2."""
    a = as_array(x)
    cdt, rdt = float_policy(a.dtype, name)
    return a, cdt, rdt


def user_axis(axis, ndim):
    return normalize_axis(axis, ndim)


def target_for(out, plan, result_shape, cdt, rdt, others=()):
    """Where the kernel writes: ``(kernel array in working layout, finish)``.

    ``finish(arr)`` turns the kernel's array into the value to return. When
    ``out`` can be written directly (same dtype as computed, contiguous in the
    working layout, not partially overlapping the input or ``others``, the
    other working arrays the kernel reads) the kernel writes into it;
    otherwise into a fresh array that is then copied into ``out``.
    """
    if out is not None:
        check_out(out, result_shape, rdt)
        if rdt == cdt:
            ow = out.T if plan.transposed else out
            if plan.scalar:
                ow = ow.reshape(1)
            if ow.flags.c_contiguous and all(_same_memory(ow, w) or not np.may_share_memory(ow, w)
                                             for w in (plan.work,) + tuple(others)):
                return ow, lambda arr: out

        def finish_copy(arr):
            np.copyto(out, _user_result(plan, arr, rdt, result_shape))
            return out
        return np.empty(plan.work.shape, cdt), finish_copy
    return np.empty(plan.work.shape, cdt), lambda arr: _user_result(plan, arr, rdt,
                                                                     result_shape)


def _same_memory(a, b):
    return (a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _user_result(plan, arr, rdt, result_shape):
    res = cast(plan.to_user(arr), rdt)
    if plan.scalar:
        res = res.reshape(result_shape)
    return res


def cast(arr, dtype):
    """``arr`` as ``dtype``: values beyond the dtype's range become +-inf silently.

    (Overflowing to infinity is the intended result there, e.g. a float32 loss
    whose exact value exceeds float32's maximum; SPEC §2 allows no warning.)
    """
    if arr.dtype == dtype:
        return arr
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype)


_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}


def scalar_as(value, dtype):
    """A Python float as a NumPy scalar of ``dtype`` (+-inf beyond its range, silently)."""
    dtype = np.dtype(dtype)
    value = float(value)
    fmax = _FLOAT_MAX.get(dtype)
    if fmax is None:
        fmax = float(np.finfo(dtype).max)
    if value == value and abs(value) > fmax and abs(value) != float("inf"):
        return dtype.type(float("inf") if value > 0 else float("-inf"))
    return dtype.type(value)


FSUM_MAX = 64


def accurate_sum(a):
    """The sum of a float64 array (any shape), deterministic whatever the thread count.

    Up to ``FSUM_MAX`` values: ``math.fsum``, correctly rounded (a kernel
    call costs more than that many Python additions: 1 us of a 4 us loss
    call). Beyond, and when ``fsum`` refuses (an infinity of each sign, or an
    intermediate overflow), Neumaier's compensated sum in index order, whose
    result for infinities and NaN is IEEE's (``inf - inf`` is NaN).
    """
    flat = a.reshape(-1)
    if flat.size <= FSUM_MAX:
        try:
            return math.fsum(flat.tolist())
        except (ValueError, OverflowError):
            pass
    return _ek.compensated_sum(np.ascontiguousarray(flat))


def scalar_result(res):
    """NumPy's convention: a 0-d result is returned as a NumPy scalar."""
    return res[()] if isinstance(res, np.ndarray) and res.ndim == 0 else res


# ------------------------------------------------------------ serial/parallel
PARALLEL_MIN_ELEMENTS = 1 << 15


_TLS = threading.local()


def thread_scratch(words):
    """A float64 buffer of at least ``words`` for this Python thread's kernels.

    Kept between calls, so kernels that take it allocate nothing per call.
    It starts on a 64-byte boundary (a cache line: 512-bit vector stores
    into it never straddle two lines, which costs about 3x on the CPUs
    measured); kernels carve it into pieces of whole cache lines.
    """
    buf = getattr(_TLS, "scratch", None)
    if buf is None or buf.size < words:
        size = max(words, 2 * (buf.size if buf is not None else 0))
        raw = np.empty(size + 8)
        start = (-raw.ctypes.data % 64) // 8
        buf = raw[start:start + size]
        _TLS.scratch = buf
    return buf


def run(serial, parallel, size, *args, scratch_words=0):
    """Run a kernel, on the thread pool when the work is large enough.

    The last kernel argument is the chunk count: 1 for the serial kernel, the
    thread count for the parallel one. Results do not depend on it. With
    ``scratch_words``, a per-thread scratch buffer of that many float64 words
    per chunk is passed just before it.
    """
    nthreads = numba.get_num_threads()
    par = size >= PARALLEL_MIN_ELEMENTS and nthreads > 1
    if scratch_words:       # one tuple of arguments (SPEC §6 counts every byte per call)
        nchunks = nthreads if par else 1
        args = args + (thread_scratch(nchunks * scratch_words), nchunks)
    else:
        args = args + (nthreads if par else 1,)
    if par:
        _threads.launch(parallel, args)
    else:
        serial(*args)


def run_blocks(serial, parallel, size, *args):
    """Run a kernel that parallelises over fixed blocks (no chunk-count argument)."""
    if size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1:
        _threads.launch(parallel, args)
    else:
        serial(*args)
