"""sigmoid, log_sigmoid, sigmoid_backward."""

import numpy as np

from .._kernels import elementwise as ek
from .._validate import as_array, check_same_shape, float_policy
from ._common import Plan, prepare, run, scalar_result, target_for


def _flat_plan(a, cdt):
    return Plan(a, max(a.ndim - 1, 0), cdt, elementwise=True)


def _sigmoid_like(x, out, mode):
    a, cdt, rdt = prepare(x)
    plan = _flat_plan(a, cdt)
    dst, finish = target_for(out, plan, a.shape, cdt, rdt)
    if plan.work.size:
        run(ek.sigmoid_flat, ek.sigmoid_flat_parallel, plan.work.size,
            plan.work.reshape(-1), dst.reshape(-1), mode)
    return scalar_result(finish(dst))


def sigmoid(x, *, out=None):
    """The logistic function ``1 / (1 + exp(-x))``, elementwise.

    Computed as ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp(-|x|)``, in
    float64 (float32 and float16 results are rounded once), so it neither
    overflows nor loses the digits of tiny values: ``sigmoid(-100)`` is
    ``3.7e-44``, not 0. dtypes, 0-d input and ``out=`` as for :func:`softmax`.
    """
    return _sigmoid_like(x, out, 0)


def log_sigmoid(x, *, out=None):
    """``log(sigmoid(x)) = -log1p(exp(-x))``, elementwise, without overflow.

    ``log_sigmoid(40)`` is ``-4.25e-18`` (not 0) and ``log_sigmoid(-800)`` is
    ``-800``. Conventions as for :func:`sigmoid`.
    """
    return _sigmoid_like(x, out, 1)


def sigmoid_backward(grad, y, *, out=None):
    """Vector-Jacobian product of sigmoid: ``grad * y * (1 - y)``.

    ``y`` is the forward output; ``grad`` and ``y`` must have the same shape.
    The result dtype is ``np.result_type`` of the two under the dtype policy.
    """
    g = as_array(grad)
    yy = as_array(y)
    check_same_shape(g, yy)
    rdt = np.result_type(float_policy(g.dtype, "grad")[1], float_policy(yy.dtype, "y")[1])
    cdt = np.dtype(np.float64) if rdt == np.float64 else np.dtype(np.float32)
    plan = _flat_plan(yy, cdt)
    gw = plan.like(g, cdt)
    dst, finish = target_for(out, plan, yy.shape, cdt, rdt, others=(gw,))
    if plan.work.size:
        run(ek.sigmoid_backward_flat, ek.sigmoid_backward_flat_parallel, plan.work.size,
            gw.reshape(-1), plan.work.reshape(-1), dst.reshape(-1))
    return scalar_result(finish(dst))
