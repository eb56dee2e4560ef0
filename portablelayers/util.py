"""The book's `common/util.py`: `smooth_curve`, `shuffle_dataset`, `conv_output_size`,
`im2col` and `col2im`, on any backend.

    from portablelayers.util import smooth_curve, shuffle_dataset, im2col

Each function takes its namespace from its inputs; a plain Python list (the book's list of
losses) gives a NumPy array.
"""

from __future__ import annotations

import math

from ._backend import as_float, device, is_array, namespace, resolve_namespace, static_shape
from .functions import col2im, im2col
from .random import Generator

__all__ = ["col2im", "conv_output_size", "im2col", "shuffle_dataset", "smooth_curve"]

_WINDOW_LEN = 11  # the book's window
_KAISER_BETA = 2.0


def _bessel_i0(z: float) -> float:
    """The modified Bessel function I0(z) by its power series (z is at most 2 here)."""
    total, term, k = 1.0, 1.0, 0
    while term > 1e-17 * total:
        k += 1
        term *= (z / (2 * k)) ** 2
        total += term
    return total


def _kaiser_weights(window_len: int, beta: float) -> list[float]:
    """NumPy's `np.kaiser(window_len, beta) / sum`: the normalised Kaiser window."""
    w = [_bessel_i0(beta * math.sqrt(max(0.0, 1.0 - (2.0 * n / (window_len - 1) - 1.0) ** 2)))
         for n in range(window_len)]
    total = sum(w)
    return [v / total for v in w]


def _as_vector(x):
    """(xp, 1-D array) from an array or a list of numbers or 0-D arrays (the book's list of
    losses); a list of Python numbers becomes a NumPy array."""
    if is_array(x):
        return namespace(x), x
    values = list(x)
    if values and all(is_array(v) for v in values):
        xp = namespace(*values)
        return xp, xp.stack([xp.reshape(v, ()) for v in values])
    xp = resolve_namespace(None)
    return xp, xp.asarray([float(v) for v in values])


def smooth_curve(x):
    """The book's smoothing of a loss curve.

    A normalised Kaiser window (length 11, beta 2) is slid over `x`, whose ends are
    mirrored.

    Parameters
    ----------
    x : array or list
        1-D values (at least 11): an array, or a list of numbers or of 0-D arrays (such as
        the losses a training loop appends).

    Returns
    -------
    array
        The smoothed curve, of x's length, in x's namespace (NumPy for a list), floating
        dtype and device; equal to the book's result.

    Raises
    ------
    ValueError
        For fewer than 11 values (the book's version then returns a shorter array).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.util import smooth_curve
    >>> smooth_curve(np.ones(12))
    array([1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1.])
    """
    xp, x = _as_vector(x)
    x = as_float(xp, x, "smooth_curve input")
    if x.ndim != 1:
        raise ValueError(f"smooth_curve needs a 1-D curve, got shape {static_shape(x)}")
    n = static_shape(x)[0]
    if n is None or n < _WINDOW_LEN:
        raise ValueError(f"smooth_curve needs at least {_WINDOW_LEN} values, got {n}")
    half = _WINDOW_LEN // 2
    # The book's np.r_[x[10:0:-1], x, x[-1:-11:-1]]: xp.flip, as torch has no negative steps.
    padded = xp.concat([xp.flip(x[1:_WINDOW_LEN]), x, xp.flip(x[n - _WINDOW_LEN + 1:])])
    # The window is symmetric, so np.convolve(w, padded, "valid")[5:-5] is this sum.
    out = xp.zeros_like(x)
    for k, weight in enumerate(_kaiser_weights(_WINDOW_LEN, _KAISER_BETA)):
        out = out + weight * padded[k + half:k + half + n]
    return out


def shuffle_dataset(x, t, *, seed=None):
    """`x` and `t` reordered by one random permutation of their first axis.

    Parameters
    ----------
    x, t : array
        Data and labels with the same first-axis length N (known; any number of axes).
    seed : int, optional
        Fixes the permutation; None (the book's behaviour) draws a fresh one.

    Returns
    -------
    x, t : array
        New arrays, in the inputs' namespace and on their device; the inputs are unchanged.
        The book's version draws from NumPy's global generator instead, so the same seed
        does not give the book's order.

    Raises
    ------
    ValueError
        When `x` and `t` differ in length (or it is unknown).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.util import shuffle_dataset
    >>> x, t = shuffle_dataset(np.arange(5), np.arange(5), seed=0)
    >>> bool((x == t).all()), sorted(x.tolist())
    (True, [0, 1, 2, 3, 4])
    """
    xp = namespace(x, t)
    n = static_shape(x)[0] if x.ndim else None
    if n is None or x.ndim == 0 or t.ndim == 0 or static_shape(t)[0] != n:
        raise ValueError(f"shuffle_dataset needs x and t with the same known first axis, got "
                         f"shapes {static_shape(x)} and {static_shape(t)}")
    # A random permutation from sorting uniform keys: argsort and take are in the standard.
    # float64 keys where the namespace has them (not JAX without x64): fewer ties.
    floats = xp.__array_namespace_info__().dtypes(kind="real floating")
    keys = Generator(xp, seed, device(x)).uniform((n,), dtype=floats.get("float64",
                                                                         xp.float32))
    order = xp.argsort(keys)
    return xp.take(x, order, axis=0), xp.take(t, xp.asarray(order, device=device(t)), axis=0)


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """The output length of a convolution or pooling window along one axis.

    It is ``(input_size + 2*pad - filter_size) // stride + 1``, the size `im2col` and the
    layers produce. The book's version returns a float (24.0), and a fraction where
    `stride` does not divide the span evenly.

    Parameters
    ----------
    input_size : int
        Length of the input along the axis.
    filter_size : int
        Length of the window.
    stride : int, default 1
        Step of the window.
    pad : int, default 0
        Padding on each side.

    Returns
    -------
    int
        The number of window positions.

    Examples
    --------
    >>> from portablelayers.util import conv_output_size
    >>> conv_output_size(28, 5), conv_output_size(28, 5, stride=2, pad=1)
    (24, 13)
    """
    return (input_size + 2 * pad - filter_size) // stride + 1
