"""The book's first layers: multiplication and addition nodes of a computational graph.

They accept Python numbers as well as arrays, so the chapter's shopping examples print
exactly what plain Python prints. With arrays, gradients are summed back to each input's
shape when the inputs were broadcast against each other.
"""

from __future__ import annotations

import numbers

from .. import guards
from .._backend import is_array, namespace, static_shape, sum_to_shape
from .base import BaseLayer

__all__ = ["AddLayer", "MulLayer"]


def _grad_like(grad, value):
    """`grad` reduced to the shape of the forward input `value`.

    A Python-number input gets a Python number back when the gradient is one too, and a
    0-D array (the sum) when it was broadcast against an array.
    """
    if not is_array(grad):
        return grad
    xp = namespace(grad)
    if not is_array(value):
        return xp.sum(grad)
    return sum_to_shape(xp, grad, tuple(value.shape))


def _check_inputs(where, x, y):
    """TypeError unless x and y are real numbers or arrays of one library and device;
    (a list would repeat, `[1, 2] * 3`, instead of multiplying)."""
    for name, value in (("x", x), ("y", y)):
        if not is_array(value) and (isinstance(value, bool)
                                    or not isinstance(value, numbers.Real)):
            raise TypeError(f"{where}: {name} must be a real number or an array, got "
                            f"{guards.describe(value)}")
    if is_array(x) or is_array(y):
        xp = guards.arrays(where, x=x if is_array(x) else None, y=y if is_array(y) else None)
        for name, value in (("x", x), ("y", y)):
            if is_array(value):
                guards.numeric(xp, value, f"{where}: {name}")


def _array_of(x, y):
    """An array among the forward inputs (whose library and device dout must share)."""
    return x if is_array(x) else y if is_array(y) else None


def _out_shape(out):
    """The forward output's shape: () for a Python number."""
    return static_shape(out) if is_array(out) else ()


class MulLayer(BaseLayer):
    """out = x * y; backward gives (dout * y, dout * x)."""

    def __init__(self):
        super().__init__()
        self.x = None
        self.y = None
        self.out_shape = None

    def forward(self, x, y):
        _check_inputs("MulLayer.forward", x, y)
        out = x * y  # fails on shapes that cannot broadcast, before anything is stored
        self.x, self.y, self.out_shape = x, y, _out_shape(out)
        return out

    def backward(self, dout):
        x, y = self.saved(self.x), self.y
        self.check_dout(dout, self.out_shape, _array_of(x, y))
        return _grad_like(dout * y, x), _grad_like(dout * x, y)


class AddLayer(BaseLayer):
    """out = x + y; backward passes dout to both inputs."""

    def __init__(self):
        super().__init__()
        self.x = None  # kept (by reference) only for their shapes, to undo broadcasting
        self.y = None
        self.out_shape = None

    def forward(self, x, y):
        _check_inputs("AddLayer.forward", x, y)
        out = x + y  # fails on shapes that cannot broadcast, before anything is stored
        self.x, self.y, self.out_shape = x, y, _out_shape(out)
        return out

    def backward(self, dout):
        x, y = self.saved(self.x), self.y
        self.check_dout(dout, self.out_shape, _array_of(x, y))
        return _grad_like(dout * 1, x), _grad_like(dout * 1, y)
