"""Every input check of the public API and its error message, in one place.

Nothing here loops over elements in Python; kernels never validate.
"""

import math
import numbers
import operator

import numpy as np

try:  # numpy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover
    from numpy import AxisError

F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

REDUCTIONS = ("mean", "sum", "none")


def float_policy(dtype, name="x"):
    """(compute dtype, result dtype) for an input dtype, SPEC §2.

    float16 is computed in float32 and returned as float16; float32 and
    float64 stay; bool and integers are computed and returned as float64.
    Anything else (complex, object, strings, datetimes, long double) is a
    TypeError naming the dtype.
    """
    kind = dtype.kind
    if kind == "f":
        if dtype.itemsize == 2:
            return F32, F16
        if dtype.itemsize == 4:
            return F32, F32
        if dtype.itemsize == 8:
            return F64, F64
    elif kind in "biu":
        return F64, F64
    raise TypeError(
        f"{name} has dtype {dtype}, which fastsoftmax does not compute: use float16, "
        f"float32, float64, an integer or a bool dtype")


def result_float_dtype(*dtypes):
    """np.result_type of float inputs under the same policy (for backwards)."""
    res = []
    for i, dt in enumerate(dtypes):
        res.append(float_policy(dt, name=f"argument {i}")[1])
    return np.result_type(*res)


def as_array(x):
    """np.asarray, but a clear TypeError for objects NumPy cannot make numeric."""
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot convert input of type {type(x).__name__} to an array: "
                        f"{exc}") from None


def normalize_axis(axis, ndim):
    """An in-range non-negative axis; 0-d arrays accept -1 and 0 (one row)."""
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {axis!r}") from None
    n = max(ndim, 1)
    if not -n <= ax < n:
        raise AxisError(ax, n)
    return ax % n


def check_temperature(temperature):
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(
            temperature, numbers.Real):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def check_out(out, shape, dtype, name="out"):
    """out must be a writeable ndarray of exactly the result's shape and dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, but the result has shape "
                         f"{tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, but the result has dtype "
                        f"{np.dtype(dtype)}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")


def check_where(where, shape):
    """The mask as a bool array broadcast to ``shape`` (a read-only view)."""
    w = as_array(where)
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean mask, got dtype {w.dtype}")
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"where has shape {w.shape}, which does not broadcast to the input "
                         f"shape {tuple(shape)}") from None


def check_same_shape(a, b, names=("grad", "y")):
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has shape {a.shape} but {names[1]} has shape {b.shape}; "
                         f"they must match")


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")


def check_label_smoothing(value):
    v = _real(value, "label_smoothing")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {value!r}")
    return v


def check_z_loss(value):
    v = _real(value, "z_loss")
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"z_loss must be a finite number >= 0, got {value!r}")
    return v


def _real(value, name):
    if type(value) is float or type(value) is int:
        # the common case, without the abstract-class check (1 us per call)
        v = float(value)
        if v != v:
            raise ValueError(f"{name} must be a real number, got {value!r}")
        return v
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if v != v:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return v


def check_ignore_index(ignore_index):
    try:
        return operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}") from None
