"""Time every public kernel against its peers over SPEC §6's grid x {float32, float64}.

One class per kernel; parameters (shape, dtype, impl). ``impl`` is
``fastsoftmax`` or a peer from the shared registry, so the ratio of two
implementations is two entries of the same benchmark.
"""

from . import DTYPES, build, cases, impls


class _Kernel:
    """Base: ``setup`` builds seeded inputs and warms the callable; ``time_kernel`` calls it."""

    kernel = None
    param_names = ["shape", "dtype", "impl"]
    timeout = 600
    # keep the run time bounded when a peer takes seconds per call
    repeat = (1, 10, 10.0)

    def setup(self, shape, dtype, impl):
        self.inputs, self.fn = build(self.kernel, shape, dtype, impl)

    def teardown(self, shape, dtype, impl):
        self.inputs.release()
        self.fn = None

    def time_kernel(self, shape, dtype, impl):
        self.fn()


def _params(kernel):
    return [list(cases(kernel)), list(DTYPES), impls(kernel)]


class Softmax(_Kernel):
    kernel = "softmax"
    params = _params(kernel)


class LogSoftmax(_Kernel):
    kernel = "log_softmax"
    params = _params(kernel)


class Logsumexp(_Kernel):
    kernel = "logsumexp"
    params = _params(kernel)


class SoftmaxBackward(_Kernel):
    kernel = "softmax_backward"
    params = _params(kernel)


class LogSoftmaxBackward(_Kernel):
    kernel = "log_softmax_backward"
    params = _params(kernel)


class CrossEntropy(_Kernel):
    kernel = "cross_entropy"
    params = _params(kernel)


class CrossEntropyWithGrad(_Kernel):
    kernel = "cross_entropy_with_grad"
    params = _params(kernel)


class NllLoss(_Kernel):
    kernel = "nll_loss"
    params = _params(kernel)


class Sigmoid(_Kernel):
    kernel = "sigmoid"
    params = _params(kernel)


class LogSigmoid(_Kernel):
    kernel = "log_sigmoid"
    params = _params(kernel)


class SigmoidBackward(_Kernel):
    kernel = "sigmoid_backward"
    params = _params(kernel)


class BinaryCrossEntropyWithLogits(_Kernel):
    kernel = "binary_cross_entropy_with_logits"
    params = _params(kernel)


class BinaryCrossEntropyWithGrad(_Kernel):
    kernel = "binary_cross_entropy_with_grad"
    params = _params(kernel)


class SoftmaxJacobian(_Kernel):
    kernel = "softmax_jacobian"
    params = _params(kernel)


class LinearCrossEntropy(_Kernel):
    kernel = "linear_cross_entropy"
    params = _params(kernel)
