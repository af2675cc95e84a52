"""``python -m fastsoftmax bench``: time every kernel against its peers.

Cases come from :mod:`fastsoftmax._bench_registry` (the same registry the asv
suite uses). Each callable is called once untimed (compilation, cache load,
first allocations), then timed timeit-style: a loop of ``number`` calls,
``number`` grown until one loop takes at least ``--min-loop`` seconds, repeated
(at least 3 times, more while the per-case ``--budget`` lasts, or exactly
``--repeat`` times); the reported time is the best loop divided by
``number``. The best, not the mean, because this machine is shared and noise
only ever adds time. The implementations of one case take turns, a loop of
each per round (``time_interleaved``), so that fastsoftmax and its peers are
timed under the same conditions even when the machine's speed drifts.

Output (stdout, Markdown, pasteable into the README): the exact command, a
machine line, a table (rows kernel x shape, columns fastsoftmax's time and per
peer its time and the ratio fastsoftmax/peer, below 1 meaning fastsoftmax is
faster), and the SPEC §6 targets marked met / NOT met / not measured. A
progress bar goes to stderr.
"""

import gc
import json
import math
import os
import platform
import shlex
import sys
import time

from .. import _bench_registry as R
from . import info as _info

_ENV_VARS = ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "XLA_FLAGS",
             "NUMBA_CACHE_DIR")
_LATENCY_SHAPE = (4, 16)
_MEMORY_SHAPE = (4096, 1000)


# --------------------------------------------------------------------- parser
def add_parser(p):
    p.add_argument("--kernels", default="all",
                   help="comma-separated kernels (default: the %d of SPEC §6: %s; extra: %s; "
                        "'every' for all)" % (len(R.KERNELS), ", ".join(R.KERNELS),
                                              ", ".join(R.EXTRA_KERNELS)))
    p.add_argument("--shapes", default=None,
                   help="comma-separated shapes like 4096x1000 or 64x1000x64:1 (':axis' sets "
                        "the class axis; default -1). Default: SPEC §6's grid")
    p.add_argument("--quick", action="store_true",
                   help="a reduced grid of small shapes (seconds, not minutes)")
    p.add_argument("--dtype", default="float32",
                   help="float32 (default), float64, or both comma-separated")
    p.add_argument("--peers", default=None,
                   help="comma-separated peers among %s (default: every installed one)"
                        % ", ".join(R.PEERS))
    p.add_argument("--repeat", type=int, default=None,
                   help="timing loops per case (default: at least 3, more within --budget)")
    p.add_argument("--budget", type=float, default=0.2,
                   help="seconds of timing per case when --repeat is not given (default 0.2)")
    p.add_argument("--min-loop", type=float, default=0.005,
                   help="minimum seconds per timing loop (default 0.005)")
    p.add_argument("--threads", type=int, default=None,
                   help="thread count for Numba, PyTorch and XLA (default: Numba's)")
    p.add_argument("--no-extras", action="store_true",
                   help="skip the extra SPEC §6 measurements (float64 softmax vs torch, a "
                        "(4, 16) call, extra memory, cold start)")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="draw the ratios fastsoftmax/peer per shape (matplotlib)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="save machine info and every timing as JSON")


def _parse_list(text, choices, what):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in choices]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(choices)}")
    return items


def parse_shapes(text):
    """``"4096x1000,64x1000x64:1"`` -> ``[((4096, 1000), -1), ((64, 1000, 64), 1)]``."""
    out = []
    for item in text.split(","):
        item = item.strip().lower().replace("(", "").replace(")", "")
        if not item:
            continue
        dims, _, axis = item.partition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("*", "x").replace(" ", "").split("x"))
            ax = int(axis) if axis else -1
        except ValueError:
            raise ValueError(f"cannot read shape {item!r}: write it like 4096x1000 or "
                             f"64x1000x64:1") from None
        if not shape or any(d <= 0 for d in shape) or not -len(shape) <= ax < len(shape):
            raise ValueError(f"bad shape/axis {item!r}")
        out.append((shape, ax))
    return out


