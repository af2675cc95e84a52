"""Finite-difference gradient checks, in float64.

These helpers verify an analytic derivative (a backward pass, a fused loss
gradient, a layer's ``backward``) against central differences of the
function it claims to differentiate. fastsoftmax's own tests use them on
every backward function, every fused gradient and every layer; use them on
your own layers the same way::

    import numpy as np
    import fastsoftmax as fs
    from fastsoftmax.testing import check_grad, check_vjp

    x = np.random.default_rng(0).standard_normal((4, 10))
    t = np.array([1, 0, 9, 3])

    # a scalar function and its gradient
    loss, grad = fs.cross_entropy_with_grad(x, t)
    rel = check_grad(lambda z: fs.cross_entropy(z, t), x, grad, rtol=1e-6)

    # an array-valued function and its vector-Jacobian product
    y = fs.softmax(x)
    rel = check_vjp(fs.softmax, x, lambda v: fs.softmax_backward(v, y), rtol=1e-6)

Every checker returns the largest relative difference it found (a float) and,
when ``rtol`` is given, raises ``AssertionError`` naming the worst entry if
that difference exceeds it. The relative difference of an entry is
``max(|a - n| - noise, 0) / max(|a|, |n|, floor)`` (``a`` analytic, ``n``
numerical). ``noise`` is the finite differences' own rounding error at that
entry, ``NOISE_ULPS`` (4) units of roundoff of the function values weighted
by the stencil and divided by its step: a difference the stencil cannot
resolve does not count (an entry of 1e-12 next to function values of 1 is
only known to about 1e-14). The default ``floor`` is ``1e-6 * max|n|``, so
entries tiny next to the rest of the gradient do not dominate. Passing
``floor`` (a number or an array) replaces both: ``floor=0`` gives the bare
entrywise ratio ``|a - n| / max(|a|, |n|)``.

Accuracy. The derivative along each coordinate is taken with the five-point
central stencil ``(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / (12 h)``
(``order=4``, truncation error O(h^4)), or the three-point
``(f(x+h) - f(x-h)) / (2 h)`` (``order=2``, O(h^2)). The step is a power of
two near ``eps * max(1, |x_i|)`` (default ``eps`` 1e-3 for order 4, 1e-6 for
order 2), so that ``x_i ± h`` is exact. For smooth functions of O(1)-scaled
inputs evaluated to a few ULP in float64, a correct analytic gradient then
shows a relative difference of 1e-6 or less (usually about 1e-9), and a wrong
one O(1). Inputs are converted to float64 and the function is evaluated on
float64 copies: it must be smooth near ``x`` (no kinks within ``2 h``) and
must not modify its argument.

Cost: ``2 * order`` evaluations of the function per input entry; keep the
arrays small (tens to hundreds of entries).
"""

import numpy as np

__all__ = [
    "numerical_grad", "numerical_jacobian", "numerical_jvp",
    "max_relative_difference", "check_grad", "check_vjp", "check_jvp",
]

_STENCILS = {
    # order: ((offset k in units of h, weight of f(x + k h) - f(x - k h)), ...), denominator / h
    # Differences are formed first, so a function that does not depend on x_i gives exactly 0.
    2: (((1.0, 1.0),), 2.0),
    4: (((1.0, 8.0), (2.0, -1.0)), 12.0),
}
_DEFAULT_EPS = {2: 1e-6, 4: 1e-3}
_EPS64 = float(np.finfo(np.float64).eps)
NOISE_ULPS = 4   # rounding error assumed in each function value, in units of its magnitude


def _stencil(order, eps):
    if order not in _STENCILS:
        raise ValueError(f"order={order!r}: the central-difference order must be 2 or 4")
    eps = _DEFAULT_EPS[order] if eps is None else float(eps)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps={eps!r} must be a finite number > 0")
    return _STENCILS[order], eps


def _step(value, eps):
    """A power of two near eps * max(1, |value|): value ± k·h is then exact."""
    scale = eps * max(1.0, abs(float(value)))
    return float(2.0 ** np.round(np.log2(scale)))


def _as_f64(x):
    return np.array(x, dtype=np.float64, order="C")  # always a C-contiguous copy


def _eval(f, x):
    return np.asarray(f(x.copy()), dtype=np.float64)


def _plain(f):
    """The (value, magnitude) form of f used by the stencils: magnitude = |value|."""
    def g(z):
        v = _eval(f, z)
        return v, np.abs(v)
    return g


