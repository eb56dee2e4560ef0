"""The book's fully connected networks: TwoLayerNet (ch. 5), MultiLayerNet and
MultiLayerNetExtend (ch. 6), as builders over Sequential.

Each takes the book's arguments, plus keywords `xp` (an array module or namespace,
default NumPy), `device`, `dtype` (default float32) and `seed`: the weights are drawn by
an Initializer, so one seed gives the same weights on every backend.
"""

from __future__ import annotations

from ..init import Initializer
from ..layers.activations import ReLU, Sigmoid
from ..layers.affine import Affine
from ..layers.dropout import Dropout
from ..layers.losses import SoftmaxWithLoss
from ..layers.normalization import BatchNormalization
from .sequential import Sequential

__all__ = ["MultiLayerNet", "MultiLayerNetExtend", "TwoLayerNet"]

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid}


def sub_seed(seed: int, index: int) -> int:
    """A seed for the index-th random layer of a network seeded with `seed`."""
    return (seed * 1_000_003 + index) % 2**63


class TwoLayerNet(Sequential):
    """Affine - ReLU - Affine - SoftmaxWithLoss (the book's chapter 5 network)."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *,
                 xp=None, device=None, dtype=None, seed=None):
        init = Initializer(xp, device, dtype, seed)
        self.seed = init.seed
        W1 = init.weight((input_size, hidden_size), weight_init_std)
        W2 = init.weight((hidden_size, output_size), weight_init_std)
        super().__init__(
            ("Affine1", Affine(W1, init.zeros((hidden_size,)))),
            ("Relu1", ReLU()),
            ("Affine2", Affine(W2, init.zeros((output_size,)))),
            ("SoftmaxWithLoss", SoftmaxWithLoss()),
        )

    @property
    def lastLayer(self):  # noqa: N802 (the book's chapter 5 name)
        return self.last_layer


class MultiLayerNet(Sequential):
    """(Affine - activation) x len(hidden_size_list) - Affine - SoftmaxWithLoss.

    `activation` is 'relu' or 'sigmoid'; `weight_init_std` a number, 'relu'/'he' (He) or
    'sigmoid'/'xavier' (Xavier), with the fan-in of each layer; `weight_decay_lambda` the
    L2 weight decay on every W.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, *,
                 xp=None, device=None, dtype=None, seed=None):
        super().__init__(*self._build(
            input_size, hidden_size_list, output_size, activation, weight_init_std,
            Initializer(xp, device, dtype, seed)), weight_decay_lambda=weight_decay_lambda)

    def _build(self, input_size, hidden_size_list, output_size, activation, weight_init_std,
               init, use_batchnorm=False, dropout_ratio=None):
        """The named layers; batch norm after each hidden Affine and dropout after each
        activation when asked (MultiLayerNetExtend)."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, "
                             f"got {activation!r}")
        self.seed = init.seed
        self.input_size, self.output_size = input_size, output_size
        self.hidden_size_list = list(hidden_size_list)
        self.hidden_layer_num = len(self.hidden_size_list)
        sizes = [input_size, *self.hidden_size_list, output_size]
        layers = []
        for idx in range(1, len(sizes)):
            W = init.weight((sizes[idx - 1], sizes[idx]), weight_init_std, fan_in=sizes[idx - 1])
            layers.append((f"Affine{idx}", Affine(W, init.zeros((sizes[idx],)))))
            if idx == len(sizes) - 1:
                break
            if use_batchnorm:
                n = sizes[idx]
                layers.append((f"BatchNorm{idx}", BatchNormalization(
                    init.ones((n,)), init.zeros((n,)),
                    running_mean=init.zeros((n,)), running_var=init.zeros((n,)))))
            layers.append((f"Activation_function{idx}", ACTIVATIONS[activation]()))
            if dropout_ratio is not None:
                layers.append((f"Dropout{idx}", Dropout(
                    dropout_ratio, seed=sub_seed(init.seed, idx), xp=init.xp,
                    device=init.device)))
        layers.append(("SoftmaxWithLoss", SoftmaxWithLoss()))
        return layers


class MultiLayerNetExtend(MultiLayerNet):
    """MultiLayerNet with optional BatchNormalization after each hidden Affine and Dropout
    after each activation. The book's misspelt `dropout_ration` and `dropout_ratio` are
    both accepted."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, *, dropout_ratio=None,
                 xp=None, device=None, dtype=None, seed=None):
        if dropout_ratio is None:
            dropout_ratio = dropout_ration
        elif dropout_ration not in (0.5, dropout_ratio):
            raise TypeError(f"give dropout_ratio or the book's dropout_ration, not both "
                            f"(got {dropout_ratio!r} and {dropout_ration!r})")
        self.use_dropout, self.use_batchnorm = bool(use_dropout), bool(use_batchnorm)
        layers = self._build(input_size, hidden_size_list, output_size, activation,
                             weight_init_std, Initializer(xp, device, dtype, seed),
                             use_batchnorm=self.use_batchnorm,
                             dropout_ratio=dropout_ratio if self.use_dropout else None)
        Sequential.__init__(self, *layers, weight_decay_lambda=weight_decay_lambda)