# -------------------------------------------------------------------- timing
class _Loops:
    """One callable's timing state: timeit-style loops of ``number`` calls,
    ``number`` grown (at construction) until one loop takes ``min_loop``."""

    def __init__(self, fn, min_loop, warm):
        if warm:
            fn()
        self.fn = fn
        self.number = 1
        self.spent = 0.0
        while True:
            t = self._loop()
            if t >= min_loop or self.number >= 1 << 24:
                break
            grow = min_loop / t * 1.2 if t > 0 else 10.0
            self.number = max(self.number + 1, int(self.number * min(grow, 10.0)))
        self.samples = [t / self.number]
        self.need = 2 if t > 1.0 else 3

    def _loop(self):
        fn = self.fn
        t0 = time.perf_counter()
        for _ in range(self.number):
            fn()
        t = time.perf_counter() - t0
        self.spent += t
        return t

    def step(self):
        self.samples.append(self._loop() / self.number)

    def done(self, repeat, budget):
        if repeat:
            return len(self.samples) >= repeat
        return len(self.samples) >= self.need and (self.spent >= budget
                                                   or len(self.samples) >= 100)


def time_interleaved(fns, repeat=None, budget=0.2, min_loop=0.005, warm=True):
    """``{name: (best seconds per call, calls per loop, [seconds per call of each loop])}``
    for a dict of callables.

    Each callable gets what ``time_callable`` gives it (its own loop size, at
    least 3 loops, more while its ``budget`` lasts, or exactly ``repeat``), but
    the loops take turns, one loop of each callable per round. On a shared
    machine whose speed drifts over seconds (memory bandwidth here moved by 2x
    within minutes), timing the peers one after the other would compare them
    under different conditions; in turns, every ratio compares loops run
    moments apart.
    """
    gc_was = gc.isenabled()
    gc.disable()
    try:
        loops = {name: _Loops(fn, min_loop, warm) for name, fn in fns.items()}
        while True:
            active = [lp for lp in loops.values() if not lp.done(repeat, budget)]
            if not active:
                break
            for lp in active:
                lp.step()
    finally:
        if gc_was:
            gc.enable()
    return {name: (min(lp.samples), lp.number, lp.samples) for name, lp in loops.items()}


def time_callable(fn, repeat=None, budget=0.2, min_loop=0.005, warm=True):
    """``(best seconds per call, calls per loop, [seconds per call of each loop])``."""
    return time_interleaved({None: fn}, repeat, budget, min_loop, warm)[None]


