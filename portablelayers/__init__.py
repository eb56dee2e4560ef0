"""portablelayers: the layers of "Deep Learning from Scratch", written once against the
Python Array API standard, so they run on NumPy, CuPy, PyTorch, JAX, Dask and
array-api-strict arrays alike.

Code written for the book runs by changing its import:

    from portablelayers import MulLayer, AddLayer, ReLU, Sigmoid, Affine, SoftmaxWithLoss
"""

from . import functions, gradcheck, init, nets, optim, util
from .compiled import vectorize_short_loops
from .layers import *  # noqa: F403  (the layers are the package's public surface)
from .layers import __all__ as _layer_names
from .memory import keep_freed_memory
from .models import load_model
from .threads import set_threads

__version__ = "0.1.0"

# Before JAX's first array, if there is to be one: XLA_FLAGS is read then (see there).
vectorize_short_loops()

__all__ = ["functions", "gradcheck", "init", "keep_freed_memory", "load_model", "nets", "optim",
           "set_threads", "util", "vectorize_short_loops", *_layer_names]
