"""Every compiled kernel has its own on-disk cache.

Numba indexes its cache by a function's module, qualified name and line, not by the
options it was compiled with: two dispatchers built from one Python function (say a
parallel and a serial build) would load each other's machine code from the cache, and
the parallel one would silently run on one thread.
"""

import importlib
import pkgutil

from numba.core.registry import CPUDispatcher

import sparsecode


def _dispatchers():
    for info in pkgutil.walk_packages(sparsecode.__path__, "sparsecode."):
        if "gpu" in info.name or "cli" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__:
                yield f"{info.name}.{name}", obj


def test_every_cached_kernel_has_its_own_cache_index():
    seen = {}
    for name, disp in _dispatchers():
        cache = getattr(disp, "_cache", None)
        if cache is None or not hasattr(cache, "_cache_file"):
            continue  # not cached
        path = cache._cache_file._index_path
        assert path not in seen, f"{name} and {seen[path]} share the cache index {path}"
        seen[path] = name
    assert any("mp_train_serial" in n for n in seen.values())
    assert len(seen) > 10