class Progress:
    """A one-line progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, total, stream=None, width=28):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._len = 0

    def update(self, label, step=1):
        """Advance by ``step`` (0: only show what is running now) and redraw."""
        self.done = min(self.done + step, self.total)
        if not self.tty and step == 0:
            return
        now = time.perf_counter()
        if self.tty and now - self._last < 0.05 and self.done < self.total:
            return
        self._last = now
        frac = self.done / self.total
        fill = int(round(frac * self.width))
        line = (f"[{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total} "
                f"{now - self.t0:5.0f}s {label}")
        if self.tty:
            pad = max(0, self._len - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._len = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------- context
def command_line(args, env):
    """The command that reproduces this run (verbatim argv when run from the shell)."""
    argv = sys.argv[1:] if sys.argv else []
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0 in ("__main__.py", "fastsoftmax") and argv[:1] == ["bench"]:
        tail = argv[1:]
    else:
        tail = _argv_from_args(args)
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
    return (prefix + "python -m fastsoftmax " + shlex.join(["bench"] + tail)).rstrip()


def _argv_from_args(args):
    out = []
    for opt, default in (("kernels", "all"), ("shapes", None), ("dtype", "float32"),
                         ("peers", None), ("repeat", None), ("budget", 0.2),
                         ("min_loop", 0.005), ("threads", None), ("plot", None),
                         ("json", None)):
        v = getattr(args, opt, default)
        if v != default:
            out += ["--" + opt.replace("_", "-"), str(v)]
    for flag in ("quick", "no_extras"):
        if getattr(args, flag, False):
            out.append("--" + flag.replace("_", "-"))
    return out


def machine_info(threads):
    import numba
    usable, total = _info.core_count()
    torch_threads = None
    if "torch" in sys.modules:
        torch_threads = sys.modules["torch"].get_num_threads()
    return {
        "cpu": _info.cpu_model(),
        "simd": _info.simd_level(),
        "llvm_host_cpu": _info.host_cpu_name(),
        "cores": usable,
        "logical_cpus": total,
        "threads": threads,
        "numba_threading_layer": _info.threading_layer(init=False),
        "torch_threads": torch_threads,
        "xla_flags": os.environ.get("XLA_FLAGS") if "jax" in sys.modules else None,
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "platform": platform.platform(),
        "versions": R.versions(),
    }


class OtherLoad:
    """The share of the machine's CPU time that other processes used between start and stop.

    Busy jiffies of ``/proc/stat`` minus this process's own CPU time (threads
    and children included), over wall time x CPU count. None off Linux.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:3]) + sum(fields[5:8])   # user nice system, irq softirq steal
        tick = os.sysconf("SC_CLK_TCK")
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            own += ru.ru_utime + ru.ru_stime
        return busy / tick, own, time.perf_counter()

    def stop(self):
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy = end[0] - self.start[0]
        own = end[1] - self.start[1]
        wall = end[2] - self.start[2]
        cpus = os.cpu_count() or 1
        if wall <= 0:
            return None
        return max(0.0, min(1.0, (busy - own) / (wall * cpus)))


def machine_line(m):
    v = m["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("python", "fastsoftmax", "numba", "numpy", "scipy",
                                             "torch", "jax") if k in v)
    thr = f"{m['threads']} threads (Numba {m['numba_threading_layer']}"
    if m["torch_threads"] is not None:
        thr += f", torch {m['torch_threads']}"
    if m["xla_flags"]:
        thr += f", XLA_FLAGS={m['xla_flags']!r}"
    thr += ")"
    simd = m["simd"] or "no AVX"
    line = (f"{m['cpu']} ({simd}, LLVM {m['llvm_host_cpu']}), {m['cores']} cores; {thr}; "
            f"{platform.system()} {platform.machine()}; {libs}")
    other = m.get("other_processes_cpu_share")
    if other is not None:
        line += f"; other processes used {100 * other:.0f}% of the CPUs meanwhile"
    return line


def plot_subtitle(m):
    v = m["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("fastsoftmax", "numba", "numpy", "torch", "jax")
                     if k in v)
    return f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads; {libs}"


# ------------------------------------------------------------------ the run
def _cases(kernels, grid, dtypes, impls, quick):
    """[(kernel, shape, axis, dtype, [impls])] in run order."""
    out = []
    for k in kernels:
        g = [c for c in grid if R.applies(k, *c)] if grid is not None else R.grid_for(k, quick)
        if k == "softmax_jacobian" and grid is not None:
            g = R.grid_for(k, quick)         # (rows, C, C) outputs: its own grid
        for shape, ax in g:
            for dt in dtypes:
                imps = [i for i in R.impls_for(k) if i == "fastsoftmax" or i in impls]
                out.append((k, tuple(shape), ax % len(shape), dt, imps))
    return out


def _record(kernel, shape, axis, dtype, impl, best, number, samples):
    return {"kernel": kernel, "shape": list(shape), "axis": axis, "dtype": dtype,
            "label": R.shape_label(shape, axis), "impl": impl, "seconds": best,
            "number": number, "repeats": len(samples), "samples": samples}


