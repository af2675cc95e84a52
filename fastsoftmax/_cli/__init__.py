"""The command line: each subcommand lives in its own module with ``add_parser`` and ``run``."""

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "Train a small MLP on scikit-learn's digits with fastsoftmax's loss.",
    "bench": "Time every kernel against the reference, SciPy, PyTorch and JAX.",
    "info": "Versions, threading layer, thread count, CPU SIMD level, cache directory.",
    "warmup": "Compile every kernel for float32 and float64 (fills the cache).",
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastsoftmax",
                                     description="fastsoftmax command line")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, help_text in COMMANDS.items():
        mod = importlib.import_module(f"fastsoftmax._cli.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_parser(p)
        modules[name] = mod
    args = parser.parse_args(argv)
    code = modules[args.command].run(args)
    sys.exit(code or 0)
