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
    """Multiplication node of a computational graph: ``out = x * y``.

    `forward(x, y)` returns ``x * y`` and remembers both inputs; `backward(dout)` returns
    ``(dout * y, dout * x)``: each input's gradient is the upstream gradient times the
    other input. Inputs may be Python numbers (the book's shopping examples print exactly
    what plain Python prints) or arrays of one library; gradients of broadcast inputs are
    summed back to each input's shape.

    Attributes
    ----------
    x, y : number or array
        The inputs of the last `forward`, kept for `backward`.

    Raises
    ------
    TypeError
        From `forward`, when an input is neither a real number nor an array, or the arrays
        come from two libraries.
    RuntimeError
        From `backward`, when no `forward` came before it.

    See Also
    --------
    AddLayer : The addition node.

    Examples
    --------
    The book's apples: two at 100 each, with 10% tax.

    >>> from portablelayers import MulLayer
    >>> mul_apple, mul_tax = MulLayer(), MulLayer()
    >>> price = mul_tax.forward(mul_apple.forward(100, 2), 1.1)
    >>> price
    220.00000000000003
    >>> dapple_price, dtax = mul_tax.backward(1)
    >>> mul_apple.backward(dapple_price), dtax
    ((2.2, 110.00000000000001), 200)
    """

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
    """Addition node of a computational graph: ``out = x + y``.

    `forward(x, y)` returns ``x + y``; `backward(dout)` returns ``(dout, dout)``: an
    addition passes its upstream gradient unchanged to both inputs (summed back to an
    input's shape where it was broadcast).

    Attributes
    ----------
    x, y : number or array
        The inputs of the last `forward` (kept for their shapes).

    Raises
    ------
    TypeError
        From `forward`, when an input is neither a real number nor an array, or the arrays
        come from two libraries.
    RuntimeError
        From `backward`, when no `forward` came before it.

    See Also
    --------
    MulLayer : The multiplication node.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import AddLayer
    >>> add = AddLayer()
    >>> add.forward(np.array([1.0, 2.0]), 10.0)
    array([11., 12.])
    >>> add.backward(np.array([1.0, 1.0]))
    (array([1., 1.]), np.float64(2.0))
    """

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
