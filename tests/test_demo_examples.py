"""``python -m fastsoftmax demo`` and the scripts in ``examples/``.

The demo is exercised through its module (``add_parser`` / ``run``), as the
CLI dispatcher calls it, and once through ``python -m fastsoftmax demo`` when
every subcommand module is present. Output structure is checked, never
wall-clock times.
"""

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastsoftmax._cli import demo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s+train loss (\d+\.\d+)\s+train acc (\d\.\d+)\s+"
                        r"test acc (\d\.\d+)\s+(\d+\.\d+) s$")
ACCURACY_LINE = re.compile(r"^test accuracy (\d\.\d+) \((\d+)/(\d+)\) after (\d+) epochs$")
TIMING_ROW = re.compile(r"^\s+(fastsoftmax\.layers\.SoftmaxWithLoss|fastsoftmax\.reference|"
                        r"textbook NumPy layer \(source notes\))\s+(\d+\.\d+) ms\s+(\d+\.\d+) ms\s+"
                        r"(\d+\.\d+) %\s+(\d\.\d+)$")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m fastsoftmax demo")
    demo.add_parser(parser)
    return parser.parse_args(argv)


def run_demo(argv, capsys):
    code = demo.run(parse(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_output(out, epochs):
    lines = out.splitlines()
    epoch_lines = [EPOCH_LINE.match(line) for line in lines if line.startswith("epoch")]
    assert len(epoch_lines) == epochs and all(epoch_lines), out
    for i, m in enumerate(epoch_lines, 1):
        assert int(m.group(1)) == i and int(m.group(2)) == epochs
        train_loss = float(m.group(3))
        assert 0 < train_loss < 5
        for g in (4, 5):
            assert 0.0 <= float(m.group(g)) <= 1.0
    acc_lines = [ACCURACY_LINE.match(line) for line in lines if "test accuracy" in line]
    assert len(acc_lines) == 1 and acc_lines[0], out
    acc = float(acc_lines[0].group(1))
    assert int(acc_lines[0].group(3)) == 360 and int(acc_lines[0].group(4)) == epochs
    assert int(acc_lines[0].group(2)) == round(acc * 360)
    assert acc == float(epoch_lines[-1].group(5))        # the last epoch's test accuracy
    rows = [TIMING_ROW.match(line) for line in lines]
    rows = [r for r in rows if r]
    assert [r.group(1) for r in rows] == ["fastsoftmax.layers.SoftmaxWithLoss",
                                          "fastsoftmax.reference",
                                          "textbook NumPy layer (source notes)"], out
    for r in rows:
        epoch_ms, loss_ms, share = float(r.group(2)), float(r.group(3)), float(r.group(4))
        assert epoch_ms > 0 and 0 < loss_ms <= epoch_ms and 0 < share <= 100
    assert "time relative to fastsoftmax" in out
    # the same seed and loop: the three timing runs train the same network
    return acc, [float(m.group(3)) for m in epoch_lines], [float(r.group(5)) for r in rows]


# ------------------------------------------------------------------------------ demo
def test_demo_short_run(capsys):
    code, out, err = run_demo(["--epochs", "2", "--seed", "1", "--hidden", "32", "--progress"],
                              capsys)
    assert code == 0
    acc, losses, timing_accs = check_output(out, 2)
    assert losses[1] < losses[0]                       # it learns
    assert acc > 0.5
    assert timing_accs[0] == pytest.approx(acc, abs=1 / 360 + 1e-12)
    assert "MLP 64-32-10" in out and "seed 1" in out
    assert "1437 training / 360 test" in out
    # the progress bar: on stderr, redrawn per batch, cleared at the end of each epoch
    assert "\r" in err and "[" in err and "45/45" in err
    assert "epoch 1/2 [" in err and "#" in err
    assert "test accuracy" not in err


def test_demo_defaults_reach_095(capsys):
    code, out, err = run_demo(["--no-progress"], capsys)
    assert code == 0
    acc, _, timing_accs = check_output(out, demo.DEFAULT_EPOCHS)
    assert acc >= 0.95, out
    assert all(a >= 0.95 for a in timing_accs), out
    assert "MLP 64-100-10" in out
    assert "\r" not in err and "[#" not in err          # --no-progress: no bar


def test_demo_is_deterministic(capsys):
    def strip_times(out):
        return [line.rsplit("  ", 1)[0] for line in out.splitlines() if line.startswith("epoch")]

    _, out1, _ = run_demo(["--epochs", "1", "--seed", "7", "--no-progress"], capsys)
    _, out2, _ = run_demo(["--epochs", "1", "--seed", "7", "--no-progress"], capsys)
    _, out3, _ = run_demo(["--epochs", "1", "--seed", "8", "--no-progress"], capsys)
    assert strip_times(out1) == strip_times(out2)
    assert strip_times(out1) != strip_times(out3)


def test_demo_momentum_and_two_hidden_layers(capsys):
    code, out, _ = run_demo(["--epochs", "2", "--optimizer", "momentum", "--hidden", "48,24",
                             "--batch-size", "64", "--no-progress"], capsys)
    assert code == 0
    check_output(out, 2)
    assert "MLP 64-48-24-10" in out and "SGD with momentum" in out and "batch 64" in out


def test_demo_plot(tmp_path, capsys):
    path = tmp_path / "curves.png"
    code, out, _ = run_demo(["--epochs", "2", "--no-progress", "--plot", str(path)], capsys)
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert str(path) in out


def test_demo_plot_folder_missing(tmp_path, capsys):
    code, out, err = run_demo(["--plot", str(tmp_path / "nope" / "x.png")], capsys)
    assert code == 2 and "does not exist" in err and out == ""


def test_demo_without_scikit_learn(monkeypatch, capsys):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)      # import raises ImportError
    code, out, err = run_demo(["--epochs", "1"], capsys)
    assert code != 0
    assert "scikit-learn" in err and "pip install" in err and out == ""


def test_demo_without_matplotlib(monkeypatch, tmp_path, capsys):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    code, out, err = run_demo(["--epochs", "1", "--plot", str(tmp_path / "a.png")], capsys)
    assert code != 0 and "matplotlib" in err and out == ""
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--epochs", "x"], ["--hidden", "0"],
                                  ["--hidden", "a,b"], ["--lr", "-1"], ["--lr", "nan"],
                                  ["--optimizer", "sgd"], ["--progress", "--no-progress"],
                                  ["--seed", "-1"], ["--batch-size", "0"]])
