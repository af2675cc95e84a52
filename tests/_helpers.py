"""Shared test helpers: ULP distances and higher-precision references.

The accuracy references are computed from the same input values in more
precision than the data: float64 for float32 data, and ``np.longdouble``
(x87 extended, a 64-bit significand) for float64 data. They use the
``m + log(c + s)`` split, so they do not lose tiny results themselves.
Where ``np.longdouble`` is no wider than float64 (some platforms), float64
accuracy tests fall back to mpmath on a subsample.
"""

import importlib.util

import numpy as np

LONGDOUBLE_OK = np.finfo(np.longdouble).eps < 1e-18
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPMATH = importlib.util.find_spec("mpmath") is not None

FLOATS = (np.float32, np.float64)


def result_arrays(value):
    """A public function's result as a flat list of arrays (losses return
    tuples, some of them nested, and scalars)."""
    if isinstance(value, tuple):
        return [a for v in value for a in result_arrays(v)]
    return [np.asarray(value)]


def through_both_paths(monkeypatch, module, name, calls):
    """Results of ``calls()`` through a fast path and through the general path.

    ``module.name`` is a fast path: it returns None when it does not apply and
    the caller then takes the general path. ``calls`` (no arguments) returns a
    list of results. Returns ``(taken, fast, general)``: per call into the
    fast path whether it applied, the results with the fast path in place,
    and the results with it disabled.
    """
    real = getattr(module, name)
    taken = []

    def spy(*args):
        res = real(*args)
        taken.append(res is not None)
        return res
    monkeypatch.setattr(module, name, spy)
    fast = calls()
    monkeypatch.setattr(module, name, lambda *args: None)
    general = calls()
    monkeypatch.setattr(module, name, real)
    return taken, fast, general


def wide_dtype(dt):
    return np.float64 if np.dtype(dt) == np.float32 else np.longdouble


def ulp_error(got, ref, dt):
    """|got - ref| in units of the last place of ref rounded to dtype ``dt``.

    Entries where both are equal (including both infinite) count as 0;
    where only one is infinite, inf.
    """
    w = wide_dtype(dt)
    ref_w = np.asarray(ref, dtype=w)
    got_w = np.asarray(got, dtype=w)
    with np.errstate(all="ignore"):
        spacing = np.spacing(np.abs(ref_w.astype(dt))).astype(w)
        err = np.abs(got_w - ref_w) / spacing
    err = np.where(got_w == ref_w, 0.0, err)
    return err.astype(np.float64)


def representable(ref, dt):
    """Entries of a wider reference that are finite in dtype ``dt`` (no overflow warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(np.asarray(ref).astype(dt))


def max_ulp(got, ref, dt, mask=None):
    e = ulp_error(got, ref, dt)
    if mask is not None:
        e = e[mask]
    return float(e.max()) if e.size else 0.0


def lse_parts(x, axis=-1):
    """(z, m, c, s) in the wider dtype, class axis last: z = x, m max, c count, s rest."""
    w = wide_dtype(x.dtype)
    z = np.moveaxis(np.asarray(x, dtype=w), axis, -1)
    m = z.max(axis=-1, keepdims=True)
    e = np.exp(z - m)
    is_max = z == m
    c = is_max.sum(axis=-1, keepdims=True)
    s = np.where(is_max, 0, e).sum(axis=-1, keepdims=True)
    return z, m, c, s, e


def hp_log_c_s(c, s):
    return np.where(c == 1, np.log1p(s), np.log(c + s))


def hp_softmax(x, axis=-1):
    z, m, c, s, e = lse_parts(x, axis)
    return np.moveaxis(e / (c + s), -1, axis)


def hp_log_softmax(x, axis=-1):
    z, m, c, s, e = lse_parts(x, axis)
    return np.moveaxis((z - m) - hp_log_c_s(c, s), -1, axis)


def hp_logsumexp(x, axis=-1):
    z, m, c, s, e = lse_parts(x, axis)
    return (m + hp_log_c_s(c, s))[..., 0]


def hp_cross_entropy_rows(x, t):
    """Per-row -log p_t for index targets, last axis, higher precision."""
    z, m, c, s, e = lse_parts(x, -1)
    zt = np.take_along_axis(z, t[..., None], axis=-1)
    return ((m - zt) + hp_log_c_s(c, s))[..., 0]


def hp_ce_grad_rows(x, t, scale):
    """Gradient of sum_i scale * (-log p_{t_i}) for index targets, last axis."""
    z, m, c, s, e = lse_parts(x, -1)
    p = e / (c + s)
    g = p.copy()
    rows = np.arange(z.shape[0])
    pt = p[rows, t]
    # 1 - p_t without cancellation when t is the single maximum
    single = (z[rows, t] == m[:, 0]) & (c[:, 0] == 1)
    q = np.where(single, s[:, 0] / (c[:, 0] + s[:, 0]), 1 - pt)
    g[rows, t] = -q
    return g * scale


def logits(rng, shape, spread, dtype):
    """Uniform logits in [-spread, spread] plus a random per-row offset."""
    x = rng.uniform(-spread, spread, shape)
    return x.astype(dtype)


def assert_no_nan_from_finite(x, y):
    x = np.asarray(x)
    if np.all(np.isfinite(x)):
        assert not np.isnan(np.asarray(y)).any(), "NaN produced from finite input"
