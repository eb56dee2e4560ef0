"""What every layer shares: parameter and gradient storage, and the saved-state check.

Parametric layers keep their arrays in two dicts, `params` and `grads`, keyed by the
book's names ("W", "b", "gamma", ...). `forward` always reads `self.params[...]`, so an
optimizer that rebinds `layer.params["W"]` to a new array (as it must on JAX, whose
arrays are immutable) is seen by the next call. The book's attributes (`layer.W`,
`layer.dW`) are properties over those dicts, made by `parameter("W")`.
"""

from __future__ import annotations

from .._backend import same_shape, static_shape

__all__ = ["Layer", "parameter"]


class Layer:
    """Base of all layers: empty `params` and `grads`, and `saved()` for backward."""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}

    def saved(self, value):
        """`value` stored by forward; a clear RuntimeError if forward has not run yet."""
        if value is None:
            name = type(self).__name__
            raise RuntimeError(f"{name}.backward() called before {name}.forward()")
        return value

    def check_dout(self, dout, expected):
        """ValueError unless `dout` has the shape `expected` of the last forward output."""
        got = static_shape(dout)
        if not same_shape(got, tuple(expected)):
            name = type(self).__name__
            raise ValueError(f"{name}.backward expects dout of shape {tuple(expected)} "
                             f"(the forward output), got {got}")

    def __repr__(self):
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


def parameter(name: str):
    """Properties `name` and `"d" + name` over `params[name]` and `grads[name]`.

    Use as `W, dW = parameter("W")` in a class body.
    """

    def get_param(self):
        return self.params[name]

    def set_param(self, value):
        self.params[name] = value

    def get_grad(self):
        return self.grads.get(name)

    def set_grad(self, value):
        self.grads[name] = value

    return (
        property(get_param, set_param, doc=f"The parameter {name!r} (alias of params[{name!r}])."),
        property(get_grad, set_grad, doc=f"Gradient of {name!r} from the last backward."),
    )
