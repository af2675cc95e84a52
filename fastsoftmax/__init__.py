"""fastsoftmax: accurate, fast softmax and cross-entropy kernels for NumPy.

Public functions (see SPEC.md and each docstring): :func:`softmax`,
:func:`log_softmax`, :func:`logsumexp`, :func:`softmax_jacobian`,
:func:`sigmoid`, :func:`log_sigmoid`, the backward passes
:func:`softmax_backward`, :func:`log_softmax_backward`,
:func:`sigmoid_backward`, and the losses :func:`cross_entropy`,
:func:`nll_loss`, :func:`cross_entropy_with_grad`,
:func:`binary_cross_entropy_with_logits`,
:func:`binary_cross_entropy_with_grad`, :func:`linear_cross_entropy`.
"""

from . import _threads

_threads.configure()

from ._api.backward import log_softmax_backward, softmax_backward  # noqa: E402
from ._api.binary import (binary_cross_entropy_with_grad,  # noqa: E402
                          binary_cross_entropy_with_logits)
from ._api.forward import log_softmax, logsumexp, softmax, softmax_jacobian  # noqa: E402
from ._api.linear import linear_cross_entropy  # noqa: E402

from ._api.losses import cross_entropy, cross_entropy_with_grad, nll_loss  # noqa: E402
from ._api.sigmoid import log_sigmoid, sigmoid, sigmoid_backward  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "softmax", "log_softmax", "logsumexp", "softmax_jacobian",
    "sigmoid", "log_sigmoid",
    "softmax_backward", "log_softmax_backward", "sigmoid_backward",
    "cross_entropy", "nll_loss", "cross_entropy_with_grad",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_grad",
    "linear_cross_entropy",
]
