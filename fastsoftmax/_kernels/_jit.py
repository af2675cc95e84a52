"""Compilation policy and low-level intrinsics shared by every kernel.

One place decides how kernels are compiled:

* ``EXACT`` (no fast-math flag at all: IEEE arithmetic) is the default for
  every kernel and helper. FMAs are written explicitly (``fma``) where they
  are wanted, never left to LLVM's contraction: contraction depends on the
  surrounding code, so the same formula compiled into two kernels (the loss
  alone, the loss with its gradient) could round differently. ``nnan`` and
  ``ninf`` are never used: NaN and ``-inf`` (masks) are ordinary inputs.
* ``FAST`` adds ``reassoc``, ``arcp`` and ``afn``; it is confined to small
  ``reduction`` functions whose loops are pure sums or maxima, which LLVM
  vectorises only when it may reorder them. With ``reassoc`` anywhere else,
  LLVM rewrites ``(m - x_t) + log1p(s)`` as ``(m + log1p(s)) - x_t`` and a
  loss of 1e-27 becomes 0, or folds a TwoSum's correction to zero. Small
  ``EXACT`` functions called from a ``FAST`` loop are inlined by LLVM with
  their own flags, so compensated steps survive inside vector loops.
* ``kernel`` functions are the compiled entry points (``nogil``, cached,
  NumPy error model); ``helper`` functions are their building blocks,
  compiled separately (once per signature, not once per call site) and
  without Numba's runtime (no reference counting; ``managed_helper`` for the
  few that allocate); ``inline`` is kept for one-line helpers.
* ``parallel_twin`` compiles a second copy of a kernel with ``parallel=True``
  under a distinct qualified name, because Numba's cache key ignores the
  decorator flags (GUIDE §2).

The cache locator installed here stamps every kernel with a hash of the whole
``_kernels`` package, so editing a helper module invalidates the cached
machine code of every kernel that inlined it (Numba alone only watches the
file that defines the kernel). The same cache class loads a cached kernel
without Numba's full context refresh (see ``load_overload``): most of a cold
start's first call was that refresh.

Intrinsics: ``ld``/``st`` index C-contiguous arrays without negative-index
wrap-around (a wrap-around ``select`` turns contiguous loads into gathers),
but with Numba's bounds checking when ``NUMBA_BOUNDSCHECK=1``; ``wide()``
asks LLVM for 512-bit vectors where the CPU has them; the bit casts build
``2**n`` inside ``exp``; ``fmax_nan_dropping`` is ``llvm.maxnum``, a maximum
LLVM can vectorise (NaN is detected separately by the callers).
``transpose_block`` and ``shift_rows`` write vector IR of their own (shuffles,
permutes, masked loads and stores) for the short-row paths, where the data
moves across rows in ways LLVM's vectoriser does not express.
"""

import functools
import hashlib
import os
import types as pytypes

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# numba.np.arrayobj (load_item, store_item) is imported inside the code
# generators below: only a compilation needs it, and its import (Numba's
# string and hashing support come with it) is 30 ms of every cold start.

# NUMBA_DISABLE_JIT=1 (the coverage run): kernels run as plain Python, the
# intrinsics below are replaced by Python equivalents and the overloaded
# stubs dispatch to their implementations in Python.
PYTHON_MODE = bool(config.DISABLE_JIT)

FAST = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
EXACT = frozenset()

_KERNEL_OPTS = dict(error_model="numpy", nogil=True)


