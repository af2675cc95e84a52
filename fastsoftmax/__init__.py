"""fastsoftmax: accurate, fast softmax and cross-entropy kernels for NumPy."""

from . import _threads

_threads.configure()

from ._api.forward import log_softmax, logsumexp, softmax, softmax_jacobian  # noqa: E402

__version__ = "0.1.0"

__all__ = ["softmax", "log_softmax", "logsumexp", "softmax_jacobian"]
