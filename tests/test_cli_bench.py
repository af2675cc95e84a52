"""The benchmarking and info tooling: bench, info, warmup, the shared registry, asv.

Structure only: no test asserts a wall-clock time (the machine is shared).
Commands that import PyTorch/JAX run in subprocesses, so the test process's
JAX configuration (``jax_enable_x64``) and thread settings stay untouched.
"""

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _bench_registry as R
from fastsoftmax._cli import bench, info, warmup

ROOT = Path(__file__).resolve().parents[1]
_SHIM = ("import argparse, sys\n"
         "from fastsoftmax._cli import {name} as m\n"
         "p = argparse.ArgumentParser()\n"
         "m.add_parser(p)\n"
         "sys.exit(m.run(p.parse_args(sys.argv[1:])))\n")


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def run_cli(name, *args, timeout=900, **env):
    """Run one subcommand's module in a fresh interpreter (independent of the other commands)."""
    return subprocess.run([sys.executable, "-c", _SHIM.format(name=name), *map(str, args)],
                          cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def _parse(mod, *argv):
    p = argparse.ArgumentParser()
    mod.add_parser(p)
    return p.parse_args(list(argv))


# --------------------------------------------------------------------- registry
def test_registry_covers_the_public_api():
    public = set(fastsoftmax.__all__)
    assert set(R.KERNELS) <= public
    assert set(R.ALL_KERNELS) <= public
    for k in R.ALL_KERNELS:
        impls = R.impls_for(k)
        assert impls[:2] == ("fastsoftmax", "reference")
        assert {"torch", "jax"} <= set(impls)
        assert R.grid_for(k), k
        assert R.grid_for(k, quick=True), k
    assert {k for k in R.ALL_KERNELS if "copy" in R.impls_for(k)} == {
        "softmax", "cross_entropy_with_grad"}
    assert "scipy" in R.impls_for("logsumexp")
    assert "scipy" not in R.impls_for("cross_entropy")
    # SPEC §6's grid
    assert R.grid_for("softmax") == R.SPEC_GRID
    assert ((64, 1000, 64), 1) in R.SPEC_GRID
    # no elementwise kernel over a non-last axis; linear cases are (N, H, V), the size
    assert all(ax == -1 for _, ax in R.grid_for("sigmoid"))
    assert R.grid_for("linear_cross_entropy") == (((8192, 1024, 32000), -1),)
    assert not R.applies("linear_cross_entropy", (4096, 1000), -1)
    assert "unfused" in R.impls_for("linear_cross_entropy")
    assert "unfused" not in R.impls_for("cross_entropy_with_grad")
    with pytest.raises(ValueError, match="unknown kernel"):
        R.grid_for("softmin")


@pytest.mark.parametrize("kernel", R.ALL_KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_registry_callables_agree(kernel, dtype):
    """Every local implementation of a case computes the same thing (the registry's wiring)."""
    shape, axis = R.grid_for(kernel, quick=True)[-1]
    inp = R.make_inputs(kernel, shape, axis, dtype, seed=3)
    again = R.make_inputs(kernel, shape, axis, dtype, seed=3)
    for name, a in inp.arrays.items():           # seeded
        np.testing.assert_array_equal(a, again[name])
        assert a.dtype == (np.int64 if name == "target" and a.dtype.kind == "i" else dtype)

    def first(r):
        r = r[0] if isinstance(r, tuple) else r
        r = r.detach().numpy() if hasattr(r, "detach") else r
        return np.asarray(r, dtype=np.float64)

    want = first(R.make_callable(kernel, "reference", inp)())
    tol = 2e-4 if dtype == "float32" else 1e-9
    impls = ["fastsoftmax"] + [i for i in ("scipy", "torch", "unfused")
                               if i in R.impls_for(kernel) and R.peer_status(i)[0]]
    for impl in impls:
        got = first(R.make_callable(kernel, impl, inp)())
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-2, err_msg=impl)
    with pytest.raises(R.Unavailable):
        R.make_callable(kernel, "copy" if kernel not in R.COPY_FLOOR else "nonesuch", inp)
    inp.release()


@pytest.mark.parametrize("kernel", ["softmax", "cross_entropy_with_grad"])
def test_registry_copy_floor_and_release(kernel):
    inp = R.make_inputs(kernel, (8, 5), -1, "float32")
    assert not inp["dst"].any()
    R.make_callable(kernel, "copy", inp)()
    np.testing.assert_array_equal(inp["dst"], inp["x"])
    inp.release()
    assert inp.arrays == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc-based peak reset")
def test_subprocess_extra_rss_sees_an_allocation_and_only_it():
    big = R.subprocess_extra_rss("import numpy as np\nx = np.ones(1 << 23)",  # 64 MiB, before
                                 "y = np.ones(1 << 22)", "z = np.ones(16)")   # 32 MiB, measured
    assert 32 << 20 <= big["extra_bytes"] < 40 << 20, big
    assert big["base_bytes"] >= 64 << 20
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        R.subprocess_extra_rss("", "1 / 0")


def test_tracemalloc_peak_sees_an_allocation():
    assert R.tracemalloc_peak(lambda: np.ones(1 << 16)) >= 8 * (1 << 16)
    assert R.tracemalloc_peak(lambda: None) < 1024


# ------------------------------------------------------------------ bench units
def test_parse_shapes():
    assert bench.parse_shapes("4096x1000, 64x1000x64:1") == [((4096, 1000), -1),
                                                             ((64, 1000, 64), 1)]
    for bad in ("4096xa", "0x3", "4x5:2"):
        with pytest.raises(ValueError):
            bench.parse_shapes(bad)


def test_time_callable_structure():
    calls = []
    best, number, samples = bench.time_callable(lambda: calls.append(1), budget=0.01,
                                                min_loop=0.001)
    assert number >= 1 and len(samples) >= 3
    assert best == min(samples) and best >= 0
    assert len(calls) >= 1 + number * len(samples)
    best, number, samples = bench.time_callable(lambda: None, repeat=5, min_loop=0.0005)
    assert len(samples) == 5


def test_time_interleaved_takes_turns():
    # each callable records its name; after the untimed call and the calibration
    # loops, the timed loops must alternate a, b, a, b, ...
    seq = []
    fns = {"a": lambda: seq.append("a"), "b": lambda: seq.append("b")}
    timed = bench.time_interleaved(fns, repeat=4, min_loop=0.0005)
    assert set(timed) == {"a", "b"}
    for name, (best, number, samples) in timed.items():
        assert len(samples) == 4 and best == min(samples) and number >= 1
    na, nb = timed["a"][1], timed["b"][1]
    # the last 3 rounds: `na` calls of a, then `nb` of b, each round
    tail = seq[len(seq) - 3 * (na + nb):]
    assert tail == (["a"] * na + ["b"] * nb) * 3
    # a callable that is done drops out while the other keeps going
    slow_calls = []
    timed = bench.time_interleaved({"fast": lambda: None,
                                    "slow": lambda: slow_calls.append(time.sleep(0.002))},
                                   budget=0.05, min_loop=0.001)
    assert len(timed["fast"][2]) >= 3 and len(timed["slow"][2]) >= 3
    assert timed["slow"][0] >= 0.002


def test_progress_bar_lines():
    out = io.StringIO()
    p = bench.Progress(3, stream=out)
    for i in range(3):
        p.update(f"step {i}", 0)                 # "now running": silent off a terminal
        p.update(f"step {i}")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("[" + "#" * 28 + "] 3/3")


def _rec(kernel, shape, impl, seconds, dtype="float32", axis=None):
    axis = len(shape) - 1 if axis is None else axis
    return {"kernel": kernel, "shape": list(shape), "axis": axis, "dtype": dtype,
            "label": R.shape_label(shape, axis), "impl": impl, "seconds": seconds,
            "number": 1, "repeats": 3, "samples": [seconds] * 3}


def test_targets_and_table_from_synthetic_timings():
    res = []
    for shape in ((4096, 1000), (256, 32000)):
        res += [_rec("softmax", shape, "fastsoftmax", 1.0), _rec("softmax", shape, "torch", 2.0),
                _rec("softmax", shape, "jax", 0.5), _rec("softmax", shape, "reference", 10.0),
                _rec("softmax", shape, "copy", 0.6)]
        res += [_rec("cross_entropy_with_grad", shape, "fastsoftmax", 1.0),
                _rec("cross_entropy_with_grad", shape, "torch", 4.0),
                _rec("cross_entropy_with_grad", shape, "reference", 3.0)]
        res += [_rec("softmax", shape, "fastsoftmax", 1.0, "float64"),
                _rec("softmax", shape, "torch", 0.9, "float64")]
    extras = {"small_call_seconds": 2e-6, "softmax_out_extra_bytes": 4096,
              "ce_inplace_extra_bytes": 100, "ce_inplace_logits_bytes": 16_384_000,
              "cold_start_seconds": 0.5}
    targets = {t["target"]: t for t in bench.evaluate_targets(res, extras)}
    status = {k: v["status"] for k, v in targets.items()}
    assert status["softmax vs torch.softmax: <= 1.0 on every shape"] == "met"
    assert status["softmax vs torch.softmax: geometric mean <= 0.7"] == "met"       # 0.5
    assert status["softmax vs the faster of torch and jax: <= 1.0 on every shape"] == "NOT met"
    assert status["cross_entropy_with_grad vs F.cross_entropy + backward(): <= 0.35 on every "
                  "shape"] == "met"                                               # 0.25
    assert "not measured" == status["cross_entropy_with_grad vs jitted jax.value_and_grad: "
                                    "<= 0.7 on every shape"]
    assert status["every kernel vs fastsoftmax.reference: <= 0.2 on every shape"] == "NOT met"
    assert "cross_entropy_with_grad" in targets[
        "every kernel vs fastsoftmax.reference: <= 0.2 on every shape"]["measured"]
    assert status["softmax 4096x1000 vs np.copyto: <= 2.0"] == "met"               # 1.67
    assert status["float64 softmax vs torch.softmax float64: geometric mean <= 1.0"] == "NOT met"
    assert status["one softmax call on a (4, 16) array: <= 3 us"] == "met"
    assert status["extra memory, softmax with out=: < 1 KiB (tracemalloc peak)"] == "NOT met"
    assert status["extra memory, cross_entropy_with_grad(inplace=True): < 1% of the logits"] \
        == "met"
    assert status["cold start (fresh process: import + first softmax call, cache warm): <= 0.6 s"] \
        == "met"
    tab = bench.table(res).splitlines()
    assert tab[0].startswith("| kernel | shape | dtype | fastsoftmax ms | reference ms | "
                             "fs/reference |")
    assert len(tab) == 2 + 6                     # header, rule, 2 kernels x 2 shapes x 2 dtypes
    row = next(r for r in tab if r.startswith("| softmax | 4096x1000 | float32"))
    assert "| 0.50 |" in row                     # fs/torch
    assert row.count("|") == tab[0].count("|")


def test_bench_rejects_bad_arguments(capsys):
    for argv in (["--kernels", "softmin"], ["--peers", "numpyro"], ["--dtype", "float16"],
                 ["--shapes", "4x"], ["--threads", "100000"]):
        assert bench.run(_parse(bench, *argv)) == 2
        assert "bench:" in capsys.readouterr().err


# ------------------------------------------------------------------ bench runs
def test_bench_quick_run_table_json_plot(tmp_path):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    peers = "reference,scipy,torch,jax,copy"
    r = run_cli("bench", "--quick", "--kernels", "softmax,cross_entropy_with_grad",
                "--peers", peers, "--budget", "0.02", "--min-loop", "0.002",
                "--json", js, "--plot", png)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "python -m fastsoftmax bench" in out and "--quick" in out
    machine = next(line for line in out.splitlines() if line.startswith("machine: "))
    for word in ("cores", "threads", "numba", "numpy", "python"):
        assert word in machine
    assert re.search(r"\[[#.]+\] \d+/\d+", r.stderr)  # the progress bar went to stderr
    table = [line for line in out.splitlines() if line.startswith("| ")]
    head = table[0]
    assert head.startswith("| kernel | shape |") and "fastsoftmax ms" in head
    available = [p for p in peers.split(",") if R.peer_status(p)[0]]
    for p in available:
        assert f"| {p} ms | fs/{p} |" in head
    for k in ("softmax", "cross_entropy_with_grad"):
        for shape, ax in R.grid_for(k, quick=True):
            assert any(line.startswith(f"| {k} | {R.shape_label(shape, ax)} |")
                       for line in table), (k, shape)
    assert "### SPEC §6 targets" in out
    assert re.search(r"\d+ met, \d+ not met, \d+ not measured\.", out)

    data = json.loads(js.read_text())
    assert {"command", "machine", "settings", "results", "extras", "targets",
            "skipped"} <= set(data)
    assert data["machine"]["threads"] >= 1 and data["machine"]["cpu"]
    assert data["machine"]["versions"]["numba"]
    impls = {rec["impl"] for rec in data["results"]}
    assert {"fastsoftmax", *available} <= impls
    for rec in data["results"]:
        assert {"kernel", "shape", "axis", "dtype", "impl", "seconds", "number",
                "samples"} <= set(rec)
        assert rec["seconds"] > 0 and rec["seconds"] == min(rec["samples"])
    # float32 is the default dtype; the extras add float64 softmax against torch
    f64 = {(rec["kernel"], rec["impl"]) for rec in data["results"] if rec["dtype"] == "float64"}
    assert f64 == ({("softmax", "fastsoftmax"), ("softmax", "torch")}
                   if "torch" in available else set())
    assert {"small_call_seconds", "softmax_out_extra_bytes", "ce_inplace_extra_bytes",
            "cold_start_seconds"} <= set(data["extras"])
    assert all(t["status"] in ("met", "NOT met", "not measured") for t in data["targets"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_quick_linear_time_and_memory(tmp_path):
    js = tmp_path / "b.json"
    r = run_cli("bench", "--quick", "--kernels", "linear_cross_entropy", "--peers",
                "torch,reference,unfused", "--budget", "0.02", "--min-loop", "0.002", "--json", js)
    assert r.returncode == 0, r.stderr[-3000:]
    (shape, _), = R.grid_for("linear_cross_entropy", quick=True)
    label = R.shape_label(shape)
    assert any(line.startswith(f"| linear_cross_entropy | {label} |")
               for line in r.stdout.splitlines())
    assert "### linear_cross_entropy: peak extra memory (float32)" in r.stdout
    mem = json.loads(js.read_text())["extras"]["linear_memory"]
    impls = {m["impl"] for m in mem}
    assert {"fastsoftmax", "unfused"} <= impls and "reference" not in impls
    by = {m["impl"]: m for m in mem}
    logits = shape[0] * shape[2] * 4
    # the unfused path holds the logits; the chunked one (a single block at this size)
    # holds one block of them too, so only the unfused lower bound is certain
    assert by["unfused"]["extra_bytes"] >= logits
    for m in mem:
        assert m["logits_bytes"] == logits and m["extra_bytes"] > 0
        assert f"| {label} | {m['impl']} |" in r.stdout


def test_bench_custom_shapes_float64_no_extras(tmp_path):
    js = tmp_path / "b.json"
    r = run_cli("bench", "--kernels", "logsumexp,sigmoid", "--shapes", "64x33,4x9x5:1",
                "--dtype", "float64", "--peers", "reference", "--repeat", "2",
                "--min-loop", "0.001", "--no-extras", "--threads", "1", "--json", js)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(js.read_text())
    assert data["machine"]["threads"] == 1
    got = {(rec["kernel"], tuple(rec["shape"]), rec["axis"], rec["impl"])
           for rec in data["results"]}
    assert got == {("logsumexp", (64, 33), 1, "fastsoftmax"), ("logsumexp", (64, 33), 1,
                                                               "reference"),
                   ("logsumexp", (4, 9, 5), 1, "fastsoftmax"), ("logsumexp", (4, 9, 5), 1,
                                                                "reference"),
                   ("sigmoid", (64, 33), 1, "fastsoftmax"), ("sigmoid", (64, 33), 1,
                                                             "reference")}
    assert all(rec["dtype"] == "float64" and rec["repeats"] == 2 for rec in data["results"])
    assert data["extras"] == {}
    assert "| logsumexp | 4x9x5 ax1 |" in r.stdout


def test_bench_skips_a_missing_peer_with_a_note(monkeypatch, capsys):
    monkeypatch.delenv("XLA_FLAGS", raising=False)   # bench sets it for JAX; undone afterwards
    real = R.peer_status
    monkeypatch.setattr(R, "peer_status",
                        lambda p: (False, "jax is not installed") if p == "jax" else real(p))
    args = _parse(bench, "--kernels", "softmax", "--shapes", "16x7", "--peers", "reference,jax",
                  "--repeat", "1", "--min-loop", "0.0005", "--no-extras")
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "skipped: jax: jax is not installed" in out
    head = next(line for line in out.splitlines() if line.startswith("| kernel"))
    assert "reference ms" in head and "jax" not in head
    assert "| softmax | 16x7 |" in out


# ------------------------------------------------------------------------ info
def test_info_prints_the_expected_fields(capsys):
    assert info.run(_parse(info)) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    for key in ("fastsoftmax", "python", "numba", "llvmlite", "numpy", "scipy", "torch", "jax",
                "threading layer", "threads", "CPU", "cores", "SIMD level", "LLVM host CPU",
                "cache directory", "cache contents", "cache loading"):
        assert key in fields, key
    import numba
    from fastsoftmax._kernels import _jit
    assert fields["cache loading"].split()[0] == (
        "none" if _jit.PYTHON_MODE else "lean" if _jit.LEAN_CACHE_LOAD else "Numba's")
    assert fields["fastsoftmax"] == fastsoftmax.__version__
    assert fields["numba"] == numba.__version__
    assert fields["threads"].startswith(str(numba.get_num_threads()))
    if numba.get_num_threads() > 1:   # a parallel kernel ran first, so the layer is known
        assert fields["threading layer"].split()[0] in ("omp", "tbb", "workqueue")
    assert fields["SIMD level"].split()[0] in info.SIMD_LEVELS + ("none",)
    path = fields["cache directory"].split(" [")[0]
    assert os.path.isabs(path)


def test_cache_dir_follows_numba_cache_dir():
    code = ("from fastsoftmax._cli.info import cache_dir; p, how = cache_dir(); "
            "print(p); print(how)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=_env(NUMBA_CACHE_DIR="/tmp/fastsoftmax-test-cache"), timeout=300)
    assert r.returncode == 0, r.stderr
    path, how = r.stdout.splitlines()
    assert path.startswith("/tmp/fastsoftmax-test-cache") and how == "NUMBA_CACHE_DIR"


def test_simd_level_from_flags():
    assert info.simd_level({"sse4_2", "avx", "avx2"}) == "avx2"
    assert info.simd_level({"avx512f", "avx2"}) == "avx512f"


# ---------------------------------------------------------------------- warmup
def test_warmup_covers_every_public_function():
    labels = [label for label, _ in warmup.calls("float32")]
    assert all(label.startswith("float32 ") for label in labels)
    called = {label.split()[1] for label in labels}
    assert set(fastsoftmax.__all__) <= called
    # serial and parallel sizes, rows and lanes, masks, temperature, targets, reductions
    for needle in ("rows small", "rows large", "lanes small", "lanes large", "where",
                   "temperature", "dist", "weight", "none", "inplace"):
        assert any(needle in label for label in labels), needle


def test_warmup_writes_bytecode_even_when_python_would_not(tmp_path, monkeypatch):
    import importlib.util
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in (pkg / "a.py", pkg / "sub" / "b.py"):
        f.write_text("X = 1\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert warmup.write_bytecode(str(pkg))
    for f in (pkg / "a.py", pkg / "sub" / "b.py"):
        assert os.path.exists(importlib.util.cache_from_source(str(f))), f
    (pkg / "c.py").write_text("def broken(:\n")           # one module that cannot compile
    assert not warmup.write_bytecode(str(pkg))


@pytest.mark.slow
def test_warmup_runs_and_fills_the_cache():
    r = run_cli("warmup", timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "float32:" in r.stdout and "float64:" in r.stdout and "total:" in r.stdout
    assert "fresh process, import fastsoftmax + first softmax call:" in r.stdout
    assert "bytecode: the package's modules are byte-compiled" in r.stdout
    # a second run only loads from the cache: it must still succeed
    r = run_cli("warmup", "--dtypes", "float32", "--no-check", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]


# ----------------------------------------------------------------- cache hygiene
PY = "py%d%d%s" % (sys.version_info[0], sys.version_info[1], sys.abiflags)


def _fake_cache(path, stamp):
    """A cache directory written by Numba's own index/data file class."""
    from numba.core.caching import IndexDataCacheFile
    cur = IndexDataCacheFile(str(path), f"mod.f-10.{PY}", stamp)
    cur.save(("sig a",), b"live a")
    cur.save(("sig b",), b"live b")
    (path / f"mod.f-10.{PY}.3.nbc").write_bytes(b"x" * 100)       # listed by no index
    IndexDataCacheFile(str(path), f"mod.g-20.{PY}", "an older stamp").save(("sig",), b"old")
    other = IndexDataCacheFile(str(path), f"mod.h-30.{PY}", stamp)
    other._version = "0.0.1"                                           # another Numba
    other.save(("sig",), b"other numba")
    (path / f"mod.k-40.{PY}.nbi").write_bytes(b"not a pickle")        # unreadable: kept
    (path / f"mod.k-40.{PY}.1.nbc").write_bytes(b"kept with it")
    (path / f"mod.m-50.{PY}.1.nbc").write_bytes(b"no index at all")
    (path / "forward.cpython-311.pyc").write_bytes(b"not Numba's")
    other_python = "mod.p-60.py27.nbi", "mod.p-60.py27.1.nbc"      # never judged
    for n in other_python:
        (path / n).write_bytes(b"another interpreter's")
    (path / f"mod.f-10.{PY}.nbi.tmp.0123").write_bytes(b"a write in progress")
    live = [f"mod.f-10.{PY}.1.nbc", f"mod.f-10.{PY}.2.nbc", f"mod.f-10.{PY}.nbi",
            f"mod.k-40.{PY}.1.nbc", f"mod.k-40.{PY}.nbi", *other_python]
    stale = [f"mod.f-10.{PY}.3.nbc", f"mod.g-20.{PY}.1.nbc", f"mod.g-20.{PY}.nbi",
             f"mod.h-30.{PY}.1.nbc", f"mod.h-30.{PY}.nbi", f"mod.m-50.{PY}.1.nbc"]
    return sorted(live), stale


def test_cache_inventory_tells_live_from_stale_files(tmp_path):
    live, stale = _fake_cache(tmp_path, "the current stamp")
    assert info.cache_inventory(str(tmp_path), "the current stamp") == (live, stale)
    # under another stamp, only the unreadable index, its data and the other
    # interpreter's files stay
    other = info.cache_inventory(str(tmp_path), "yet another stamp")
    assert other[0] == [f"mod.k-40.{PY}.1.nbc", f"mod.k-40.{PY}.nbi",
                        "mod.p-60.py27.1.nbc", "mod.p-60.py27.nbi"]
    sizes = sum((tmp_path / n).stat().st_size for n in stale)
    assert info.prune_cache(str(tmp_path), "the current stamp") == (len(stale), sizes)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        live + ["forward.cpython-311.pyc", f"mod.f-10.{PY}.nbi.tmp.0123"])
    assert info.prune_cache(str(tmp_path), "the current stamp") == (0, 0)
    assert info.cache_inventory(str(tmp_path / "missing"), "s") == ([], [])


@pytest.mark.skipif(fastsoftmax._kernels._jit.PYTHON_MODE, reason="needs compiled kernels")
def test_cache_inventory_keeps_the_kernels_in_use():
    from fastsoftmax._kernels import forward
    fastsoftmax.softmax(np.ones((4, 16), np.float32))          # loaded or compiled: indexed
    path, _ = info.cache_dir()
    index = forward.forward_rows_simple._cache._cache_file._index_name
    if not os.path.exists(os.path.join(path, index)):
        pytest.skip("the kernel cache is not writable here")
    live, stale = info.cache_inventory(path)
    assert index in live and index not in stale
    assert any(n.startswith(index[:-len(".nbi")]) and n.endswith(".nbc") for n in live)


def test_warmup_prunes_stale_cache_files(tmp_path, monkeypatch, capsys):
    from fastsoftmax._kernels import _jit
    live, stale = _fake_cache(tmp_path, _jit._package_stamp())
    monkeypatch.setattr(info, "cache_dir", lambda: (str(tmp_path), "test"))
    monkeypatch.setattr(warmup, "calls", lambda dt: [])
    monkeypatch.setattr(warmup, "write_bytecode", lambda pkg: True)
    args = argparse.Namespace(dtypes="float32", no_check=True, keep_stale=True)
    assert warmup.run(args) == 0
    assert {p.name for p in tmp_path.iterdir()} >= set(live + stale)
    assert "cache: removed" not in capsys.readouterr().out
    args.keep_stale = False
    assert warmup.run(args) == 0
    assert f"cache: removed {len(stale)} stale files" in capsys.readouterr().out
    names = {p.name for p in tmp_path.iterdir()}
    assert names >= set(live) and not names & set(stale)


def test_dispatcher_runs_info(capsys):
    if not (ROOT / "fastsoftmax" / "_cli" / "demo.py").exists():
        pytest.skip("fastsoftmax/_cli/demo.py does not exist yet")
    from fastsoftmax._cli import main
    with pytest.raises(SystemExit) as exc:
        main(["info", "--no-init"])
    assert exc.value.code == 0
    assert "cache directory:" in capsys.readouterr().out


# ------------------------------------------------------------------------- asv
@pytest.mark.slow
def test_asv_suite_runs(tmp_path):
    """``asv run --python=same --quick`` on a small slice of the real suite exits 0."""
    pytest.importorskip("asv")
    conf = json.loads((ROOT / "asv_bench" / "asv.conf.json").read_text())
    assert conf["repo"] == ".." and conf["environment_type"] == "virtualenv"
    assert conf["benchmark_dir"] == "benchmarks" and conf["branches"] == ["main"]
    assert "--no-build-isolation" in conf["build_command"][0]
    assert {"setuptools", "wheel"} <= set(conf["matrix"]["req"])
    # the same configuration, with every path it writes under tmp_path
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "asv_bench" / "benchmarks"),
                env_dir=str(tmp_path / "env"), results_dir=str(tmp_path / "results"),
                html_dir=str(tmp_path / "html"))
    cfile = tmp_path / "asv.conf.json"
    cfile.write_text(json.dumps(conf))
    home = tmp_path / "home"
    home.mkdir()
    env = _env(HOME=str(home), ASV_PYTHONPATH=str(ROOT), FASTSOFTMAX_ASV_QUICK="1",
               FASTSOFTMAX_ASV_PEERS="reference,unfused,copy", FASTSOFTMAX_ASV_DTYPES="float32")
    env.pop("PYTHONPATH")
    asv = [sys.executable, "-m", "asv"]
    r = subprocess.run(asv + ["machine", "--yes", "--machine", "test", "--config", str(cfile)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    bench_re = (r"kernels\.Softmax\.|kernels\.CrossEntropyWithGrad\.|kernels\.LinearCross|"
                r"startup\.|memory\.Memory\.track|memory\.LinearMemory")
    r = subprocess.run(asv + ["run", "--config", str(cfile), "--python=same", "--quick",
                              "--show-stderr", "--machine", "test", "--bench", bench_re],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    for name in ("kernels.Softmax.time_kernel", "kernels.CrossEntropyWithGrad.time_kernel",
                 "startup.ColdStart.timeraw_import_and_first_softmax",
                 "startup.SmallCall.time_call_4x16", "kernels.LinearCrossEntropy.time_kernel",
                 "memory.LinearMemory.peakmem_linear_cross_entropy",
                 "memory.LinearMemory.track_extra_bytes"):
        assert name.split(".")[-1] in out, name
    assert " failed" not in out
    assert shutil.which("git")  # asv needed it to read the repository