# --------------------------------------------------------------------------
# caching: one source stamp for the whole kernel package
# --------------------------------------------------------------------------

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _package_stamp():
    h = hashlib.sha256()
    for name in sorted(os.listdir(_PKG_DIR)):
        if name.endswith(".py"):
            h.update(name.encode())
            with open(os.path.join(_PKG_DIR, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


# Numba releases (major, minor) on which the lean cache load was checked:
# tests/test_cache.py loads every kernel variant in fresh processes, both ways,
# and compares the bits. Add a release here after that test passes on it.
LEAN_LOAD_CHECKED = ((0, 68),)


def _lean_load_supported(caching):
    """Whether ``load_overload`` below may skip Numba's context refresh.

    Only on the releases in LEAN_LOAD_CHECKED: which symbols a refresh
    registers is Numba's internal business and may change.
    """
    import numba
    try:
        version = tuple(int(p) for p in numba.__version__.split(".")[:2])
        from numba.core.runtime import rtsys
    except (ImportError, ValueError):  # pragma: no cover
        return False
    return (version in LEAN_LOAD_CHECKED and hasattr(rtsys, "initialize")
            and all(hasattr(caching.FunctionCache, n)
                    for n in ("_load_overload", "_guard_against_spurious_io_errors")))


def _make_cache_class():
    """A FunctionCache whose source stamp covers every file in ``_kernels``.

    Returns None when this Numba's caching internals differ from the ones
    this was written against; kernels then use plain ``cache=True``.
    """
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return None
    needed = ("FunctionCache", "CompileResultCacheImpl", "UserProvidedCacheLocator",
              "InTreeCacheLocator", "UserWideCacheLocator")
    if not all(hasattr(caching, n) for n in needed):  # pragma: no cover
        return None

    class _PackageStamp:
        def get_source_stamp(self):
            return _package_stamp()

    locators = [
        type("Pkg" + base.__name__, (_PackageStamp, base), {})
        for base in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                     caching.UserWideCacheLocator)
    ]

    class _Impl(caching.CompileResultCacheImpl):
        _locator_classes = locators

    class _Cache(caching.FunctionCache):
        _impl_class = _Impl

    if _lean_load_supported(caching):
        from numba.core.runtime import rtsys

        def load_overload(self, sig, target_context):
            # Numba's version first calls target_context.refresh(), which
            # installs every typing and lowering registry Numba has (and,
            # through numba.np.arraymath's BLAS check, imports scipy.linalg
            # when SciPy is installed): 0.2-0.5 s of a cold start, spent before
            # the first cached call. Of that refresh a cached kernel needs
            # one step: the NRT's symbols (NRT_MemInfo_alloc...) registered
            # with LLVM before its machine code is linked (without it the
            # first call crashes). The C helpers and libm symbols were
            # registered when the context was created, nothing is lowered,
            # and these kernels use no object mode (the case the refresh was
            # added for: code built at load time). Any compilation still
            # refreshes the contexts itself (numba.core.compiler.CompilerBase),
            # so a cache miss behaves as before.
            rtsys.initialize(target_context)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)

        _Cache.load_overload = load_overload

    return _Cache


_CACHE_CLASS = _make_cache_class()
LEAN_CACHE_LOAD = _CACHE_CLASS is not None and "load_overload" in vars(_CACHE_CLASS)


def _enable_cache(dispatcher):
    if PYTHON_MODE:
        return _quiet(dispatcher)
    if _CACHE_CLASS is None:  # pragma: no cover
        dispatcher.enable_caching()
    else:
        dispatcher._cache = _CACHE_CLASS(dispatcher.py_func)
    return dispatcher


# --------------------------------------------------------------------------
# decorators
# --------------------------------------------------------------------------

def kernel(fn):
    """A compiled, cached, GIL-free entry point (EXACT flags)."""
    return _enable_cache(njit(fastmath=set(EXACT), **_KERNEL_OPTS)(fn))


# Helpers, reductions and exact functions are compiled without Numba's
# runtime (``_nrt=False``): no reference counting at all. Every array they
# see is borrowed from a kernel (or a managed helper) that keeps it alive for
# the call, and none of them allocates or returns an array (Numba refuses to
# compile an allocation there; a returned argument would lose a reference:
# tests/test_kernel_paths.py checks the compiled return types). With the
# runtime, each call passing arrays cost calls to NRT_incref/NRT_decref even
# for unmanaged arrays (a null check each, but a call): 5% of the fused loss
# at 4096x1000 and 10% of a 64-class logsumexp. ``_nrt`` is inherited by
# what a function calls unless set, so managed helpers set it explicitly.
NO_NRT_DISPATCHERS = []


def _no_nrt(fn, fastmath):
    d = njit(fastmath=set(fastmath), _nrt=False, **_KERNEL_OPTS)(fn)
    if not PYTHON_MODE:
        NO_NRT_DISPATCHERS.append(d)
    return _enable_cache(d)


def exact(fn):
    """A small scalar helper with EXACT flags (compensated arithmetic)."""
    return _no_nrt(fn, EXACT)


