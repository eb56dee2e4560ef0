"""One `xp` fixture: the array namespace under test, chosen by PORTABLELAYERS_BACKEND.

Each nox session sets the variable and installs only that backend's extra, so one test
suite runs on numpy, array_api_strict, torch, jax, dask and cupy. Functions and methods a
test module tags with `array_api_extra.testing.lazy_xp_function` fail on Dask if they
force a computation.
"""

from __future__ import annotations

import importlib
import os

import pytest
from array_api_extra.testing import patch_lazy_xp_functions

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")

# Import path of each backend's Array API namespace.
NAMESPACES = {
    "numpy": "array_api_compat.numpy",
    "array_api_strict": "array_api_strict",
    "torch": "array_api_compat.torch",
    "jax": "jax.numpy",
    "dask": "array_api_compat.dask.array",
    "cupy": "array_api_compat.cupy",
}

if BACKEND not in NAMESPACES:
    raise pytest.UsageError(f"PORTABLELAYERS_BACKEND={BACKEND!r}; expected one of "
                            f"{', '.join(NAMESPACES)}")

if BACKEND == "jax":
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # gradient checks run in float64


def _gpu_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _load_namespace():
    if BACKEND == "cupy" and not _gpu_present():
        pytest.skip("cupy backend: no NVIDIA GPU on this machine", allow_module_level=True)
    return importlib.import_module(NAMESPACES[BACKEND])


def pytest_report_header(config):
    return f"portablelayers backend: {BACKEND}"


@pytest.fixture
def xp(request):
    """The namespace under test; Dask raises if a tagged function computes."""
    namespace = _load_namespace()
    with patch_lazy_xp_functions(request, xp=namespace):
        yield namespace


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)
