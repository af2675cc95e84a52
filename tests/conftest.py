"""Test configuration: hypothesis profiles and common fixtures."""

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Kernels compile on first use (cached afterwards): no per-example deadline.
settings.register_profile(
    "default", deadline=None, max_examples=60, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "long", deadline=None, max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _runtime_warnings_are_errors():
    """SPEC §2: no NumPy RuntimeWarning escapes any fastsoftmax call."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield
