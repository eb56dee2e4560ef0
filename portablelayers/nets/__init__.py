"""Networks: `Sequential`, and the book's networks built on it.

    from portablelayers.nets import TwoLayerNet
    net = TwoLayerNet(784, 50, 10, xp="torch", seed=0)
    grads = net.gradient(x_batch, t_batch)
"""

from .convnets import DeepConvNet, SimpleConvNet
from .mlp import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet
from .sequential import Sequential

__all__ = [
    "DeepConvNet",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "Sequential",
    "SimpleConvNet",
    "TwoLayerNet",
]