def test_demo_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2


def test_demo_argument_defaults():
    args = parse([])
    assert args.epochs == demo.DEFAULT_EPOCHS and args.seed == 0
    assert args.hidden == (100,) and args.plot is None and args.progress is None
    assert parse(["--hidden", "128, 64"]).hidden == (128, 64)


def test_demo_layers_backward():
    """The demo's own Affine / ReLU layers are right (finite differences)."""
    from fastsoftmax.testing import check_grad, check_vjp

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    W, b = rng.standard_normal((3, 5)), rng.standard_normal(5)
    layer = demo.Affine(W.copy(), b.copy())
    layer.forward(x)
    v = rng.standard_normal((4, 5))
    dx = layer.backward(v)
    assert check_vjp(lambda z: demo.Affine(W, b).forward(z), x, dx, cotangent=v) < 1e-8
    assert check_grad(lambda w: np.sum(demo.Affine(w, b).forward(x) * v), W,
                      layer.grads[0]) < 1e-8
    assert check_grad(lambda c: np.sum(demo.Affine(W, c).forward(x) * v), b,
                      layer.grads[1]) < 1e-8
    relu = demo.ReLU()
    xr = rng.standard_normal((4, 5)) + 0.05
    relu.forward(xr)
    assert check_vjp(lambda z: demo.ReLU().forward(z), xr, relu.backward(v), cotangent=v,
                     eps=1e-5) < 1e-8