def _time_cases(cases, args, progress, results, notes):
    for kernel, shape, axis, dtype, impls in cases:
        inp = R.make_inputs(kernel, shape, axis, dtype)
        label = f"{kernel} {R.shape_label(shape, axis)} {dtype}"
        fns = {}
        try:
            for impl in impls:
                try:
                    fns[impl] = R.make_callable(kernel, impl, inp)
                except R.Unavailable as e:
                    notes.setdefault(impl, str(e))
                    progress.update(f"{label} {impl}")
            progress.update(f"{label} {', '.join(fns)}", 0)
            timed = time_interleaved(fns, args.repeat, args.budget, args.min_loop)
            for impl, (best, number, samples) in timed.items():
                results.append(_record(kernel, shape, axis, dtype, impl, best, number,
                                       samples))
            progress.update(f"{label} {', '.join(fns)}", len(fns))
        finally:
            fns = timed = None
            inp.release()


def _extras(args, kernels, impls, dtypes, grid, progress, results, notes):
    """SPEC §6 measurements outside the main grid; returns a dict."""
    import numpy as np

    import fastsoftmax as fs
    extras = {}
    if "softmax" in kernels:
        # float64 softmax vs torch float64, unless float64 was timed anyway
        if "float64" not in dtypes and "torch" in impls:
            cases = _cases(["softmax"], grid, ["float64"], ["torch"], args.quick)
            _time_cases(cases, args, progress, results, notes)
        x = np.random.default_rng(0).standard_normal(_LATENCY_SHAPE).astype(np.float32)
        best, number, samples = time_callable(lambda: fs.softmax(x), args.repeat, args.budget,
                                              args.min_loop)
        extras["small_call_seconds"] = best
        extras["small_call_shape"] = list(_LATENCY_SHAPE)
        progress.update("softmax (4, 16) latency")
        x = np.random.default_rng(0).standard_normal(_MEMORY_SHAPE).astype(np.float32)
        out = np.empty_like(x)
        extras["softmax_out_extra_bytes"] = R.tracemalloc_peak(lambda: fs.softmax(x, out=out))
        extras["memory_shape"] = list(_MEMORY_SHAPE)
        progress.update("softmax out= memory")
    if "cross_entropy_with_grad" in kernels:
        x = np.random.default_rng(0).standard_normal(_MEMORY_SHAPE).astype(np.float32)
        t = np.random.default_rng(1).integers(0, _MEMORY_SHAPE[1], _MEMORY_SHAPE[0])
        extras["ce_inplace_extra_bytes"] = R.tracemalloc_peak(
            lambda: fs.cross_entropy_with_grad(x, t, inplace=True))
        extras["ce_inplace_logits_bytes"] = x.nbytes
        extras["memory_shape"] = list(_MEMORY_SHAPE)
        progress.update("cross_entropy_with_grad inplace memory")
    if "linear_cross_entropy" in kernels:
        extras["linear_memory"] = _linear_memory(kernels, impls, grid, args.quick, progress)
    if "softmax" in kernels:
        try:
            extras["cold_start_seconds"] = R.cold_start_seconds()
        except Exception as e:  # pragma: no cover
            extras["cold_start_error"] = f"{type(e).__name__}: {e}"
        progress.update("cold start")
    return extras


_LINEAR_MEMORY_IMPLS = ("fastsoftmax", "unfused", "torch")


def _linear_cases(impls, grid, quick):
    cases = _cases(["linear_cross_entropy"], grid, ["float32"], impls, quick)
    return [(shape, [i for i in imps if i in _LINEAR_MEMORY_IMPLS])
            for _, shape, _, _, imps in cases]


