"""Self-describing checkpoints: a network rebuilt from its file, on any backend.

    net = build("SimpleConvNet", input_dim=(1, 8, 8), hidden_size=100, seed=0)
    save_checkpoint("model.npz", net, optimizer)       # architecture, dtype, optimizer state
    net = load_model("model.npz", xp="torch")          # no architecture to name

The file is the same pickle-free `.npz` as `save_params` writes (the parameters under the
book's names, so `net.load_params(path)` still reads it), plus the optimizer's state
arrays under "optimizer/<key>" and one JSON entry (checkpoint.META_KEY) that says what the
arrays are: the network's class and constructor arguments, its dtype, the optimizer's
class and hyper-parameters, what the training loop needs to go on (`training`), and the
package version. A network knows its constructor arguments when it was made by `build`
or has a `config` dict of its own (SimpleConvNet and DeepConvNet keep one); TwoLayerNet and
MultiLayerNet(Extend) are described from their layers. Other networks are saved without an
architecture, and `load_model` then says to build the network and call `load_params`.
"""

from __future__ import annotations

import inspect
import numbers

from . import checkpoint
from ._backend import as_array_like, resolve_namespace

__all__ = ["FORMAT", "Checkpoint", "architecture", "build", "build_optimizer",
           "load_model", "optimizer_description", "read_checkpoint", "restore_optimizer",
           "save_checkpoint"]

FORMAT = "portablelayers-checkpoint"
FORMAT_VERSION = 2  # 2: the training loop's arrays ("training/...", the best weights)
NETWORK_CLASSES = ("TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet",
                   "DeepConvNet")
_OPTIMIZER_PREFIX = "optimizer/"
_TRAINING_PREFIX = "training/"
_ARCH_ATTRIBUTE = "_portablelayers_architecture"


# --- architecture ------------------------------------------------------------------------

