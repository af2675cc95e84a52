"""An adversarial array generator, in the spirit of bottleneck's.

``value_cases(dtype)`` yields ``(name, array)`` pairs of 2-D logits whose
rows probe the numerics: values up to +-float max, +-inf, NaN, -inf masks,
rows of only -inf, ties at the maximum, subnormals, spreads of +-1, +-30,
+-1e4, +-1e30, constant rows, huge per-row offsets. ``shape_cases()`` gives
the shape edge cases (0-d, (0,), (0, C), (N, 0), (N, C, d) with the class
axis in the middle, rows of length 1 and 131072), and ``layouts(x)`` the same
values in other memory layouts (F-order, negative strides, strided,
byte-swapped, read-only). Every array is seeded, so failures reproduce.
"""

import numpy as np

SPREADS = (1.0, 30.0, 1e4, 1e30)


def _rng(seed=0):
    return np.random.default_rng(seed)


def value_cases(dtype, n=37, seed=0):
    """Rows of ``n`` classes that stress the numerics, in ``dtype``."""
    dt = np.dtype(dtype)
    rng = _rng(seed)
    if dt.kind == "f":
        big = np.finfo(dt).max
        tiny = np.finfo(dt).tiny
    else:
        info = np.iinfo(dt)
        big = info.max
        tiny = 1
    cases = []
    for s in SPREADS:
        if dt.kind == "f" and s > np.finfo(dt).max:
            continue
        cases.append((f"spread_{s:g}", rng.uniform(-s, s, (6, n))))
    x = rng.normal(size=(8, n))
    x[0, 3] = np.inf
    x[1, [2, 5]] = np.inf                     # two +inf: 1/2 each
    x[2, 4] = np.nan
    x[3, :] = -np.inf                         # fully masked row
    x[4, ::2] = -np.inf                       # -inf mask on half the row
    x[5, [0, 7]] = [np.inf, np.nan]           # NaN wins
    x[6, :] = np.nan
    x[7, 1] = -np.inf
    cases.append(("inf_nan_mix", x))
    x = rng.uniform(-1, 1, (5, n))
    x[0, :] = big
    x[1, :] = -big
    x[2, 0], x[2, 1:] = big, -big             # spread 2*float max: x - m overflows
    x[3, :3] = big
    x[4, :] = rng.uniform(-big, big, n) if dt.kind == "f" else x[4]
    cases.append(("float_max", x))
    x = np.tile(rng.normal(size=(1, n)), (4, 1))
    x[:, :4] = x.max() + 1                    # four-way tie at the maximum
    x[1] = 3.0                                # constant row
    x[2, :] = 0.0
    cases.append(("ties_constant", x))
    x = rng.uniform(-1, 1, (4, n)) * tiny
    x[1, 0] = 0.0
    x[2] = tiny * rng.integers(0, 3, n)       # subnormal-sized differences
    cases.append(("subnormal", x))
    x = rng.normal(size=(4, n))
    x[0] += 1e4
    x[1] -= 1e4
    x[2] += 3e7
    x[3] -= 1e30
    cases.append(("offsets", x))
    x = np.full((3, n), -30.0)
    x[:, 0] = 0.0                             # a dominant maximum: tiny s
    x[1, 0] = 60.0
    x[2, 1:] = -104.5                          # near the exp underflow
    cases.append(("dominant", x))
    out = []
    for name, a in cases:
        with np.errstate(all="ignore"):
            if dt.kind in "iu":
                a = np.nan_to_num(a, nan=0, posinf=info.max, neginf=info.min)
                a = np.clip(a, info.min, info.max)
            out.append((name, a.astype(dt)))
    return out


def shape_cases():
    """(name, shape, axis) for the shape edge cases."""
    return [
        ("scalar", (), -1),
        ("empty_1d", (0,), -1),
        ("zero_rows", (0, 5), -1),
        ("zero_classes", (5, 0), -1),
        ("zero_classes_axis0", (0, 3), 0),
        ("one_by_one", (1, 1), -1),
        ("one_class", (6, 1), -1),
        ("vector", (9,), 0),
        ("three_d_last", (3, 4, 5), -1),
        ("three_d_middle", (3, 4, 5), 1),
        ("three_d_first", (3, 4, 5), 0),
        ("four_d_middle", (2, 3, 7, 2), 2),
        ("long_row", (2, 131072), -1),
        ("short_rows", (300, 3), -1),
        ("wide_lanes", (2, 70, 300), 1),
    ]


def layouts(x):
    """(name, array) views/copies of x with the same values in other layouts."""
    x = np.asarray(x)
    if x.ndim == 0:
        res = [("C", np.array(x))]
        ro = np.array(x)
        ro.setflags(write=False)
        return res + [("readonly", ro), ("byteswapped", x.astype(x.dtype.newbyteorder()))]
    res = [("C", np.ascontiguousarray(x))]
    res.append(("F", np.asfortranarray(x)))
    rev = np.ascontiguousarray(x[(slice(None, None, -1),) * x.ndim])
    res.append(("negative_strides", rev[(slice(None, None, -1),) * x.ndim]))
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype) if x.shape[-1] else None
    if wide is not None:
        wide[..., ::2] = x
        res.append(("strided", wide[..., ::2]))
    ro = np.array(x)
    ro.setflags(write=False)
    res.append(("readonly", ro))
    res.append(("byteswapped", x.astype(x.dtype.newbyteorder())))
    return res
