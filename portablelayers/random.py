"""Seedable random numbers on the array's own backend and device.

The Array API standard has no random numbers, so this module is the one dispatch point
that knows each library's generator: NumPy's and CuPy's `default_rng`, `torch.Generator`,
JAX keys (split on every draw), Dask's lazy `default_rng`. Any other namespace
(array-api-strict, for one) draws on the host with NumPy and moves the result over.

    gen = Generator(xp, seed=0, device=device(x))
    u = gen.uniform((N, D), dtype=x.dtype)        # in [0, 1)
    z = gen.normal((D, M), dtype=xp.float32)      # standard normal

Same seed and backend give the same stream. `host_normal` draws on the host: use it where
the numbers must be equal on every backend (weight initialisation).
"""

from __future__ import annotations

import importlib

import numpy as np  # the host generator (a runtime dependency); never used on layer data
from array_api_compat import (
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_torch_namespace,
)

__all__ = ["Generator", "host_normal"]


class Generator:
    """A seeded stream of uniform and normal draws in namespace `xp` on `device`."""

    def __init__(self, xp, seed=None, device=None):
        self.xp, self.device = xp, device
        if seed is None:  # a fresh seed from the OS, drawn once so the stream is reproducible
            seed = int(np.random.default_rng(None).integers(2**63))
        self.seed = seed
        if is_torch_namespace(xp):
            torch = importlib.import_module("torch")
            self._impl = torch.Generator(device=device or "cpu").manual_seed(seed)
            self._draw = self._torch_draw
        elif is_jax_namespace(xp):
            jax = importlib.import_module("jax")
            self._impl = jax.random.key(seed)
            self._draw = self._jax_draw
        elif is_cupy_namespace(xp):
            cupy = importlib.import_module("cupy")
            with cupy.cuda.Device(getattr(device, "id", device)):
                self._impl = cupy.random.default_rng(seed)
            self._draw = self._cupy_draw
        elif is_dask_namespace(xp):
            dask_array = importlib.import_module("dask.array")
            self._impl = dask_array.random.default_rng(seed)
            self._draw = self._dask_draw
        else:  # NumPy itself, and any namespace without a generator of its own
            self._impl = np.random.default_rng(seed)
            self._draw = self._host_draw

    def uniform(self, shape, dtype):
        """Uniform draws in [0, 1) of `shape` and `dtype`."""
        return self._draw("uniform", tuple(shape), dtype)

    def normal(self, shape, dtype):
        """Standard normal draws of `shape` and `dtype`."""
        return self._draw("normal", tuple(shape), dtype)

    # One method per library; each returns an array of `dtype` on self.device.
    def _torch_draw(self, kind, shape, dtype):
        torch = importlib.import_module("torch")
        draw = torch.rand if kind == "uniform" else torch.randn
        return draw(shape, generator=self._impl, dtype=dtype, device=self._impl.device)

    def _jax_draw(self, kind, shape, dtype):
        jax = importlib.import_module("jax")
        self._impl, key = jax.random.split(self._impl)
        draw = jax.random.uniform if kind == "uniform" else jax.random.normal
        out = draw(key, shape, dtype=dtype)
        return out if self.device is None else jax.device_put(out, self.device)

    def _cupy_draw(self, kind, shape, dtype):
        cupy = importlib.import_module("cupy")
        with cupy.cuda.Device(getattr(self.device, "id", self.device)):
            if kind == "uniform":
                return self._impl.random(shape, dtype=dtype)
            return self._impl.standard_normal(shape, dtype=dtype)

    def _dask_draw(self, kind, shape, dtype):
        if kind == "uniform":
            out = self._impl.random(shape, dtype=dtype)
        else:
            out = self._impl.standard_normal(shape, dtype=dtype)
        return self.xp.astype(out, dtype, copy=False)

    def _host_draw(self, kind, shape, dtype):
        values = self._impl.random(shape) if kind == "uniform" else (
            self._impl.standard_normal(shape))
        return self.xp.asarray(values, dtype=dtype, device=self.device)


def host_normal(xp, shape, seed, dtype, device=None):
    """Standard normal draws made on the host with NumPy, then moved to `xp` and `device`:
    the same numbers on every backend for the same seed."""
    values = np.random.default_rng(seed).standard_normal(tuple(shape))
    return xp.asarray(values, dtype=dtype, device=device)
