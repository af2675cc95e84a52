"""softmax_backward, log_softmax_backward."""

import numpy as np

from .._kernels import backward as bk
from .._validate import as_array, check_same_shape, float_policy
from ._common import NATIVE_FLOATS, Plan, run, scalar_result, target_for, usable_as_is, user_axis


def _compute_dtype(rdt):
    return np.dtype(np.float64) if rdt == np.float64 else np.dtype(np.float32)


def _backward_fast(grad, y, axis, out, mode):
    """The common call without the general path's plumbing; None when it does not apply.

    The common call: ``grad`` and ``y`` C-contiguous, writeable 2-D arrays of one
    dtype, float32 or float64, with the class axis last and no ``out``. It
    goes to the kernel the general path would call, with the same arguments,
    so its results are bit-identical (tests/test_gradcheck.py checks it); it
    takes a (4, 16) call from about 12 us to about 3-4 us.
    """
    if not (out is None and type(axis) is int and type(y) is np.ndarray and y.ndim == 2
            and (axis == -1 or axis == 1)):
        return None
    dt = y.dtype
    if not (dt in NATIVE_FLOATS and usable_as_is(y, dt, y.shape)
            and usable_as_is(grad, dt, y.shape)):
        return None
    dst = np.empty(y.shape, dt)
    if y.size:
        run(bk.backward_rows, bk.backward_rows_parallel, y.size, grad, y, dst, mode)
    return dst


def _backward(grad, y, axis, out, mode):
    res = _backward_fast(grad, y, axis, out, mode)
    if res is not None:
        return res
    g = as_array(grad)
    yy = as_array(y)
    check_same_shape(g, yy)
    rdt = np.result_type(float_policy(g.dtype, "grad")[1], float_policy(yy.dtype, "y")[1])
    cdt = _compute_dtype(rdt)
    ax = user_axis(axis, yy.ndim)
    plan = Plan(yy, ax, cdt)
    gw = plan.like(g, cdt)
    dst, finish = target_for(out, plan, yy.shape, cdt, rdt, others=(gw,))
    if plan.work.size:
        if plan.inner == 1:
            run(bk.backward_rows, bk.backward_rows_parallel, plan.work.size,
                plan.kernel_view(gw), plan.kernel_view(plan.work), plan.kernel_view(dst), mode)
        else:
            run(bk.backward_lanes, bk.backward_lanes_parallel, plan.work.size,
                plan.kernel_view(gw), plan.kernel_view(plan.work), plan.kernel_view(dst), mode)
    return scalar_result(finish(dst))


def softmax_backward(grad, y, axis=-1, *, out=None):
    """Vector-Jacobian product of softmax: ``y * (grad - sum(grad * y))``.

    ``y`` is the forward output (as PyTorch's autograd uses it), ``grad`` the
    gradient of the loss with respect to ``y``; both of the same shape
    (``ValueError`` otherwise). The result dtype is ``np.result_type`` of the
    two under the dtype policy of :func:`softmax`. ``out`` may be ``grad`` or
    ``y`` (in place). The sum is taken in float64, and for float64 data
    without rounding error in the products, so the result is accurate up to
    the unavoidable cancellation in ``grad - sum``.
    """
    return _backward(grad, y, axis, out, 0)


def log_softmax_backward(grad, y, axis=-1, *, out=None):
    """Vector-Jacobian product of log-softmax: ``grad - exp(y) * sum(grad)``.

    ``y`` is the log-softmax output. Conventions as for
    :func:`softmax_backward`.
    """
    return _backward(grad, y, axis, out, 1)