def helper(fn):
    """A building block called (not inlined at the Numba level) by kernels.

    EXACT flags, cached, no runtime (see above). Numba-level inlining
    re-types a helper at every call site, which made kernels slow to
    compile; as separate functions they are compiled once per signature and
    LLVM still inlines small ones.
    """
    return _no_nrt(fn, EXACT)


def managed_helper(fn):
    """A helper that allocates arrays or returns arrays it made (or strips
    them with ``unmanaged``): compiled with Numba's runtime."""
    return _enable_cache(njit(fastmath=set(EXACT), _nrt=True, **_KERNEL_OPTS)(fn))


def reduction(fn):
    """A small function whose loops are pure sums/maxima (FAST flags, vectorised)."""
    return _no_nrt(fn, FAST)


def inline(fn):
    """A tiny helper inlined into its caller at the Numba level (caller's flags)."""
    return njit(fastmath=set(EXACT), inline="always", **_KERNEL_OPTS)(fn)


def _quiet(fn):
    """In Python mode, NumPy scalar arithmetic must not warn where machine code is silent."""
    @functools.wraps(fn)
    def run(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return run


# ------------------------------------------------------------- overloaded stubs
_OVERLOADS = {}


def overloaded(stub, **kwargs):
    """``@overload(stub, **kwargs)`` that also serves calls made from Python.

    A stub's body is ``return py_call(<stub>, args...)``: in jitted code the
    overload replaces the call; from Python (and in the coverage run) the
    implementation the overload would pick for the arguments' Numba types is
    run as plain Python.
    """
    def register(generator):
        _OVERLOADS[stub] = generator
        if not PYTHON_MODE:
            overload(stub, **kwargs)(generator)
        return generator
    return register


def py_call(stub, *args):
    """Run the overload implementation of ``stub`` for these arguments in Python."""
    from numba import typeof
    generator = _OVERLOADS[stub]
    impl = generator(*(typeof(a) for a in args))
    if impl is None:
        raise TypeError(f"{stub.__name__}: no implementation for {tuple(type(a) for a in args)}")
    with np.errstate(all="ignore"):
        return impl(*args)


def parallel_twin(dispatcher):
    """Compile ``dispatcher``'s Python function again with ``parallel=True``.

    The copy gets its own qualified name (and so its own cache files); its
    ``prange`` loops run on Numba's thread pool while the serial kernel runs
    them as plain loops.
    """
    if PYTHON_MODE:
        return dispatcher
    fn = dispatcher.py_func
    twin = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_parallel",
                                fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_parallel"
    twin.__module__ = fn.__module__
    twin.__doc__ = fn.__doc__
    return _enable_cache(njit(fastmath=set(EXACT), parallel=True, **_KERNEL_OPTS)(twin))


# --------------------------------------------------------------------------
# intrinsics
# --------------------------------------------------------------------------

@intrinsic
def wide(typingctx):
    """Let LLVM use 512-bit vectors in the calling function.

    LLVM's default tuning for AVX-512 CPUs prefers 256-bit vectors; these
    kernels are throughput-bound on exp polynomials, where the full width pays.
    On CPUs without AVX-512 the attribute changes nothing.
    """
    def codegen(context, builder, signature, args):
        attrs = builder.function.attributes
        set.add(attrs, '"prefer-vector-width"="512"')
        set.add(attrs, '"min-legal-vector-width"="512"')
        return context.get_dummy_value()
    return types.void(), codegen


def _item_pointer(context, builder, aryty, aryval, idxtys, idxvals):
    ary = context.make_array(aryty)(context, builder, aryval)
    inds = [context.cast(builder, v, t, types.intp) for v, t in zip(idxvals, idxtys)]
    return cgutils.get_item_pointer(context, builder, aryty, ary, inds, wraparound=False,
                                    boundscheck=context.enable_boundscheck)


def _make_load(ndim):
    def typer(typingctx, arr, *idx):
        if not isinstance(arr, types.Array) or arr.ndim != ndim or len(idx) != ndim:
            return None
        sig = arr.dtype(arr, *idx)

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            from numba.np.arrayobj import load_item
            ptr = _item_pointer(context, builder, aryty, args[0], signature.args[1:], args[1:])
            return load_item(context, builder, aryty, ptr)
        return sig, codegen
    return typer


def _make_store(ndim):
    def typer(typingctx, arr, *rest):
        if not isinstance(arr, types.Array) or arr.ndim != ndim or len(rest) != ndim + 1:
            return None
        sig = types.void(arr, *rest)

        def codegen(context, builder, signature, args):
            from numba.np.arrayobj import store_item
            aryty = signature.args[0]
            ptr = _item_pointer(context, builder, aryty, args[0], signature.args[1:-1],
                                args[1:-1])
            val = context.cast(builder, args[-1], signature.args[-1], aryty.dtype)
            store_item(context, builder, aryty, val, ptr)
            return context.get_dummy_value()
        return sig, codegen
    return typer


# numba's @intrinsic needs a real signature, so spell out each arity.
@intrinsic
def ld1(typingctx, arr, i):
    return _make_load(1)(typingctx, arr, i)


@intrinsic
def ld2(typingctx, arr, i, j):
    return _make_load(2)(typingctx, arr, i, j)


@intrinsic
def ld3(typingctx, arr, i, j, k):
    return _make_load(3)(typingctx, arr, i, j, k)


@intrinsic
def st1(typingctx, arr, i, v):
    return _make_store(1)(typingctx, arr, i, v)


@intrinsic
def st2(typingctx, arr, i, j, v):
    return _make_store(2)(typingctx, arr, i, j, v)


@intrinsic
def st3(typingctx, arr, i, j, k, v):
    return _make_store(3)(typingctx, arr, i, j, k, v)


def unmanaged(a):
    """The same array without its reference count (``a`` itself for None).

    Every call that passes a managed array to another compiled function
    increments and decrements its reference count with atomic instructions
    (about 20 cycles each), which Numba's pruning cannot remove in functions
    with loops; a kernel calls a dozen helpers per row, so on 1000-class
    rows this was 13% of a softmax. An array without a memory record skips
    them. Only for arrays that the caller keeps alive for the whole call
    (kernel arguments) and that never escape.
    """
    return a


@overload(unmanaged, inline="always")
def _unmanaged(a):
    if isinstance(a, (types.NoneType, types.Omitted)):
        return lambda a: a
    if isinstance(a, types.Array):
        return lambda a: _strip_meminfo(a)
    return None


@intrinsic
def _strip_meminfo(typingctx, arr):
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        src = context.make_array(aryty)(context, builder, args[0])
        dst = context.make_array(aryty)(context, builder)
        for name in ("data", "shape", "strides", "itemsize", "nitems"):
            setattr(dst, name, getattr(src, name))
        dst.meminfo = context.get_constant_null(types.MemInfoPointer(aryty.dtype))
        dst.parent = context.get_constant_null(types.pyobject)
        return dst._getvalue()
    return arr(arr), codegen


@intrinsic
def scalar_loop(typingctx):
    """Keep the enclosing loop scalar (an empty inline-asm statement LLVM cannot widen).

    For strided copies such as the transposes of the short-row paths: LLVM
    would vectorise them with gather/scatter instructions, which microcode
    mitigations (Gather Data Sampling) have made several times slower than
    scalar moves on the CPUs measured.
    """
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.asm(fnty, "", "", [], side_effect=True)
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def fmax_nan_dropping(typingctx, a, b):
    """``llvm.maxnum``: the larger of a and b, the other one if one is NaN."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t]))
        return builder.call(fn, args)
    return a(a, b), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``llvm.fma``: a * b + c with a single rounding."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t, t, t]))
        return builder.call(fn, args)
    return a(a, b, c), codegen


def _make_bitcast(src, dst, accept):
    def typer(typingctx, x):
        if not accept(x):
            return None

        def codegen(context, builder, signature, args):
            val = context.cast(builder, args[0], signature.args[0], src)
            return builder.bitcast(val, context.get_value_type(dst))
        return dst(x), codegen
    return typer


def _is_int(t):
    return isinstance(t, types.Integer)


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE bits of a float32, as int32."""
    return _make_bitcast(types.float32, types.int32, lambda t: t == types.float32)(typingctx, x)


@intrinsic
def f32_from_bits(typingctx, n):
    """The float32 whose bits are the low 32 bits of the integer n."""
    return _make_bitcast(types.int32, types.float32, _is_int)(typingctx, n)


@intrinsic
def f64_bits(typingctx, x):
    """The IEEE bits of a float64, as int64."""
    return _make_bitcast(types.float64, types.int64, lambda t: t == types.float64)(typingctx, x)


@intrinsic
def f64_from_bits(typingctx, n):
    """The float64 whose bits are the integer n (as int64)."""
    return _make_bitcast(types.int64, types.float64, _is_int)(typingctx, n)


# --------------------------------------------------------- row broadcasts
VEC_BYTES = 64   # one vector of shift_rows and transpose_block: 16 float32 or 8 float64


def _has_avx512(context):
    """True when the code is compiled for a CPU with 512-bit AVX-512F (Numba
    compiles for the host unless NUMBA_CPU_NAME says otherwise; the feature
    string is empty for a generic target, which takes the portable branch)."""
    feats = (getattr(context.codegen(), "_tm_features", "") or "").split(",")
    return "+avx512f" in feats and "-evex512" not in feats


def _permute(builder, vals, idx, has_avx512):
    """vals[idx[j]] for each lane j (indices below the vector length)."""
    if has_avx512:
        kind = "sf" if vals.type.element == ir.FloatType() else "df"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vals.type, [vals.type, idx.type]),
            f"llvm.x86.avx512.permvar.{kind}.512")
        return builder.call(fn, [vals, idx])
    res = ir.Constant(vals.type, ir.Undefined)
    for j in range(vals.type.count):
        k = builder.extract_element(idx, ir.Constant(ir.IntType(32), j))
        res = builder.insert_element(res, builder.extract_element(vals, k),
                                     ir.Constant(ir.IntType(32), j))
    return res


