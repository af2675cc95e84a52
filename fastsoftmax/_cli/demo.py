"""``python -m fastsoftmax demo``: train a small MLP on scikit-learn's digits.

A plain NumPy multilayer perceptron (Affine and ReLU layers in the
params / grads / forward / backward style of "deep learning from scratch",
He initialisation, Adam or SGD with momentum, mini-batches, float32) is
trained on the 8x8 digits bundled with scikit-learn (no download), with a
stratified 80/20 train/test split and a fixed seed. The loss layer is
:class:`fastsoftmax.layers.SoftmaxWithLoss` (the fused
``cross_entropy_with_grad`` kernel). A progress bar (on stderr, redrawn per
batch, by default only when stderr is a terminal) follows each epoch, and a
line per epoch gives the training loss and accuracy, the test accuracy and the
seconds the training steps took; then a line with ``test accuracy``.

Timing: the same loop is then trained again from the same seed three times
over, one epoch of each in turn (so a busy machine slows all three alike):
with ``SoftmaxWithLoss``, with the loss and gradient of
:mod:`fastsoftmax.reference` (the plain-NumPy oracle), and with the textbook
NumPy layer of the source notes. The median time per epoch, the time in the
loss (forward + backward) and its share are printed for each. The kernels
are loaded (or compiled) by a warm-up call before anything is timed.

scikit-learn (and matplotlib for ``--plot``) are dev extras, not runtime
dependencies: without them the command prints what to install and returns 2.
``examples/train_digits.py`` is the same training loop written to be copied.
"""

import argparse
import os
import sys
import time

import numpy as np

DEFAULT_EPOCHS = 20
DEFAULT_HIDDEN = "100"
DEFAULT_BATCH = 32
DEFAULT_LR = {"adam": 1e-3, "momentum": 0.05}
DTYPE = np.float32

_INSTALL_HINT = 'install the dev extras (pip install -e ".[dev]") or pip install {}'


# --------------------------------------------------------------------------- arguments
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 2**32)")
    return value


def _hidden_sizes(text):
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("give at least one hidden layer size, e.g. 100 or 128,64")
    return tuple(_positive_int(p) for p in parts)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def add_parser(p):
    """Add the demo's options to the argparse (sub)parser ``p``."""
    p.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                   help=f"training epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the split, the initial weights and the batch order (default 0)")
    p.add_argument("--hidden", type=_hidden_sizes, default=_hidden_sizes(DEFAULT_HIDDEN),
                   metavar="N[,N...]",
                   help=f"hidden layer sizes, comma-separated (default {DEFAULT_HIDDEN}: "
                        f"a 64-100-10 network)")
    p.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH,
                   help=f"mini-batch size (default {DEFAULT_BATCH})")
    p.add_argument("--optimizer", choices=("adam", "momentum"), default="adam",
                   help="Adam or SGD with momentum 0.9 (default adam)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default 1e-3 for adam, 0.05 for momentum)")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="save the loss and accuracy curves to this PNG (needs matplotlib)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="draw the progress bar on stderr even when it is not a terminal "
                          "(by default it is drawn only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="never draw the progress bar")
    return p


# --------------------------------------------------------------------------- layers
class Affine:
    """``out = x @ W + b``; ``backward`` stores dW, db in ``grads`` and returns dx."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        W, b = self.params
        self.x = x
        return x @ W + b

    def backward(self, dout):
        W, _ = self.params
        self.grads[0][...] = self.x.T @ dout
        self.grads[1][...] = dout.sum(axis=0)
        return dout @ W.T


class ReLU:
    """``max(x, 0)``; ``backward`` zeroes the gradient where the input was <= 0."""

    def __init__(self):
        self.params, self.grads = [], []
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dx = dout.copy()
        dx[self.mask] = 0
        return dx


class ReferenceSoftmaxWithLoss:
    """SoftmaxWithLoss's interface with the loss from :mod:`fastsoftmax.reference`."""

    def __init__(self):
        from .. import reference
        self._ce = reference.cross_entropy_with_grad
        self.params, self.grads = [], []
        self.loss = None
        self._grad = None

    def forward(self, x, t):
        self.loss, grad = self._ce(x, t)
        self._grad = grad.astype(x.dtype, copy=False)   # the reference computes in float64
        return self.loss

    def backward(self, dout=1):
        return self._grad * dout