def _coordinate_derivatives(g, x, eps, order):
    """Yield (flat index, derivative, noise) for every entry of x.

    ``g(z)`` returns ``(value, magnitude)``: the function's value and the size
    of the quantities its rounding error is proportional to. ``noise`` is the
    rounding error the stencil may carry: NOISE_ULPS units of roundoff of each
    magnitude, combined with the stencil's weights and divided by its step.
    """
    (pairs, denom), eps = _stencil(order, eps)
    x = _as_f64(x)
    flat = x.reshape(-1)          # a view: x is C-contiguous
    for i in range(flat.size):
        orig = flat[i]
        h = _step(orig, eps)
        acc = mag = 0.0
        for k, w in pairs:
            flat[i] = orig + k * h
            up, size_up = g(x)
            flat[i] = orig - k * h
            down, size_down = g(x)
            acc = acc + w * (up - down)
            mag = mag + abs(w) * (size_up + size_down)
        flat[i] = orig
        yield i, acc / (denom * h), (NOISE_ULPS * _EPS64) * mag / (denom * h)


def _grad_and_noise(g, x, eps, order):
    x = _as_f64(x)
    grad = np.empty(x.shape, np.float64)
    noise = np.empty(x.shape, np.float64)
    gflat, nflat = grad.reshape(-1), noise.reshape(-1)
    for i, d, e in _coordinate_derivatives(g, x, eps, order):
        if d.size != 1:
            raise TypeError(f"f returned an array of shape {d.shape}; numerical_grad needs a "
                            f"scalar function (use numerical_jacobian or check_vjp)")
        gflat[i] = d.reshape(())
        nflat[i] = e.reshape(())
    return grad, noise


def numerical_grad(f, x, *, eps=None, order=4):
    """Central-difference gradient of a scalar function ``f`` at ``x``.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar (a Python/NumPy number or a size-1 array).
    x : array_like
        The point; converted to float64.
    eps : float, optional
        Relative step (see the module docstring); default 1e-3 for
        ``order=4`` and 1e-6 for ``order=2``.
    order : {4, 2}
        Accuracy order of the central stencil.

    Returns
    -------
    ndarray of float64, of ``x``'s shape.
    """
    return _grad_and_noise(_plain(f), x, eps, order)[0]


def numerical_jacobian(f, x, *, eps=None, order=4):
    """Central-difference Jacobian of ``f`` at ``x``.

    Returns a float64 array of shape ``f(x).shape + x.shape`` with
    ``J[out_index + in_index] = d f[out_index] / d x[in_index]``.
    """
    x = _as_f64(x)
    y0 = _eval(f, x)
    jac = np.empty(y0.shape + (x.size,), np.float64)
    for i, d, _ in _coordinate_derivatives(_plain(f), x, eps, order):
        if d.shape != y0.shape:
            raise ValueError(f"f returned shape {d.shape} near x but {y0.shape} at x")
        jac[..., i] = d
    return jac.reshape(y0.shape + x.shape)


def _jvp_and_noise(f, x, tangent, eps, order):
    (pairs, denom), eps = _stencil(order, eps)
    x = _as_f64(x)
    u = np.broadcast_to(np.asarray(tangent, np.float64), x.shape)
    h = _step(float(np.max(np.abs(x))) if x.size else 0.0, eps)
    acc = mag = 0.0
    for k, w in pairs:
        up, down = _eval(f, x + (k * h) * u), _eval(f, x - (k * h) * u)
        acc = acc + w * (up - down)
        mag = mag + abs(w) * (np.abs(up) + np.abs(down))
    return acc / (denom * h), (NOISE_ULPS * _EPS64) * mag / (denom * h)


def numerical_jvp(f, x, tangent, *, eps=None, order=4):
    """Central-difference directional derivative ``d/ds f(x + s * tangent)`` at s = 0."""
    return _jvp_and_noise(f, x, tangent, eps, order)[0]


def max_relative_difference(actual, expected, *, floor=None):
    """Largest entrywise ``|a - e| / max(|a|, |e|, floor)``.

    ``floor`` (a number, or an array broadcasting against the inputs) keeps
    entries that are tiny next to the rest from dominating: by default it is
    ``1e-6 * max(max|a|, max|e|)``. Entries that are equal (both zero, or the
    same infinity) count 0; NaN in either, or an infinity not matched
    exactly, counts ``inf``. Shapes must match exactly (``ValueError``).
    Returns a Python float (0.0 for empty arrays).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: actual {a.shape}, expected {e.shape}")
    if a.size == 0:
        return 0.0
    return float(_relative(a, e, _default_floor(a, e) if floor is None else floor).max())


def _default_floor(a, e):
    finite = np.isfinite(a) & np.isfinite(e)
    scale = max(float(np.max(np.abs(a[finite]), initial=0.0)),
                float(np.max(np.abs(e[finite]), initial=0.0)))
    return 1e-6 * scale


def _relative(a, e, floor, allowance=0.0):
    finite = np.isfinite(a) & np.isfinite(e)
    fl = np.broadcast_to(np.asarray(floor, dtype=np.float64), a.shape)
    with np.errstate(all="ignore"):
        denom = np.maximum(np.maximum(np.abs(a), np.abs(e)), fl)
        diff = np.maximum(np.abs(a - e) - allowance, 0.0)
        rel = np.where(a == e, 0.0, diff / np.where(denom > 0, denom, 1.0))
    return np.where(finite | (a == e), rel, np.inf)


def _compare(analytic, numeric, noise, floor, rtol, what):
    """Relative difference beyond the stencil's rounding noise, floored at 1e-6 * scale."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"{what}: the analytic result has shape {a.shape}, the numerical one "
                         f"{n.shape}")
    if a.size == 0:
        return 0.0
    if floor is None:
        fl, allowance = _default_floor(a, n), noise
    else:
        fl, allowance = floor, 0.0
    fl = np.broadcast_to(np.asarray(fl, dtype=np.float64), a.shape)
    rel = _relative(a, n, fl, allowance)
    worst = float(rel.max())
    if rtol is not None and not worst <= rtol:
        k = np.unravel_index(int(np.argmax(rel)), rel.shape)
        raise AssertionError(
            f"{what}: largest relative difference {worst:.3e} > rtol={rtol:.1e} at index "
            f"{tuple(int(i) for i in k)}: analytic {float(a[k]):.17g}, "
            f"finite differences {float(n[k]):.17g} (floor {float(fl[k]):.2e})")
    return worst