def _transpose_plan(L):
    """The shuffles of an L x L transpose (L a power of two): log2(L) stages,
    each giving row r as a two-source shuffle (a, b, lane mask) of the
    previous stage's rows; stage h swaps the off-diagonal h x h blocks of
    every 2h x 2h block."""
    stages = []
    h = L // 2
    while h >= 1:
        stage = []
        for r in range(L):
            if r & h == 0:
                stage.append((r, r + h, [c if c & h == 0 else L + c - h for c in range(L)]))
            else:
                stage.append((r - h, r, [c + h if c & h == 0 else L + c for c in range(L)]))
        stages.append(stage)
        h //= 2
    return stages


def _masked_access(builder, vty, mty, pty):
    """The llvm.masked.load and llvm.masked.store declarations for vty."""
    name = f"v{vty.count}f{64 if vty.element == ir.DoubleType() else 32}"
    mload = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [pty, ir.IntType(32), mty, vty]),
        f"llvm.masked.load.{name}.p0")
    mstore = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vty, pty, ir.IntType(32), mty]),
        f"llvm.masked.store.{name}.p0")
    return mload, mstore


def _first_lanes(builder, count, L):
    """The <L x i1> mask of the lanes below count (an int64)."""
    i64 = ir.IntType(64)
    iota = ir.Constant(ir.VectorType(i64, L), list(range(L)))
    v = builder.insert_element(ir.Constant(ir.VectorType(i64, L), ir.Undefined), count,
                               ir.Constant(ir.IntType(32), 0))
    v = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L))
    return builder.icmp_signed("<", iota, v)


