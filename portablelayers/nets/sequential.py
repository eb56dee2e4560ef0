"""A network as an ordered chain of layers ending in a loss layer.

Everything the book's networks share lives here once: predict, loss (with weight decay),
backpropagation, accuracy, numerical gradients, named parameters and checkpoints. The
book's networks (TwoLayerNet, MultiLayerNet, SimpleConvNet, ...) only build their layers.

A network walks its layers through the layer contract (`params`, `grads`, `state`; see
`portablelayers.layers.base`) and nothing else. Arrays are named as in the book: each
layer's own names ("W", "b", "gamma", "running_mean", "step") numbered by how many layers
so far have that name, so the first Affine or Convolution gives "W1" and "b1", the first
BatchNormalization "gamma1", "beta1", "running_mean1" and "running_var1". `net.params` and
`net.state` are live views: `net.params["W1"] = new` rebinds the owning layer's entry, which
is what an optimizer must do on JAX, whose arrays cannot be updated in place, and what a
compiled step does with the arrays it returns.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections import OrderedDict
from collections.abc import MutableMapping

from .. import checkpoint, guards
from .._backend import device, is_array, namespace, static_shape, takes_argument
from ..functions import class_indices, predicted_classes

__all__ = ["Sequential"]

class _NamedArrays(MutableMapping):
    """name -> array of a layer, read and rebound in the layer itself (a live view)."""

    kind = "array"

    def __init__(self, entries):
        self._entries = entries  # name -> (layer, key)

    def _get(self, layer, key):
        raise NotImplementedError

    def _set(self, layer, key, value):
        raise NotImplementedError

    def _entry(self, name):
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no {self.kind} named {name!r}; the network has "
                           f"{', '.join(self._entries) or 'none'}") from None

    def __getitem__(self, name):
        return self._get(*self._entry(name))

    def __setitem__(self, name, value):
        layer, key = self._entry(name)
        if value is self._get(layer, key):  # an in-place update rebinding its own array
            return
        expected = self.expected_shape(name)
        if not is_array(value):
            raise TypeError(f"{self.kind} {name!r} must be an array, got {type(value).__name__}")
        if static_shape(value) != expected:
            raise ValueError(f"{self.kind} {name!r} has shape {expected}, got "
                             f"{static_shape(value)}")
        self._set(layer, key, value)

    def __delitem__(self, name):
        raise TypeError(f"a network's {self.kind}s cannot be deleted")

    def rebind(self, name, value):
        """Set `name` without checks (restoring a value taken from this view)."""
        self._set(*self._entry(name), value)

    def copy(self):
        """The arrays as a plain dict, name -> array (a snapshot: later rebinds of the
        network do not change it)."""
        return {name: self._get(layer, key) for name, (layer, key) in self._entries.items()}

    def owner(self, name):
        """(layer, key): the layer holding `name` and its own name for it."""
        return self._entry(name)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def expected_shape(self, name):
        return static_shape(self[name])

    def __repr__(self):
        shapes = ", ".join(f"{k!r}: {self.expected_shape(k)}" for k in self._entries)
        return f"{type(self).__name__}({{{shapes}}})"


class Params(_NamedArrays):
    """The network's parameters by book name ("W1", "b1", ...), live in the layers."""

    kind = "parameter"

    def _get(self, layer, key):
        return layer.params[key]

    def _set(self, layer, key, value):
        layer.params[key] = value

    def like(self, name):
        """The array whose dtype and device a loaded value takes (the parameter itself)."""
        return self[name]


class State(Params):
    """The layers' state by name ("running_mean1", "step1", ...), live in the layers:
    arrays that forward updates and no optimizer does. Saved with the parameters, so a
    reloaded network predicts (and draws dropout masks) as the saved one would."""

    kind = "state array"

    def _get(self, layer, key):
        return layer.state[key]

    def _set(self, layer, key, value):
        layer.state[key] = value