def _linear_memory(kernels, impls, grid, quick, progress):
    """Peak extra resident memory of one float32 linear_cross_entropy call, per implementation,
    each in a fresh interpreter: [{"shape", "impl", "extra_bytes", "logits_bytes"}]."""
    rows = []
    for shape, imps in _linear_cases(impls, grid, quick):
        n, _, v = shape
        for impl in imps:
            label = f"linear_cross_entropy {R.shape_label(shape)} memory {impl}"
            progress.update(label, 0)
            try:
                m = R.case_extra_rss("linear_cross_entropy", shape, "float32", impl)
            except RuntimeError as e:
                rows.append({"shape": list(shape), "impl": impl, "error": str(e)[-300:]})
            else:
                rows.append({"shape": list(shape), "impl": impl, "extra_bytes": m["extra_bytes"],
                             "seconds": m["seconds"], "logits_bytes": n * v * 4})
            progress.update(label)
    return rows


def _n_extras(kernels, impls, dtypes, grid, quick):
    n = 0
    if "linear_cross_entropy" in kernels:
        n += sum(len(imps) for _, imps in _linear_cases(impls, grid, quick))
    if "softmax" in kernels:
        n += 3
        if "float64" not in dtypes and "torch" in impls:
            n += sum(len(c[4]) for c in _cases(["softmax"], grid, ["float64"], ["torch"], quick))
    if "cross_entropy_with_grad" in kernels:
        n += 1
    return n


def run(args):
    env = {k: os.environ[k] for k in _ENV_VARS if os.environ.get(k)}
    try:
        kernels = (list(R.KERNELS) if args.kernels == "all" else
                   list(R.ALL_KERNELS) if args.kernels == "every" else
                   _parse_list(args.kernels, R.ALL_KERNELS, "kernel"))
        dtypes = _parse_list(args.dtype, ("float32", "float64"), "dtype")
        grid = parse_shapes(args.shapes) if args.shapes else None
        wanted = list(R.PEERS) if args.peers is None else _parse_list(args.peers, R.PEERS,
                                                                      "peer")
        threads = R.configure_threads(args.threads)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    notes = {}
    impls = []
    for p in wanted:
        ok, why = R.peer_status(p)
        if ok:
            impls.append(p)
        else:
            notes[p] = why
    cases = _cases(kernels, grid, dtypes, impls, args.quick)
    n_extra = 0 if args.no_extras else _n_extras(kernels, impls, dtypes, grid, args.quick)
    progress = Progress(sum(len(c[4]) for c in cases) + n_extra)
    load = OtherLoad()
    results = []
    t0 = time.perf_counter()
    try:
        _time_cases(cases, args, progress, results, notes)
        extras = ({} if args.no_extras else
                  _extras(args, kernels, impls, dtypes, grid, progress, results, notes))
    finally:
        progress.close()
    elapsed = time.perf_counter() - t0
    machine = machine_info(threads)
    machine["other_processes_cpu_share"] = load.stop()
    command = command_line(args, env)
    spec_grid = grid is None and not args.quick
    targets = evaluate_targets(results, extras)
    text = render(command, machine, results, notes, targets, args, elapsed, spec_grid, extras)
    print(text)
    if args.json:
        payload = {"command": command, "machine": machine,
                   "settings": {"repeat": args.repeat, "budget": args.budget,
                                "min_loop": args.min_loop, "quick": args.quick,
                                "shapes": args.shapes, "dtypes": dtypes, "kernels": kernels,
                                "peers": impls, "threads": threads},
                   "skipped": notes, "results": results, "extras": extras,
                   "targets": targets, "elapsed_seconds": elapsed}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=_json_default)
    if args.plot:
        plot(results, args.plot, plot_subtitle(machine))
    return 0


def _json_default(o):
    try:
        return o.item()
    except AttributeError:
        return str(o)


# ------------------------------------------------------------------- targets
def _index(results):
    return {(r["kernel"], tuple(r["shape"]), r["axis"], r["dtype"], r["impl"]): r["seconds"]
            for r in results}


