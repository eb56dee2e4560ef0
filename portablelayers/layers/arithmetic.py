"""The book's first layers: multiplication and addition nodes of a computational graph.

They accept Python numbers as well as arrays, so the chapter's shopping examples print
exactly what plain Python prints. With arrays, gradients are summed back to each input's
shape when the inputs were broadcast against each other.
"""

from __future__ import annotations

from .._backend import is_array, namespace, sum_to_shape
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


def _check_same_library(x, y):
    if is_array(x) or is_array(y):
        namespace(x, y)  # TypeError naming both libraries when they differ


class MulLayer(BaseLayer):
    """out = x * y; backward gives (dout * y, dout * x)."""

    def __init__(self):
        super().__init__()
        self.x = None
        self.y = None

    def forward(self, x, y):
        _check_same_library(x, y)
        self.x, self.y = x, y
        return x * y

    def backward(self, dout):
        x, y = self.saved(self.x), self.y
        return _grad_like(dout * y, x), _grad_like(dout * x, y)


class AddLayer(BaseLayer):
    """out = x + y; backward passes dout to both inputs."""

    def __init__(self):
        super().__init__()
        self.x = None  # kept (by reference) only for their shapes, to undo broadcasting
        self.y = None

    def forward(self, x, y):
        _check_same_library(x, y)
        self.x, self.y = x, y
        return x + y

    def backward(self, dout):
        x, y = self.saved(self.x), self.y
        return _grad_like(dout * 1, x), _grad_like(dout * 1, y)
