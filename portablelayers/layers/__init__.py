"""All layers, one module per family; the package root re-exports them."""

from .activations import ReLU, Relu, Sigmoid
from .affine import Affine
from .arithmetic import AddLayer, MulLayer
from .base import Layer, parameter
from .losses import SoftmaxWithLoss

__all__ = [
    "AddLayer",
    "Affine",
    "Layer",
    "MulLayer",
    "ReLU",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "parameter",
]