def _jsonable(value):
    """Constructor arguments as JSON values (tuples and mappings included)."""
    if isinstance(value, dict) or hasattr(value, "keys"):
        return {str(k): _jsonable(value[k]) for k in value.keys()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if callable(getattr(value, "item", None)) and getattr(value, "shape", None) == ():
        return _jsonable(value.item())  # a NumPy scalar or 0-D array
    raise TypeError(f"cannot describe {type(value).__name__} {value!r} in a checkpoint")


def build(class_name, /, *, xp=None, device=None, dtype=None, seed=None, **kwargs):
    """One of the book's networks, made with `kwargs` and remembering them.

    `save_checkpoint` then describes the network and `load_model` rebuilds it.

    Parameters
    ----------
    class_name : str
        A name in `NETWORK_CLASSES` ("TwoLayerNet", "SimpleConvNet", ...).
    xp : str or module, optional
        Backend of the parameters (a name, module or namespace); NumPy when None.
    device : object, optional
        Device of the parameters.
    dtype : dtype, optional
        Floating dtype of the parameters.
    seed : int, optional
        Seed of the initial weights (and of Dropout's masks).
    **kwargs
        The network class's constructor arguments (JSON-describable values).

    Returns
    -------
    object
        The network, an instance of `class_name`.

    Raises
    ------
    ValueError
        For a class name not in `NETWORK_CLASSES`.
    TypeError
        For a constructor argument that cannot be described in JSON.

    Examples
    --------
    >>> from portablelayers.models import build
    >>> net = build("TwoLayerNet", input_size=4, hidden_size=5, output_size=3, seed=0)
    >>> type(net).__name__, net.params["W1"].shape
    ('TwoLayerNet', (4, 5))
    """
    from . import nets

    if class_name not in NETWORK_CLASSES:
        raise ValueError(f"unknown network {class_name!r}; expected one of "
                         f"{', '.join(NETWORK_CLASSES)}")
    described = _jsonable(kwargs)  # TypeError now, not at the first save
    net = getattr(nets, class_name)(**kwargs, xp=xp, device=device, dtype=dtype, seed=seed)
    setattr(net, _ARCH_ATTRIBUTE, {"class": class_name, "kwargs": described})
    return net


def _with_seed(arch, network):
    """The architecture with the network's seed: Dropout's masks come from it (a layer's
    counter is state; its key is made from the seed), so a resumed run needs it."""
    if arch is None:
        return None
    seed = getattr(network, "seed", None)
    keep = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    return {**arch, "seed": int(seed)} if keep else dict(arch)


def architecture(network) -> dict | None:
    """The class, constructor arguments and seed of `network`, as a JSON-able dict.

    Parameters
    ----------
    network : object
        A network made by `build`, one with a `config` dict (SimpleConvNet and
        DeepConvNet keep one), or a TwoLayerNet, MultiLayerNet or MultiLayerNetExtend
        (described from its layers).

    Returns
    -------
    dict or None
        {"class": name, "kwargs": constructor arguments, "seed": its seed}, or None where
        it cannot be told (see the module's docstring).

    Examples
    --------
    >>> from portablelayers.models import architecture, build
    >>> net = build("TwoLayerNet", input_size=4, hidden_size=5, output_size=3, seed=0)
    >>> architecture(net)
    {'class': 'TwoLayerNet',
     'kwargs': {'input_size': 4, 'hidden_size': 5, 'output_size': 3}, 'seed': 0}
    """
    recorded = getattr(network, _ARCH_ATTRIBUTE, None)
    if recorded is not None:
        return _with_seed(recorded, network)
    config = getattr(network, "config", None)
    cls = type(network).__name__
    if isinstance(config, dict) and cls in NETWORK_CLASSES:
        return _with_seed({"class": cls, "kwargs": _jsonable(config)}, network)
    return _with_seed(_from_layers(network), network)


def _from_layers(network):
    """The fully connected networks, described from their layers' shapes and types."""
    from .layers.activations import ReLU, Sigmoid
    from .nets import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet

    params = network.params
    if type(network) is TwoLayerNet:
        w1, w2 = params["W1"], params["W2"]
        return {"class": "TwoLayerNet",
                "kwargs": {"input_size": int(w1.shape[0]), "hidden_size": int(w1.shape[1]),
                           "output_size": int(w2.shape[1])}}
    if type(network) not in (MultiLayerNet, MultiLayerNetExtend):
        return None
    layers = list(network.layers.values())
    activation = "relu" if any(isinstance(layer, ReLU) for layer in layers) else (
        "sigmoid" if any(isinstance(layer, Sigmoid) for layer in layers) else None)
    kwargs = {"input_size": int(network.input_size),
              "hidden_size_list": [int(n) for n in network.hidden_size_list],
              "output_size": int(network.output_size), "activation": activation,
              "weight_decay_lambda": float(network.weight_decay_lambda)}
    if type(network) is MultiLayerNetExtend:
        dropouts = [layer for layer in layers if type(layer).__name__ == "Dropout"]
        kwargs.update(use_dropout=bool(dropouts), use_batchnorm=network.use_batchnorm,
                      dropout_ratio=dropouts[0].dropout_ratio if dropouts else 0.5)
    return {"class": type(network).__name__, "kwargs": kwargs}


# --- optimizers ----------------------------------------------------------------------------

def optimizer_description(optimizer) -> dict:
    """The class and constructor arguments of an optimizer, read from its attributes.

    Parameters
    ----------
    optimizer : Optimizer
        An optimizer of portablelayers.optim.

    Returns
    -------
    dict
        {"class": name, "hyper": {argument: value}}.

    Examples
    --------
    >>> from portablelayers.models import optimizer_description
    >>> from portablelayers.optim import SGD
    >>> optimizer_description(SGD(lr=0.1))
    {'class': 'SGD', 'hyper': {'lr': 0.1, 'clip_norm': None}}
    """
    cls = type(optimizer)
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    hyper = {name: _jsonable(getattr(optimizer, name)) for name in names
             if hasattr(optimizer, name)}
    return {"class": cls.__name__, "hyper": hyper}


def build_optimizer(description):
    """An optimizer from `optimizer_description`'s dict (state not yet made).

    Parameters
    ----------
    description : dict
        {"class": name, "hyper": {argument: value}}, as `optimizer_description` returns.

    Returns
    -------
    Optimizer
        A new optimizer of portablelayers.optim.

    Raises
    ------
    ValueError
        For a class that is not an optimizer of portablelayers.optim.

    Examples
    --------
    >>> from portablelayers.models import build_optimizer
    >>> build_optimizer({"class": "Momentum", "hyper": {"lr": 0.1, "momentum": 0.9}})
    Momentum(lr=0.1, momentum=0.9)
    """
    from . import optim

    cls = getattr(optim, description["class"], None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, optim.Optimizer):
        raise ValueError(f"unknown optimizer {description['class']!r} in the checkpoint")
    return cls(**description["hyper"])


def restore_optimizer(optimizer, params, arrays):
    """Set `optimizer`'s state from host arrays ("m/W1", "iter", ...).

    Each array is cast to the dtype and device of the state array `init_state(params)`
    makes; the saved learning rate becomes `optimizer.lr`.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose state is set.
    params : dict
        The network's parameters (name -> array).
    arrays : dict
        The saved state (key -> NumPy array), as `Checkpoint.optimizer_arrays` holds it.

    Raises
    ------
    ValueError
        When the keys or shapes of `arrays` differ from the state the optimizer needs.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.models import restore_optimizer
    >>> from portablelayers.optim import Momentum
    >>> params = {"W": np.zeros(2)}
    >>> opt = Momentum(lr=0.1)
    >>> restore_optimizer(opt, params, {"lr": np.array(0.1), "v/W": np.array([1.0, 2.0])})
    >>> opt.state["v/W"]
    array([1., 2.])
    """
    optimizer.init_state(params)
    current = optimizer.state
    if "lr" in current and "lr" not in arrays:
        # Saved before the rate became an array: it comes from the hyper-parameters.
        arrays = {**arrays, "lr": optimizer.lr}
    if set(arrays) <= {"lr"}:
        # Saved before its first update: the state is the fresh one init_state made.
        arrays = {**current, **arrays}
    if set(arrays) != set(current):
        raise ValueError(f"the checkpoint's {type(optimizer).__name__} state has "
                         f"{sorted(arrays)}, the optimizer needs {sorted(current)}")
    new = {}
    for key, value in arrays.items():
        like = current[key]
        if tuple(getattr(value, "shape", ())) != tuple(like.shape):
            raise ValueError(f"optimizer state {key} has shape {value.shape}, the network's "
                             f"needs {tuple(like.shape)}")
        # A copy: the checkpoint's array must not become the state updated in place.
        new[key] = as_array_like(value, like)
    optimizer.state = new
    if "lr" in arrays:  # the Python rate too: the one logged, compared and saved next
        optimizer.lr = float(arrays["lr"])


# --- files ---------------------------------------------------------------------------------

class Checkpoint:
    """What a checkpoint file holds, as `read_checkpoint` returns it.

    Parameters
    ----------
    path : str
        The file.
    meta : dict
        The JSON description; {} for a file of parameters only.
    network_arrays : dict
        The network's arrays (name -> NumPy array).
    optimizer_arrays : dict
        The optimizer's state arrays (key -> NumPy array).
    training_arrays : dict, optional
        The training loop's arrays (`Trainer.training_arrays()`: the best epoch's weights).

    Examples
    --------
    >>> from portablelayers.models import Checkpoint
    >>> Checkpoint("model.npz", {}, {}, {})
    <checkpoint model.npz: parameters only>
    """

    def __init__(self, path, meta, network_arrays, optimizer_arrays, training_arrays=None):
        self.path, self.meta = path, meta
        self.network_arrays, self.optimizer_arrays = network_arrays, optimizer_arrays
        self.training_arrays = training_arrays or {}

    @property
    def architecture(self):
        return self.meta.get("network")

    @property
    def training(self):
        return self.meta.get("training")

    def __repr__(self):
        arch = self.architecture
        return (f"<checkpoint {self.path}: "
                f"{arch['class'] if arch else 'parameters only'}>")


def save_checkpoint(path, network, optimizer=None, *, training=None, extra=None,
                    architecture_=None, network_arrays=None, training_arrays=None):
    """Write a network, its optimizer and the training's state to `path`, atomically.

    Parameters
    ----------
    path : str or path-like
        The .npz file to write.
    network : object
        The network: its parameters, running statistics, architecture and dtype.
    optimizer : Optimizer, optional
        Its class, hyper-parameters and state arrays are saved too.
    training : dict, optional
        JSON-able: what a training loop needs to go on (`Trainer.training_state()`).
    extra : dict, optional
        Anything else JSON-able.
    architecture_ : dict, optional
        The architecture to record instead of `architecture(network)`.
    network_arrays : dict, optional
        The network's host arrays, when the caller has them already.
    training_arrays : dict, optional
        The training loop's arrays (`Trainer.training_arrays()`: the best epoch's weights),
        name -> array.

    Examples
    --------
    >>> import os, tempfile
    >>> from portablelayers.models import build, read_checkpoint, save_checkpoint
    >>> net = build("TwoLayerNet", input_size=4, hidden_size=5, output_size=3, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> save_checkpoint(path, net, training={"epoch": 3})
    >>> read_checkpoint(path).training
    {'epoch': 3}
    """
    from . import __version__

    arrays = dict(network_arrays) if network_arrays is not None else (
        checkpoint.network_arrays(network))
    first_name = next(iter(network.params))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "network": architecture_ or architecture(network),
            "dtype": arrays[first_name].dtype.name,
            "optimizer": None, "training": training, "extra": extra}
    if optimizer is not None:
        meta["optimizer"] = optimizer_description(optimizer)
        for key, value in getattr(optimizer, "state", {}).items():
            arrays[_OPTIMIZER_PREFIX + key] = checkpoint.to_host(value)
    for key, value in (training_arrays or {}).items():
        arrays[_TRAINING_PREFIX + key] = checkpoint.to_host(value)
    checkpoint.save_arrays(path, arrays, meta=meta)


