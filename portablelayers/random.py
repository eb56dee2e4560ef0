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

`counter_bits(xp, shape, seed, counter)` is the other kind: a counter-based stream made of
portable integer arithmetic (a hash of seed, counter and element index). Its state is one
0-D integer array, so a compiled step can carry it (a JAX trace, a CUDA graph: no host
generator, no host-to-device copy), and it gives the same bits on every backend.
"""

from __future__ import annotations

import importlib

import numpy as np  # the host generator (a runtime dependency); never used on layer data
from array_api_compat import (
    device,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_torch_namespace,
)

__all__ = ["BITS", "Generator", "counter_bits", "host_normal", "seed_key"]


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
            if kind == "uniform":  # CuPy's float16 draws round up to 1 too
                return self._below_one(self._impl.random(shape, dtype=dtype), dtype)
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
        out = self.xp.asarray(values, dtype=dtype, device=self.device)
        # float64 draws just below 1 round up to 1 in float32/16
        return self._below_one(out, dtype) if kind == "uniform" else out

    def _below_one(self, out, dtype):
        """Uniform draws `out` with any 1.0 (a draw rounded up) replaced by the largest
        number of `dtype` below 1."""
        below_one = 1.0 - self.xp.finfo(dtype).eps / 2
        return self.xp.where(out < 1.0, out, self.xp.asarray(below_one, dtype=dtype,
                                                            device=device(out)))


def host_normal(xp, shape, seed, dtype, device=None):
    """Standard normal draws made on the host with NumPy, then moved to `xp` and `device`:
    the same numbers on every backend for the same seed."""
    values = np.random.default_rng(seed).standard_normal(tuple(shape))
    return xp.asarray(values, dtype=dtype, device=device)


# --- A counter-based stream in portable int32 arithmetic ----------------------------------
#
# murmur3's 32-bit finaliser (fmix32), a bijection that mixes every input bit into every
# output bit. int32 arithmetic wraps on every backend; right shifts of negative values are
# arithmetic, so each shift is masked to make it logical. Constants are given as signed
# int32 values (a Python int outside int32 is refused by array-api-strict).

def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


_FMIX1, _FMIX2 = _signed32(0x85EBCA6B), _signed32(0xC2B2AE35)
_GOLDEN = _signed32(0x9E3779B9)
BITS = 24  # counter_bits gives uniform integers in [0, 2**BITS)


def _fmix32(h):
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * _FMIX1
    h = h ^ ((h >> 13) & 0x7FFFF)
    h = h * _FMIX2
    return h ^ ((h >> 16) & 0xFFFF)


def _fmix32_int(h: int) -> int:
    """_fmix32 on a Python int (for the seed, on the host, once)."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def seed_key(seed: int) -> int:
    """A seed of any size folded into a mixed signed 32-bit key for `counter_bits`.

    A negative seed is folded as its complement (-1 as 0, ...) and then marked, so that -1
    and 2**32 - 1, whose low words are the same, get different keys."""
    seed = int(seed)
    negative = seed < 0
    if negative:
        seed = ~seed
    key = 0
    while True:  # every 32-bit word of the seed takes part
        key = _fmix32_int(key ^ (seed & 0xFFFFFFFF) ^ _fmix32_int(key + 0x9E3779B9))
        seed >>= 32
        if seed == 0:
            break
    if negative:
        key = _fmix32_int(key ^ _fmix32_int(key + 0x7F4A7C15))
    return _signed32(key)


def counter_bits(xp, shape, key: int, counter, device=None):
    """Uniform integers in [0, 2**BITS) of `shape` (int32), a pure function of `key`
    (from `seed_key`), the 0-D int32 array `counter` and each element's index.

    The same key and counter give the same bits on every backend and device; a new counter
    value gives a new, independent-looking draw. Only elementwise integer arithmetic is
    used, so the draw can be traced by jax.jit and captured in a CUDA graph.
    """
    shape = tuple(int(n) for n in shape)
    n = 1
    for d in shape:
        n *= d
    index = xp.reshape(xp.arange(n, dtype=xp.int32, device=device), shape)
    # The counter as a (1, 1, ...) array: NumPy computes 0-D int arithmetic as scalars,
    # which warn on the (intended) wrap-around.
    step = xp.reshape(xp.astype(counter, xp.int32), (1,) * max(len(shape), 1))
    stream = _fmix32(step * _GOLDEN + key)
    h = _fmix32(_fmix32(index ^ stream) + stream)
    bits = (h >> (32 - BITS)) & ((1 << BITS) - 1)
    return bits if shape else xp.reshape(bits, ())  # the (1,) of a 0-D step broadcast
