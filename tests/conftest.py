"""One `xp` fixture: the array namespace under test, chosen by PORTABLELAYERS_BACKEND.

Each nox session sets the variable and installs only that backend's extra, so one test
suite runs on numpy, array_api_strict, torch, jax, dask and cupy (the names and namespaces
come from `portablelayers.backends`, the registry the CLI and the noxfile read too).
PORTABLELAYERS_DEVICE (e.g. `cuda`, `gpu`) makes that device the library's default, so
every array a test makes lands there: the torch and JAX suites run on a GPU that way.
Float32 products run at full precision (`backends.set_precision("highest")`), so the
tolerances hold on GPUs, whose libraries default to TF32. Functions and methods a test
module tags with `array_api_extra.testing.lazy_xp_function` fail on Dask if they force a
computation.
"""

from __future__ import annotations

import importlib
import os

import pytest
from array_api_extra.testing import patch_lazy_xp_functions

from portablelayers.backends import BACKENDS, set_default_device, set_precision

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
DEVICE = os.environ.get("PORTABLELAYERS_DEVICE") or None

# Import path of each backend's Array API namespace.
NAMESPACES = {name: backend.namespace for name, backend in BACKENDS.items()}

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


_PREPARED = []


def _load_namespace():
    if BACKEND == "cupy" and not _gpu_present():
        pytest.skip("cupy backend: no NVIDIA GPU on this machine", allow_module_level=True)
    namespace = importlib.import_module(NAMESPACES[BACKEND])
    if not _PREPARED:  # once a session: the device and the precision policy
        set_default_device(BACKEND, DEVICE)
        set_precision(BACKEND, "highest")
        _PREPARED.append(True)
    return namespace


def pytest_report_header(config):
    return f"portablelayers backend: {BACKEND}" + (f" on {DEVICE}" if DEVICE else "")


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
