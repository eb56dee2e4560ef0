"""One training step (forward, backward, update) compiled whole: the one dispatch point.

A network of explicit backward passes is a plain function of arrays, so the whole step
(params, state, optimizer state, batch) -> (params, state, optimizer state, loss) can be
handed to a compiler. `compile_step(network, optimizer)` picks how, by the arrays'
library and device:

| arrays | what runs | why |
| --- | --- | --- |
| JAX | `jax.jit` of the pure step, buffers donated | one XLA program a batch shape |
| torch, CUDA | the step captured in a `torch.cuda.CUDAGraph`, replayed | no launch cost per op |
| torch, CPU | eager | `torch.compile`: 8% faster, 25 s to compile |
| CuPy | eager | CuPy 14 refuses cuBLAS calls in stream capture |
| NumPy, strict, Dask | eager (Dask: each step persisted) | nothing to compile |

(torch.compile on the CPU, measured on a 2-core machine with one torch thread, TwoLayerNet
784-50-10, batch 100, SGD: 0.87 ms a step against 0.94 ms eager, after 25 s of compiling
with graph breaks in array-api-compat's helpers; not worth it for the book's runs.)

Every kind runs the same Python (`training_step`), so compiled and eager steps agree.
Checks that must read data values (label ranges, finite inputs) run where data enter:
`check_data`, called by the Trainer on whole data sets (one read for all), and
`check_labels`, called by `compile_step` on its first batch (or, through `train_on`, its
first data set); inside a compiled step, and in an eager step on a GPU, they are switched
off (`no_value_checks`), since a read would be a host synchronisation. Layer state that
forward changes lives in `state`, never in Python attributes, so a compiled step carries it
(Dropout's counter-based random stream too).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import os
import signal
import sys
import threading
import types
import warnings

try:  # the signal module's C core: no enum conversions (10 us a compiled step)
    import _signal
except ImportError:  # an interpreter without it
    _signal = signal

from array_api_compat import is_cupy_array, is_dask_array, is_jax_array, is_torch_array

from . import guards
from ._backend import (
    device,
    move_to,
    namespace,
    no_value_checks,
    persist,
    read_bool,
    read_scalars,
    reads_wait_for_a_device,
    static_shape,
    takes_argument,
)
from .backends import backend_of, set_precision
from .functions import class_indices, predicted_classes
from .memory import keep_freed_memory

__all__ = ["COMPILE_MODES", "HELD_BYTES", "SHORT_LOOPS_OPT_OUT", "XLA_CPU_FLAGS",
           "XLA_CPU_OPTIONS", "XLA_CPU_OPTIONS_JAXLIB", "NonFiniteLoss", "check_data",
           "check_labels", "compile_step", "compiled_kind", "data_flags", "keep_compiled",
           "training_step", "vectorize_short_loops", "xla_options"]

COMPILE_MODES = ("auto", True, False)
#: The most data (bytes, inputs and labels of all sets together) that a JAX step copies in
#: `hold_sets` to evaluate every set with one compiled program; larger sets are evaluated
#: as they are, one program per set shape.
HELD_BYTES = 64 * 2**20
#: XLA options a JAX step on a CPU is compiled with, with a jaxlib of the versions
#: `XLA_CPU_OPTIONS_JAXLIB` and unless the caller's `compiler_options` or XLA_FLAGS set them:
#: XLA's own kernels do the matrix products, YNNPACK the reductions (jaxlib 0.10 gives
#: YNNPACK both). With jaxlib's default, TwoLayerNet's step took 1.14-1.22x as long on a
#: 2-core AVX-512 machine (SGD; Adam 1.33x), SimpleConvNet's 1.01-1.05x, DeepConvNet's and a
#: batch-normalised MultiLayerNetExtend's the same within 3% (docs: Performance).
XLA_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
#: The jaxlib versions `XLA_CPU_OPTIONS` and `XLA_CPU_FLAGS` were measured with, (first,
#: end): first <= version < end. Another jaxlib's defaults and options may differ (and its
#: LLVM may not know the option), and it keeps its own.
XLA_CPU_OPTIONS_JAXLIB = ((0, 10, 2), (0, 11))
#: What `vectorize_short_loops` adds to XLA_FLAGS: LLVM's loop vectorizer, inside XLA's CPU
#: compiler, treats a loop of a known count below 4 iterations (not 16) as too short to
#: vectorize. XLA's loops along the 12-wide rows of SimpleConvNet's pooled output on MNIST
#: (4-wide on the 8x8 digits) were otherwise left scalar: its compiled step took 0.83x the
#: time with it, the 8x8 digits' 0.77x (2-core AVX-512 machine; docs: Performance).
XLA_CPU_FLAGS = "--xla_backend_extra_options=-vectorizer-min-trip-count=4"
#: The environment variable that keeps `XLA_CPU_FLAGS` out of XLA_FLAGS ("0").
SHORT_LOOPS_OPT_OUT = "PORTABLELAYERS_VECTORIZE_SHORT_LOOPS"
_short_loops = None  # what vectorize_short_loops found: None before its first call


# --- the step itself ------------------------------------------------------------------

def loss_and_gradient(network, x, t):
    """(loss, grads) of a network: one pass where the network offers it (Sequential),
    else the book's interface, loss() then gradient()."""
    both = getattr(network, "loss_and_gradient", None)
    if both is not None:
        return both(x, t)
    return network.loss(x, t), network.gradient(x, t)


class NonFiniteLoss(FloatingPointError):
    """A step's loss was NaN or inf; its update was not applied. `value` is the loss."""

    def __init__(self, value):
        self.value = value
        super().__init__(f"the loss of this batch is {value}; the update was not applied, "
                         "the parameters and the network's state are as before it")


