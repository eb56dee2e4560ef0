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
    """The book's chapter 5 network: Affine - ReLU - Affine - SoftmaxWithLoss.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        Widths of the input, the hidden layer and the output.
    weight_init_std : float or str, default 0.01
        Standard deviation of the initial weights, or "he"/"xavier" (see
        `portablelayers.init.weight_std`).
    xp : str or module, optional
        The backend: a name ("torch", "jax", ...), an array module or a namespace; None is
        NumPy.
    device : object, optional
        Device of the parameters (e.g. "cuda:0" for torch); None is the default.
    dtype : dtype or str, optional
        Floating dtype of the parameters; float32 when None.
    seed : int, optional
        Seed of the initial weights: one seed gives the same network on every backend.

    Raises
    ------
    ValueError
        For sizes or convolution settings that do not fit, an unknown activation or
        initialisation name, dtype, or a negative seed.
    ImportError
        For a backend that is not installed (the message names the extra).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.nets import TwoLayerNet
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> x, t = np.ones((2, 4), dtype=np.float32), np.array([0, 2])
    >>> round(float(net.loss(x, t)), 3)
    1.099
    >>> {k: v.shape for k, v in net.gradient(x, t).items()}
    {'W1': (4, 5), 'b1': (5,), 'W2': (5, 3), 'b2': (3,)}
    """

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

    Parameters
    ----------
    input_size : int
        Width of the input.
    hidden_size_list : list of int
        Widths of the hidden layers.
    output_size : int
        Number of classes.
    activation : {'relu', 'sigmoid'}, default 'relu'
        The hidden layers' activation.
    weight_init_std : float or str, default 'relu'
        A number, 'relu'/'he' (He) or 'sigmoid'/'xavier' (Xavier), with the fan-in of
        each layer.
    weight_decay_lambda : float, default 0
        L2 weight decay on every W.
    xp : str or module, optional
        The backend: a name ("torch", "jax", ...), an array module or a namespace; None is
        NumPy.
    device : object, optional
        Device of the parameters (e.g. "cuda:0" for torch); None is the default.
    dtype : dtype or str, optional
        Floating dtype of the parameters; float32 when None.
    seed : int, optional
        Seed of the initial weights: one seed gives the same network on every backend.

    Raises
    ------
    ValueError
        For sizes or convolution settings that do not fit, an unknown activation or
        initialisation name, dtype, or a negative seed.
    ImportError
        For a backend that is not installed (the message names the extra).

    Examples
    --------
    >>> from portablelayers.nets import MultiLayerNet
    >>> net = MultiLayerNet(64, [32, 16], 10, seed=0)
    >>> [name for name in net.params if name.startswith("W")]
    ['W1', 'W2', 'W3']
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
    """MultiLayerNet with optional batch normalisation and dropout.

    BatchNormalization comes after each hidden Affine and Dropout after each activation.
    The book's misspelt `dropout_ration` and `dropout_ratio` are both accepted.

    Parameters
    ----------
    input_size : int
        Width of the input.
    hidden_size_list : list of int
        Widths of the hidden layers.
    output_size : int
        Number of classes.
    activation : {'relu', 'sigmoid'}, default 'relu'
        The hidden layers' activation.
    weight_init_std : float or str, default 'relu'
        As in `MultiLayerNet`.
    weight_decay_lambda : float, default 0
        L2 weight decay on every W.
    use_dropout : bool, default False
        Add Dropout after each activation.
    dropout_ration : float, optional
        The book's (misspelt) dropout ratio; 0.5 when neither spelling is given.
    use_batchnorm : bool, default False
        Add BatchNormalization after each hidden Affine.
    dropout_ratio : float, optional
        The same ratio, spelt correctly; give one of the two (two different values are a
        TypeError).
    xp : str or module, optional
        The backend: a name ("torch", "jax", ...), an array module or a namespace; None is
        NumPy.
    device : object, optional
        Device of the parameters (e.g. "cuda:0" for torch); None is the default.
    dtype : dtype or str, optional
        Floating dtype of the parameters; float32 when None.
    seed : int, optional
        Seed of the initial weights: one seed gives the same network on every backend.

    Raises
    ------
    ValueError
        For sizes or convolution settings that do not fit, an unknown activation or
        initialisation name, dtype, or a negative seed.
    ImportError
        For a backend that is not installed (the message names the extra).

    Examples
    --------
    >>> from portablelayers.nets import MultiLayerNetExtend
    >>> net = MultiLayerNetExtend(64, [32], 10, use_batchnorm=True, use_dropout=True, seed=0)
    >>> sorted(net.params)
    ['W1', 'W2', 'b1', 'b2', 'beta1', 'gamma1']
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=None, use_batchnorm=False, *, dropout_ratio=None,
                 xp=None, device=None, dtype=None, seed=None):
        if dropout_ratio is None:
            dropout_ratio = 0.5 if dropout_ration is None else dropout_ration
        elif dropout_ration is not None and dropout_ration != dropout_ratio:
            raise TypeError(f"give dropout_ratio or the book's dropout_ration, not both "
                            f"(got {dropout_ratio!r} and {dropout_ration!r})")
        self.use_dropout, self.use_batchnorm = bool(use_dropout), bool(use_batchnorm)
        layers = self._build(input_size, hidden_size_list, output_size, activation,
                             weight_init_std, Initializer(xp, device, dtype, seed),
                             use_batchnorm=self.use_batchnorm,
                             dropout_ratio=dropout_ratio if self.use_dropout else None)
        Sequential.__init__(self, *layers, weight_decay_lambda=weight_decay_lambda)

    def loss(self, x, t, train_flg=False):
        """The loss as a 0-D array, weight decay included; in inference mode unless
        `train_flg`, as the book's MultiLayerNetExtend (a logging call leaves batch norm's
        statistics and dropout's stream alone; `gradient` trains)."""
        return super().loss(x, t, train_flg)
