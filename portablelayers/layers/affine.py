"""The fully connected layer."""

from __future__ import annotations

import math

from .. import guards
from .._backend import as_dtype, matmul_add, namespace, static_shape
from .base import BaseLayer, parameter

__all__ = ["Affine"]


class Affine(BaseLayer):
    """Fully connected layer: ``out = x @ W + b``.

    `forward(x)` flattens an input of shape (N, d1, d2, ...) to (N, D) with
    ``D = d1*d2*...`` and returns shape (N, M); a 1-D input of length D is one sample and
    gives shape (M,). `backward(dout)` returns ``dout @ W.T`` in the input's shape and
    stores ``dW = x.T @ dout`` and ``db = dout.sum(axis=0)`` in `grads`.

    Parameters
    ----------
    W : array
        Weights of shape (D, M).
    b : array or number
        Bias of shape (M,).

    Attributes
    ----------
    params : dict
        ``{"W": W, "b": b}``; `W` and `b` are properties over these entries.
    grads : dict
        ``{"W": dW, "b": db}`` after `backward`; `dW` and `db` are properties over them.

    Raises
    ------
    ValueError
        From `forward`, when the input's feature size is not D (both shapes are named).
    TypeError
        From `forward`, when the input and the parameters come from two libraries.
    RuntimeError
        From `backward`, when no `forward` came before it.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import Affine
    >>> layer = Affine(np.ones((2, 3)), np.zeros(3))
    >>> layer.forward(np.array([[1.0, 2.0]]))
    array([[3., 3., 3.]])
    >>> layer.backward(np.ones((1, 3)))
    array([[3., 3.]])
    >>> layer.dW
    array([[1., 1., 1.],
           [2., 2., 2.]])
    """

    W, dW = parameter("W")
    b, db = parameter("b")

    def __init__(self, W, b):
        super().__init__()
        xp = guards.arrays("Affine", W=W, b=b)  # arrays of one library and device
        # Integer parameters become floats: their gradients would be truncated to integers.
        W = guards.real_floating(xp, W, "Affine W")
        b = guards.real_floating(xp, b, "Affine b")
        if W.ndim != 2 or tuple(b.shape) != (W.shape[1],):
            raise ValueError(f"Affine needs W of shape (D, M) and b of shape (M,), got W "
                             f"{tuple(W.shape)} and b {tuple(b.shape)}")
        self.params = {"W": W, "b": b}
        self.grads = {"W": None, "b": None}
        self.x = None  # the last input, flattened to 2-D
        self.original_x_shape = None

    def forward(self, x):
        W, b = self.params["W"], self.params["b"]
        xp = guards.arrays("Affine.forward", x=x, W=W, b=b)
        x2d = self._as_2d(xp, x, W)
        self.original_x_shape, self.x = tuple(x.shape), x2d
        out = matmul_add(xp, x2d, as_dtype(xp, W, x2d.dtype), b)  # x @ W + b
        return out[0, ...] if x.ndim == 1 else out

    def backward(self, dout, input_grad=True):
        x2d = self.saved(self.x)
        W = self.params["W"]
        n, m = static_shape(x2d)[0], W.shape[1]
        self.check_dout(dout, (m,) if len(self.original_x_shape) == 1 else (n, m), x2d)
        xp = namespace(dout, W)
        if dout.ndim == 1:
            dout = xp.reshape(dout, (1, -1))
        dout = guards.real_floating(xp, dout, "Affine dout")
        dtype = xp.result_type(dout, x2d)  # one dtype for matmul (torch refuses mixed ones)
        dout, x2d = as_dtype(xp, dout, dtype), as_dtype(xp, x2d, dtype)
        dW = xp.matmul(xp.matrix_transpose(x2d), dout)
        # Gradients take their parameter's dtype, even when x was promoted to a wider one.
        self.grads["W"] = as_dtype(xp, dW, W.dtype)
        self.grads["b"] = as_dtype(xp, xp.sum(dout, axis=0), self.params["b"].dtype)
        if not input_grad:  # a network's first layer: nothing uses dx (a product saved)
            return None
        dx = xp.matmul(dout, as_dtype(xp, xp.matrix_transpose(W), dtype))
        return xp.reshape(dx, self.original_x_shape)

    @staticmethod
    def _as_2d(xp, x, W):
        """x as (N, D), checking D against W before any state changes."""
        d = W.shape[0]
        shape = static_shape(x)
        if x.ndim == 0:
            raise ValueError(f"Affine input must have at least 1 axis, got a 0-D array; W has "
                             f"shape {tuple(W.shape)}")
        features = shape[0] if x.ndim == 1 else (
            None if None in shape[1:] else math.prod(shape[1:]))
        if features is not None and features != d:
            raise ValueError(f"Affine input of shape {tuple(x.shape)} has {features} features "
                             f"per sample, but W of shape {tuple(W.shape)} expects {d}")
        x = guards.real_floating(xp, x, "Affine input")
        # matmul of mixed dtypes is refused by torch: one dtype, promoted as NumPy and JAX do
        dtype = xp.result_type(x, W)
        x = as_dtype(xp, x, dtype)
        return xp.reshape(x, (1, d) if x.ndim == 1 else (-1, d))