def _central_differences(xp, f, value, h):
    """(f(value + h e_i) - f(value - h e_i)) / 2h for every element i, as value's shape."""
    shape, n = tuple(value.shape), math.prod(value.shape)
    if n == 0:
        return xp.zeros_like(value)
    positions = xp.reshape(xp.arange(n, device=device(value)), shape)
    diffs = []
    for i in range(n):
        step = xp.astype(positions == i, value.dtype) * h  # a new array: value is kept
        diffs.append(f(value + step) - f(value - step))
    return xp.reshape(xp.stack(diffs), shape) / (2.0 * h)


def _positional_count(method):
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in inspect.signature(method).parameters.values())


class Sequential:
    """Layers applied in order, the last one a loss layer with `forward(x, t)`.

    `Sequential(Affine(W1, b1), ReLU(), Affine(W2, b2), SoftmaxWithLoss())`; a layer may
    also be given as a `(name, layer)` pair, otherwise it is named after its class
    ("Affine1", "ReLU1"). `layers` holds all but the loss layer, which is `last_layer`
    (the book's attributes). Layers whose forward takes `train_flg` (BatchNormalization,
    Dropout) are given it. With `weight_decay_lambda` > 0 the loss adds
    ``0.5 * lambda * sum(W**2)`` over every weight "W" and the gradient ``lambda * W``.

    `predict(x)`, `loss(x, t)`, `gradient(x, t)` (backpropagation), `loss_and_gradient`,
    `accuracy(x, t)` and `numerical_gradient(x, t)` are the book's methods; `params` and
    `state` are live views named like the book ("W1", "b1", "gamma1", "running_mean1").
    Backpropagation stops at the first layer with parameters: layers before it get no
    `backward` call, and it is asked for its gradients only where its backward takes
    `input_grad` (Affine, Convolution), since nothing uses the gradient of the input.

    Parameters
    ----------
    *layers : layer or (str, layer)
        The layers in order; the last is the loss layer.
    weight_decay_lambda : float, default 0.0
        L2 weight decay on every weight "W".

    Raises
    ------
    ValueError
        For no layers, a last layer that is not a loss layer, two layers of one name or a
        negative `weight_decay_lambda`.
    TypeError
        For a layer without `forward`, `backward` and `params`.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import Affine, ReLU, SoftmaxWithLoss
    >>> from portablelayers.nets import Sequential
    >>> net = Sequential(Affine(np.ones((2, 3)), np.zeros(3)), ReLU(),
    ...                  Affine(np.ones((3, 2)), np.zeros(2)), SoftmaxWithLoss())
    >>> list(net.params)
    ['W1', 'b1', 'W2', 'b2']
    >>> grads = net.gradient(np.array([[1.0, 2.0]]), np.array([0]))
    >>> grads["W1"].shape
    (2, 3)
    """

    def __init__(self, *layers, weight_decay_lambda=0.0):
        if len(layers) < 2:
            raise ValueError(f"Sequential needs at least one layer and a loss layer, got "
                             f"{len(layers)} layer(s)")
        named = self._name_layers(layers)
        last_layer = named[-1][1]
        if _positional_count(last_layer.forward) < 2:
            raise ValueError(f"the last layer must be a loss layer whose forward takes (x, t), "
                             f"got {type(last_layer).__name__}")
        if not weight_decay_lambda >= 0.0:
            raise ValueError(f"weight_decay_lambda must be >= 0, got {weight_decay_lambda!r}")
        self.layers = OrderedDict(named[:-1])
        self.last_layer = last_layer
        self.weight_decay_lambda = float(weight_decay_lambda)
        # Decided once: which layers are told whether this is training.
        self._takes_flag = {name: takes_argument(layer.forward, "train_flg")
                            for name, layer in self.layers.items()}
        self._backward_plan_cache = None

        param_entries, state_entries, counts = {}, {}, {}
        for layer in [*self.layers.values(), last_layer]:
            # A layer of the user's own may have no state; the contract's layers all do.
            for entries, keys in ((param_entries, layer.params),
                                  (state_entries, getattr(layer, "state", {}))):
                for key in keys:
                    counts[key] = counts.get(key, 0) + 1
                    entries[f"{key}{counts[key]}"] = (layer, key)
        self.params = Params(param_entries)
        self.state = State(state_entries)

    @staticmethod
    def _name_layers(layers):
        named, counts, seen = [], {}, set()
        for item in layers:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                name, layer = item
            else:
                layer = item
                cls = type(layer).__name__
                counts[cls] = counts.get(cls, 0) + 1
                name = f"{cls}{counts[cls]}"
            if not callable(getattr(layer, "forward", None)) or not callable(
                    getattr(layer, "backward", None)) or not hasattr(layer, "params"):
                raise TypeError(f"layer {name!r} must have forward, backward and params, got "
                                f"{type(layer).__name__}")
            if name in seen:
                raise ValueError(f"two layers are named {name!r}")
            seen.add(name)
            named.append((name, layer))
        return named

    @property
    def target_range(self):
        """The (low, high) range of floating targets that the loss layer declares.

        SigmoidWithLoss declares (0.0, 1.0); None where the loss layer declares none. The
        data checks where data enter (`compiled.check_data`) read it, since the layer's own
        check cannot run in a compiled step or on Dask."""
        return getattr(self.last_layer, "target_range", None)

    # --- the book's network interface ------------------------------------------------

    def predict(self, x, train_flg=False):
        """The scores before the loss layer."""
        for name, layer in self.layers.items():
            x = layer.forward(x, train_flg) if self._takes_flag[name] else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=True):
        """The loss as a 0-D array, weight decay included."""
        y = self.predict(x, train_flg)
        loss = self.last_layer.forward(y, t)
        if self.weight_decay_lambda:
            xp = namespace(loss)
            for W in self._weights().values():
                loss = loss + 0.5 * self.weight_decay_lambda * xp.sum(W * W)
        return loss

    def gradient(self, x, t, train_flg=True):
        """Gradients of the loss by backpropagation, keyed like `params`."""
        return self.loss_and_gradient(x, t, train_flg)[1]

    def loss_and_gradient(self, x, t, train_flg=True):
        """(loss, gradients) from one forward and one backward pass: the loss as `loss`
        gives it (a 0-D array, weight decay included), the gradients as `gradient`."""
        loss = self.loss(x, t, train_flg)
        dout = self.last_layer.backward(1)
        chain, first_skips_input_grad = self._backward_plan()
        for layer in chain[:-1]:
            dout = layer.backward(dout)
        if first_skips_input_grad:
            chain[-1].backward(dout, input_grad=False)
        elif chain:
            chain[-1].backward(dout)
        grads = {}
        for name in self.params:
            layer, key = self.params.owner(name)
            grads[name] = layer.grads[key]
        if self.weight_decay_lambda:
            for name, W in self._weights().items():
                grads[name] = grads[name] + self.weight_decay_lambda * W
        return loss, grads

    def _backward_plan(self):
        """(the layers backward runs, last first; whether the first of them in the network
        takes `input_grad`).

        Backward stops at the first layer with parameters: nothing uses the gradient of its
        input (the network's input), so layers before it are not called and it computes no
        input gradient where it takes `input_grad=False` (for a convolution, col2im and a
        product; a third of an Affine's backward). Worked out again whenever `layers` holds
        other objects (a user replaced or removed a layer)."""
        key = tuple(map(id, self.layers.values()))
        cached = getattr(self, "_backward_plan_cache", None)  # None too in old pickles
        if cached is None or cached[0] != key:
            order = list(self.layers.values())
            first = next((i for i, layer in enumerate(order) if layer.params), len(order))
            chain = order[first:][::-1]
            skips = bool(chain) and takes_argument(chain[-1].backward, "input_grad")
            cached = self._backward_plan_cache = (key, chain, skips)
        return cached[1], cached[2]

    def accuracy(self, x, t, batch_size=None):
        """The fraction of samples whose predicted class is the label, as a Python float.

        The predicted class is the highest score's, or with one score per sample (a binary
        classifier's logit) 1 where it is above 0 (`predicted_classes`). `t` is class
        indices (N,) or (N, 1) (floats are rounded: binary 0.0 / 1.0 targets), or one-hot
        (N, C). With `batch_size`, predictions are made batch by batch; every sample
        counts, the last partial batch too.
        """
        xp = guards.arrays(f"{type(self).__name__}.accuracy", x=x, t=t)
        n = static_shape(x)[0] if x.ndim else None
        t = class_indices(t)
        if n is None or static_shape(t) != (n,):
            raise ValueError(f"accuracy needs x of shape (N, ...) and t of shape (N,) or "
                             f"(N, C) with known N, got x {static_shape(x)} and t "
                             f"{static_shape(t)}")
        if n == 0:
            raise ValueError("accuracy of an empty batch is undefined")
        if batch_size is None:
            batch_size = n
        if (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        batch_size = int(batch_size)
        correct = 0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)  # slice stops must lie within the axis
            y = predicted_classes(self.predict(x[start:stop, ...], train_flg=False))
            # A reporting function: reading the count here is the point (Dask computes).
            correct += int(xp.count_nonzero(y == xp.astype(t[start:stop], y.dtype)))
        return correct / n

    def numerical_gradient(self, x, t, train_flg=True, h=1e-6):
        """Gradients of the loss by central differences in float64, keyed like `params`.

        Each parameter element is perturbed by rebinding the parameter to a new array (never
        written to); all parameters are used in float64 meanwhile and restored afterwards,
        running statistics too. The differences of each parameter are stacked into one
        array without reading them, so Dask evaluates them in one computation.
        """
        xp = namespace(x, t, *self.params.values())
        x = xp.astype(x, xp.float64)
        if x.dtype != xp.float64:
            raise TypeError(f"numerical_gradient needs float64, which {xp.__name__} did not "
                            "give (on JAX enable jax_enable_x64)")
        originals, state = dict(self.params), dict(self.state)
        try:
            params64 = {k: xp.astype(v, xp.float64) for k, v in originals.items()}
            for name, value in params64.items():
                self.params.rebind(name, value)
            grads = {}
            for name, value in params64.items():
                def loss_at(w, name=name):
                    self.params.rebind(name, w)
                    # Every evaluation from the same state: a training forward moves
                    # dropout's stream, and f(w+h), f(w-h) need one mask.
                    for key, kept in state.items():
                        self.state.rebind(key, kept)
                    return self.loss(x, t, train_flg)

                grads[name] = _central_differences(xp, loss_at, value, h)
                self.params.rebind(name, value)
            return grads
        finally:
            for name, value in originals.items():
                self.params.rebind(name, value)
            for name, value in state.items():
                self.state.rebind(name, value)

    # --- checkpoints -----------------------------------------------------------------

    def save_params(self, file_name="params.npz"):
        """Parameters and running statistics to a portable .npz, written atomically."""
        checkpoint.save_params(self, file_name)

    def load_params(self, file_name="params.npz", allow_pickle=False):
        """Parameters (and running statistics) from a .npz, or from the book's pickle with
        `allow_pickle=True`; cast to each parameter's dtype and device. All or nothing."""
        checkpoint.load_params(self, file_name, allow_pickle=allow_pickle)

    # --- helpers ---------------------------------------------------------------------

    def _weights(self):
        """The parameters weight decay applies to: every layer's "W"."""
        return {name: self.params[name] for name in self.params
                if self.params.owner(name)[1] == "W"}

    def __repr__(self):
        inner = ", ".join(f"{name}={layer!r}" for name, layer in self.layers.items())
        return f"{type(self).__name__}({inner}, last_layer={self.last_layer!r})"
