"""Numerical gradients for checking `backward`, on any backend.

Central differences in float64: (f(x + h e_i) - f(x - h e_i)) / 2h for each element i.
The perturbed inputs are new arrays, so `x` is never written to (JAX and Dask work).
On JAX, float64 needs `jax.config.update("jax_enable_x64", True)`.
"""

from __future__ import annotations

from ._backend import device, namespace, size

__all__ = ["numerical_gradient", "relative_error"]


def numerical_gradient(f, x, h: float = 1e-6):
    """Gradient of the scalar function `f` at `x`, as a float64 array of x's shape.

    `f` is called with float64 arrays of x's shape and must return a number or a
    one-element array.
    """
    xp = namespace(x)
    dev = device(x)
    x64 = xp.astype(x, xp.float64)
    n = size(x64)
    if x64.dtype != xp.float64:
        raise TypeError(f"numerical_gradient needs float64, which {xp.__name__} did not give "
                        "(on JAX enable jax_enable_x64)")
    positions = xp.arange(n, device=dev)
    grads = []
    for i in range(n):
        step = xp.reshape(xp.astype(positions == i, xp.float64), tuple(x.shape)) * h
        grads.append((float(f(x64 + step)) - float(f(x64 - step))) / (2 * h))
    return xp.reshape(xp.asarray(grads, dtype=xp.float64, device=dev), tuple(x.shape))


def relative_error(a, b) -> float:
    """max |a - b| / max(max |a|, max |b|): one number for how far two gradients differ."""
    xp = namespace(a, b)
    a, b = xp.astype(a, xp.float64), xp.astype(b, xp.float64)
    scale = max(float(xp.max(xp.abs(a))), float(xp.max(xp.abs(b))), 1e-300)
    return float(xp.max(xp.abs(a - b))) / scale
