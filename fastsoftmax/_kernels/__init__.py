"""Numba kernels (see ``_jit`` for the compilation policy)."""
