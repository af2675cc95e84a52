"""Fuzzing the public API (pytest -m fuzz).

Random functions, shapes, dtypes, axes, options and values: every call must
return, or raise one of the documented exceptions (TypeError, ValueError,
IndexError, numpy's AxisError, MemoryError), never crash, never warn, and
never return NaN from finite input where the function promises so.

Bounded by ``FASTSOFTMAX_FUZZ_SECONDS`` (default 60) and
``FASTSOFTMAX_FUZZ_EXAMPLES`` (default 40 per second of budget): run it
longer with e.g. ``FASTSOFTMAX_FUZZ_SECONDS=3600 python -m pytest -m fuzz``.
"""

import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.exceptions import AxisError

import fastsoftmax as fs

pytestmark = pytest.mark.fuzz

SECONDS = float(os.environ.get("FASTSOFTMAX_FUZZ_SECONDS", 60))
# about 40 examples a second here; the time check below ends the run on time
EXAMPLES = int(os.environ.get("FASTSOFTMAX_FUZZ_EXAMPLES", max(100, SECONDS * 40)))
DOCUMENTED = (TypeError, ValueError, IndexError, AxisError, MemoryError)

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_,
          np.complex64, object, ">f4", "<f8"]
VALUES = st.sampled_from([0.0, 1.0, -1.0, 30.0, -30.0, 1e4, -1e4, 1e30, -1e30, 3e38, -3e38,
                          1e300, -1e300, 1e-40, np.inf, -np.inf, np.nan, 5e-324])


@st.composite
def arrays(draw, max_dims=4):
    ndim = draw(st.integers(0, max_dims))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    n = int(np.prod(shape)) if shape else 1
    vals = draw(st.lists(VALUES | st.floats(-100, 100), min_size=n, max_size=n))
    with np.errstate(all="ignore"):
        base = np.array(vals, dtype=np.float64).reshape(shape)
        if dtype.kind in "iub":
            base = np.nan_to_num(base, nan=0, posinf=100, neginf=-100)
            base = np.clip(base, -100, 100)
        x = base.astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "rev", "readonly"]))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "rev" and x.ndim:
        x = x[::-1]
    elif layout == "readonly":
        x.setflags(write=False)
    return x


def _as_float(x):
    """x's values as float64 (zeros for dtypes that have no real value)."""
    if x.dtype.kind in "fiub":
        with np.errstate(all="ignore"):
            return x.astype(np.float64)
    return np.zeros(x.shape)


def _axis(draw, x):
    return draw(st.integers(-x.ndim - 1, x.ndim)) if x.ndim else draw(st.sampled_from([-1, 0, 1]))


@st.composite
def calls(draw):
    with np.errstate(all="ignore"):
        return _calls(draw)


def _calls(draw):
    x = draw(arrays())
    fname = draw(st.sampled_from([
        "softmax", "log_softmax", "logsumexp", "softmax_jacobian", "sigmoid", "log_sigmoid",
        "softmax_backward", "log_softmax_backward", "sigmoid_backward", "cross_entropy",
        "cross_entropy_with_grad", "nll_loss", "binary_cross_entropy_with_logits",
        "binary_cross_entropy_with_grad"]))
    axis = _axis(draw, x)
    kw = {}
    args = [x]
    if fname in ("softmax", "log_softmax"):
        kw["axis"] = axis
        if draw(st.booleans()):
            kw["temperature"] = draw(st.sampled_from([1.0, 0.5, 7.0, 0.0, -1.0, np.inf, np.nan,
                                                      1e-30, 1e30]))
        if draw(st.booleans()):
            kw["where"] = draw(st.sampled_from([True, False])) if draw(st.booleans()) else (
                _as_float(draw(arrays(max_dims=x.ndim))) > 0)
    elif fname == "logsumexp":
        kw["axis"] = axis
        kw["keepdims"] = draw(st.booleans())
    elif fname == "softmax_jacobian":
        kw["axis"] = axis
    elif fname.endswith("_backward"):
        y = draw(arrays()) if draw(st.booleans()) else x.copy()
        args.append(y)
        if fname != "sigmoid_backward":
            kw["axis"] = axis
    elif fname.startswith("binary"):
        t = draw(arrays()) if draw(st.booleans()) else (_as_float(x) > 0) * 1.0
        args.append(t)
        kw["reduction"] = draw(st.sampled_from(["mean", "sum", "none", "avg"]))
        if draw(st.booleans()):
            kw["pos_weight"] = draw(arrays(max_dims=1))
    else:
        n = x.shape[axis] if x.ndim and -x.ndim <= axis < x.ndim else 3
        sample = tuple(s for i, s in enumerate(x.shape) if x.ndim and i != axis % x.ndim)
        kind = draw(st.sampled_from(["index", "dist", "random"]))
        if kind == "index":
            t = np.array(draw(st.lists(st.integers(-101, n + 1) | st.sampled_from(
                [2**40, -(2**40), np.iinfo(np.int64).max]), min_size=int(np.prod(sample)),
                max_size=int(np.prod(sample)))), dtype=np.int64).reshape(sample)
        elif kind == "dist":
            t = np.abs(np.nan_to_num(_as_float(x)))
        else:
            t = draw(arrays())
        args.append(t)
        kw["axis"] = axis
        kw["reduction"] = draw(st.sampled_from(["mean", "sum", "none", "bogus"]))
        if fname != "nll_loss":
            kw["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 1.0, -0.5, 2.0]))
            kw["z_loss"] = draw(st.sampled_from([0.0, 1e-3, -1.0]))
        if draw(st.booleans()):
            kw["weight"] = draw(arrays(max_dims=1))
        kw["ignore_index"] = draw(st.sampled_from([-100, 0, 2, 2**70]))
        if fname == "cross_entropy_with_grad" and draw(st.booleans()):
            kw["inplace"] = True
    return fname, args, kw


_deadline = [None]


def _unchanged(a, b):
    if a.dtype.kind in "OUSM":
        return True                    # these are rejected before anything is read
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=list(HealthCheck))
@given(calls())
def test_public_api_never_crashes(call):
    if _deadline[0] is None:
        _deadline[0] = time.monotonic() + SECONDS
    if time.monotonic() > _deadline[0]:
        return                     # the time budget is spent: remaining examples pass
    fname, args, kw = call
    before = [np.array(a, copy=True) for a in args]
    try:
        res = getattr(fs, fname)(*args, **kw)
    except DOCUMENTED:
        # validation happens before any write: inputs are untouched after an error
        for a, b in zip(args, before):
            assert _unchanged(a, b)
        return
    if not kw.get("inplace"):
        for a, b in zip(args, before):
            assert _unchanged(a, b)
    x = args[0]
    if fname in ("softmax", "log_softmax", "logsumexp", "sigmoid", "log_sigmoid") and \
            x.dtype.kind in "fiub" and np.all(np.isfinite(_as_float(x))) and \
            "where" not in kw and kw.get("temperature", 1.0) == 1.0:
        assert not np.any(np.isnan(np.asarray(res))), (fname, x)
