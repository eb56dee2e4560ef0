"""Elementwise activation layers."""

from __future__ import annotations

from .._backend import namespace
from ..functions import sigmoid
from .base import Layer

__all__ = ["ReLU", "Relu", "Sigmoid"]


class ReLU(Layer):
    """out = max(x, 0). `mask` marks the inputs that were cut (x <= 0), as in the book."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        xp = namespace(x)
        self.mask = x <= 0
        return xp.where(self.mask, xp.zeros_like(x), x)

    def backward(self, dout):
        mask = self.saved(self.mask)
        xp = namespace(dout)
        # A new array: the book writes zeros into the caller's dout, we must not.
        return xp.where(mask, xp.zeros_like(dout), dout)


Relu = ReLU  # the book's spelling


class Sigmoid(Layer):
    """out = 1 / (1 + exp(-x)), stable for any x; backward uses the stored output."""

    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, x):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        out = self.saved(self.out)
        return dout * (1.0 - out) * out