def _ratios(results, kernel, peer, dtype="float32", combine=None):
    """[(label, fastsoftmax/peer)] over the shapes where both were timed."""
    idx = _index(results)
    out = []
    seen = set()
    for r in results:
        key = (r["kernel"], tuple(r["shape"]), r["axis"], r["dtype"])
        if r["kernel"] != kernel or r["dtype"] != dtype or r["impl"] != "fastsoftmax" \
                or key in seen:
            continue
        seen.add(key)
        peers = [peer] if isinstance(peer, str) else list(peer)
        times = [idx.get(key + (p,)) for p in peers]
        times = [t for t in times if t]
        if not times or (combine is None and len(times) != len(peers)):
            continue
        out.append((r["label"], r["seconds"] / min(times)))
    return out


def _gmean(vals):
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def evaluate_targets(results, extras):
    """SPEC §6, as [{target, measured, status}] with status met / NOT met / not measured."""
    rows = []

    def add(target, status, measured):
        rows.append({"target": target, "status": status, "measured": measured})

    def every(target, kernel, peer, bound, combine=None, dtype="float32"):
        rs = _ratios(results, kernel, peer, dtype, combine)
        if not rs:
            add(target, "not measured", f"no {kernel} {dtype} timings against {peer}")
            return
        label, worst = max(rs, key=lambda r: r[1])
        add(target, "met" if worst <= bound else "NOT met",
            f"worst {worst:.2f} ({label}) over {len(rs)} shapes")

    def gmean(target, kernel, peer, bound, dtype="float32"):
        rs = _ratios(results, kernel, peer, dtype)
        if not rs:
            add(target, "not measured", f"no {kernel} {dtype} timings against {peer}")
            return
        g = _gmean([r[1] for r in rs])
        add(target, "met" if g <= bound else "NOT met", f"geomean {g:.2f} over {len(rs)} shapes")

    for k in ("softmax", "log_softmax"):
        every(f"{k} vs torch.{k}: <= 1.0 on every shape", k, "torch", 1.0)
        gmean(f"{k} vs torch.{k}: geometric mean <= 0.7", k, "torch", 0.7)
        every(f"{k} vs the faster of torch and jax: <= 1.0 on every shape", k,
              ("torch", "jax"), 1.0, combine="min")
    every("cross_entropy_with_grad vs F.cross_entropy + backward(): <= 0.35 on every shape",
          "cross_entropy_with_grad", "torch", 0.35)
    every("cross_entropy_with_grad vs jitted jax.value_and_grad: <= 0.7 on every shape",
          "cross_entropy_with_grad", "jax", 0.7)
    gmean("cross_entropy vs F.cross_entropy: geometric mean <= 0.7", "cross_entropy",
          "torch", 0.7)
    # every kernel vs the reference, every shape
    kernels = sorted({r["kernel"] for r in results if r["dtype"] == "float32"})
    worst = None
    n = 0
    for k in kernels:
        for label, ratio in _ratios(results, k, "reference"):
            n += 1
            if worst is None or ratio > worst[2]:
                worst = (k, label, ratio)
    target = "every kernel vs fastsoftmax.reference: <= 0.2 on every shape"
    if worst is None:
        add(target, "not measured", "no float32 timings against the reference")
    else:
        add(target, "met" if worst[2] <= 0.2 else "NOT met",
            f"worst {worst[2]:.2f} ({worst[0]} {worst[1]}) over {n} cases")
    # the memory floor
    target = "softmax 4096x1000 vs np.copyto: <= 2.0"
    rs = dict(_ratios(results, "softmax", "copy"))
    if "4096x1000" in rs:
        add(target, "met" if rs["4096x1000"] <= 2.0 else "NOT met", f"{rs['4096x1000']:.2f}")
    else:
        add(target, "not measured", "4096x1000 with the copy peer not in this run")
    gmean("float64 softmax vs torch.softmax float64: geometric mean <= 1.0", "softmax", "torch",
          1.0, dtype="float64")
    target = "one softmax call on a (4, 16) array: <= 3 us"
    if "small_call_seconds" in extras:
        us = extras["small_call_seconds"] * 1e6
        add(target, "met" if us <= 3.0 else "NOT met", f"{us:.2f} us")
    else:
        add(target, "not measured", "needs softmax and the extras")
    target = "extra memory, softmax with out=: < 1 KiB (tracemalloc peak)"
    if "softmax_out_extra_bytes" in extras:
        b = extras["softmax_out_extra_bytes"]
        add(target, "met" if b < 1024 else "NOT met", f"{b} bytes at 4096x1000")
    else:
        add(target, "not measured", "needs softmax and the extras")
    target = "extra memory, cross_entropy_with_grad(inplace=True): < 1% of the logits"
    if "ce_inplace_extra_bytes" in extras:
        b, size = extras["ce_inplace_extra_bytes"], extras["ce_inplace_logits_bytes"]
        add(target, "met" if b < 0.01 * size else "NOT met",
            f"{b} bytes = {100 * b / size:.3f}% of {size} at 4096x1000")
    else:
        add(target, "not measured", "needs cross_entropy_with_grad and the extras")
    target = "cold start (fresh process: import + first softmax call, cache warm): <= 0.6 s"
    if "cold_start_seconds" in extras:
        s = extras["cold_start_seconds"]
        add(target, "met" if s <= 0.6 else "NOT met", f"{s:.3f} s (best of 3)")
    else:
        add(target, "not measured", extras.get("cold_start_error", "needs softmax and the extras"))
    return rows