def _resolve(analytic, arg):
    return analytic(arg) if callable(analytic) else analytic


def check_grad(f, x, analytic_grad, *, eps=None, order=4, floor=None, rtol=None):
    """Compare the gradient of a scalar function with central differences.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar.
    x : array_like
        The point (float64).
    analytic_grad : array_like or callable
        The gradient to check, of ``x``'s shape, or a callable ``g(x)``
        returning it.
    eps, order : see :func:`numerical_grad`.
    floor : float or array_like, optional
        The smallest denominator of the relative difference (see the module
        docstring); default ``max(1e-6 * max|gradient|, noise)``.
    rtol : float, optional
        If given, raise ``AssertionError`` when the largest relative
        difference exceeds it.

    Returns
    -------
    float
        The largest relative difference between the analytic and the
        numerical gradient.
    """
    x = _as_f64(x)
    numeric, noise = _grad_and_noise(_plain(f), x, eps, order)
    return _compare(_resolve(analytic_grad, x.copy()), numeric, noise, floor, rtol,
                    "check_grad")


def check_vjp(f, x, vjp, *, cotangent=None, seed=0, eps=None, order=4, floor=None, rtol=None):
    """Check a vector-Jacobian product (a backward pass) of an array function.

    The numerical side is the gradient of ``phi(x) = sum(v * f(x))``; the
    analytic side is ``vjp(v)``, which must equal ``J^T v`` of ``x``'s shape.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns an array (any shape).
    x : array_like
        The point (float64).
    vjp : callable or array_like
        ``vjp(v)`` returns the vector-Jacobian product for the cotangent
        ``v`` (of ``f(x)``'s shape); an array is accepted when ``cotangent``
        is given.
    cotangent : array_like, optional
        ``v``; default standard normal values from ``numpy.random.default_rng(seed)``.
    eps, order, floor, rtol : as for :func:`check_grad`.

    Returns
    -------
    float
        The largest relative difference.
    """
    x = _as_f64(x)
    y0 = _eval(f, x)
    if cotangent is None:
        if not callable(vjp):
            raise TypeError("pass cotangent= when vjp is an array")
        v = np.random.default_rng(seed).standard_normal(y0.shape)
    else:
        v = np.broadcast_to(np.asarray(cotangent, np.float64), y0.shape).copy()

    def phi(z):
        y = _eval(f, z)
        if y.shape != y0.shape:
            raise ValueError(f"f returned shape {y.shape} near x but {y0.shape} at x")
        return np.sum(y * v), np.sum(np.abs(y * v))

    numeric, noise = _grad_and_noise(phi, x, eps, order)
    return _compare(_resolve(vjp, v.copy()), numeric, noise, floor, rtol, "check_vjp")


def check_jvp(f, x, jvp, *, tangent=None, seed=0, eps=None, order=4, floor=None, rtol=None):
    """Check a Jacobian-vector product (a forward-mode derivative).

    The numerical side is the directional derivative of ``f`` at ``x`` along
    ``u`` (:func:`numerical_jvp`); the analytic side is ``jvp(u)``, of
    ``f(x)``'s shape. ``tangent`` is ``u`` (default standard normal values
    from ``numpy.random.default_rng(seed)``); ``jvp`` may be an array when
    ``tangent`` is given. ``eps``, ``order``, ``floor`` and ``rtol`` as for
    :func:`check_grad`. Returns the largest relative difference.
    """
    x = _as_f64(x)
    if tangent is None:
        if not callable(jvp):
            raise TypeError("pass tangent= when jvp is an array")
        u = np.random.default_rng(seed).standard_normal(x.shape)
    else:
        u = np.broadcast_to(np.asarray(tangent, np.float64), x.shape).copy()
    numeric, noise = _jvp_and_noise(f, x, u, eps, order)
    return _compare(_resolve(jvp, u.copy()), numeric, noise, floor, rtol, "check_jvp")
