"""Cold start and the fixed cost of one call (SPEC §6: cold start <= 0.6 s; a (4, 16)
call <= 3 us)."""

import os

import numpy as np

import fastsoftmax as fs


class ColdStart:
    """A fresh interpreter: ``import fastsoftmax`` and the first softmax call.

    ``setup`` runs the same call in the benchmark process first, so the kernel
    cache is filled (as after ``python -m fastsoftmax warmup``); the timed
    statement therefore measures the import and the cache load, not a compile.
    NumPy is imported in the untimed setup string.
    """

    timeout = 300
    repeat = (3, 10, 30.0)

    def setup(self):
        fs.softmax(np.ones((4, 16), np.float32))

    def timeraw_import_and_first_softmax(self):
        # the child must import the fastsoftmax this process benchmarks; asv does not pass
        # PYTHONPATH (ASV_PYTHONPATH) on to it, so put its directory first on sys.path
        root = os.path.dirname(os.path.dirname(os.path.abspath(fs.__file__)))
        return ("import fastsoftmax\nfastsoftmax.softmax(x)",
                f"import sys\nsys.path.insert(0, {root!r})\n"
                "import numpy as np\nx = np.ones((4, 16), np.float32)")


class SmallCall:
    """One call on a tiny array: the Python-side overhead of the API."""

    params = [["softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"]]
    param_names = ["kernel"]

    def setup(self, kernel):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 16)).astype(np.float32)
        t = rng.integers(0, 16, 4)
        f = getattr(fs, kernel)
        self.call = (lambda: f(x, t)) if kernel.startswith("cross_entropy") else (lambda: f(x))
        self.call()

    def time_call_4x16(self, kernel):
        self.call()
