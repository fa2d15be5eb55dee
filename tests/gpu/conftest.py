"""GPU tests: the runtime tests need CuPy and a CUDA device and skip cleanly without.

``SPARSECODE_GPU_EMULATOR=1`` runs them on the CPU instead, through a NumPy stand-in for
CuPy whose RawModule compiles the same CUDA source with g++ against a thread-level
emulation of the CUDA built-ins (``tests/gpu/emulator``): slow, but it executes the
kernels' logic, barriers and warp shuffles on machines without a GPU.
"""

import os
import sys

import pytest

if os.environ.get("SPARSECODE_GPU_EMULATOR") == "1":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "emulator"))
    import cupy  # noqa: F401  - the stand-in, found first on sys.path


@pytest.fixture
def small_gpu_blocks(monkeypatch):
    """Make every GPU call span several launches, few thread blocks each (every block
    encodes many signals from the queue) and small thread blocks (every thread loops
    over many atoms)."""
    from sparsecode import _config

    monkeypatch.setattr(_config, "GPU_BLOCK_BYTES", 1)
    monkeypatch.setattr(_config, "GPU_MIN_BLOCK_ROWS", 7)
    monkeypatch.setattr(_config, "GPU_MAX_BLOCKS", 2)
    monkeypatch.setattr(_config, "GPU_THREADS", 32)
