"""fastsoftmax's asv suite, built on the registry ``fastsoftmax._bench_registry``.

The same registry drives ``python -m fastsoftmax bench``: one definition of the
cases (seeded inputs for a shape, dtype and class axis) and of the callables of
every implementation.

Modules:

``kernels``
    one class per public kernel, ``time_kernel`` over SPEC §6's shape grid x
    {float32, float64} x implementation: ``fastsoftmax`` and its peers as
    benchmarks of their own (``reference`` = ``fastsoftmax.reference``, plain
    NumPy; ``torch`` when importable; ``copy`` = ``np.copyto``, the memory
    floor, next to softmax; ``unfused`` = the logits in memory, next to
    ``linear_cross_entropy`` at N=8192, H=1024, V=32000), so the ratios are
    visible in one run.
``memory``
    ``peakmem_`` (process peak RSS) of softmax with and without ``out=`` and of
    ``cross_entropy_with_grad`` with and without ``inplace=True``, plus
    ``track_`` benchmarks of the extra bytes ``tracemalloc`` sees in one call
    (SPEC §6's memory targets); ``LinearMemory``: ``linear_cross_entropy``
    against the unfused path and PyTorch, peak RSS and the resident bytes one
    call adds (in a fresh interpreter).
``startup``
    ``timeraw_`` cold start (a fresh interpreter: ``import fastsoftmax`` + the
    first softmax call, with the kernel cache filled by ``setup``) and the cost
    of one call on a tiny (4, 16) array.

Inputs are built and every callable is called once (compilation, cache load)
in ``setup``, never in the timed body.

Environment variables (read when asv discovers the suite, so they change the
parameter grid):

``FASTSOFTMAX_ASV_QUICK=1``
    small shapes only (``_bench_registry.QUICK_GRID``): a smoke run in
    seconds instead of the full grid.
``FASTSOFTMAX_ASV_PEERS``
    comma-separated peers beside fastsoftmax (default
    ``reference,unfused,torch,copy``; also ``scipy`` and ``jax``). Peers
    that are not installed are dropped from the grid.
``FASTSOFTMAX_ASV_DTYPES``
    default ``float32,float64``.

Running: ``cd asv_bench && asv machine --yes && asv run --python=same --quick``
benchmarks the installed (or ``ASV_PYTHONPATH``-visible) fastsoftmax once per
case; ``asv continuous main HEAD`` compares two commits in fresh virtualenvs
(PyTorch is not in the asv matrix: add ``"torch": ["2.13.0"]`` under
``matrix.req`` to get it there). The suite needs ``fastsoftmax._bench_registry``,
so it cannot benchmark commits older than the registry.
"""

import os

from fastsoftmax import _bench_registry as R

QUICK = os.environ.get("FASTSOFTMAX_ASV_QUICK", "").strip() not in ("", "0")
DTYPES = [d.strip() for d in os.environ.get("FASTSOFTMAX_ASV_DTYPES",
                                            "float32,float64").split(",") if d.strip()]
_WANTED = [p.strip() for p in os.environ.get("FASTSOFTMAX_ASV_PEERS",
                                             "reference,unfused,torch,copy").split(",")
           if p.strip()]
PEERS = [p for p in R.PEERS if p in _WANTED and R.peer_status(p)[0]]


def cases(kernel):
    """{shape label: (shape, axis)} of ``kernel``'s grid (quick or SPEC §6)."""
    return {R.shape_label(shape, axis): (shape, axis)
            for shape, axis in R.grid_for(kernel, QUICK)}


def impls(kernel):
    """fastsoftmax, then the configured peers that have ``kernel``."""
    return ["fastsoftmax"] + [p for p in PEERS if p in R.impls_for(kernel)]


def build(kernel, label, dtype, impl):
    """``(inputs, callable)`` of one case, already called once; NotImplementedError skips."""
    grid = cases(kernel)
    if label not in grid:
        raise NotImplementedError(f"{kernel} has no case {label}")
    shape, axis = grid[label]
    inputs = R.make_inputs(kernel, shape, axis, dtype)
    try:
        fn = R.make_callable(kernel, impl, inputs)
    except R.Unavailable as e:
        inputs.release()
        raise NotImplementedError(str(e)) from None
    fn()
    return inputs, fn