def training_step(network, optimizer, x, t, check_finite=False):
    """Forward, backward and the optimizer's update, eagerly; returns the 0-D loss.

    With `check_finite`, a loss that is NaN or inf raises FloatingPointError before the
    update, so the parameters stay as they were, and so does the state the forward pass
    rebinds (batch norm's running statistics, dropout's random stream). That reads the
    loss on the host (a sync on a GPU), and is skipped where a value cannot be read (under
    jax.jit, on Dask); compiled steps never ask for it.

    Parameters
    ----------
    network : object
        A network with `params` and either `loss_and_gradient(x, t)` or the book's
        `loss(x, t)` and `gradient(x, t)`.
    optimizer : object
        An optimizer whose `update(params, grads)` updates the parameters in place.
    x : array
        The batch's inputs.
    t : array
        The batch's labels (class indices or one-hot rows).
    check_finite : bool, default False
        Raise before the update when the loss is NaN or inf.

    Returns
    -------
    array
        The 0-D loss of the batch, before the update.

    Raises
    ------
    NonFiniteLoss
        With `check_finite`, when the loss is NaN or inf (a FloatingPointError).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.compiled import training_step
    >>> from portablelayers.nets import TwoLayerNet
    >>> from portablelayers.optim import SGD
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> x, t = np.ones((2, 4), dtype=np.float32), np.array([0, 2])
    >>> loss = training_step(net, SGD(lr=0.1), x, t)
    >>> loss.shape, round(float(loss), 3)
    ((), 1.099)
    """
    # The forward pass rebinds the state it moves (batch norm's statistics, dropout's
    # stream): a refused step puts back what was bound before it.
    state = getattr(network, "state", {})
    state_before = dict(state) if check_finite else {}
    loss, grads = loss_and_gradient(network, x, t)
    if check_finite:
        xp = namespace(loss)
        if read_bool(xp.all(xp.isfinite(loss)), asked=True) is False:
            for name, value in state_before.items():
                if state[name] is not value:
                    state[name] = value
            raise NonFiniteLoss(float(loss))
    optimizer.update(network.params, grads)
    return loss


def check_labels(network, x, t, classes=None):
    """Check that class-index labels `t` lie in [0, C), C the width of the network's scores.

    Two scalar host reads, min(t) and max(t) (one computation for lazy Dask data); one-hot
    `t` needs none. The check runs once, where data enter.

    Parameters
    ----------
    network : object
        A network with `predict(x, train_flg=False)`; used only when `classes` is None.
    x : array
        Inputs (one sample of them is predicted, in inference mode, so no state changes).
    t : array
        Labels: class indices (checked) or one-hot rows (nothing to check).
    classes : int, optional
        The number of classes C; by default the width of `network.predict`'s scores. One
        score (a binary classifier's logit) is two classes, 0 and 1.

    Raises
    ------
    ValueError
        When a class index lies outside [0, C).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.compiled import check_labels
    >>> from portablelayers.nets import TwoLayerNet
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> x = np.ones((2, 4), dtype=np.float32)
    >>> check_labels(net, x, np.array([0, 2]))
    >>> check_labels(net, x, np.array([0, 3]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: class-index labels must lie in [0, 3) for a network with 3 outputs, ...
    """
    xp = namespace(x, t)
    if not _is_class_indices(t) or static_shape(t)[0] == 0:
        return
    if classes is None:
        classes = static_shape(network.predict(x[:1, ...], train_flg=False))[-1]
    low, high = xp.min(t), xp.max(t)
    if is_dask_array(low):  # both in one computation
        import dask

        low, high = dask.compute(low, high)
    low, high = int(low), int(high)
    limit = _label_limit(classes)
    if low < 0 or high >= limit:
        outputs = "1 output (a binary classifier)" if classes == 1 else f"{classes} outputs"
        raise ValueError(f"class-index labels must lie in [0, {limit}) for a network with "
                         f"{outputs}, got values from {low} to {high}")


def _label_limit(classes):
    """The labels' bound for a network of `classes` outputs: one output is a binary
    classifier's logit, for classes 0 and 1 (`functions.predicted_classes`)."""
    return 2 if classes == 1 else classes


def check_data(network, sets, classes=None, labels=True):
    """Check data sets where they enter training: finite inputs, labels in [0, C).

    C is the width of the network's scores. Floating targets must also lie in the loss
    layer's range where it declares one (`network.target_range`: SigmoidWithLoss's
    [0, 1]).
    Every check of every set is one array of flags, read once (one host synchronisation;
    one Dask computation); only when a flag is up do the detailed checks run, to say which
    set and which values. The Trainer calls this through its step (`step.check_data`),
    which on JAX compiles the flags as one program instead of a dozen small ones.

    Parameters
    ----------
    network : object
        A network with `predict(x, train_flg=False)`; used only for `classes`.
    sets : dict
        Name -> (x, t): "train" -> (x_train, t_train), and so on.
    classes : int, optional
        The number of classes C; by default the width of `network.predict`'s scores for
        one sample.
    labels : bool, default True
        False checks only that the inputs are finite.

    Raises
    ------
    ValueError
        When a class index lies outside [0, C) (`check_labels`'s message), a floating
        target outside the loss's range (or NaN), or an input holds NaN or inf (naming the
        set and counting them).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.compiled import check_data
    >>> from portablelayers.nets import TwoLayerNet
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> x = np.ones((2, 4), dtype=np.float32)
    >>> check_data(net, {"train": (x, np.array([0, 2])), "test": (x, np.array([1, 1]))})
    >>> inf = np.full((2, 4), np.inf, dtype=np.float32)
    >>> check_data(net, {"train": (x, np.array([0, 2])), "test": (inf, np.array([1, 1]))})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: x_test holds 0 NaN and 8 infinite values; ...
    """
    if not sets:
        return
    if not (labels and _has_class_indices(sets)):
        classes = None
    elif classes is None:
        x = next(iter(sets.values()))[0]
        classes = static_shape(network.predict(x[:1, ...], train_flg=False))[-1]
    targets = _target_range(network) if labels else None
    _check_flags(network, sets, classes, data_flags(sets, classes, targets), targets)


def _target_range(network):
    """The (low, high) the network's floating targets must lie in (its loss layer's, as
    `Sequential.target_range` gives it), as floats, or None."""
    given = getattr(network, "target_range", None)
    return None if given is None else (float(given[0]), float(given[1]))


def _is_class_indices(t):
    """Whether labels `t` are class indices (integers of shape (N,), or a column (N, 1) as
    the loss reads them too): the labels a range check reads. One-hot rows have nothing to
    check and need no network output width."""
    column = t.ndim == 2 and static_shape(t)[1] == 1
    return (t.ndim == 1 or column) and namespace(t).isdtype(t.dtype, "integral")


def _has_class_indices(sets):
    """Whether any set's labels are class indices (`_is_class_indices`)."""
    return any(_is_class_indices(t) for _, t in sets.values())


