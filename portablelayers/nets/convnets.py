"""The book's convolutional networks: SimpleConvNet (ch. 7) and DeepConvNet (ch. 8), as
builders over Sequential.

Layer sizes follow from `input_dim` and the convolution parameters (the book hard-codes
them for 28x28 inputs). Keywords `xp`, `device`, `dtype` (default float32) and `seed` as
for every network.
"""

from __future__ import annotations

import numbers
from types import MappingProxyType

from ..init import Initializer
from ..layers.activations import ReLU
from ..layers.affine import Affine
from ..layers.conv import Convolution, Pooling
from ..layers.dropout import Dropout
from ..layers.losses import SoftmaxWithLoss
from .mlp import sub_seed
from .sequential import Sequential

__all__ = ["DeepConvNet", "SimpleConvNet"]


def _conv_param(filter_num, filter_size=3, pad=1, stride=1):
    # Read-only, so a default cannot be changed by a caller.
    return MappingProxyType({"filter_num": filter_num, "filter_size": filter_size,
                             "pad": pad, "stride": stride})


SIMPLE_CONV_PARAM = _conv_param(30, 5, 0, 1)
# The book's six convolutions: 3x3 filters, pad 1 (2 for the fourth), stride 1.
DEEP_CONV_PARAMS = (_conv_param(16), _conv_param(16), _conv_param(32), _conv_param(32, pad=2),
                    _conv_param(64), _conv_param(64))


def _check_conv_param(conv_param, default, what):
    """`conv_param` completed from `default`; ValueError for an unknown key."""
    unknown = set(conv_param) - set(default)
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}; expected "
                         f"{sorted(default)}")
    return {**default, **conv_param}


def _window_out(size, window, stride, pad, what):
    """Positions of a window sliding over `size` (the Convolution/Pooling formula)."""
    out = (size + 2 * pad - window) // stride + 1
    if out < 1:
        raise ValueError(f"{what}: a window of {window} with pad {pad} does not fit an input "
                         f"of size {size}; the input is too small for this network")
    return out


def _check_input_dim(input_dim):
    if len(input_dim) != 3 or not all(isinstance(n, numbers.Integral) and n >= 1
                                      for n in input_dim):
        raise ValueError(f"input_dim must be (C, H, W) of positive ints, got {input_dim!r}")
    return tuple(int(n) for n in input_dim)


class SimpleConvNet(Sequential):
    """The book's chapter 7 network: conv - relu - pool - affine - relu - affine - softmax.

    The pooling is 2x2 with stride 2.

    Parameters
    ----------
    input_dim : tuple of int, default (1, 28, 28)
        (C, H, W) of one image.
    conv_param : dict, optional
        "filter_num", "filter_size", "pad" and "stride" of the convolution (the book's
        30 filters of 5x5, pad 0, stride 1 by default).
    hidden_size : int, default 100
        Width of the hidden affine layer.
    output_size : int, default 10
        Number of classes.
    weight_init_std : float or str, default 0.01
        Standard deviation of the initial weights, or "he"/"xavier".
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
    >>> from portablelayers.nets import SimpleConvNet
    >>> net = SimpleConvNet(input_dim=(1, 8, 8), seed=0,
    ...                     conv_param={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1})
    >>> net.predict(np.zeros((2, 1, 8, 8), dtype=np.float32)).shape
    (2, 10)
    """

    def __init__(self, input_dim=(1, 28, 28), conv_param=SIMPLE_CONV_PARAM,
                 hidden_size=100, output_size=10, weight_init_std=0.01, *,
                 xp=None, device=None, dtype=None, seed=None):
        C, H, W = _check_input_dim(input_dim)
        param = _check_conv_param(conv_param, SIMPLE_CONV_PARAM, "conv_param")
        # The constructor's arguments: what a checkpoint records to rebuild this network.
        self.config = {"input_dim": [C, H, W], "conv_param": dict(param),
                       "hidden_size": hidden_size, "output_size": output_size,
                       "weight_init_std": weight_init_std}
        filter_num, filter_size = param["filter_num"], param["filter_size"]
        pad, stride = param["pad"], param["stride"]
        conv_h = _window_out(H, filter_size, stride, pad, "convolution")
        conv_w = _window_out(W, filter_size, stride, pad, "convolution")
        pool_output_size = (filter_num * _window_out(conv_h, 2, 2, 0, "pooling")
                            * _window_out(conv_w, 2, 2, 0, "pooling"))

        init = Initializer(xp, device, dtype, seed)
        self.seed = init.seed
        W1 = init.weight((filter_num, C, filter_size, filter_size), weight_init_std)
        W2 = init.weight((pool_output_size, hidden_size), weight_init_std)
        W3 = init.weight((hidden_size, output_size), weight_init_std)
        super().__init__(
            ("Conv1", Convolution(W1, init.zeros((filter_num,)), stride, pad)),
            ("Relu1", ReLU()),
            ("Pool1", Pooling(pool_h=2, pool_w=2, stride=2)),
            ("Affine1", Affine(W2, init.zeros((hidden_size,)))),
            ("Relu2", ReLU()),
            ("Affine2", Affine(W3, init.zeros((output_size,)))),
            ("SoftmaxWithLoss", SoftmaxWithLoss()),
        )


