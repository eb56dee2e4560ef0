"""All layers, one module per family; the package root re-exports them."""

from .activations import Identity, LeakyReLU, ReLU, Relu, Sigmoid, Tanh
from .affine import Affine
from .arithmetic import AddLayer, MulLayer
from .base import BaseLayer, Layer, LossLayer, parameter, state_entry
from .conv import AvgPooling, Convolution, Pooling
from .dropout import Dropout
from .losses import MeanSquaredError, SigmoidWithLoss, SoftmaxWithLoss
from .normalization import BatchNormalization
from .reshape import Flatten

__all__ = [
    "AddLayer",
    "Affine",
    "AvgPooling",
    "BaseLayer",
    "BatchNormalization",
    "Convolution",
    "Dropout",
    "Flatten",
    "Identity",
    "Layer",
    "LeakyReLU",
    "LossLayer",
    "MeanSquaredError",
    "MulLayer",
    "Pooling",
    "ReLU",
    "Relu",
    "Sigmoid",
    "SigmoidWithLoss",
    "SoftmaxWithLoss",
    "Tanh",
    "parameter",
    "state_entry",
]