def data_flags(sets, classes=None, targets=None):
    """The flags `check_data` reads: True where a check of a data set fails.

    Pure array code (no value is read), so jax.jit traces it whole and Dask computes it in
    one pass.

    Parameters
    ----------
    sets : dict
        Name -> (x, t).
    classes : int, optional
        The number of classes (1, a binary classifier's one output, is 2); without it
        labels are not checked.
    targets : (float, float), optional
        The range floating targets must lie in (a loss layer's `target_range`); without
        it they are not checked.

    Returns
    -------
    array or None
        A 1-D bool array. Per set: for a floating `x`, whether it holds NaN or inf; for
        integer class indices `t` (one axis), whether any is >= classes (where its dtype
        can hold `classes`) and whether any is < 0 (signed dtypes); for floating `t` and
        `targets`, whether any lies outside them or is NaN. None when there is nothing to
        check.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.compiled import data_flags
    >>> x = np.array([[0.0, np.nan], [1.0, 2.0]])
    >>> data_flags({"train": (x, np.array([0, 3]))}, classes=3)
    array([ True,  True, False])
    """
    flags = []
    for x, t in sets.values():
        xp = namespace(x, t)
        if xp.isdtype(x.dtype, ("real floating", "complex floating")):
            flags.append(xp.any(~xp.isfinite(x)))
        if classes is not None and _is_class_indices(t):
            # Comparisons only with values the label dtype holds (uint8 labels, 300 classes)
            limit = _label_limit(classes)
            if xp.iinfo(t.dtype).max >= limit:
                flags.append(xp.any(t >= limit))
            if xp.isdtype(t.dtype, "signed integer"):
                flags.append(xp.any(t < 0))
        if targets is not None and xp.isdtype(t.dtype, "real floating"):
            flags.append(xp.any(_outside(xp, t, targets)))
    return xp.stack(flags) if flags else None


def _outside(xp, t, targets):
    """Where targets `t` lie outside [low, high] or are NaN."""
    low, high = targets
    return (t < low) | (t > high) | xp.isnan(t)


def _check_flags(network, sets, classes, flags, targets=None):
    """Read `flags` (from `data_flags`) once; when one is up, raise the detailed error."""
    if flags is None:
        return
    xp = namespace(flags)
    from .checkpoint import to_host

    # The few flags themselves read (a Dask computation, a device copy): any() of them on
    # the device would be one more program on JAX.
    if not to_host(flags).any():
        return
    if classes is not None:
        for x, t in sets.values():
            check_labels(network, x, t, classes=classes)
    if targets is not None:
        _check_targets(sets, targets)
    guards.finite_data(xp, **{f"x_{name}": x for name, (x, _) in sets.items()})


def _check_targets(sets, targets):
    """ValueError naming the first set whose floating targets lie outside `targets` (or
    are NaN), with how many and their range: the message behind a raised flag."""
    for name, (_, t) in sets.items():
        xp = namespace(t)
        if not xp.isdtype(t.dtype, "real floating"):
            continue
        wide = xp.result_type(t.dtype, xp.float32)  # a count that float16 could not hold
        outside = xp.sum(xp.astype(_outside(xp, t, targets), wide))
        count, low, high = read_scalars(  # one read
            [outside, xp.astype(xp.min(t), wide), xp.astype(xp.max(t), wide)])
        if count:
            raise ValueError(f"t_{name} holds {int(count)} targets outside "
                             f"[{targets[0]:g}, {targets[1]:g}] (the loss layer's "
                             f"target_range) or NaN; its values run from {low:g} to "
                             f"{high:g}")


def keep_compiled(directory):
    """Keep JAX's compiled programs in `directory` between runs.

    Turns on JAX's persistent compilation cache: a second run of the same training skips
    XLA's compilation, which on a CPU takes longer than a small network's whole training.
    Does nothing where JAX is not imported.

    Parameters
    ----------
    directory : str or path-like
        The folder of the cache.

    Examples
    --------
    >>> import tempfile
    >>> from portablelayers.compiled import keep_compiled
    >>> keep_compiled(tempfile.mkdtemp())
    """
    import sys

    if "jax" not in sys.modules:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# --- choosing ----------------------------------------------------------------------------

def compiled_kind(x, mode="auto"):
    """How a step on arrays like `x` runs under `mode`.

    Parameters
    ----------
    x : array
        An array of the step's library and device.
    mode : {'auto', True, False}, default 'auto'
        'auto': compile where a compiler applies; True: compile or fail; False: eager.

    Returns
    -------
    str
        "jax.jit", "cuda-graph" or "eager".

    Raises
    ------
    ValueError
        For a mode not in `COMPILE_MODES`, or True where no compiler applies.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.compiled import compiled_kind
    >>> compiled_kind(np.zeros(3))
    'eager'
    >>> compiled_kind(np.zeros(3), True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: compile=True: no compiled step for numpy arrays on cpu (numpy has no ...
    """
    # By identity: 0 and 1 (or NumPy's bools) equal False and True but are no answer.
    if not any(mode is allowed for allowed in COMPILE_MODES) and mode != "auto":
        raise ValueError(f"compile must be 'auto', True or False, got {mode!r}")
    if mode is False:
        return "eager"
    if is_jax_array(x):
        return "jax.jit"
    if is_torch_array(x) and x.device.type == "cuda":
        return "cuda-graph"
    if mode is True:
        why = ("CuPy 14 refuses cuBLAS calls inside CUDA stream capture" if is_cupy_array(x)
               else "torch.compile gained 8% on the CPU for 25 s of compiling: steps run eagerly"
               if is_torch_array(x) else f"{type(x).__module__.split('.')[0]} has no compiler")
        raise ValueError(f"compile=True: no compiled step for {_library(x)} arrays on "
                         f"{device(x)} ({why}); use compile='auto' or False")
    return "eager"


def xla_options(dev, given=None):
    """The XLA options a JAX step's programs are compiled with on device `dev`.

    On a CPU, with a jaxlib of the versions `XLA_CPU_OPTIONS_JAXLIB`, the options of
    `XLA_CPU_OPTIONS` that XLA_FLAGS (read from os.environ now) does not set; elsewhere
    none. `given` (a step's `compiler_options`) is added last and wins.

    Parameters
    ----------
    dev : jax.Device or jax.sharding.Sharding
        Where the step's arrays live.
    given : dict, optional
        The caller's options.

    Returns
    -------
    dict
        Option name -> value, for `jax.jit`'s `compiler_options`.

    Examples
    --------
    >>> from portablelayers.compiled import xla_options
    >>> xla_options(None, {"xla_cpu_enable_fast_math": False})  # no CPU: the caller's only
    {'xla_cpu_enable_fast_math': False}
    """
    options = {}
    if _platform(dev) == "cpu" and _measured_jaxlib():
        flags = os.environ.get("XLA_FLAGS", "")
        options = {name: value for name, value in XLA_CPU_OPTIONS.items()
                   if f"--{name}=" not in flags}
    options.update(given or {})
    return options