def read_checkpoint(path) -> Checkpoint:
    """The checkpoint at `path`.

    A parameters-only .npz (save_params, older versions) gives meta {}.

    Parameters
    ----------
    path : str or path-like
        The .npz file.

    Returns
    -------
    Checkpoint
        Its description and arrays.

    Raises
    ------
    ValueError
        For a file that is not a checkpoint, or one in a newer format.

    Examples
    --------
    >>> import os, tempfile
    >>> from portablelayers.models import build, read_checkpoint, save_checkpoint
    >>> net = build("TwoLayerNet", input_size=4, hidden_size=5, output_size=3, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> save_checkpoint(path, net)
    >>> sorted(read_checkpoint(path).network_arrays)
    ['W1', 'W2', 'b1', 'b2']
    """
    import os

    path = os.fspath(path)
    meta = checkpoint.load_meta(path)
    if meta and meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a portablelayers checkpoint")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by portablelayers {meta.get('package_version')} "
                         f"in a newer checkpoint format ({meta['format_version']}); upgrade "
                         "portablelayers to read it")
    parts = {_OPTIMIZER_PREFIX: {}, _TRAINING_PREFIX: {}, "": {}}
    for key, value in checkpoint.load_arrays(path).items():
        prefix = next(p for p in parts if key.startswith(p))  # "" last: the network's
        parts[prefix][key[len(prefix):]] = value
    return Checkpoint(path, meta, parts[""], parts[_OPTIMIZER_PREFIX], parts[_TRAINING_PREFIX])