def _load_whole_or_masked(builder, ptr, whole, mload, mask, esz):
    """A vector at ptr: a plain load when ``whole`` (an i1), else the masked
    load ``mload`` under ``mask`` (lanes outside it read as zero)."""
    vty = mload.function_type.return_type
    with builder.if_else(whole, likely=True) as (then, other):
        with then:
            v_whole = builder.load(builder.bitcast(ptr, vty.as_pointer()), align=esz)
            b_whole = builder.block
        with other:
            zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
            v_part = builder.call(mload, [ptr, ir.Constant(ir.IntType(32), esz), mask, zero])
            b_part = builder.block
    v = builder.phi(vty)
    v.add_incoming(v_whole, b_whole)
    v.add_incoming(v_part, b_part)
    return v


def _check_bounds(context, builder, name, checks):
    """Under NUMBA_BOUNDSCHECK=1, IndexError unless every (lo, hi, size) has
    0 <= lo and hi <= size (int64 values)."""
    if not context.enable_boundscheck:
        return
    zero = ir.Constant(ir.IntType(64), 0)
    bad = ir.Constant(ir.IntType(1), 0)
    for lo, hi, size in checks:
        bad = builder.or_(bad, builder.icmp_signed("<", lo, zero))
        bad = builder.or_(bad, builder.icmp_signed(">", hi, size))
    with cgutils.if_unlikely(builder, bad):
        context.call_conv.return_user_exc(builder, IndexError, (f"{name}: index out of bounds",))