def test_demo_loss_layers_agree():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 10)).astype(np.float32)
    t = rng.integers(0, 10, 32)
    from fastsoftmax.layers import SoftmaxWithLoss

    fast, reference, textbook = (SoftmaxWithLoss(), demo.ReferenceSoftmaxWithLoss(),
                                 demo.TextbookSoftmaxWithLoss())
    losses = [layer.forward(x, t) for layer in (fast, reference, textbook)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    np.testing.assert_allclose(losses[0], losses[2], rtol=1e-5)   # the note's + 1e-7 in log
    for layer in (reference, textbook):
        g = layer.backward(1)
        assert g.dtype == np.float32
        np.testing.assert_allclose(fast.backward(1), g, rtol=1e-5, atol=1e-8)


def _cli_modules_present():
    return all(importlib.util.find_spec(f"fastsoftmax._cli.{name}") is not None
               for name in ("demo", "bench", "info", "warmup"))


@pytest.mark.skipif(not _cli_modules_present(),
                    reason="python -m fastsoftmax needs every subcommand module")
def test_python_m_fastsoftmax_demo():
    proc = subprocess.run([sys.executable, "-m", "fastsoftmax", "demo", "--epochs", "2",
                           "--no-progress"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    check_output(proc.stdout, 2)


# ------------------------------------------------------------------------------ examples
def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name):
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_example_train_digits():
    out = run_example("train_digits")
    m = re.search(r"^test accuracy (\d\.\d+)$", out, re.M)
    assert m and float(m.group(1)) >= 0.95, out
    assert len(re.findall(r"^epoch\s+\d+\s+train loss", out, re.M)) == 20


def test_example_train_digits_layers():
    from fastsoftmax.testing import check_vjp

    mod = load_example("train_digits")
    rng = np.random.default_rng(3)
    net = mod.TwoLayerNet(4, 6, 3, rng)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    t = rng.integers(0, 3, 5)
    net.forward(x, t)
    dx = net.backward()
    assert dx.shape == x.shape
    assert dx.dtype == np.float32
    # the whole network's input gradient against finite differences, with float64 weights
    net64 = mod.TwoLayerNet(4, 6, 3, np.random.default_rng(3))
    for layer in net64.layers:
        layer.params[:] = [p.astype(np.float64) for p in layer.params]
    x64 = x.astype(np.float64) + 0.01
    net64.forward(x64, t)
    g = net64.backward()
    assert check_vjp(lambda z: net64.forward(z, t), x64, g, cotangent=1.0, eps=1e-5) < 1e-6


def test_example_attention():
    out = run_example("attention")
    assert "OK" in out and "MISMATCH" not in out


@pytest.mark.parametrize("use_torch", [False, True])
def test_example_attention_checks(use_torch):
    if use_torch:
        pytest.importorskip("torch")
    mod = load_example("attention")
    against, diffs = mod.main(batch=1, heads=2, T=5, d=3, seed=1, use_torch=use_torch)
    assert ("PyTorch" in against) == use_torch
    assert set(diffs) >= {"dq", "dk", "dv"}
    assert max(diffs.values()) < (1e-12 if use_torch else 1e-8), diffs


def test_example_attention_mask_and_backward():
    mod = load_example("attention")
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 1, 4, 3)) for _ in range(3))
    mask = mod.causal_mask(4)
    out, p = mod.attention_forward(q, k, v, mask)
    assert np.all(p[..., ~mask] == 0)
    np.testing.assert_allclose(out[..., 0, :], v[..., 0, :], rtol=1e-14)  # first query sees key 0
    dq, dk, dv = mod.attention_backward(np.ones_like(out), q, k, v, p)
    # the last key is seen only by the last query
    np.testing.assert_allclose(dv[..., -1, :], p[..., -1, -1][..., None] * np.ones(3),
                               rtol=1e-13)


def test_example_distillation():
    out = run_example("distillation")
    assert "the student learned" in out


def test_example_distillation_learns():
    mod = load_example("distillation")
    history = mod.main(epochs=8, n_train=2000, n_test=500)
    kl0, agree0 = history[0][1], history[0][2]
    kl, agree = history[-1][1], history[-1][2]
    assert kl < 0.25 * kl0
    assert agree > agree0 + 0.4 and agree > 0.7
    kls = [h[1] for h in history]
    assert kls[-1] == min(kls[:3] + [kls[-1]])


def test_example_distillation_gradient():
    """The T^2 / (1/T) convention of the example is the gradient of T^2 * CE(z / T, p)."""
    import fastsoftmax as fs
    from fastsoftmax.testing import check_grad

    rng = np.random.default_rng(2)
    z = rng.standard_normal((6, 4)) * 3
    p = fs.softmax(rng.standard_normal((6, 4)) * 3, temperature=2.0)
    T = 2.0
    _, g = fs.cross_entropy_with_grad(z / T, p, grad_output=T ** 2)
    assert check_grad(lambda s: T ** 2 * fs.cross_entropy(s / T, p), z, g / T) < 1e-8
