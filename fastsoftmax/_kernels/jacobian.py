"""The softmax Jacobian ``J[i, a, b] = p_a (delta_ab - p_b)`` per row."""

import numpy as np
from numba import prange

from ._jit import F64, kernel, ld2, parallel_twin, st3, fmax_nan_dropping
from ._rows import special_row
from .vmath import exp_shifted


@kernel
def jacobian_rows(x, jac, nchunks):
    """x: (R, n) C-contiguous; jac: (R, n, n)."""
    R, n = x.shape
    for ch in prange(nchunks):
        r0 = ch * R // nchunks
        r1 = (ch + 1) * R // nchunks
        e = np.empty(n, dtype=np.float64)
        p = np.empty(n, dtype=np.float64)
        om = np.empty(n, dtype=np.float64)   # 1 - p, without cancellation
        pf = np.empty(n, dtype=x.dtype)
        for i in range(r0, r1):
            m = ld2(x, i, 0)
            for j in range(n):
                m = fmax_nan_dropping(m, ld2(x, i, j))
            tot = 0.0
            s = 0.0
            c = 0
            if m - m == 0.0:
                for j in range(n):
                    e[j] = F64(exp_shifted(ld2(x, i, j), m))
                for j in range(n):
                    tot += e[j]
                for j in range(n):
                    if e[j] == 1.0:
                        c += 1
                    else:
                        s += e[j]
            if m - m == 0.0 and tot == tot:
                inv = 1.0 / tot
                for j in range(n):
                    p[j] = e[j] * inv
                    om[j] = s * inv if (e[j] == 1.0 and c == 1) else 1.0 - p[j]
            else:
                special_row(x[i], None, pf, 0)
                for j in range(n):
                    p[j] = F64(pf[j])
                    om[j] = 1.0 - p[j]
            for a in range(n):
                pa = p[a]
                for b in range(n):
                    st3(jac, i, a, b, -pa * p[b])
                st3(jac, i, a, a, pa * om[a])


jacobian_rows_parallel = parallel_twin(jacobian_rows)
