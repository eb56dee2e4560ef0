"""Stateless functions of the book (softmax, cross-entropy, activations), portable and stable.

Every function takes its namespace from its arguments, never mutates them and returns
arrays of the input's dtype and device.

Integer and bool inputs to `sigmoid`, `softmax` and `log_softmax` are promoted to the
namespace's default floating dtype (float64 on NumPy, float32 on torch), as NumPy's own
`np.exp` would do; complex input is refused with a TypeError.
"""

from __future__ import annotations

import array_api_extra as xpx

from ._backend import as_float, namespace, read_bool, static_shape

__all__ = [
    "cross_entropy_error",
    "log_softmax",
    "one_hot_targets",
    "relu",
    "sigmoid",
    "softmax",
]


def sigmoid(x):
    """1 / (1 + exp(-x)), computed from exp(-|x|) so that it never overflows."""
    xp = namespace(x)
    x = as_float(xp, x)
    e = xp.exp(-xp.abs(x))  # in (0, 1]: no overflow for any x
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def relu(x):
    """max(x, 0) elementwise."""
    xp = namespace(x)
    return xp.where(x > 0, x, xp.zeros_like(x))


def log_softmax(x):
    """log(softmax(x)) over the last axis, shifted by the maximum so exp never overflows."""
    xp = namespace(x)
    x = as_float(xp, x)
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(x):
    """Softmax over the last axis (each row of a batch sums to 1)."""
    xp = namespace(x)
    x = as_float(xp, x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def one_hot_targets(t, scores, what: str = "t"):
    """Targets `t` as one-hot rows in the dtype of `scores` (shape (N, C) or (C,)).

    `t` is either integer class indices with one axis fewer than `scores`, or one-hot with
    the shape of `scores`. Raises ValueError for float labels, a wrong length, or labels
    outside [0, C) (the last check runs only where values can be read without forcing a
    lazy computation: not on Dask, not under jax.jit).
    """
    xp = namespace(t, scores)
    s_shape, t_shape = static_shape(scores), static_shape(t)
    if t.ndim == scores.ndim:
        if t_shape != s_shape:
            raise ValueError(f"one-hot {what} must have the shape of the scores {s_shape}, "
                             f"got {t_shape}")
        return xp.astype(t, scores.dtype)
    if t.ndim != scores.ndim - 1:
        raise ValueError(f"{what} must be class indices of shape {s_shape[:-1]} or one-hot of "
                         f"shape {s_shape}, got shape {t_shape}")
    if not xp.isdtype(t.dtype, "integral"):
        raise ValueError(f"class-index {what} must have an integer dtype, got {t.dtype}")
    if t_shape != s_shape[:-1]:
        raise ValueError(f"{what} has {t_shape} labels for scores of shape {s_shape}: "
                         "one label per sample expected")
    num_classes = s_shape[-1]
    if read_bool(xp.any((t < 0) | (t >= num_classes))):
        raise ValueError(f"class-index {what} must lie in [0, {num_classes}), got "
                         f"values from {int(xp.min(t))} to {int(xp.max(t))}")
    return xpx.one_hot(t, num_classes, dtype=scores.dtype, xp=xp)


def cross_entropy_error(y, t):
    """The book's mean cross-entropy of probabilities `y` against labels or one-hot `t`.

    Like the book it adds 1e-7 inside the log, so a zero probability gives a finite loss.
    A 1-D `y` is one sample. Returns a 0-D array.
    """
    xp = namespace(y, t)
    y = as_float(xp, y)
    t = one_hot_targets(t, y)
    if y.ndim == 1:
        y, t = xp.reshape(y, (1, -1)), xp.reshape(t, (1, -1))
    return -xp.sum(t * xp.log(y + 1e-7)) / y.shape[0]