def vectorize_short_loops() -> bool:
    """Have XLA's CPU compiler vectorize loops of 4 iterations or more (`XLA_CPU_FLAGS`).

    ``import portablelayers`` calls it. It adds the option to the XLA_FLAGS environment
    variable, which JAX reads once, when it makes its first array: so it holds if called
    before that (JAX may be imported already), and later calls change nothing. The
    option changes which loops are vectorized, not the formulas: five compiled steps of
    SimpleConvNet, DeepConvNet and a batch-normalised MultiLayerNetExtend (Adam) gave the
    same bits with and without it, and elsewhere results differ in float32 rounding only.

    It leaves XLA_FLAGS as it is where it already sets ``--xla_backend_extra_options`` (the
    user's), with ``PORTABLELAYERS_VECTORIZE_SHORT_LOOPS=0`` (`SHORT_LOOPS_OPT_OUT`), with a
    jaxlib of other versions than `XLA_CPU_OPTIONS_JAXLIB` or none, and where a JAX plugin
    (a GPU's) or a TPU runtime is installed, unless ``JAX_PLATFORMS=cpu``: not measured there.

    Returns
    -------
    bool
        Whether the option is in XLA_FLAGS for this process's JAX (the first call's answer):
        added now, or there already (a process started by one that added it); False where
        it was left out or JAX had made an array before.

    Examples
    --------
    >>> from portablelayers.compiled import vectorize_short_loops
    >>> first = vectorize_short_loops()  # import portablelayers made the first call
    >>> vectorize_short_loops() == first
    True
    """
    global _short_loops
    if _short_loops is None:
        flags = os.environ.get("XLA_FLAGS", "")
        if XLA_CPU_FLAGS in flags.split():  # inherited from the process that started this
            _short_loops = True
        else:
            _short_loops = _may_vectorize_short_loops(flags)
            if _short_loops:
                os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAGS}".strip()
    return _short_loops


def _may_vectorize_short_loops(flags):
    """Whether `vectorize_short_loops` may add `XLA_CPU_FLAGS` to XLA_FLAGS `flags`."""
    import importlib.util

    if (os.environ.get(SHORT_LOOPS_OPT_OUT) == "0" or "--xla_backend_extra_options" in flags
            or importlib.util.find_spec("jaxlib") is None or not _measured_jaxlib()):
        return False
    accelerators = ("jax_plugins", "libtpu")  # PJRT plugins (GPUs), TPUs' runtime
    if (any(importlib.util.find_spec(name) is not None for name in accelerators)
            and os.environ.get("JAX_PLATFORMS", "").lower() != "cpu"):
        return False
    return not _jax_started()


def _jax_started():
    """Whether JAX has made its backends (and so read XLA_FLAGS) in this process."""
    if "jax" not in sys.modules:
        return False
    try:  # JAX has no public way to ask without starting them
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:
        return True  # cannot tell: as if it had
    return backends_are_initialized()


def _platform(dev):
    """'cpu', 'gpu', ... of a JAX device, or of the devices of a sharding (None if not one)."""
    devices = getattr(dev, "device_set", None)
    if devices:
        dev = next(iter(devices))
    return getattr(dev, "platform", None)


def _measured_jaxlib():
    """Whether the installed jaxlib is of the versions `XLA_CPU_OPTIONS` and `XLA_CPU_FLAGS`
    were measured with."""
    import jaxlib

    numbers = []
    for part in jaxlib.__version__.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        numbers.append(int(digits or 0))
    first, end = XLA_CPU_OPTIONS_JAXLIB
    return tuple(first) <= tuple(numbers) < tuple(end)


def _library(x):
    return type(x).__module__.split(".")[0]