class TextbookSoftmaxWithLoss:
    """The NumPy SoftmaxWithLoss of the source notes (note 004), for the timing table."""

    def __init__(self):
        self.params, self.grads = [], []
        self.y = self.t = None

    def forward(self, x, t):
        self.t = t
        y = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = y / y.sum(axis=1, keepdims=True)
        batch = self.y.shape[0]
        return -np.sum(np.log(self.y[np.arange(batch), t] + 1e-7)) / batch

    def backward(self, dout=1):
        batch = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch), self.t] -= 1
        dx *= dout
        return dx / batch


class MLP:
    """Affine-ReLU-...-Affine with a softmax-with-loss layer on top."""

    def __init__(self, sizes, rng, loss_layer, dtype=DTYPE):
        self.layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            W = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(dtype)  # He
            self.layers.append(Affine(W, np.zeros(n_out, dtype)))
            if i < len(sizes) - 2:
                self.layers.append(ReLU())
        self.loss_layer = loss_layer
        self.params = [p for layer in self.layers for p in layer.params]
        self.grads = [g for layer in self.layers for g in layer.grads]

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dscores):
        for layer in reversed(self.layers):
            dscores = layer.backward(dscores)
        return dscores


class Adam:
    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = self.v = None
        self.iter = 0

    def update(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m += (1.0 - self.beta1) * (g - m)
            v += (1.0 - self.beta2) * (g * g - v)
            p -= lr_t * m / (np.sqrt(v) + self.eps)


class Momentum:
    def __init__(self, lr=0.05, momentum=0.9):
        self.lr, self.momentum = lr, momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self.v):
            v *= self.momentum
            v -= self.lr * g
            p += v


# --------------------------------------------------------------------------- progress bar
class ProgressBar:
    """A one-line text progress bar on ``stream``, redrawn with a carriage return."""

    def __init__(self, total, prefix="", stream=None, width=28, enabled=True):
        self.total, self.prefix, self.width = max(total, 1), prefix, width
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self._len = 0

    def update(self, done, suffix=""):
        if not self.enabled:
            return
        filled = int(self.width * done / self.total)
        line = (f"{self.prefix} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{done}/{self.total} {suffix}").rstrip()
        self.stream.write("\r" + line + " " * max(self._len - len(line), 0))
        self.stream.flush()
        self._len = len(line)

    def close(self):
        if self.enabled and self._len:
            self.stream.write("\r" + " " * self._len + "\r")
            self.stream.flush()
            self._len = 0


