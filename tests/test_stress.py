"""Overflow stress (pytest -m stress): millions of heavy-tailed rows.

Finite in gives finite out, softmax rows sum to one, log-softmax <= 0,
losses >= 0, gradient rows sum to zero, and the SPEC §4 ULP bounds hold
against a higher-precision reference. Sizes are bounded so that the whole
module runs in about a minute; raise ``FASTSOFTMAX_STRESS_ROWS`` to go further.
"""

import os

import numpy as np
import pytest

import fastsoftmax as fs
from _helpers import (LONGDOUBLE_OK, hp_cross_entropy_rows, hp_log_softmax, hp_logsumexp,
                      hp_softmax, max_ulp, representable, ulp_error)

pytestmark = pytest.mark.stress

ROWS = int(os.environ.get("FASTSOFTMAX_STRESS_ROWS", 2_000_000))


def _heavy(rng, rows, n, dtype, kind):
    big = float(np.finfo(dtype).max)
    if kind == "cauchy":
        x = rng.standard_cauchy((rows, n)) * rng.choice([1.0, 10.0, 1e3], size=(rows, 1))
    elif kind == "loguniform":
        top = np.log10(big) - 0.01
        x = np.sign(rng.normal(size=(rows, n))) * 10.0 ** rng.uniform(-30, top, (rows, n))
    elif kind == "offsets":
        x = rng.normal(size=(rows, n)) * 5 + rng.uniform(-1, 1, (rows, 1)) * big / 4
    else:
        raise ValueError(kind)
    with np.errstate(over="ignore"):
        return np.clip(x, -big, big).astype(dtype)


def _check(x, dtype):
    n = x.shape[1]
    p = fs.softmax(x)
    assert np.all(np.isfinite(p))
    sums = p.astype(np.float64).sum(axis=1)
    assert np.all(np.abs(sums - 1) <= 4 * n * np.finfo(dtype).eps)
    lp = fs.log_softmax(x)
    assert not np.any(np.isnan(lp)) and np.all(lp <= 0)
    lse = fs.logsumexp(x)
    assert np.all(np.isfinite(lse))
    t = np.argmin(x, axis=1)                    # the hardest target: the smallest logit
    loss, g = fs.cross_entropy_with_grad(x, t, reduction="none")
    assert not np.any(np.isnan(loss)) and np.all(loss >= 0)
    assert not np.any(np.isnan(g))
    gs = g.astype(np.float64).sum(axis=1)
    assert np.all(np.abs(gs) <= 4 * n * np.finfo(dtype).eps)
    if LONGDOUBLE_OK:
        ref = hp_softmax(x)
        assert max_ulp(p, ref, dtype, ref >= np.finfo(dtype).tiny) <= 4
        lref = hp_log_softmax(x)
        ok = representable(lref, dtype) & (lref != 0)
        assert max_ulp(lp, lref, dtype, ok) <= 4
        # a logsumexp near 0 from a negative maximum is ill-conditioned: for
        # float64 data the bound scales with |m| / |lse| (see its docstring)
        lref = hp_logsumexp(x)
        cond = np.maximum(1.0, np.abs(x.max(axis=1).astype(np.float64))
                          / np.maximum(np.abs(lref.astype(np.float64)), 1e-300))
        if dtype == np.float32:
            cond = np.maximum(1.0, cond * 2.0 ** -29)
        err = ulp_error(lse, lref, dtype)
        assert np.all(err <= 4 * cond)
        cref = hp_cross_entropy_rows(x, t)
        okc = representable(cref, dtype)
        assert max_ulp(loss, cref, dtype, okc) <= 4


@pytest.mark.parametrize("kind", ["cauchy", "loguniform", "offsets"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_millions_of_short_rows(kind, dtype):
    rng = np.random.default_rng(["cauchy", "loguniform", "offsets"].index(kind))
    rows = ROWS if dtype == np.float32 else ROWS // 4
    for start in range(0, rows, 500_000):           # bounded memory per check
        _check(_heavy(rng, min(500_000, rows - start), 10, dtype, kind), dtype)


@pytest.mark.parametrize("kind", ["cauchy", "loguniform", "offsets"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [257, 4099])
def test_wide_rows(kind, dtype, n):
    rng = np.random.default_rng(n)
    rows = max(ROWS // (n * 2), 64)
    _check(_heavy(rng, rows, n, dtype, kind), dtype)