# -------------------------------------------------------------------- output
def _fmt_ms(seconds):
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    if ms >= 0.01:
        return f"{ms:.3f}"
    return f"{ms:.4f}"


def table(results):
    """The Markdown table: rows kernel x shape (x dtype), fastsoftmax ms, then per peer ms and ratio."""
    idx = _index(results)
    peers = [p for p in R.PEERS if any(r["impl"] == p for r in results)]
    dtypes = sorted({r["dtype"] for r in results})
    show_dtype = len(dtypes) > 1
    rows, seen = [], set()
    for r in results:
        key = (r["kernel"], tuple(r["shape"]), r["axis"], r["dtype"])
        if key in seen:
            continue
        seen.add(key)
        rows.append((key, r["label"]))
    head = ["kernel", "shape"] + (["dtype"] if show_dtype else []) + ["fastsoftmax ms"]
    for p in peers:
        head += [f"{p} ms", f"fs/{p}"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * (2 + show_dtype) + ["---:"] * (1 + 2 * len(peers))) + "|"]
    for key, label in rows:
        fs = idx.get(key + ("fastsoftmax",))
        cells = [key[0], label] + ([key[3]] if show_dtype else [])
        cells.append(_fmt_ms(fs) if fs else "—")
        for p in peers:
            t = idx.get(key + (p,))
            cells.append(_fmt_ms(t) if t else "—")
            cells.append(f"{fs / t:.2f}" if (t and fs) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(command, machine, results, notes, targets, args, elapsed, spec_grid, extras=None):
    extras = extras or {}
    out = ["## fastsoftmax bench", "",
           "```",
           f"$ {command}",
           "```", "",
           f"machine: {machine_line(machine)}", ""]
    timing = ("exactly %d loops" % args.repeat if args.repeat else
              "at least 3 loops within ~%.2g s" % args.budget)
    out.append(f"timing: one untimed warm-up call, then the best of {timing} of >= "
               f"{args.min_loop * 1e3:g} ms each, a case's implementations taking turns "
               f"loop by loop; ms per call; fs/peer = fastsoftmax time / "
               f"peer time (below 1: fastsoftmax is faster). reference = fastsoftmax.reference "
               f"(NumPy, float64); copy = np.copyto of the input (memory floor). "
               f"Grid: {'SPEC §6' if spec_grid else ('quick' if args.quick else 'custom')}. "
               f"Run took {elapsed:.0f} s.")
    other = machine.get("other_processes_cpu_share")
    if other is not None and other > 0.1:
        out += ["", f"warning: other processes used {100 * other:.0f}% of the machine's CPU "
                    f"time during this run, so timings are inflated and noisy: multi-threaded "
                    f"calls (fastsoftmax's and the peers') can stall for a scheduler time slice "
                    f"each. Rerun on an idle machine before quoting them (or compare at "
                    f"--threads 1)."]
    if notes:
        out.append("")
        out.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in notes.items()))
    out += ["", table(results) if results else "(no timings)", "",
            "### SPEC §6 targets" + ("" if spec_grid else
                                     " (on this run's grid, not SPEC §6's: indicative only)"),
            "",
            "| target | measured | status |", "|---|---|---|"]
    for t in targets:
        status = t["status"] if t["status"] != "NOT met" else "**NOT met**"
        out.append(f"| {t['target']} | {t['measured']} | {status} |")
    if extras.get("linear_memory"):
        out += ["", "### linear_cross_entropy: peak extra memory (float32)", "",
                "Peak resident memory one call adds beyond its inputs (gradients included), "
                "each implementation in a fresh process; unfused = matmul, then "
                "cross_entropy_with_grad on the logits in memory, then the gradient matmuls.",
                "", "| shape NxHxV | impl | extra MiB | / logits size | seconds (one call) |",
                "|---|---|---:|---:|---:|"]
        for m in extras["linear_memory"]:
            lab = R.shape_label(m["shape"])
            if "error" in m:
                out.append(f"| {lab} | {m['impl']} | failed | — | — |")
                continue
            out.append(f"| {lab} | {m['impl']} | {m['extra_bytes'] / 2**20:.0f} | "
                       f"{m['extra_bytes'] / m['logits_bytes']:.3f} | {m['seconds']:.2f} |")
    met = sum(t["status"] == "met" for t in targets)
    missed = sum(t["status"] == "NOT met" for t in targets)
    out += ["", f"{met} met, {missed} not met, {len(targets) - met - missed} not measured."]
    return "\n".join(out)