# --------------------------------------------------------------------------- training
def load_data(seed):
    """Digits scaled to [0, 1] as float32, split 80/20 stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(DTYPE)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)


def _make_optimizer(name, lr):
    lr = DEFAULT_LR[name] if lr is None else lr
    return (Adam(lr) if name == "adam" else Momentum(lr)), lr


class History:
    """Per-epoch curves and times (seconds of training steps, and of the loss within them)."""

    def __init__(self):
        self.train_loss, self.train_acc, self.test_loss, self.test_acc = [], [], [], []
        self.seconds, self.loss_seconds = [], []


class Trainer:
    """A fresh MLP, its optimizer and its own random stream; ``epoch()`` trains one epoch."""

    def __init__(self, data, sizes, *, seed, batch_size, optimizer, lr, loss_layer, eval_loss):
        self.x_train, self.x_test, self.t_train, self.t_test = data
        self.rng = np.random.default_rng(seed)
        self.net = MLP(sizes, self.rng, loss_layer)
        self.opt, _ = _make_optimizer(optimizer, lr)
        self.batch_size = batch_size
        self.eval_loss = eval_loss
        self.hist = History()

    @property
    def n_batches(self):
        return -(-len(self.x_train) // self.batch_size)

    def epoch(self, bar=None):
        """One pass over the shuffled training set in mini-batches, then the test metrics."""
        net, bs, clock = self.net, self.batch_size, time.perf_counter
        n = len(self.x_train)
        order = self.rng.permutation(n)
        step_time = loss_time = loss_sum = 0.0
        correct = 0
        for b in range(self.n_batches):
            idx = order[b * bs:(b + 1) * bs]
            xb, tb = self.x_train[idx], self.t_train[idx]
            t0 = clock()
            scores = net.predict(xb)
            t1 = clock()
            loss = net.loss_layer.forward(scores, tb)
            dscores = net.loss_layer.backward(1)
            t2 = clock()
            net.backward(dscores)
            self.opt.update(net.params, net.grads)
            t3 = clock()
            step_time += t3 - t0
            loss_time += t2 - t1
            loss_sum += float(loss) * len(idx)
            correct += int(np.count_nonzero(scores.argmax(axis=1) == tb))
            if bar is not None:
                bar.update(b + 1, f"loss {float(loss):.4f}")
        if bar is not None:
            bar.close()
        scores = net.predict(self.x_test)
        h = self.hist
        h.train_loss.append(loss_sum / n)
        h.train_acc.append(correct / n)
        h.test_loss.append(float(self.eval_loss(scores, self.t_test)))
        h.test_acc.append(float(np.mean(scores.argmax(axis=1) == self.t_test)))
        h.seconds.append(step_time)
        h.loss_seconds.append(loss_time)
        return h


def _save_plot(path, hist, title):
    from matplotlib.figure import Figure   # no pyplot: no global backend is touched
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(hist.train_loss) + 1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, hist.train_loss, "o-", label="train")
    ax_loss.plot(epochs, hist.test_loss, "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss", yscale="log")
    ax_acc.plot(epochs, hist.train_acc, "o-", label="train")
    ax_acc.plot(epochs, hist.test_acc, "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=110)


def _missing(module):
    print(f"fastsoftmax demo: this command needs {module}, which is not installed; "
          f"{_INSTALL_HINT.format(module)}", file=sys.stderr)
    return 2


def run(args):
    """Run the demo with the parsed ``args``; returns the exit code (0 on success)."""
    try:
        import sklearn.datasets  # noqa: F401
        import sklearn.model_selection  # noqa: F401
    except ImportError:
        return _missing("scikit-learn")
    if args.plot is not None:
        try:
            import matplotlib.figure  # noqa: F401
        except ImportError:
            return _missing("matplotlib")
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            print(f"fastsoftmax demo: cannot write --plot {args.plot!r}: the folder {folder!r} "
                  f"does not exist", file=sys.stderr)
            return 2

    from .. import cross_entropy
    from .. import reference
    from ..layers import SoftmaxWithLoss

    data = load_data(args.seed)
    x_train, x_test, t_train, t_test = data
    sizes = (x_train.shape[1],) + tuple(args.hidden) + (10,)
    _, lr = _make_optimizer(args.optimizer, args.lr)
    arch = "-".join(str(s) for s in sizes)
    opt_name = "Adam" if args.optimizer == "adam" else "SGD with momentum 0.9"
    print(f"fastsoftmax demo: MLP {arch} (ReLU, He init), {opt_name} lr={lr:g}, "
          f"batch {args.batch_size}, float32, seed {args.seed}")
    print(f"digits: {len(x_train)} training / {len(x_test)} test images "
          f"(8x8, 10 classes, stratified 80/20 split)")

    # the first call loads the compiled kernels from the cache (or compiles them)
    t0 = time.perf_counter()
    SoftmaxWithLoss().forward(x_train[:args.batch_size] @ np.zeros((64, 10), DTYPE),
                              t_train[:args.batch_size])
    cross_entropy(np.zeros((len(x_test), 10), DTYPE), t_test)
    print(f"loss: fastsoftmax.layers.SoftmaxWithLoss (fused cross_entropy_with_grad); "
          f"kernels ready in {time.perf_counter() - t0:.2f} s")
    sys.stdout.flush()

    progress = args.progress
    if progress is None:
        progress = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    setup = dict(seed=args.seed, batch_size=args.batch_size, optimizer=args.optimizer,
                 lr=args.lr)
    width = len(str(args.epochs))

    trainer = Trainer(data, sizes, loss_layer=SoftmaxWithLoss(), eval_loss=cross_entropy,
                      **setup)
    for epoch in range(1, args.epochs + 1):
        bar = ProgressBar(trainer.n_batches, f"epoch {epoch:>{width}}/{args.epochs}",
                          enabled=progress)
        h = trainer.epoch(bar)
        print(f"epoch {epoch:>{width}}/{args.epochs}  train loss {h.train_loss[-1]:.4f}  "
              f"train acc {h.train_acc[-1]:.4f}  test acc {h.test_acc[-1]:.4f}  "
              f"{h.seconds[-1]:.3f} s", flush=True)
    hist = trainer.hist
    acc = hist.test_acc[-1]
    print(f"test accuracy {acc:.4f} ({round(acc * len(x_test))}/{len(x_test)}) "
          f"after {args.epochs} epochs", flush=True)

    # The timing comparison: the same loop from the same seed with three loss layers,
    # trained in lockstep (one epoch of each in turn) so that a busy machine slows all alike.
    rows = [("fastsoftmax.layers.SoftmaxWithLoss", SoftmaxWithLoss(), cross_entropy),
            ("fastsoftmax.reference", ReferenceSoftmaxWithLoss(), reference.cross_entropy),
            ("textbook NumPy layer (source notes)", TextbookSoftmaxWithLoss(),
             reference.cross_entropy)]
    racers = [Trainer(data, sizes, loss_layer=layer, eval_loss=ev, **setup)
              for _, layer, ev in rows]
    bar = ProgressBar(args.epochs, "timing the same loop with each loss, epoch",
                      enabled=progress)
    for epoch in range(1, args.epochs + 1):
        for r in racers:
            r.epoch()
        bar.update(epoch)
    bar.close()
    print(f"time per epoch of the same loop ({trainer.n_batches} batches), median of "
          f"{args.epochs} epochs;")
    print("the three loops run in turn from the same seed; loss = loss forward + backward:")
    print(f"  {'loss layer':<36} {'epoch':>9} {'loss only':>10} {'loss share':>11} "
          f"{'test acc':>9}")
    med = []
    for (name, _, _), r in zip(rows, racers):
        ep = float(np.median(r.hist.seconds)) * 1e3
        ls = float(np.median(r.hist.loss_seconds)) * 1e3
        med.append((ep, ls))
        print(f"  {name:<36} {ep:>6.2f} ms {ls:>7.3f} ms {100 * ls / ep:>9.1f} % "
              f"{r.hist.test_acc[-1]:>9.4f}")
    (fe, fl), (re_, rl), (be, bl) = med
    print(f"  time relative to fastsoftmax: loss only {rl / fl:.1f}x (reference), "
          f"{bl / fl:.1f}x (textbook); whole epoch {re_ / fe:.2f}x (reference), "
          f"{be / fe:.2f}x (textbook)")
    print("  (fastsoftmax.reference is the plain-NumPy test oracle, written for clarity and "
          "every edge case, not for speed)")

    if args.plot is not None:
        _save_plot(args.plot, hist, f"fastsoftmax demo: MLP {arch} on digits, "
                                    f"test accuracy {acc:.4f}")
        print(f"saved the loss and accuracy curves to {args.plot}")
    return 0


def main(argv=None):
    """Run the demo on its own (``python -m fastsoftmax._cli.demo``)."""
    parser = add_parser(argparse.ArgumentParser(prog="python -m fastsoftmax demo",
                                                description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
