"""Memory: peak RSS and the extra bytes of one call (SPEC §6: softmax with ``out=``
< 1 KiB; ``cross_entropy_with_grad(inplace=True)`` < 1% of the logits).

``peakmem_`` is the benchmark process's peak RSS, inputs included: compare the
variants of one shape with each other (with/without ``out=`` / ``inplace``).
``track_*_bytes`` is the tracemalloc peak of one call (NumPy and Numba
allocations are both traced), after a warm call.
"""

import numpy as np

import fastsoftmax as fs
from fastsoftmax import _bench_registry as R

from . import DTYPES, build, cases, impls


class Memory:
    params = [list(cases("cross_entropy_with_grad")), list(DTYPES)]
    param_names = ["shape", "dtype"]
    timeout = 300

    def setup(self, shape, dtype):
        (shp, axis) = cases("cross_entropy_with_grad")[shape]
        inp = R.make_inputs("cross_entropy_with_grad", shp, axis, dtype)
        self.x, self.t, self.axis = inp["x"], inp["target"], inp.axis
        self.out = np.empty_like(self.x)
        self.logits = self.x.copy()
        fs.softmax(self.x, self.axis, out=self.out)
        fs.softmax(self.x, self.axis)
        fs.cross_entropy_with_grad(self.x, self.t, self.axis)
        fs.cross_entropy_with_grad(self.logits, self.t, self.axis, inplace=True)

    def peakmem_softmax_out(self, shape, dtype):
        fs.softmax(self.x, self.axis, out=self.out)

    def peakmem_softmax(self, shape, dtype):
        fs.softmax(self.x, self.axis)

    def peakmem_cross_entropy_with_grad_inplace(self, shape, dtype):
        # overwrites self.logits with gradients: still finite logits for the next call
        fs.cross_entropy_with_grad(self.logits, self.t, self.axis, inplace=True)

    def peakmem_cross_entropy_with_grad(self, shape, dtype):
        fs.cross_entropy_with_grad(self.x, self.t, self.axis)

    def track_softmax_out_extra_bytes(self, shape, dtype):
        return R.tracemalloc_peak(lambda: fs.softmax(self.x, self.axis, out=self.out))

    track_softmax_out_extra_bytes.unit = "bytes"

    def track_cross_entropy_with_grad_inplace_extra_bytes(self, shape, dtype):
        return R.tracemalloc_peak(
            lambda: fs.cross_entropy_with_grad(self.logits, self.t, self.axis, inplace=True))

    track_cross_entropy_with_grad_inplace_extra_bytes.unit = "bytes"


class LinearMemory:
    """linear_cross_entropy (float32) against the unfused path and PyTorch: peak memory.

    ``peakmem_`` includes the inputs (the same for every implementation);
    ``track_extra_bytes`` is the resident memory one call adds, measured in a
    fresh interpreter (so Numba's and BLAS's allocations count).
    """
    params = [list(cases("linear_cross_entropy")),
              [i for i in impls("linear_cross_entropy") if i in ("fastsoftmax", "unfused",
                                                                  "torch")]]
    param_names = ["shape", "impl"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, shape, impl):
        self.shape = cases("linear_cross_entropy")[shape][0]
        self.inputs, self.fn = build("linear_cross_entropy", shape, "float32", impl)

    def teardown(self, shape, impl):
        self.inputs.release()
        self.fn = None

    def peakmem_linear_cross_entropy(self, shape, impl):
        self.fn()

    def track_extra_bytes(self, shape, impl):
        return R.case_extra_rss("linear_cross_entropy", self.shape, "float32", impl)[
            "extra_bytes"]

    track_extra_bytes.unit = "bytes"