@intrinsic
def shift_rows(typingctx, x, xo, cnt, mv, lv, mo, tbl, to, thc, out):
    """One vector of a log-softmax written along the rows, for short rows.

    For j < cnt (cnt <= L = VEC_BYTES // itemsize), with p_j = mo +
    int(tbl[to + j]): ``out.flat[xo + j] = (x.flat[xo + j] - mv[p_j]) * thc -
    lv[p_j]``, in the arrays' dtype with IEEE rounding (the lanes kernel's
    formula, so the same bits). x and out are C-contiguous; ``tbl`` holds
    the row number (0 to L - 1, stored as a float) of each of these
    entries; ``mv[mo:mo + L]`` and ``lv[mo:mo + L]`` are the maxima and
    logarithms of L consecutive rows. x and out are read and written under
    a mask of cnt entries, so nothing outside them is touched; the L-entry
    loads of mv, lv and tbl must lie inside those arrays (checked under
    NUMBA_BOUNDSCHECK=1, like every indexing intrinsic here).

    Broadcasting each row's values to its entries is one vector permute
    (``vpermps``/``vpermpd`` where the CPU has AVX-512, element moves
    elsewhere), so a short-row log_softmax writes its output straight from
    x instead of transposing lanes back into rows.
    """
    arrs = (x, mv, lv, tbl, out)
    if not all(isinstance(a, types.Array) and a.dtype == x.dtype for a in arrs):
        return None
    if not (isinstance(x.dtype, types.Float) and thc == x.dtype):
        return None
    if not (x.layout == out.layout == "C"
            and all(a.ndim == 1 and a.layout == "C" for a in (mv, lv, tbl))):
        return None
    sig = types.void(x, xo, cnt, mv, lv, mo, tbl, to, thc, out)

    def codegen(context, builder, signature, args):
        xv, xov, cntv, mvv, lvv, mov, tblv, tov, thcv, outv = args
        st = signature.args
        ety = context.get_value_type(st[0].dtype)
        L = VEC_BYTES // (st[0].dtype.bitwidth // 8)
        i64 = ir.IntType(64)
        vty = ir.VectorType(ety, L)
        ivty = ir.VectorType(ir.IntType(st[0].dtype.bitwidth), L)
        mty = ir.VectorType(ir.IntType(1), L)
        xo_ = context.cast(builder, xov, st[1], types.int64)
        cnt_ = context.cast(builder, cntv, st[2], types.int64)
        mo_ = context.cast(builder, mov, st[5], types.int64)
        to_ = context.cast(builder, tov, st[7], types.int64)
        ax, amv, alv, atb, aout = (context.make_array(t)(context, builder, v)
                                   for t, v in zip((st[0], st[3], st[4], st[6], st[9]),
                                                   (xv, mvv, lvv, tblv, outv)))
        L_ = ir.Constant(i64, L)
        _check_bounds(context, builder, "shift_rows", [
            (cnt_, cnt_, L_), (xo_, builder.add(xo_, cnt_), ax.nitems),
            (xo_, builder.add(xo_, cnt_), aout.nitems),
            (mo_, builder.add(mo_, L_), amv.nitems), (mo_, builder.add(mo_, L_), alv.nitems),
            (to_, builder.add(to_, L_), atb.nitems)])
        mload, mstore = _masked_access(builder, vty, mty, ax.data.type)
        live = _first_lanes(builder, cnt_, L)
        esz = st[0].dtype.bitwidth // 8
        align = ir.Constant(ir.IntType(32), esz)

        def vload(a, off):
            return builder.load(builder.bitcast(builder.gep(a.data, [off]), vty.as_pointer()),
                                align=esz)

        # whole vectors by plain loads and stores (see transpose_block)
        whole = builder.icmp_signed("==", cnt_, L_)
        xs = _load_whole_or_masked(builder, builder.gep(ax.data, [xo_]), whole, mload, live,
                                   esz)
        idx = builder.fptosi(vload(atb, to_), ivty)
        has = _has_avx512(context)
        m = _permute(builder, vload(amv, mo_), idx, has)
        ell = _permute(builder, vload(alv, mo_), idx, has)
        t = ir.Constant(vty, ir.Undefined)
        t = builder.insert_element(t, thcv, ir.Constant(ir.IntType(32), 0))
        thv = builder.shuffle_vector(t, t, ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L))
        r = builder.fsub(builder.fmul(builder.fsub(xs, m), thv), ell)
        op = builder.gep(aout.data, [xo_])
        with builder.if_else(whole, likely=True) as (then, other):
            with then:
                builder.store(r, builder.bitcast(op, vty.as_pointer()), align=esz)
            with other:
                builder.call(mstore, [r, op, align, live])
        return context.get_dummy_value()
    return sig, codegen



