"""The NumPy-facing functions."""
