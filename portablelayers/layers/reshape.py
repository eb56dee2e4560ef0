"""Layers that only change the shape of their input."""

from __future__ import annotations

import math

from .. import guards
from .._backend import namespace, static_shape
from .base import BaseLayer

__all__ = ["Flatten"]


class Flatten(BaseLayer):
    """Flatten (N, d1, d2, ...) to (N, d1*d2*...), e.g. between a convolution and Affine.

    `backward(dout)` gives `dout` back the input's shape.

    Raises
    ------
    ValueError
        From `forward`, for an input with fewer than 2 axes.
    RuntimeError
        From `backward`, when no `forward` came before it.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import Flatten
    >>> flat = Flatten()
    >>> flat.forward(np.zeros((2, 3, 4))).shape
    (2, 12)
    >>> flat.backward(np.zeros((2, 12))).shape
    (2, 3, 4)
    """

    def __init__(self):
        super().__init__()
        self.input_shape = None
        self._output_shape = None
        self._input = None

    def forward(self, x):
        xp = guards.arrays("Flatten.forward", x=x)
        shape = static_shape(x)
        if x.ndim < 2:
            raise ValueError(f"Flatten needs input of shape (N, d1, ...) with at least 2 axes, "
                             f"got shape {shape}")
        out = xp.reshape(x, _flat_shape(shape))
        self.input_shape, self._output_shape = tuple(x.shape), static_shape(out)
        self._input = x  # its library and device, for checking dout
        return out

    def backward(self, dout):
        input_shape = self.saved(self.input_shape)
        self.check_dout(dout, self._output_shape, self._input)
        xp = namespace(dout)
        return xp.reshape(dout, input_shape)


def _flat_shape(shape):
    """(N, prod(rest)) with -1 only for an unknown size (Dask): -1 next to a zero-length
    axis would be ambiguous."""
    n, rest = shape[0], shape[1:]
    if None in rest:
        return (n, -1)
    return (-1 if n is None else n, math.prod(rest))