@intrinsic
def transpose_block(typingctx, src, so, ss, ncols, nrows, dst, do, ds):
    """``dst.flat[do + c * ds + r] = src.flat[so + r * ss + c]`` for r < nrows,
    c < ncols (both at most L = VEC_BYTES // itemsize), in vector registers.

    src and dst are C-contiguous arrays of one float dtype. Each of the
    nrows rows is read as a whole vector where that lies inside src (its
    entries past ncols are never used), else by a load masked to ncols
    entries; the block is transposed by log2(L) stages of L two-source
    shuffles; the ncols result rows are written whole when nrows is L, else
    by stores masked to nrows entries. Nothing outside src is read and
    nothing outside the block is written (offsets and strides >= 0, checked
    under NUMBA_BOUNDSCHECK=1). A whole-vector read may reach into rows that
    another thread is writing (an in-place call); those entries are
    discarded, so the race is harmless. For the short-row transposes
    (``_rows.rows_to_lanes``, ``lanes_to_rows``): LLVM would only turn such
    strided copies into gathers and scatters.
    """
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and isinstance(src.dtype, types.Float) and src.dtype == dst.dtype
            and src.layout == dst.layout == "C"):
        return None
    sig = types.void(src, so, ss, ncols, nrows, dst, do, ds)

    def codegen(context, builder, signature, args):
        st = signature.args
        so_, ss_, nc_, nr_, do_, ds_ = (context.cast(builder, args[k], st[k], types.int64)
                                        for k in (1, 2, 3, 4, 6, 7))
        asrc = context.make_array(st[0])(context, builder, args[0])
        adst = context.make_array(st[5])(context, builder, args[5])
        ety = context.get_value_type(st[0].dtype)
        L = VEC_BYTES // (st[0].dtype.bitwidth // 8)
        i64 = ir.IntType(64)
        one = ir.Constant(i64, 1)
        L_ = ir.Constant(i64, L)

        def last(o, stride, n_out, n_in):
            # one past the last entry touched (o when nothing is)
            end = builder.add(builder.add(o, builder.mul(stride, builder.sub(n_out, one))),
                              n_in)
            empty = builder.or_(builder.icmp_signed("<=", n_out, ir.Constant(i64, 0)),
                                builder.icmp_signed("<=", n_in, ir.Constant(i64, 0)))
            return builder.select(empty, o, end)
        zero = ir.Constant(i64, 0)
        _check_bounds(context, builder, "transpose_block", [
            (nc_, nc_, L_), (nr_, nr_, L_), (ss_, zero, zero), (ds_, zero, zero),
            (so_, last(so_, ss_, nr_, nc_), asrc.nitems),
            (do_, last(do_, ds_, nc_, nr_), adst.nitems)])
        vty = ir.VectorType(ety, L)
        mty = ir.VectorType(ir.IntType(1), L)
        mload, mstore = _masked_access(builder, vty, mty, asrc.data.type)
        esz = st[0].dtype.bitwidth // 8
        align = ir.Constant(ir.IntType(32), esz)
        none = ir.Constant(mty, [0] * L)
        src_end = builder.ptrtoint(builder.gep(asrc.data, [asrc.nitems]), i64)
        cols = _first_lanes(builder, nc_, L)
        rows = _first_lanes(builder, nr_, L)
        vecs = []
        for r in range(L):
            ptr = builder.gep(asrc.data, [builder.add(so_, builder.mul(ss_, ir.Constant(i64, r)))])
            live = builder.icmp_signed("<", ir.Constant(i64, r), nr_)
            # a plain load of the whole vector where it lies inside src (the
            # entries past ncols only reach result rows that are not stored),
            # and plain stores of whole result rows: with masked loads and
            # stores throughout, a 10-class cross_entropy on 2 threads took
            # 2.3-3.1x the scalar transposes' time (AMD Zen 4), with plain
            # ones 0.89
            whole = builder.and_(live, builder.icmp_unsigned(
                "<=", builder.ptrtoint(builder.gep(ptr, [L_]), i64), src_end))
            vecs.append(_load_whole_or_masked(builder, ptr, whole, mload,
                                              builder.select(live, cols, none), esz))
        for stage in _transpose_plan(L):
            vecs = [builder.shuffle_vector(vecs[a], vecs[b],
                                           ir.Constant(ir.VectorType(ir.IntType(32), L), lanes))
                    for a, b, lanes in stage]
        all_rows = builder.icmp_signed("==", nr_, L_)
        for c in range(L):
            ptr = builder.gep(adst.data, [builder.add(do_, builder.mul(ds_, ir.Constant(i64, c)))])
            with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, c), nc_), likely=True):
                with builder.if_else(all_rows, likely=True) as (then, other):
                    with then:
                        builder.store(vecs[c], builder.bitcast(ptr, vty.as_pointer()), align=esz)
                    with other:
                        builder.call(mstore, [vecs[c], ptr, align, rows])
        return context.get_dummy_value()
    return sig, codegen