def compile_step(network, optimizer, compile="auto", *, like=None, check=True,
                 precision=None, check_finite=False, compiler_options=None):
    """One training step of `network` with `optimizer`, compiled where the library allows.

    What runs depends on the arrays' library (see the module's table): `jax.jit` on JAX, a
    CUDA graph on torch CUDA tensors, eager elsewhere.

    Parameters
    ----------
    network : Sequential
        A network with `params`, `state`, `loss`, `gradient` and `predict`.
    optimizer : Optimizer
        An optimizer of `portablelayers.optim` (its state is arrays).
    compile : {'auto', True, False}, default 'auto'
        'auto' compiles on JAX and on torch CUDA tensors and runs eagerly elsewhere; True
        raises ValueError where no compiler applies; False always runs eagerly.
    like : array, optional
        An array of the data (library and device) the step will see; default: the
        network's first parameter.
    check : bool, default True
        Check the labels of the first batch (`check_labels`; with `train_on`, of the whole
        set); the Trainer, which checks whole data sets up front, passes False.
    precision : {'highest', 'default'}, optional
        Float32 products at full precision, or the library's default (TF32 on NVIDIA GPUs
        for JAX and torch's convolutions); None leaves the library's setting as it is.
        See `backends.set_precision`: it is the library's global switch.
    check_finite : bool, default False
        Eager steps only: raise FloatingPointError before the update when the loss is NaN
        or inf (one host read a step; see `training_step`). Compiled steps never read
        values; the Trainer finds a non-finite loss when it reads their losses.
    compiler_options : dict, optional
        JAX steps only: XLA options for every program of the step (`jax.jit`'s
        `compiler_options`), added to the defaults of `xla_options` (on a CPU with jaxlib
        0.10, `XLA_CPU_OPTIONS`: matrix products in XLA's own kernels, not YNNPACK's; see
        "Performance" in the docs), which they override. Unlike XLA_FLAGS, they need not be
        set before JAX starts and touch no other program.

    Returns
    -------
    step : callable
        `step(x, t)` runs forward, backward and the update and returns the loss as a 0-D
        array, without reading it. `network.params`, `network.state` and the optimizer's
        state are rebound to the new arrays after each call. `step.kind` names what runs
        ("jax.jit", "cuda-graph", "eager"); `step.traces` counts compilations;
        `step.compiler_options` (read-only) are the XLA options a JAX step's programs are
        compiled with (empty for other kinds).
        `step.train_on(x, t, order, start, stop)` is one step on the samples
        order[start:stop] of a whole data set (the Trainer's; on JAX the gather is part of
        the compiled step); `step.check_data(sets)` is `check_data` for this network.
        `step.hold_sets(sets)` names the sets the caller will evaluate again and again: on
        JAX, one program then evaluates all of them (`step.evaluation_traces` counts the
        evaluation programs traced).

    Raises
    ------
    ValueError
        For a network without parameters, an unknown `compile`, `compile=True` where no
        compiler applies, `compiler_options` for a step that is not JAX's, or (from the
        first call) labels out of range.

    Notes
    -----
    The labels of the first batch (with `train_on`: of the first data set) are checked once
    (`check_labels`); later batches are not read. On JAX, the arrays a step replaces are
    donated: do not keep references to old parameters across steps.

    On glibc (Linux) it has malloc keep freed memory (`memory.keep_freed_memory`,
    process-wide, unless the environment sets malloc itself or opts out): a step frees and
    allocates the same large buffers every time, and pages handed back to the kernel would
    be faulted in again each step.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.nets import TwoLayerNet
    >>> from portablelayers.optim import SGD
    >>> from portablelayers.train import compile_step
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> step = compile_step(net, SGD(lr=0.1))
    >>> loss = step(np.ones((2, 4), dtype=np.float32), np.array([0, 2]))
    >>> step.kind, loss.shape
    ('eager', ())
    """
    params = dict(network.params)
    if not params:
        raise ValueError("compile_step needs a network with parameters")
    like = next(iter(params.values())) if like is None else like
    kind = compiled_kind(like, compile)
    options = guards.compiler_options("compile_step", compiler_options)
    if options and kind != "jax.jit":
        raise ValueError(f"compiler_options are XLA's, for a JAX step; this step runs "
                         f"{kind} on {backend_of(like)} arrays")
    if precision is not None:
        set_precision(backend_of(like), precision)
    _adopt_state(network, like)
    # Each step frees and allocates the same large buffers: glibc keeps them mapped
    # rather than the kernel faulting them in again every step (portablelayers.memory).
    keep_freed_memory()
    if hasattr(optimizer, "init_state"):
        optimizer.init_state(network.params)
    if kind != "eager" and not hasattr(optimizer, "state"):
        kept = _python_side_state(optimizer, network.params)
        if kept:
            why = (f"{type(optimizer).__name__} keeps {kept} in Python attributes, which "
                   "one compiled step cannot hand to the next")
            if compile is True or options:
                asked = "compile=True" if compile is True else "compiler_options given"
                raise ValueError(f"{asked}: {why}; use an optimizer of "
                                 "portablelayers.optim (its state is arrays, "
                                 "optimizer.state) or compile=False")
            warnings.warn(f"{why}: steps run eagerly (an optimizer of portablelayers.optim "
                          "keeps its state as arrays, and compiles)", RuntimeWarning,
                          stacklevel=2)
            kind = "eager"
    if kind == "eager":
        return _EagerStep(network, optimizer, check=check, check_finite=check_finite)
    if kind == "jax.jit":
        return _JaxStep(network, optimizer, check=check, compiler_options=options)
    return _CudaGraphStep(network, optimizer, check=check)


def _same_items(before, now):
    """Whether a container holds the very objects it held (None: not a container)."""
    if before is None:
        return True
    if isinstance(before, dict):
        return before.keys() == now.keys() and all(now[k] is v for k, v in before.items())
    return len(before) == len(now) and all(a is b for a, b in zip(before, now, strict=True))


def _python_side_state(optimizer, params):
    """What an optimizer of one's own (no `state` mapping) changes of itself in one update
    (the book's Momentum makes `v`; its Adam counts `iter` in a Python int), as text, or
    "" when nothing. A compiled step would freeze such state at its first trace. The
    update runs once on zero gradients: traced abstractly on JAX (jax.eval_shape computes
    nothing), on copies of the parameters elsewhere; every attribute is put back after."""
    attributes = vars(optimizer)
    saved = {name: (value, copy.copy(value) if isinstance(value, (dict, list)) else None)
             for name, value in attributes.items()}
    xp = namespace(*params.values())
    grads = {name: xp.zeros_like(value) for name, value in params.items()}

    def update(params):
        params = dict(params)
        optimizer.update(params, grads)
        return params

    try:
        if is_jax_array(next(iter(params.values()))):
            import jax

            jax.eval_shape(update, dict(params))
        else:  # a CUDA graph: the real update on copies
            update({name: xp.asarray(value, copy=True) for name, value in params.items()})
        changed = [name for name, value in attributes.items() if name not in saved
                   or value is not saved[name][0]
                   or not _same_items(saved[name][1], value)]
    except Exception as exc:  # an update that cannot run on these arrays
        changed = [f"something (its update failed on trial: {exc})"]
    finally:
        attributes.clear()
        for name, (value, contents) in saved.items():
            if isinstance(contents, dict):
                value.clear()
                value.update(contents)
            elif contents is not None:
                value[:] = contents
            attributes[name] = value
    return ", ".join(changed)


def _adopt_state(network, like):
    """Every state array on `like`'s library and device (a layer may have made its own on
    NumPy): moved once here, so no step copies between host and device."""
    xp, dev = namespace(like), device(like)
    state = getattr(network, "state", {})
    for name in list(state):
        value = state[name]
        if value is None:
            raise ValueError(f"state {name!r} has not been made yet; a compiled step needs "
                             "every state array before it starts")
        moved = move_to(xp, value, dev)
        if moved is not value:
            state[name] = moved


# --- the kinds -----------------------------------------------------------------------------