class DeepConvNet(Sequential):
    """The book's chapter 8 network for 99%+ on MNIST:

    conv - relu - conv - relu - pool  (16 filters, then 16)
    conv - relu - conv - relu - pool  (32, 32; conv 4 pads by 2 in the book)
    conv - relu - conv - relu - pool  (64, 64)
    affine - relu - dropout - affine - dropout - softmax

    He initialisation, each weight scaled by sqrt(2 / fan_in) with fan_in = C*FH*FW of its
    input for a convolution and the input size for an affine layer (the book's
    `pre_node_nums`). Dropout ratio 0.5 as the book.

    Parameters
    ----------
    input_dim : tuple of int, default (1, 28, 28)
        (C, H, W) of one image.
    conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6 : dict
        "filter_num", "filter_size", "pad" and "stride" of each convolution (the book's
        by default).
    hidden_size : int, default 50
        Width of the hidden affine layer.
    output_size : int, default 10
        Number of classes.
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
    >>> from portablelayers.nets import DeepConvNet
    >>> net = DeepConvNet(seed=0)
    >>> sum(1 for name in net.params if name.startswith("W"))
    8
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1=DEEP_CONV_PARAMS[0], conv_param_2=DEEP_CONV_PARAMS[1],
                 conv_param_3=DEEP_CONV_PARAMS[2], conv_param_4=DEEP_CONV_PARAMS[3],
                 conv_param_5=DEEP_CONV_PARAMS[4], conv_param_6=DEEP_CONV_PARAMS[5],
                 hidden_size=50, output_size=10, *,
                 xp=None, device=None, dtype=None, seed=None):
        channels, H, W = _check_input_dim(input_dim)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                 conv_param_6)
        conv_params = [_check_conv_param(p, default, f"conv_param_{i}")
                       for i, (p, default) in enumerate(zip(given, DEEP_CONV_PARAMS,
                                                            strict=True), start=1)]
        # The constructor's arguments: what a checkpoint records to rebuild this network.
        self.config = {"input_dim": [channels, H, W],
                       **{f"conv_param_{i}": dict(p) for i, p in enumerate(conv_params, 1)},
                       "hidden_size": hidden_size, "output_size": output_size}
        init = Initializer(xp, device, dtype, seed)
        self.seed = init.seed

        layers = []
        for idx, param in enumerate(conv_params, start=1):
            fn, fs, pad, stride = (param["filter_num"], param["filter_size"], param["pad"],
                                   param["stride"])
            H = _window_out(H, fs, stride, pad, f"convolution {idx}")
            W = _window_out(W, fs, stride, pad, f"convolution {idx}")
            weight = init.weight((fn, channels, fs, fs), "he")  # fan_in = channels*fs*fs
            layers += [(f"Conv{idx}", Convolution(weight, init.zeros((fn,)), stride, pad)),
                       (f"Relu{idx}", ReLU())]
            channels = fn
            if idx % 2 == 0:  # a pooling after every second convolution
                H = _window_out(H, 2, 2, 0, f"pooling {idx // 2}")
                W = _window_out(W, 2, 2, 0, f"pooling {idx // 2}")
                layers.append((f"Pool{idx // 2}", Pooling(pool_h=2, pool_w=2, stride=2)))

        flat = channels * H * W  # 64*4*4 for the book's 28x28 input
        W7, W8 = init.weight((flat, hidden_size), "he"), init.weight((hidden_size, output_size),
                                                                     "he")
        layers += [
            ("Affine1", Affine(W7, init.zeros((hidden_size,)))),
            ("Relu7", ReLU()),
            ("Dropout1", Dropout(0.5, seed=sub_seed(init.seed, 1), xp=init.xp,
                                 device=init.device)),
            ("Affine2", Affine(W8, init.zeros((output_size,)))),
            ("Dropout2", Dropout(0.5, seed=sub_seed(init.seed, 2), xp=init.xp,
                                 device=init.device)),
            ("SoftmaxWithLoss", SoftmaxWithLoss()),
        ]
        super().__init__(*layers)