F32 = np.float32
F64 = np.float64


# ------------------------------------------------------------- Python mode
def _py_fma(a, b, c):
    from fractions import Fraction
    fa, fb, fc = float(a), float(b), float(c)
    if not all(map(np.isfinite, (fa, fb, fc))):
        return type(a)(fa * fb + fc)
    return type(a)(float(Fraction(fa) * Fraction(fb) + Fraction(fc)))


if PYTHON_MODE:
    def wide():
        return None

    def ld1(a, i):
        return a[i]

    def ld2(a, i, j):
        return a[i, j]

    def ld3(a, i, j, k):
        return a[i, j, k]

    def st1(a, i, v):
        a[i] = v

    def st2(a, i, j, v):
        a[i, j] = v

    def st3(a, i, j, k, v):
        a[i, j, k] = v

    def scalar_loop():
        return None

    def transpose_block(src, so, ss, ncols, nrows, dst, do, ds):
        L = VEC_BYTES // src.itemsize
        sf = src.reshape(-1)
        df = dst.reshape(-1)
        if not (0 <= ncols <= L and 0 <= nrows <= L and 0 <= so and 0 <= do
                and ss >= 0 and ds >= 0):
            raise IndexError("transpose_block: index out of bounds")
        if ncols and nrows and (so + ss * (nrows - 1) + ncols > sf.size
                                or do + ds * (ncols - 1) + nrows > df.size):
            raise IndexError("transpose_block: index out of bounds")
        for r in range(nrows):
            for c in range(ncols):
                df[do + c * ds + r] = sf[so + r * ss + c]

    def shift_rows(x, xo, cnt, mv, lv, mo, tbl, to, thc, out):
        L = VEC_BYTES // x.itemsize
        xf = x.reshape(-1)
        of = out.reshape(-1)
        if not (0 <= cnt <= L and 0 <= xo and xo + cnt <= min(xf.size, of.size)
                and 0 <= mo and mo + L <= min(mv.size, lv.size) and 0 <= to
                and to + L <= tbl.size):
            raise IndexError("shift_rows: index out of bounds")
        for j in range(cnt):
            p = mo + int(tbl[to + j])
            of[xo + j] = (xf[xo + j] - mv[p]) * thc - lv[p]

    def fmax_nan_dropping(a, b):
        return np.fmax(a, b)

    fma = _py_fma

    def f32_bits(x):
        return np.asarray(x, np.float32).view(np.int32)[()]

    def f32_from_bits(n):
        return np.asarray(n).astype(np.int64).astype(np.int32).view(np.float32)[()]

    def f64_bits(x):
        return np.asarray(x, np.float64).view(np.int64)[()]

    def f64_from_bits(n):
        return np.asarray(n).astype(np.int64).view(np.float64)[()]