def plot(results, path, subtitle=""):
    """Ratio fastsoftmax/peer per shape, one panel per kernel, log scale, a line at 1.0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    kernels = list(dict.fromkeys(r["kernel"] for r in results))
    peers = [p for p in R.PEERS if any(r["impl"] == p for r in results)]
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    ncols = 2 if len(kernels) > 1 else 1
    nrows = max(1, math.ceil(len(kernels) / ncols))
    import textwrap
    title = "fastsoftmax time / peer time (below 1: fastsoftmax is faster)"
    if subtitle:
        title += "\n" + "\n".join(textwrap.wrap(subtitle, 40 + 70 * ncols))
    head = 0.25 + 0.16 * (title.count("\n") + 1)          # inches for the title
    height = 3.3 * nrows + head
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, height), squeeze=False,
                             constrained_layout=True)
    colors = {"reference": "tab:gray", "unfused": "tab:orange", "scipy": "tab:green",
              "torch": "tab:red", "jax": "tab:blue", "copy": "black"}
    markers = {"float32": "o", "float64": "s"}
    for ax, kernel in zip(axes.flat, kernels):
        labels = list(dict.fromkeys(r["label"] for r in results if r["kernel"] == kernel))
        pos = {lab: i for i, lab in enumerate(labels)}
        for p in peers:
            for dt in dtypes:
                rs = [(pos[lab], v) for lab, v in _ratios(results, kernel, p, dt)]
                if not rs:
                    continue
                xs, ys = zip(*rs)
                ax.plot(xs, ys, marker=markers.get(dt, "o"), color=colors.get(p),
                        linestyle="-" if dt == "float32" else "--",
                        label=p if dt == "float32" else f"{p} {dt}")
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, fontsize=8)
        ax.set_title(kernel, fontsize=10)
        ax.set_ylabel("fastsoftmax / peer")
        ax.grid(True, which="both", axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(kernels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
