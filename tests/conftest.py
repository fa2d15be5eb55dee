import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Few examples by default (the README's test command, CI); HYPOTHESIS_PROFILE=dev for more.
settings.register_profile(
    "ci", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def small_blocks(monkeypatch):
    """Make every call span several blocks of signals."""
    from sparsecode import _config

    monkeypatch.setattr(_config, "BLOCK_BYTES", 1)
    monkeypatch.setattr(_config, "MIN_BLOCK_ROWS", 3)
    monkeypatch.setattr(_config, "BLOCK_GROUPS_PER_THREAD", 0)