class _Step:
    """What every kind shares: the first label check, data checks, and the arrays."""

    kind = "eager"
    compiler_options = types.MappingProxyType({})  # XLA's, for a JAX step's programs

    def __init__(self, network, optimizer, check=True):
        self.network, self.optimizer = network, optimizer
        self.traces = 0
        self._checked = not check  # labels still to be checked (first batch or set)

    def _check_first(self, x, t):
        if not self._checked:
            self.check_labels(x, t)
            self._checked = True

    def check_labels(self, x, t):
        """`check_labels` for this network: class indices in [0, outputs), floating
        targets in the loss layer's range (`Sequential.target_range`)."""
        if _is_class_indices(t):  # one-hot rows: nothing to check or predict
            check_labels(self.network, x, t, classes=self.classes(x))
        targets = _target_range(self.network)
        if targets is not None:
            _check_targets({"batch": (x, t)}, targets)

    def classes(self, x):
        """The width of the network's scores for inputs like `x` (one sample predicted)."""
        return static_shape(self.network.predict(x[:1, ...], train_flg=False))[-1]

    def check_data(self, sets, labels=True):
        """`check_data` for this network: {name: (x, t)} finite, labels in [0, outputs)."""
        if not sets:
            return
        classes = None
        if labels and _has_class_indices(sets):
            classes = self.classes(next(iter(sets.values()))[0])
        targets = _target_range(self.network) if labels else None
        _check_flags(self.network, sets, classes, self._data_flags(sets, classes, targets),
                     targets)

    def _data_flags(self, sets, classes, targets):
        return data_flags(sets, classes, targets)

    def hold_sets(self, sets):
        """The data sets {name: (x, t)} the caller will evaluate again and again; a
        compiled step may lay them out for one evaluation program (JAX), others need
        nothing."""

    def train_on(self, x, t, order, start, stop):
        """One step on the samples order[start:stop] of (x, t), the Trainer's mini-batch;
        returns the loss as `step(x_batch, t_batch)` does. Unless made with check=False,
        the first call checks the labels of the whole set (one read)."""
        if not self._checked:
            self.check_labels(x, t)
            self._checked = True
        return self._step_on(x, t, order, start, stop)

    def _step_on(self, x, t, order, start, stop):
        return self(*self.batch(x, t, order, start, stop))

    def batch(self, x, t, order, start, stop):
        """The samples order[start:stop] of (x, t): the Trainer's mini-batch."""
        xp = namespace(x, t)
        index = order[start:stop]
        return xp.take(x, index, axis=0), xp.take(t, index, axis=0)

    def accuracy(self, x, t, batch_size=None):
        """The network's accuracy on (x, t) as a Python float: `network.accuracy`, in
        batches of `batch_size` where it takes one."""
        if batch_size is not None and takes_argument(self.network.accuracy, "batch_size"):
            return float(self.network.accuracy(x, t, batch_size=batch_size))
        return float(self.network.accuracy(x, t))

    def _arrays(self):
        """(params, state, optimizer state) as plain dicts."""
        return (_snapshot(self.network.params), _snapshot(getattr(self.network, "state", {})),
                dict(getattr(self.optimizer, "state", {})))

    def _bind(self, params, state, opt_state):
        """Rebind the network's and the optimizer's arrays to these."""
        for view, values in ((self.network.params, params),
                             (getattr(self.network, "state", {}), state)):
            # A view's own unchecked rebind where it has one (Sequential's): these arrays
            # are the step's, of the shapes it was given, and a check costs 10 us each.
            put = getattr(view, "rebind", None)
            if put is not None:
                for name, value in values.items():
                    put(name, value)
                continue
            for name, value in values.items():
                if view[name] is not value:
                    view[name] = value
        if opt_state:
            self.optimizer.state = opt_state

    def __repr__(self):
        return f"<training step of {type(self.network).__name__}: {self.kind}>"


def _snapshot(arrays):
    """A mapping of arrays as a plain dict: its own `copy()` where it has one (a dict's, a
    Sequential view's: a few microseconds a step less than reading it name by name)."""
    copy_ = getattr(arrays, "copy", None)
    plain = copy_() if copy_ is not None else arrays
    return plain if type(plain) is dict else dict(plain)


class _EagerStep(_Step):
    """The step as it is written; on Dask, its results persisted (no graph that reaches
    back through every earlier step)."""

    kind = "eager"

    def __init__(self, network, optimizer, check=True, check_finite=False):
        super().__init__(network, optimizer, check)
        self.check_finite = check_finite

    def __call__(self, x, t):
        self._check_first(x, t)
        # On a GPU, like a compiled step, no layer reads data values (each read would wait
        # for the GPU): the data were checked where they entered. On a CPU a read costs
        # microseconds, and every batch keeps the layers' own checks.
        unchecked = reads_wait_for_a_device(x)
        with no_value_checks() if unchecked else contextlib.nullcontext():
            loss = training_step(self.network, self.optimizer, x, t, self.check_finite)
        params, state, opt_state = self._arrays()
        names = [list(params), list(state), list(opt_state)]
        values = persist(loss, *params.values(), *state.values(), *opt_state.values())
        if values[0] is loss:  # not lazy: nothing was persisted
            return loss
        loss, rest = values[0], list(values[1:])
        split = [dict(zip(n, (rest.pop(0) for _ in n), strict=True)) for n in names]
        self._bind(*split)
        return loss