def load_model(path, xp=None, device=None, dtype=None, *, with_checkpoint=False):
    """The network saved in `path`, rebuilt from the architecture the file records.

    Parameters
    ----------
    path : str or path-like
        A checkpoint written by `save_checkpoint` or ``portablelayers train --save``.
    xp : str or module, optional
        The backend to load onto (a name, module or namespace); NumPy when None.
    device : object, optional
        Device of the arrays.
    dtype : dtype or str, optional
        Floating dtype; the saved dtype when None.
    with_checkpoint : bool, default False
        Also return the `Checkpoint`, to read the optimizer and training state.

    Returns
    -------
    network : Sequential
        The rebuilt network with the saved parameters and state.
    checkpoint : Checkpoint
        Only with ``with_checkpoint=True``.

    Raises
    ------
    ValueError
        For a file of parameters only (`save_params`, or a network whose architecture is
        unknown: build the network and call `load_params`), or a file that is not a
        checkpoint.

    Examples
    --------
    >>> import os, tempfile
    >>> import portablelayers
    >>> from portablelayers.models import save_checkpoint
    >>> from portablelayers.nets import TwoLayerNet
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> save_checkpoint(path, TwoLayerNet(4, 5, 3, seed=0))
    >>> net = portablelayers.load_model(path)
    >>> type(net).__name__, net.params["W1"].shape
    ('TwoLayerNet', (4, 5))
    """
    ckpt = read_checkpoint(path)
    arch = ckpt.architecture
    if not arch:
        raise ValueError(f"{ckpt.path} holds parameters only, not the network's "
                         "architecture; build the network as it was trained and call "
                         f"network.load_params({ckpt.path!r})")
    namespace_ = resolve_namespace(xp)
    if dtype is None:
        dtype = getattr(namespace_, ckpt.meta.get("dtype") or "float32")
    elif isinstance(dtype, str):
        dtype = getattr(namespace_, dtype)
    net = build(arch["class"], xp=namespace_, device=device, dtype=dtype,
                seed=arch.get("seed"), **_kwargs(arch))
    checkpoint.load_params(net, ckpt.path)
    return (net, ckpt) if with_checkpoint else net


def _kwargs(arch):
    """Constructor arguments back from JSON (input_dim as a tuple)."""
    kwargs = dict(arch["kwargs"])
    if "input_dim" in kwargs:
        kwargs["input_dim"] = tuple(kwargs["input_dim"])
    return kwargs
