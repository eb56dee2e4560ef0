"""The layer contract, and what every layer of the package shares.

The contract (`Layer`, `LossLayer`) is what `Sequential`, the optimizers and the compiled
training step rely on, and all they rely on:

- `params`: name -> array, the arrays an optimizer updates ("W", "b", "gamma", ...);
- `grads`: name -> array, filled by `backward` with the same keys as `params`;
- `state`: name -> array, what `forward` updates but no optimizer does
  (BatchNormalization's running statistics, Dropout's random-stream counter);
- `forward(x)` (`forward(x, train_flg)` where training and inference differ) and
  `backward(dout)`; a loss layer has `forward(x, t)` returning a 0-D array and
  `backward(dout=1)`.

`forward` always reads `self.params[...]` and `self.state[...]`, and rebinds state entries
to new arrays, so a caller that rebinds an entry (an optimizer on JAX, whose arrays are
immutable; a compiled step handing in traced arrays) is seen by the next call. The book's
attributes (`layer.W`, `layer.dW`, `bn.running_mean`) are properties over those dicts, made
by `parameter("W")` and `state_entry("running_mean")`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .. import guards

__all__ = ["BaseLayer", "Layer", "LossLayer", "parameter", "state_entry"]


@runtime_checkable
class Layer(Protocol):
    """The contract of a layer: `params`, `grads`, `state`, `forward` and `backward`.

    Any object with these members is a layer (`isinstance(obj, Layer)` checks them); the
    package's own layers derive from `BaseLayer`. Subclassing `Layer` directly also works:
    its `__init__` makes the three dicts empty.

    See Also
    --------
    BaseLayer : The package's base class; its example writes a layer of your own.
    """

    params: dict[str, Any]
    grads: dict[str, Any]
    state: dict[str, Any]

    def __init__(self):
        self.params, self.grads, self.state = {}, {}, {}

    def forward(self, x, *args):
        """The layer's output for input `x` (and `train_flg` where modes differ)."""
        ...

    def backward(self, dout):
        """The gradient of the input from `dout`; fills `grads` for every `params` key.

        A layer with parameters may also take `input_grad=False`: fill `grads` only and
        return None. `Sequential` asks that of its first layer with parameters, whose input
        gradient nothing uses (Affine and Convolution take it), and calls no `backward` of
        the layers before that one.
        """
        ...


@runtime_checkable
class LossLayer(Protocol):
    """The contract of a loss layer, the last layer of a network.

    `forward(x, t)` returns the loss as a 0-D array and `backward(dout=1)` the gradient of
    the scores `x`. A loss whose floating targets must lie in a range may say so in a
    class attribute `target_range = (low, high)` (SigmoidWithLoss: (0, 1)): its forward
    cannot read values inside a compiled step or on Dask, so the data checks where data
    enter (`compiled.check_data`, the Trainer) read it from the network (`Sequential`'s
    `target_range`).

    `isinstance(obj, LossLayer)` checks the members' names only, not their signatures.

    Examples
    --------
    >>> from portablelayers import LossLayer, SoftmaxWithLoss
    >>> isinstance(SoftmaxWithLoss(), LossLayer)
    True
    """

    params: dict[str, Any]
    grads: dict[str, Any]
    state: dict[str, Any]

    def forward(self, x, t):
        """The loss of scores `x` against targets `t`, a 0-D array."""
        ...

    def backward(self, dout=1):
        """The gradient of the loss with respect to the scores, times `dout`."""
        ...


class BaseLayer(Layer):
    """Base of the package's layers.

    It gives empty `params`, `grads` and `state`, `saved()` for backward (a RuntimeError
    naming the layer when forward has not run) and `check_dout()` for backward's input.

    Examples
    --------
    A layer of your own joins networks, optimizers and compiled steps by keeping to it:

    >>> import numpy as np
    >>> from portablelayers import BaseLayer, Layer
    >>> class Scale(BaseLayer):
    ...     def forward(self, x):
    ...         self.x = x
    ...         return 2.0 * x
    ...     def backward(self, dout):
    ...         return 2.0 * dout
    >>> isinstance(Scale(), Layer), Scale().forward(np.array([1.0, 2.0]))
    (True, array([2., 4.]))
    """

    def saved(self, value):
        """`value` stored by forward; a clear RuntimeError if forward has not run yet."""
        if value is None:
            name = type(self).__name__
            raise RuntimeError(f"{name}.backward() called before {name}.forward()")
        return value

    def check_dout(self, dout, expected, like=None):
        """`guards.dout`: TypeError unless `dout` is a real array (of the library and device
        of `like`), ValueError unless it has the shape `expected` of the last forward output."""
        return guards.dout(f"{type(self).__name__}.backward", dout, expected, like)

    def __repr__(self):
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


def parameter(name: str):
    """Properties `name` and ``"d" + name`` over ``params[name]`` and ``grads[name]``.

    Use as ``W, dW = parameter("W")`` in a class body: the book's ``layer.W`` and
    ``layer.dW`` then read and write the dict entries that optimizers and compiled steps
    use.

    Parameters
    ----------
    name : str
        The key in `params` and `grads`.

    Returns
    -------
    tuple of property
        The parameter's property and its gradient's.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import BaseLayer, parameter
    >>> class Bias(BaseLayer):
    ...     b, db = parameter("b")
    ...     def __init__(self, b):
    ...         super().__init__()
    ...         self.params["b"] = b
    >>> layer = Bias(np.zeros(2))
    >>> layer.b is layer.params["b"]
    True
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


def state_entry(name: str):
    """A property `name` over ``state[name]`` (the book's ``bn.running_mean``).

    Parameters
    ----------
    name : str
        The key in `state`.

    Returns
    -------
    property
        Reads and rebinds ``state[name]``.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import BatchNormalization
    >>> bn = BatchNormalization(np.ones(2), np.zeros(2))
    >>> bn.running_mean is bn.state["running_mean"]
    True
    """

    def get(self):
        return self.state[name]

    def set(self, value):
        self.state[name] = value

    return property(get, set, doc=f"The state array {name!r} (alias of state[{name!r}]).")