@contextlib.contextmanager
def _interrupt_held():
    """Ctrl-C (SIGINT) held back until the body is done, then delivered as it would have
    been; a second Ctrl-C meanwhile interrupts at once (the user insists, whatever it
    costs). Only the main thread receives
    signals, so elsewhere (and where another handler than Python's own is installed, as
    the Trainer's stop-after-this-step handler) nothing is changed."""
    if (threading.current_thread() is not threading.main_thread()
            or _signal.getsignal(_signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    held = []

    def hold(signum, frame):
        if held:
            raise KeyboardInterrupt
        held.append(frame)

    _signal.signal(_signal.SIGINT, hold)
    try:
        yield
    finally:
        _signal.signal(_signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


class _JaxStep(_Step):
    """jax.jit of (params, state, opt_state, x, t) -> (params, state, opt_state, loss), the
    three state trees donated; one trace per batch shape."""

    kind = "jax.jit"

    def __init__(self, network, optimizer, check=True, compiler_options=None):
        super().__init__(network, optimizer, check)
        import jax
        import jax.numpy as jnp

        dev = device(next(iter(network.params.values())))
        # Every program of the step compiled with the same XLA options (read-only here:
        # jax.jit takes them once).
        options = xla_options(dev, compiler_options)
        self.compiler_options = types.MappingProxyType(options)
        jit = functools.partial(jax.jit, compiler_options=dict(options) or None)
        self._jit = jit

        def pure(params, state, opt_state, x, t):
            self.traces += 1  # runs only while tracing
            self._bind(params, state, opt_state)
            with no_value_checks():
                loss = training_step(self.network, self.optimizer, x, t)
            return (*self._arrays(), loss)

        self._jitted = jit(pure, donate_argnums=(0, 1, 2))

        def pure_on(params, state, opt_state, x, t, order, start, size):
            return pure(params, state, opt_state, *take(x, t, order, start, size))

        # The Trainer's step gathers its batch inside the same program: one trace and one
        # call a step instead of two (tracing dominates a short run's time on a CPU).
        self._jitted_on = jit(pure_on, donate_argnums=(0, 1, 2), static_argnames="size")
        # Committed to their device, as the step's outputs are: arrays fresh from
        # jnp.asarray are not, and the second call would compile the step again.
        self._bind(*(jax.device_put(tree, dev) for tree in self._arrays()))

        takes_flag = takes_argument(network.loss, "train_flg")

        def one(xb, tb):
            # (batch loss, correct predictions) of one batch, in inference mode
            scores = self.network.predict(xb, train_flg=False)
            loss = (self.network.loss(xb, tb, train_flg=False) if takes_flag
                    else self.network.loss(xb, tb))
            hits = predicted_classes(scores) == class_indices(tb)
            return loss, jnp.sum(hits, dtype=jnp.int32)

        def batch_sums(params, state, xb, tb):
            # (loss x batch size, correct predictions) of one batch, the loss summed in
            # float32 at least (float64 under x64). The arrays are bound anew for each
            # batch: a loss that writes state (a book network's train-mode predict) must
            # leave nothing of one traced loop body to the next.
            self._bind(params, state, {})
            loss, right = one(xb, tb)
            # widened before the product: loss x 7 in bfloat16 is off in the third digit
            return jnp.sum(loss).astype(jnp.result_type(float)) * xb.shape[0], right

        def take(x, t, order, start, size):
            index = jax.lax.dynamic_slice_in_dim(order, start, size)
            return jnp.take(x, index, axis=0), jnp.take(t, index, axis=0)

        def evaluate_held(params, state, x, t, which, layout, batch_size):
            # (sum of batch loss x batch size, correct predictions) over held set number
            # `which` (`hold_sets`): rows first:first + n of x and t, for (first, n) =
            # layout[which]. One program for every set, each batched as it would be alone:
            # its full batches in a loop from where the set starts, then its last, smaller
            # batch, whose size (one of the sets') a branch picks.
            self.evaluation_traces += 1  # runs only while tracing
            b = batch_size
            firsts = jnp.asarray([first for first, _ in layout], dtype=jnp.int32)
            fulls = jnp.asarray([n // b for _, n in layout], dtype=jnp.int32)
            first, full = firsts[which], fulls[which]

            def add(sums, xb, tb):
                loss, right = batch_sums(params, state, xb, tb)
                return sums[0] + loss, sums[1] + right

            def body(i, sums):
                start = first + i * b
                return add(sums, jax.lax.dynamic_slice_in_dim(x, start, b),
                           jax.lax.dynamic_slice_in_dim(t, start, b))

            zero = (jnp.zeros((), dtype=jnp.result_type(float)), jnp.zeros((), dtype=jnp.int32))
            sums = jax.lax.fori_loop(0, full, body, zero)
            rests = sorted({n % b for _, n in layout} - {0})

            def rest(size):
                def branch(sums):
                    start = first + full * b
                    return add(sums, jax.lax.dynamic_slice_in_dim(x, start, size),
                               jax.lax.dynamic_slice_in_dim(t, start, size))
                return branch

            if rests:
                pick = jnp.asarray([rests.index(n % b) + 1 if n % b else 0
                                    for _, n in layout], dtype=jnp.int32)
                sums = jax.lax.switch(pick[which], [lambda sums: sums]
                                      + [rest(size) for size in rests], sums)
            self._bind(params, state, {})
            return sums

        def evaluate(params, state, x, t, batch_size):
            # (sum of batch loss x batch size, correct predictions) over a whole set: the
            # held sets' program with this set alone, so one compilation per set shape;
            # nothing is read until the caller reads.
            return evaluate_held(params, state, x, t, 0, ((0, x.shape[0]),), batch_size)

        self._evaluate = jit(evaluate, static_argnames="batch_size")
        self._evaluate_held = jit(evaluate_held, static_argnames=("layout", "batch_size"))
        self.evaluation_traces = 0
        self._held = None  # (pairs, x, t, their numbers, layout) of `hold_sets`
        self._evaluated = None  # (arguments, (mean loss, accuracy)) of the last evaluation
        self._take = jit(take, static_argnames="size")
        self._flags = jit(data_flags, static_argnames=("classes", "targets"))
        self._starts = {}  # batch start -> the same as a device scalar, made once

    def __call__(self, x, t):
        self._check_first(x, t)
        return self._run(self._jitted, x, t)

    def _step_on(self, x, t, order, start, stop):
        # order[start:stop] of (x, t) gathered inside the compiled step
        return self._run(self._jitted_on, x, t, order, self._start_index(start),
                         size=stop - start)

    def _run(self, jitted, *args, **static):
        before = self._arrays()
        # The call donates (deletes) the arrays of `before`: a Ctrl-C between its return and
        # the rebinding would lose both the old arrays and the new ones.
        with _interrupt_held():
            try:
                *after, loss = jitted(*before, *args, **static)
            except BaseException:
                self._bind(*before)  # a failed trace must not leave tracers in the network
                raise
            self._bind(*after)
        return loss

    def _start_index(self, start):
        """`start` as a device scalar, made once per value (a Python int would be
        compiled in as a constant, a new program per batch)."""
        if start not in self._starts:
            import jax.numpy as jnp

            self._starts[start] = jnp.asarray(start, dtype=jnp.int32)
        return self._starts[start]

    def classes(self, x):
        """The width of the network's scores from `jax.eval_shape`: nothing is computed or
        compiled for it."""
        import jax

        params, state, _ = before = self._arrays()

        def scores(params, state, x):
            self._bind(params, state, {})
            return self.network.predict(x, train_flg=False)

        one = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)  # x[:1] would compile
        try:
            return jax.eval_shape(scores, params, state, one).shape[-1]
        finally:
            self._bind(*before)

    def _data_flags(self, sets, classes, targets):
        # One compiled program for every check of every set: eagerly, each reduction of
        # each set's shape would be compiled on its own (about 0.07 s each on a CPU).
        return self._flags(sets, classes, targets)

    def batch(self, x, t, order, start, stop):
        """order[start:stop] gathered in one compiled call (slicing a JAX array eagerly
        compiles anew for every distinct slice)."""
        return self._take(x, t, order, self._start_index(start), size=stop - start)

    def accuracy(self, x, t, batch_size=None):
        """As `network.accuracy`, computed with the mean loss in one compiled pass over
        the whole set (in batches of `batch_size`) and read once."""
        n = static_shape(x)[0]
        if not n or t.ndim not in (1, 2) or static_shape(t)[0] != n:  # labels (N,), (N, C)
            return super().accuracy(x, t, batch_size)  # its errors for what does not fit
        return self._evaluated_on(x, t, batch_size)[1]

    def mean_loss(self, x, t, batch_size=None):
        """The network's loss on (x, t) in inference mode, averaged over the samples
        (each batch's loss weighted by its size), as a Python float."""
        return self._evaluated_on(x, t, batch_size)[0]

    def hold_sets(self, sets):
        """Keep the data sets {name: (x, t)} that will be evaluated again and again (the
        Trainer's) as one pair of arrays, the sets one after another, so that one compiled
        program evaluates each of them.

        Every other set shape would be a program of its own, and on a CPU each costs about
        0.07 s to trace, lower and load from the compilation cache: most of a short run's
        time. The copy costs memory, so sets over `HELD_BYTES` in all, and sets whose
        samples or labels differ in shape or dtype, are evaluated as they are.
        """
        import jax.numpy as jnp

        self._held = None
        pairs = []
        for x, t in sets.values():
            if not any(x is a and t is b for a, b in pairs):  # a set given twice: once
                pairs.append((x, t))
        xs, ts = [x for x, _ in pairs], [t for _, t in pairs]
        if (len(pairs) < 2 or not all(is_jax_array(a) for a in xs + ts)
                or any(a.dtype != xs[0].dtype or a.shape[1:] != xs[0].shape[1:] for a in xs)
                or any(a.dtype != ts[0].dtype or a.shape[1:] != ts[0].shape[1:] for a in ts)
                or sum(a.size * a.dtype.itemsize for a in xs + ts) > HELD_BYTES):
            return
        layout, first = [], 0
        for a in xs:
            layout.append((first, a.shape[0]))
            first += a.shape[0]

        def one_pair(xs, ts):  # the set numbers made in the same program (eagerly: more)
            numbers = [jnp.asarray(i, dtype=jnp.int32) for i in range(len(xs))]
            return jnp.concatenate(xs), jnp.concatenate(ts), numbers

        self._held = (pairs, *self._jit(one_pair)(xs, ts), tuple(layout))

    def _held_range(self, x, t):
        """(held x, held t, the set's number, layout) of the set (x, t), or None where it
        is not held."""
        if self._held is None:
            return None
        pairs, held_x, held_t, numbers, layout = self._held
        for (a, b), number in zip(pairs, numbers, strict=True):
            if x is a and t is b:
                return held_x, held_t, number, layout
        return None

    def _evaluated_on(self, x, t, batch_size):
        """(mean loss, accuracy) on (x, t), remembered for the same arrays and parameters:
        the Trainer asks for both, one after the other."""
        import jax

        n = static_shape(x)[0]
        params, state, _ = before = self._arrays()
        # The arrays themselves, compared by identity: an id alone could be a new array's
        # once the old one is gone.
        key = (x, t, batch_size, *params.values(), *state.values())
        last = self._evaluated
        if last is not None and len(last[0]) == len(key) and all(
                a is b for a, b in zip(last[0], key, strict=True)):
            return last[1]
        held = self._held_range(x, t)
        try:
            if held is None:
                loss, correct = jax.device_get(self._evaluate(
                    params, state, x, t, batch_size=min(batch_size or n, n)))
            else:
                held_x, held_t, number, layout = held
                largest = max(size for _, size in layout)  # no batch size: each set whole
                loss, correct = jax.device_get(self._evaluate_held(
                    params, state, held_x, held_t, number, layout=layout,
                    batch_size=min(batch_size or largest, largest)))
        finally:
            self._bind(*before)
        result = (float(loss) / n, int(correct) / n)
        self._evaluated = (key, result)
        return result


class _CudaGraphStep(_Step):
    """The step on torch CUDA tensors captured in a CUDA graph, one per batch shape.

    The first `warmup` steps of a shape run eagerly on a side stream (real steps: they
    train), as torch's whole-network capture recipe asks; the next one is captured and
    every later one is a replay: the batch is copied into static input tensors, and the
    arrays the step rebinds (state, Adam's count) are copied back into the captured
    buffers inside the graph, so each replay starts from the last one's results. Every
    graph (one per batch shape) and every eager step reads and writes the same buffers,
    which stay bound to the network and the optimizer.
    """

    kind = "cuda-graph"
    warmup = 3

    def __init__(self, network, optimizer, check=True):
        super().__init__(network, optimizer, check)
        self._graphs = {}  # (x shape, t shape) -> (graph, static x, static t, static loss)
        self._eager_runs = {}
        self._buffers = None  # (params, state, optimizer state) that every graph reads

    def _persistent(self):
        """The buffers every graph reads and writes, bound to the network and the
        optimizer, holding the latest values: the arrays bound at the first step; a value
        rebound since (an eager step's result, a user's load) is copied into them."""
        current = self._arrays()
        if self._buffers is None:
            self._buffers = current
            return current
        for kept, now in zip(self._buffers, current, strict=True):
            for name, value in now.items():
                if name not in kept:  # an array an optimizer made on its first update
                    kept[name] = value
                elif value is not kept[name]:
                    kept[name].copy_(value)
        self._bind(*self._buffers)
        return self._buffers

    def __call__(self, x, t):
        import torch

        self._check_first(x, t)
        buffers = self._persistent()
        key = (tuple(x.shape), tuple(t.shape), x.dtype, t.dtype)
        if key in self._graphs:
            graph, static_x, static_t, static_loss = self._graphs[key]
            static_x.copy_(x)
            static_t.copy_(t)
            graph.replay()
            return static_loss.clone()
        runs = self._eager_runs.get(key, 0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        if runs < self.warmup:
            with torch.cuda.stream(side), no_value_checks():
                loss = training_step(self.network, self.optimizer, x, t)
            torch.cuda.current_stream().wait_stream(side)
            self._eager_runs[key] = runs + 1
            self._persistent()  # its results into the buffers the graphs read
            return loss
        static_x, static_t = x.clone(), t.clone()
        graph = torch.cuda.CUDAGraph()
        self.traces += 1
        try:
            with torch.cuda.graph(graph), no_value_checks():
                static_loss = training_step(self.network, self.optimizer, static_x, static_t)
                for old, new in zip(buffers, self._arrays(), strict=True):
                    for name, value in new.items():
                        if value is not old[name]:
                            old[name].copy_(value)
        finally:
            self._bind(*buffers)  # the captured buffers, whatever capture rebound
        self._graphs[key] = (graph, static_x, static_t, static_loss)
        graph.replay()  # capture records without running: run this batch now
        return static_loss.clone()

