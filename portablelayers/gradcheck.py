"""Numerical gradients for checking `backward`, on any backend.

Central differences in float64: (f(x + h e_i) - f(x - h e_i)) / 2h for each element i.

Where `x` can be written to (NumPy, PyTorch, CuPy, array-api-strict), each element is
perturbed *in place* and restored, exactly as the book's `common/gradient.py` does, so the
book's idiom `numerical_gradient(lambda W: net.loss(x, t), net.params["W1"])`, whose `f`
ignores its argument and reads the shared parameter array, works. JAX arrays cannot be
written and Dask's are lazy: there `f` gets new perturbed arrays and must use its argument
(the book's idiom gives all zeros there; rebind the parameter inside `f` instead, as
`Sequential.numerical_gradient` does). Either way `x` holds its original values on return,
also when `f` raises.

On JAX, float64 needs `jax.config.update("jax_enable_x64", True)`.
"""

from __future__ import annotations

import itertools

from array_api_compat import is_lazy_array, is_writeable_array

from ._backend import device, namespace, size

__all__ = ["numerical_gradient", "relative_error"]


def numerical_gradient(f, x, h: float = 1e-6):
    """Gradient of the scalar function `f` at `x` by central differences.

    Parameters
    ----------
    f : callable
        Called with an array of x's shape; returns a number or a one-element array.
    x : array
        The point. A writeable floating array (NumPy, PyTorch, CuPy, array-api-strict) is
        perturbed in place, one element at a time, and `f` may read it instead of its
        argument (the book's contract). On JAX and Dask, and for integer `x`, `f` gets new
        perturbed float64 arrays and must use its argument.
    h : float
        The step. For a float64 `x`, `f` receives `x` itself; for float32 or float16 it
        receives a float64 copy holding the same perturbed values as `x`, and the step is
        the one that is representable in x's dtype.

    Returns
    -------
    array
        The gradient, float64, in x's shape, device and namespace.

    Raises
    ------
    TypeError
        If the namespace gives no float64 (JAX without jax_enable_x64).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.gradcheck import numerical_gradient
    >>> numerical_gradient(lambda x: float(np.sum(x ** 2)), np.array([1.0, -2.0])).round(6)
    array([ 2., -4.])
    """
    xp = namespace(x)
    x64 = xp.astype(x, xp.float64)  # a new array: f may use it freely
    if x64.dtype != xp.float64:
        raise TypeError(f"numerical_gradient needs float64, which {xp.__name__} did not give "
                        "(on JAX enable jax_enable_x64)")
    if (is_writeable_array(x) and not is_lazy_array(x)
            and xp.isdtype(x.dtype, "real floating")):
        return _in_place(xp, f, x, x64, h)
    return _by_copies(xp, f, x, x64, h)


def _by_copies(xp, f, x, x64, h):
    """Each evaluation on a new array (immutable or lazy x): x is never written to."""
    dev = device(x)
    n = size(x64)
    positions = xp.arange(n, device=dev)
    grads = []
    for i in range(n):
        step = xp.reshape(xp.astype(positions == i, xp.float64), tuple(x.shape)) * h
        grads.append((float(f(x64 + step)) - float(f(x64 - step))) / (2 * h))
    return xp.reshape(xp.asarray(grads, dtype=xp.float64, device=dev), tuple(x.shape))


def _in_place(xp, f, x, x64, h):
    """The book's loop: x[idx] = tmp + h; f; x[idx] = tmp - h; f; x[idx] = tmp."""
    original = xp.asarray(x, copy=True)  # restoring from a copy is exact, NaN included
    # f gets x itself when it is already float64, else the float64 copy kept equal to x.
    arg = x if x.dtype == xp.float64 else x64
    grad = xp.zeros(tuple(x.shape), dtype=xp.float64, device=device(x))
    try:
        for idx in itertools.product(*(range(int(n)) for n in x.shape)):
            tmp = float(original[idx])
            x_plus = _write(xp, x, idx, tmp + h, 1.0, original)
            f_plus = _call(f, arg, x, idx, x_plus)
            # The same step down (in float32 it is the rounded one), so errors cancel.
            x_minus = _write(xp, x, idx, tmp - (x_plus - tmp), -1.0, original)
            f_minus = _call(f, arg, x, idx, x_minus)
            grad[idx] = (f_plus - f_minus) / (x_plus - x_minus)
            x[idx] = original[idx]
            if arg is not x:
                arg[idx] = tmp  # float64 holds every float32/float16 value exactly
    finally:
        x[...] = original  # also when f raised: the caller's array as it was
    return grad


def _call(f, arg, x, idx, value):
    """float(f(arg)), with the float64 copy `arg` (when it is not x) made equal to x."""
    if arg is not x:
        arg[idx] = value
    return float(f(arg))


def _write(xp, x, idx, target, direction, original):
    """Write `target` into x[idx] and return the value x now holds there. Where x's dtype
    cannot tell target from the original (a float32 step below half an ulp), the next
    representable value in `direction` is written instead, so the step is never zero."""
    x[idx] = target
    value = float(x[idx])
    if value == float(original[idx]):
        toward = xp.asarray(direction * float("inf"), dtype=x.dtype, device=device(x))
        x[idx] = xp.nextafter(original[idx], toward)
        value = float(x[idx])
    return value


def relative_error(a, b) -> float:
    """One number for how far two gradients differ: ``max|a - b| / max(max|a|, max|b|)``.

    Parameters
    ----------
    a, b : array
        Arrays of one shape and one library; compared in float64.

    Returns
    -------
    float
        0 for equal arrays (also both zero); about 1e-7 is float32's rounding, near 1 a
        wrong gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.gradcheck import relative_error
    >>> round(relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.002])), 6)
    0.000999
    """
    xp = namespace(a, b)
    if tuple(a.shape) != tuple(b.shape):  # broadcasting would compare other numbers
        raise ValueError(f"relative_error compares arrays of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if size(a) == 0:
        return 0.0
    a, b = xp.astype(a, xp.float64), xp.astype(b, xp.float64)
    scale = max(float(xp.max(xp.abs(a))), float(xp.max(xp.abs(b))))
    if scale == 0.0:  # both zero
        return 0.0
    return float(xp.max(xp.abs(a - b))) / scale
