"""The error contract as a catalogue: one row per bad input.

Each row is (subject, the call, the exception type, words its message must contain). The
test runs the call on an object that has already done one valid forward/backward (or on a
fresh one, for calls out of order), and then checks that

- the exception and its words are the expected ones,
- no array the caller passed has changed,
- the object still gives exactly what a fresh object gives after the same valid calls
  (outputs, input gradients, parameter gradients, parameters and state).

The second table, `VALUE_CASES`, holds edge inputs that must *work*: each against an
independent reference (NumPy written out here, or PyTorch where it is installed).
"""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest
from conftest import BACKEND
from support import to_numpy

import portablelayers as pl
from portablelayers import functions as F
from portablelayers import optim
from portablelayers.checkpoint import load_arrays, load_meta
from portablelayers.gradcheck import numerical_gradient
from portablelayers.nets import Sequential, TwoLayerNet
from portablelayers.train import Trainer

LAZY = BACKEND == "dask"  # value checks (label ranges, finite data) are not run on Dask


class ForeignArray:
    """A stand-in for an array of another Array API library (on the NumPy session)."""

    shape, ndim, dtype, device = (2, 3), 2, "float64", "cpu"

    def __array_namespace__(self, api_version=None):
        return ForeignNamespace


class ForeignNamespace:
    __name__ = "foreign"


def foreign(shape=(2, 3)):
    """An array of a library other than the one under test."""
    if BACKEND == "numpy":
        return ForeignArray()
    return np.ones(shape)


def arr(xp, value, dtype="float64"):
    return xp.asarray(np.asarray(value), dtype=getattr(xp, dtype))


def seq(xp, shape, dtype="float64", offset=0.0):
    """A deterministic array of `shape`: distinct values, some negative."""
    n = math.prod(shape)
    values = np.sin(np.arange(n, dtype=np.float64) * 1.7 + offset).reshape(shape)
    return arr(xp, values, dtype)


def cplx(xp, shape):
    return xp.asarray(np.ones(shape) + 1j, dtype=xp.complex128)


# --- subjects: how to build an object and use it validly -----------------------------

class Subject:
    """An object under test: `build(xp)`, and `use(obj, xp)`, one valid round of calls
    whose results (as NumPy arrays) say what the object computes."""

    def __init__(self, name, build, x_shape, forward=None, loss=False, needs_dout=True):
        self.name, self.build, self.x_shape = name, build, x_shape
        self.forward = forward or (lambda obj, x, xp: obj.forward(x))
        self.loss, self.needs_dout = loss, needs_dout

    def x(self, xp):
        return seq(xp, self.x_shape)

    def use(self, obj, xp):
        out = self.forward(obj, self.x(xp), xp)
        if self.loss:
            dx = obj.backward(1.0)
        else:
            dx = obj.backward(seq(xp, tuple(out.shape), offset=0.3))
        if isinstance(dx, tuple):
            results = [out, *dx]
        else:
            results = [out, dx]
        for d in (getattr(obj, "params", {}), getattr(obj, "grads", {}),
                  getattr(obj, "state", {})):
            results += [d[k] for k in sorted(d) if d[k] is not None]
        return [to_numpy(r) for r in results]

    def __repr__(self):
        return self.name


def _labels(xp, values=(0, 2)):
    return xp.asarray(np.asarray(values), dtype=xp.int64)


def _bn(xp):
    return pl.BatchNormalization(seq(xp, (3,), offset=1.0) + 2.0, seq(xp, (3,), offset=2.0))


SUBJECTS = {s.name: s for s in [
    Subject("ReLU", lambda xp: pl.ReLU(), (2, 3)),
    Subject("Sigmoid", lambda xp: pl.Sigmoid(), (2, 3)),
    Subject("Tanh", lambda xp: pl.Tanh(), (2, 3)),
    Subject("LeakyReLU", lambda xp: pl.LeakyReLU(0.1), (2, 3)),
    Subject("Identity", lambda xp: pl.Identity(), (2, 3)),
    Subject("Flatten", lambda xp: pl.Flatten(), (2, 3, 2)),
    Subject("Dropout", lambda xp: pl.Dropout(0.5, seed=3, xp=xp), (2, 3),
            forward=lambda obj, x, xp: obj.forward(x, True)),
    Subject("Affine", lambda xp: pl.Affine(seq(xp, (4, 3)), seq(xp, (3,), offset=1.0)),
            (2, 4)),
    Subject("Convolution", lambda xp: pl.Convolution(seq(xp, (2, 1, 2, 2)),
                                                     seq(xp, (2,), offset=1.0)),
            (1, 1, 4, 4)),
    Subject("Pooling", lambda xp: pl.Pooling(2, 2, stride=2), (1, 2, 4, 4)),
    Subject("AvgPooling", lambda xp: pl.AvgPooling(2, 2, stride=2), (1, 2, 4, 4)),
    Subject("BatchNormalization", _bn, (4, 3),
            forward=lambda obj, x, xp: obj.forward(x, True)),
    Subject("MulLayer", lambda xp: pl.MulLayer(), (2, 3),
            forward=lambda obj, x, xp: obj.forward(x, seq(xp, (3,), offset=1.0))),
    Subject("AddLayer", lambda xp: pl.AddLayer(), (2, 3),
            forward=lambda obj, x, xp: obj.forward(x, seq(xp, (3,), offset=1.0))),
    Subject("SoftmaxWithLoss", lambda xp: pl.SoftmaxWithLoss(), (2, 3), loss=True,
            forward=lambda obj, x, xp: obj.forward(x, _labels(xp))),
    Subject("SigmoidWithLoss", lambda xp: pl.SigmoidWithLoss(), (2, 3), loss=True,
            forward=lambda obj, x, xp: obj.forward(x, arr(xp, [[0, 1, 0.5], [1, 0, 0]]))),
    Subject("MeanSquaredError", lambda xp: pl.MeanSquaredError(), (2, 3), loss=True,
            forward=lambda obj, x, xp: obj.forward(x, seq(xp, (2, 3), offset=0.5))),
]}

# The forward output's shape of each subject's valid use.
OUT_SHAPES = {"ReLU": (2, 3), "Sigmoid": (2, 3), "Tanh": (2, 3), "LeakyReLU": (2, 3),
              "Identity": (2, 3), "Flatten": (2, 6), "Dropout": (2, 3), "Affine": (2, 3),
              "Convolution": (1, 2, 3, 3), "Pooling": (1, 2, 2, 2), "AvgPooling": (1, 2, 2, 2),
              "BatchNormalization": (4, 3), "MulLayer": (2, 3), "AddLayer": (2, 3)}

SINGLE_INPUT = ["ReLU", "Sigmoid", "Tanh", "LeakyReLU", "Identity", "Flatten", "Dropout",
                "Affine", "Convolution", "Pooling", "AvgPooling", "BatchNormalization"]
LOSSES = ["SoftmaxWithLoss", "SigmoidWithLoss", "MeanSquaredError"]
# Layers whose forward meets arrays of their own (params, a second input, targets).
MIXING = ["Affine", "Convolution", "BatchNormalization", "MulLayer", "AddLayer", *LOSSES]


def _fwd(name):
    """forward(bad) for subject `name`, with its other arguments valid."""
    s = SUBJECTS[name]

    def call(x_of_xp):
        def make(obj, xp):
            x = x_of_xp(xp)
            if name in ("Dropout", "BatchNormalization"):
                return obj.forward, (x, True)
            if name in ("MulLayer", "AddLayer"):
                return obj.forward, (x, seq(xp, (3,), offset=1.0))
            if name == "SoftmaxWithLoss":
                return obj.forward, (x, _labels(xp))
            if name in ("SigmoidWithLoss", "MeanSquaredError"):
                return obj.forward, (x, seq(xp, s.x_shape, offset=0.5) * 0 + 0.5)
            return obj.forward, (x,)
        return make
    return call


def _bwd(dout_of_xp):
    def make(obj, xp):
        return obj.backward, (dout_of_xp(xp),)
    return make


# A row: (id, subject name, call(obj, xp) -> (fn, args), exception, words, options)
ROWS = []


def row(id, subject, call, exc, words, warm=True, skip=None):
    ROWS.append(pytest.param(subject, call, exc, words, warm, skip, id=id))


# --- generic rows for every layer ----------------------------------------------------

_WRONG_NDIM = {"Affine": (), "Convolution": (1, 4, 4), "Pooling": (2, 4, 4),
               "AvgPooling": (2, 4, 4), "BatchNormalization": (3,), "Flatten": (3,)}
for _name in SINGLE_INPUT + ["MulLayer", "AddLayer"] + LOSSES:
    _f = _fwd(_name)
    _shape = SUBJECTS[_name].x_shape
    if _name not in ("MulLayer", "AddLayer"):  # they take numbers; lists are tested below
        row(f"{_name}-forward-list", _name, _f(lambda xp, s=_shape: np.ones(s).tolist()),
            TypeError, ["must be an array", "list"])
        row(f"{_name}-forward-number", _name, _f(lambda xp: 3.0), TypeError,
            ["must be an array", "float"])
    if _name not in ("Identity", "Flatten"):  # shape-only layers take any dtype
        row(f"{_name}-forward-complex", _name, _f(lambda xp, s=_shape: cplx(xp, s)),
            TypeError, ["complex"])
    if _name in MIXING:
        row(f"{_name}-forward-other-library", _name, _f(lambda xp, s=_shape: foreign(s)),
            TypeError, ["same array library"])
    row(f"{_name}-backward-before-forward", _name,
        _bwd(lambda xp: 1.0) if _name in LOSSES else _bwd(lambda xp, s=_shape: seq(xp, s)),
        RuntimeError, ["before", "forward()"], warm=False)
    if _name in _WRONG_NDIM:
        row(f"{_name}-forward-wrong-ndim", _name,
            _f(lambda xp, s=_WRONG_NDIM[_name]: seq(xp, s)), ValueError, ["shape"])

for _name in SINGLE_INPUT + ["MulLayer", "AddLayer"]:
    row(f"{_name}-backward-dout-wrong-shape", _name, _bwd(lambda xp: seq(xp, (7,))),
        ValueError, ["dout of shape", "(7,)"])
    row(f"{_name}-backward-dout-transposed", _name,
        _bwd(lambda xp, n=_name: seq(xp, (1, 1, 1, 1, 5))), ValueError, ["dout of shape"])
    row(f"{_name}-backward-dout-list", _name, _bwd(lambda xp: [[1.0, 2.0, 3.0]]), TypeError,
        ["dout", "list"])
    row(f"{_name}-backward-dout-other-library", _name,
        _bwd(lambda xp, n=_name: foreign(OUT_SHAPES[n])), TypeError, ["array"])
for _name in LOSSES:
    row(f"{_name}-backward-dout-array", _name, _bwd(lambda xp: seq(xp, (2, 3))), ValueError,
        ["number or a 0-D array", "(2, 3)"])
    row(f"{_name}-backward-dout-list", _name, _bwd(lambda xp: [1.0]), TypeError,
        ["dout", "list"])
    row(f"{_name}-backward-dout-bool", _name, _bwd(lambda xp: True), TypeError,
        ["dout", "bool"])
    row(f"{_name}-forward-empty-batch", _name, _fwd(_name)(lambda xp: seq(xp, (0, 3))),
        ValueError, ["empty"])

# --- rows for one layer each ---------------------------------------------------------

row("ReLU-forward-after-valid-number", "ReLU", _fwd("ReLU")(lambda xp: 3.0), TypeError,
    ["ReLU.forward", "float"])
row("Sigmoid-forward-bool-promoted-then-dout-int-ok", "Sigmoid",
    _bwd(lambda xp: cplx(xp, (2, 3))), TypeError, ["dout", "real"])
row("LeakyReLU-slope-string", "LeakyReLU", lambda obj, xp: (pl.LeakyReLU, ("0.1",)),
    TypeError, ["negative_slope", "str"])
row("Affine-features-mismatch", "Affine", _fwd("Affine")(lambda xp: seq(xp, (2, 5))),
    ValueError, ["5 features", "expects 4"])
row("Affine-1d-features-mismatch", "Affine", _fwd("Affine")(lambda xp: seq(xp, (5,))),
    ValueError, ["5 features"])
row("Affine-W-1d", "Affine", lambda obj, xp: (pl.Affine, (seq(xp, (4,)), seq(xp, (3,)))),
    ValueError, ["W of shape (D, M)"])
row("Affine-b-wrong", "Affine", lambda obj, xp: (pl.Affine, (seq(xp, (4, 3)), seq(xp, (4,)))),
    ValueError, ["b of shape (M,)"])
row("Affine-W-list", "Affine", lambda obj, xp: (pl.Affine, ([[1.0]], seq(xp, (1,)))),
    TypeError, ["W", "list"])
row("Affine-W-complex", "Affine", lambda obj, xp: (pl.Affine, (cplx(xp, (4, 3)),
                                                               seq(xp, (3,)))),
    TypeError, ["Affine W", "complex"])
row("Affine-W-other-library", "Affine",
    lambda obj, xp: (pl.Affine, (foreign((4, 3)), seq(xp, (3,)))), TypeError,
    ["same array library"])
row("Affine-backward-dout-1d-for-2d", "Affine", _bwd(lambda xp: seq(xp, (3,))), ValueError,
    ["dout of shape (2, 3)"])
row("Convolution-channels-mismatch", "Convolution",
    _fwd("Convolution")(lambda xp: seq(xp, (1, 2, 4, 4))), ValueError, ["2 channels",
                                                                        "expects 1"])
row("Convolution-window-too-large", "Convolution",
    _fwd("Convolution")(lambda xp: seq(xp, (1, 1, 1, 1))), ValueError, ["larger than"])
row("Convolution-W-3d-number-bias", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (1, 3, 3)), 0)), ValueError,
    ["W of shape (FN, C, FH, FW)", "got W (1, 3, 3) and b 0"])
row("Convolution-stride-zero", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (2, 1, 2, 2)), seq(xp, (2,))),
                     {"stride": 0}), ValueError, ["stride", ">= 1"])
row("Convolution-stride-float", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (2, 1, 2, 2)), seq(xp, (2,))),
                     {"stride": 1.5}), TypeError, ["stride must be an int", "float"])
row("Convolution-stride-bool", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (2, 1, 2, 2)), seq(xp, (2,))),
                     {"stride": True}), TypeError, ["stride must be an int", "bool"])
row("Convolution-pad-negative", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (2, 1, 2, 2)), seq(xp, (2,))),
                     {"pad": -1}), ValueError, ["pad", ">= 0"])
row("Convolution-pad-string", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (2, 1, 2, 2)), seq(xp, (2,))),
                     {"pad": "1"}), TypeError, ["pad must be an int", "str"])
row("Convolution-W-3d", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (2, 2, 2)), seq(xp, (2,)))), ValueError,
    ["(FN, C, FH, FW)"])
row("Convolution-b-string", "Convolution",
    lambda obj, xp: (pl.Convolution, (seq(xp, (2, 1, 2, 2)), "0")), TypeError,
    ["bias", "str"])
row("Convolution-W-complex", "Convolution",
    lambda obj, xp: (pl.Convolution, (cplx(xp, (2, 1, 2, 2)), seq(xp, (2,)))), TypeError,
    ["complex"])
for _name in ("Pooling", "AvgPooling"):
    _cls = getattr(pl, _name)
    row(f"{_name}-pad-not-below-window", _name, lambda obj, xp, c=_cls: (c, (2, 2, 2, 2)),
        ValueError, ["pad must be smaller"])
    row(f"{_name}-pool-zero", _name, lambda obj, xp, c=_cls: (c, (0, 2)), ValueError,
        ["pool_h", ">= 1"])
    row(f"{_name}-pool-float", _name, lambda obj, xp, c=_cls: (c, (2.0, 2)), TypeError,
        ["pool_h must be an int"])
    row(f"{_name}-stride-none", _name, lambda obj, xp, c=_cls: (c, (2, 2, None)),
        TypeError, ["stride must be an int", "NoneType"])
    row(f"{_name}-window-too-large", _name, _fwd(_name)(lambda xp: seq(xp, (1, 1, 1, 1))),
        ValueError, ["larger than"])
row("BatchNormalization-empty-training-batch", "BatchNormalization",
    _fwd("BatchNormalization")(lambda xp: seq(xp, (0, 3))), ValueError, ["empty", "axis 0"])
row("BatchNormalization-empty-spatial", "BatchNormalization",
    _fwd("BatchNormalization")(lambda xp: seq(xp, (2, 3, 0, 2))), ValueError, ["empty"])
row("BatchNormalization-channels-mismatch", "BatchNormalization",
    _fwd("BatchNormalization")(lambda xp: seq(xp, (4, 5))), ValueError, ["(N, 3)"])
row("BatchNormalization-gamma-2d", "BatchNormalization",
    lambda obj, xp: (pl.BatchNormalization, (seq(xp, (3, 1)), seq(xp, (3, 1)))), ValueError,
    ["same shape (C,)"])
row("BatchNormalization-gamma-list", "BatchNormalization",
    lambda obj, xp: (pl.BatchNormalization, ([1.0], seq(xp, (1,)))), TypeError,
    ["gamma", "list"])
row("BatchNormalization-momentum-out-of-range", "BatchNormalization",
    lambda obj, xp: (pl.BatchNormalization, (seq(xp, (3,)), seq(xp, (3,))), {"momentum": 2}),
    ValueError, ["momentum"])
row("BatchNormalization-momentum-string", "BatchNormalization",
    lambda obj, xp: (pl.BatchNormalization, (seq(xp, (3,)), seq(xp, (3,))),
                     {"momentum": "0.9"}), TypeError, ["momentum must be a real number", "str"])
row("BatchNormalization-eps-zero", "BatchNormalization",
    lambda obj, xp: (pl.BatchNormalization, (seq(xp, (3,)), seq(xp, (3,))), {"eps": 0.0}),
    ValueError, ["eps must be positive"])
row("BatchNormalization-running-mean-shape", "BatchNormalization",
    lambda obj, xp: (pl.BatchNormalization, (seq(xp, (3,)), seq(xp, (3,))),
                     {"running_mean": seq(xp, (4,))}), ValueError, ["running_mean"])
row("Dropout-ratio-one", "Dropout", lambda obj, xp: (pl.Dropout, (1.0,)), ValueError,
    ["dropout_ratio", "[0, 1)"])
row("Dropout-ratio-string", "Dropout", lambda obj, xp: (pl.Dropout, ("0.5",)), TypeError,
    ["dropout_ratio", "str"])
row("Dropout-seed-float", "Dropout", lambda obj, xp: (pl.Dropout, (0.5, 1.5)), TypeError,
    ["seed must be an int"])
row("Dropout-inference-dout-wrong-shape", "Dropout",
    lambda obj, xp: (obj.forward(seq(xp, (2, 3)), False) is None or obj.backward,
                     (seq(xp, (5,)),)),
    ValueError, ["dout of shape (2, 3)"])
row("Flatten-dout-wrong-size", "Flatten", _bwd(lambda xp: seq(xp, (2, 5))), ValueError,
    ["dout of shape (2, 6)"])
for _name in ("MulLayer", "AddLayer"):
    _f = _fwd(_name)
    row(f"{_name}-no-broadcast", _name,
        lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), seq(xp, (4,)))),
        (ValueError, TypeError, RuntimeError), [])
    row(f"{_name}-list", _name, lambda obj, xp: (obj.forward, ([1, 2], 3)), TypeError,
        ["real number or an array", "list"])
    row(f"{_name}-string", _name, lambda obj, xp: (obj.forward, ("2", seq(xp, (2,)))),
        TypeError, ["str"])
    row(f"{_name}-bool", _name, lambda obj, xp: (obj.forward, (True, 2.0)), TypeError,
        ["bool"])
    row(f"{_name}-backward-array-dout-for-arrays", _name, _bwd(lambda xp: seq(xp, (3,))),
        ValueError, ["dout of shape (2, 3)"])
_sm = _fwd("SoftmaxWithLoss")
row("SoftmaxWithLoss-0d-scores", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, ()), _labels(xp, 0))), ValueError,
    ["(N, C) or (C,)"])
row("SoftmaxWithLoss-3d-scores", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3, 2)), _labels(xp))), ValueError,
    ["(N, C) or (C,)"])
row("SoftmaxWithLoss-no-classes", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 0)), _labels(xp))), ValueError, ["empty"])
row("SoftmaxWithLoss-float-labels", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), arr(xp, [0.0, 2.0]))), ValueError,
    ["integer dtype"])
row("SoftmaxWithLoss-labels-out-of-range", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), _labels(xp, (0, 3)))), ValueError,
    ["[0, 3)"], skip="lazy")
row("SoftmaxWithLoss-negative-label", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), _labels(xp, (-1, 0)))), ValueError,
    ["[0, 3)"], skip="lazy")
row("SoftmaxWithLoss-labels-wrong-length", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), _labels(xp, (0, 1, 2)))), ValueError,
    ["labels"])
row("SoftmaxWithLoss-one-hot-wrong-shape", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), seq(xp, (2, 4)))), ValueError,
    ["one-hot"])
row("SoftmaxWithLoss-labels-list", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), [0, 2])), TypeError, ["t", "list"])
row("SoftmaxWithLoss-labels-2d-float-column", "SoftmaxWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), arr(xp, [[0.0], [2.0]]))), ValueError,
    ["integer dtype"])
row("SigmoidWithLoss-targets-out-of-range", "SigmoidWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), seq(xp, (2, 3)) + 2.0)), ValueError,
    ["[0, 1]"], skip="lazy")
row("SigmoidWithLoss-targets-shape", "SigmoidWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), seq(xp, (3,)))), ValueError,
    ["targets t"])
row("SigmoidWithLoss-targets-complex", "SigmoidWithLoss",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), cplx(xp, (2, 3)))), TypeError,
    ["complex"])
row("MeanSquaredError-targets-shape", "MeanSquaredError",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), seq(xp, (2, 4)))), ValueError,
    ["targets t"])
row("MeanSquaredError-targets-list", "MeanSquaredError",
    lambda obj, xp: (obj.forward, (seq(xp, (2, 3)), [[0.0] * 3] * 2)), TypeError,
    ["t", "list"])

# --- stateless functions, optimizers, networks, checkpoints ---------------------------

_NONE = "ReLU"  # rows whose object is not involved still check a layer is untouched


def fn_row(id, call, exc, words, skip=None):
    row(id, _NONE, lambda obj, xp: call(xp), exc, words, skip=skip)


for _fname in ("sigmoid", "relu", "softmax", "log_softmax"):
    _fn = getattr(F, _fname)
    fn_row(f"{_fname}-list", lambda xp, f=_fn: (f, ([1.0, 2.0],)), TypeError,
           ["must be an array", "list"])
    fn_row(f"{_fname}-complex", lambda xp, f=_fn: (f, (cplx(xp, (2,)),)), TypeError,
           ["complex"])
for _fname in ("softmax", "log_softmax"):
    _fn = getattr(F, _fname)
    fn_row(f"{_fname}-0d", lambda xp, f=_fn: (f, (seq(xp, ()),)), ValueError,
           ["class axis", "0-D"])
    fn_row(f"{_fname}-no-classes", lambda xp, f=_fn: (f, (seq(xp, (2, 0)),)), ValueError,
           ["at least one class"])
fn_row("cross_entropy_error-0d", lambda xp: (F.cross_entropy_error,
                                             (seq(xp, ()), _labels(xp, 0))),
       ValueError, ["0-D"])
fn_row("cross_entropy_error-empty", lambda xp: (F.cross_entropy_error,
                                                (seq(xp, (0, 3)), _labels(xp, ()))),
       ValueError, ["empty"])
fn_row("cross_entropy_error-list", lambda xp: (F.cross_entropy_error, ([0.5, 0.5], [1])),
       TypeError, ["must be an array", "list"])
fn_row("one_hot_targets-label-out-of-range",
       lambda xp: (F.one_hot_targets, (_labels(xp, (0, 5)), seq(xp, (2, 3)))), ValueError,
       ["[0, 3)"], skip="lazy")
fn_row("class_hits-label-out-of-range",
       lambda xp: (F.class_hits, (_labels(xp, (0, -1)), seq(xp, (2, 3)))), ValueError,
       ["[0, 3)"], skip="lazy")
fn_row("class_hits-labels-of-wrong-length",
       lambda xp: (F.class_hits, (_labels(xp, (0, 1, 2)), seq(xp, (2, 3)))), ValueError,
       ["one label per sample"])
fn_row("im2col-stride-zero", lambda xp: (F.im2col, (seq(xp, (1, 1, 4, 4)), 2, 2, 0)),
       ValueError, ["stride", ">= 1"])
fn_row("im2col-3d", lambda xp: (F.im2col, (seq(xp, (1, 4, 4)), 2, 2)), ValueError,
       ["4 axes"])
fn_row("im2col-list", lambda xp: (F.im2col, ([[[[1.0]]]], 1, 1)), TypeError, ["list"])
fn_row("col2im-wrong-col", lambda xp: (F.col2im, (seq(xp, (5, 4)), (1, 1, 4, 4), 2, 2)),
       ValueError, ["col of shape"])
fn_row("col2im-shape-float", lambda xp: (F.col2im, (seq(xp, (9, 4)), (1, 1, 4.0, 4), 2, 2)),
       TypeError, ["input_shape must be an int"])
fn_row("numerical_gradient-list", lambda xp: (numerical_gradient, (lambda w: 0.0, [1.0])),
       TypeError, ["array"])


def _params(xp):
    return {"W": seq(xp, (2, 2)), "b": seq(xp, (2,), offset=1.0)}


fn_row("SGD-grads-unknown-key",
       lambda xp: (optim.SGD().update, (_params(xp), {"W2": seq(xp, (2, 2))})), ValueError,
       ["'W2'", "name no parameter"])
fn_row("SGD-grads-wrong-shape",
       lambda xp: (optim.SGD().update, (_params(xp), {"W": seq(xp, (2, 3))})), ValueError,
       ["grads['W']", "(2, 3)"])
fn_row("SGD-grads-list", lambda xp: (optim.SGD().update, (_params(xp), {"W": [[1.0]]})),
       TypeError, ["grads['W']", "list"])
fn_row("Adam-grads-int", lambda xp: (optim.Adam().update,
                                     (_params(xp), {"W": arr(xp, [[1, 2], [3, 4]], "int64")})),
       TypeError, ["real floating"])
fn_row("SGD-lr-negative", lambda xp: (optim.SGD, (-0.1,)), ValueError, ["lr", ">= 0"])
fn_row("SGD-lr-string", lambda xp: (optim.SGD, ("0.1",)), TypeError, ["lr", "str"])
fn_row("Momentum-momentum-one", lambda xp: (optim.Momentum, (0.1, 1.0)), ValueError,
       ["momentum"])
fn_row("Adam-beta1-nan", lambda xp: (optim.Adam, (0.1, float("nan"))), ValueError,
       ["beta1"])
fn_row("clip_grad_norm-zero", lambda xp: (optim.clip_grad_norm, ({"W": seq(xp, (2,))}, 0.0)),
       ValueError, ["max_norm"])


def _net(xp):
    return TwoLayerNet(4, 3, 2, xp=xp, seed=0)


fn_row("Sequential-too-few-layers", lambda xp: (Sequential, (pl.SoftmaxWithLoss(),)),
       ValueError, ["at least one layer"])
fn_row("Sequential-last-not-loss", lambda xp: (Sequential, (pl.ReLU(), pl.ReLU())),
       ValueError, ["loss layer"])
fn_row("TwoLayerNet-predict-list", lambda xp: (_net(xp).predict, ([[1.0] * 4],)), TypeError,
       ["must be an array", "list"])
fn_row("TwoLayerNet-loss-features", lambda xp: (_net(xp).loss,
                                                (seq(xp, (2, 5)), _labels(xp, (0, 1)))),
       ValueError, ["5 features"])
fn_row("TwoLayerNet-gradient-labels-out-of-range",
       lambda xp: (_net(xp).gradient, (seq(xp, (2, 4)), _labels(xp, (0, 2)))), ValueError,
       ["[0, 2)"], skip="lazy")
fn_row("TwoLayerNet-accuracy-empty", lambda xp: (_net(xp).accuracy,
                                                 (seq(xp, (0, 4)), _labels(xp, ()))),
       ValueError, ["empty"])
fn_row("TwoLayerNet-params-set-wrong-shape",
       lambda xp: (_net(xp).params.__setitem__, ("W1", seq(xp, (3, 3)))), ValueError,
       ["'W1'", "(3, 3)"])
fn_row("TwoLayerNet-params-set-list",
       lambda xp: (_net(xp).params.__setitem__, ("W1", [[0.0]])), TypeError,
       ["must be an array", "list"])


def _trainer(xp, x_train=None, t_train=None, **kwargs):
    x = seq(xp, (6, 4)) if x_train is None else x_train
    t = _labels(xp, (0, 1, 0, 1, 0, 1)) if t_train is None else t_train
    return Trainer, (_net(xp), x, t, seq(xp, (6, 4)), _labels(xp, (0, 1, 0, 1, 0, 1))), {
        "epochs": 1, "mini_batch_size": 2, "verbose": False, **kwargs}


def _with_nan(xp):
    values = np.ones((6, 4))
    values[2, 1] = np.nan
    return arr(xp, values)


fn_row("Trainer-nan-in-data", lambda xp: _trainer(xp, _with_nan(xp)), ValueError,
       ["x_train", "1 NaN", "finite"])
fn_row("Trainer-inf-in-data",
       lambda xp: _trainer(xp, arr(xp, np.where(np.eye(6, 4) > 0, np.inf, 1.0))),
       ValueError, ["x_train", "infinite"])
fn_row("Trainer-labels-out-of-range",
       lambda xp: _trainer(xp, t_train=_labels(xp, (0, 1, 0, 1, 0, 7))), ValueError,
       ["[0, 2)"])
fn_row("Trainer-sizes-differ", lambda xp: _trainer(xp, t_train=_labels(xp, (0, 1))),
       ValueError, ["same known number of samples"])
fn_row("Trainer-epochs-zero", lambda xp: _trainer(xp, epochs=0), ValueError, ["epochs"])
fn_row("Trainer-unknown-optimizer", lambda xp: _trainer(xp, optimizer="adamax"), ValueError,
       ["unknown optimizer"])

if BACKEND == "array_api_strict":
    def _elsewhere(xp, shape):
        return xp.asarray(np.ones(shape), device=xp.Device("device1"))

    for _name in ("ReLU", "Affine", "Convolution", "BatchNormalization"):
        if _name != "ReLU":  # ReLU on another device is simply ReLU there
            row(f"{_name}-forward-other-device", _name,
                _fwd(_name)(lambda xp, s=SUBJECTS[_name].x_shape: _elsewhere(xp, s)),
                ValueError, ["one device", "device1"])
        row(f"{_name}-backward-other-device", _name,
            _bwd(lambda xp, n=_name: _elsewhere(xp, _out_shape(n))), ValueError,
            ["one device"])


def _out_shape(name):
    return {"ReLU": (2, 3), "Affine": (2, 3), "Convolution": (1, 2, 3, 3),
            "BatchNormalization": (4, 3)}[name]


def _snapshot(args):
    """Host copies of every array among `args` (and in dicts among them)."""
    found = []
    for a in args:
        values = a.values() if isinstance(a, dict) else [a]
        for v in values:
            if hasattr(v, "__array_namespace__") and not isinstance(v, ForeignArray):
                found.append((v, _host(v)))
    return found


def _host(v):
    """to_numpy, also for array-api-strict's simulated second device."""
    try:
        return to_numpy(v)
    except RuntimeError:
        import array_api_strict

        return to_numpy(v.to_device(array_api_strict.Device("CPU_DEVICE")))


@pytest.mark.parametrize(("subject", "call", "exc", "words", "warm", "skip"), ROWS)
def test_bad_input(xp, subject, call, exc, words, warm, skip):
    if skip == "lazy" and LAZY:
        pytest.skip("label and target values are not read on Dask")
    if skip == "strict" and BACKEND == "array_api_strict":
        pytest.skip("array-api-strict refuses complex * float itself")
    s = SUBJECTS[subject]
    obj = s.build(xp)
    if warm:
        s.use(obj, xp)
    made = call(obj, xp)
    fn, args = made[0], made[1]
    kwargs = made[2] if len(made) > 2 else {}
    before = _snapshot(list(args) + list(kwargs.values()))
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert all(word in message for word in words), message
    for value, copy in before:
        np.testing.assert_array_equal(_host(value), copy)  # no caller array changed
    # The object computes what a fresh one computes after the same valid calls.
    fresh = s.build(xp)
    if warm:
        s.use(fresh, xp)
    for got, expected in zip(s.use(obj, xp), s.use(fresh, xp), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_catalogue_size():
    assert len(ROWS) >= 150


# --- edge inputs that must work, each against an independent reference ---------------

@pytest.mark.parametrize("one_hot", [False, True], ids=["class-indices", "one-hot"])
def test_softmax_loss_finite_with_masked_logits(xp, one_hot):
    torch = pytest.importorskip("torch")
    x = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, -np.inf]])
    t = np.array([0, 1])

    def targets():  # the same labels as indices or as one-hot rows (two code paths)
        return arr(xp, np.eye(3)[t]) if one_hot else _labels(xp, t)

    layer = pl.SoftmaxWithLoss()
    loss = layer.forward(arr(xp, x), targets())
    dx = layer.backward(1.0)
    tx = torch.tensor(x, requires_grad=True, device="cpu")
    ref = torch.nn.functional.cross_entropy(tx, torch.tensor(t, device="cpu"))
    ref.backward()
    assert np.isfinite(to_numpy(loss))
    np.testing.assert_allclose(to_numpy(loss), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=1e-12, atol=1e-300)
    # A -inf target logit is an infinite loss, as torch's.
    x[0, 0] = -np.inf
    assert to_numpy(layer.forward(arr(xp, x), targets())) == np.inf


def test_max_pool_gradient_goes_to_nan(xp):
    torch = pytest.importorskip("torch")
    x = np.arange(32, dtype=np.float64).reshape(1, 2, 4, 4)
    x[0, 0, 0, 1] = np.nan  # window (0, 0) of channel 0: its maximum would be 5
    x[0, 1, 3, 2] = np.nan  # the last window of channel 1
    layer = pl.Pooling(2, 2, stride=2)
    out = layer.forward(arr(xp, x))
    dout = np.arange(1.0, 9.0).reshape(1, 2, 2, 2)
    dx = to_numpy(layer.backward(arr(xp, dout)))
    tx = torch.tensor(x, requires_grad=True, device="cpu")
    ref = torch.nn.functional.max_pool2d(tx, 2, 2)
    ref.backward(torch.tensor(dout, device="cpu"))
    np.testing.assert_array_equal(np.isnan(to_numpy(out)), np.isnan(ref.detach().numpy()))
    np.testing.assert_array_equal(dx, tx.grad.numpy())
    assert dx[0, 0, 0, 1] == 1.0 and dx[0, 1, 3, 2] == 8.0


def test_integer_settings_of_any_integer_type(xp):
    W, b = seq(xp, (2, 1, 2, 2)), seq(xp, (2,))
    x = seq(xp, (1, 1, 5, 5))
    expected = to_numpy(pl.Convolution(W, b, stride=2, pad=1).forward(x))
    layer = pl.Convolution(W, b, stride=np.int64(2), pad=np.int32(1))
    assert type(layer.stride) is int and type(layer.pad) is int
    np.testing.assert_array_equal(to_numpy(layer.forward(x)), expected)
    pool = pl.Pooling(np.int64(2), np.int64(2), stride=np.int16(2))
    np.testing.assert_array_equal(to_numpy(pool.forward(x[:, :, :4, :4])),
                                  to_numpy(pl.Pooling(2, 2, 2).forward(x[:, :, :4, :4])))


def test_affine_promotes_mixed_dtypes(xp):
    """float16 weights with float32 input: promoted to float32 (as NumPy and JAX do)."""
    if not hasattr(xp, "float16"):
        pytest.skip(f"{BACKEND} has no float16")
    W, b = seq(xp, (4, 3), "float16"), seq(xp, (3,), "float16")
    x = seq(xp, (2, 4), "float32")
    layer = pl.Affine(W, b)
    out = layer.forward(x)
    assert out.dtype == xp.float32
    expected = to_numpy(x) @ to_numpy(W).astype(np.float32) + to_numpy(b).astype(np.float32)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-6)
    dx = layer.backward(xp.ones_like(out))
    assert dx.dtype == xp.float32 and layer.dW.dtype == xp.float16


def test_batchnorm_empty_inference_batch_is_fine(xp):
    """Inference on an empty batch uses the running statistics only: an empty result."""
    bn = _bn(xp)
    out = bn.forward(seq(xp, (0, 3)), False)
    assert tuple(out.shape) == (0, 3)


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "params.npz"
    np.savez(path, W=np.ones((20, 20)), b=np.zeros(3))
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        for read in (load_arrays, load_meta):  # the description is read first on resume
            with pytest.raises(ValueError, match="not a complete .npz") as info:
                read(path)
            assert str(path) in str(info.value)
            assert not isinstance(info.value, zipfile.BadZipFile)


@pytest.mark.parametrize("make_layer, x_shape", [
    (lambda xp, w: pl.Affine(w(xp, (3, 2)), w(xp, (2,))), (4, 3)),
    (lambda xp, w: pl.Convolution(w(xp, (2, 1, 2, 2)), w(xp, (2,))), (2, 1, 3, 3)),
    (lambda xp, w: pl.BatchNormalization(w(xp, (3,)) + 1, w(xp, (3,))), (4, 3)),
])
def test_integer_parameters_train_as_floats(xp, make_layer, x_shape):
    # Integer weights become floats: their gradients (and batch norm's statistics) would
    # otherwise be truncated to integers, e.g. all zeros.
    def ints(xp, shape):
        return xp.asarray(np.arange(math.prod(shape)).reshape(shape) % 3, dtype=xp.int64)

    default = xp.asarray(0.0).dtype  # what integers are promoted to (torch: float32)

    def floats(xp, shape):
        return xp.astype(ints(xp, shape), default)

    x = xp.astype(seq(xp, x_shape) / 10, default)
    results = []
    for weights in (ints, floats):
        layer = make_layer(xp, weights)
        out = layer.forward(x)
        dx = layer.backward(xp.ones_like(out) / 2)
        results.append([to_numpy(a) for a in (out, dx, *layer.grads.values(),
                                               *getattr(layer, "state", {}).values())])
    for got, expected in zip(*results, strict=True):
        assert got.dtype == expected.dtype and got.dtype.kind == "f"
        np.testing.assert_array_equal(got, expected)


# In the jax session JAX's pool runs already: set_threads rightly warns that it stays as it is
@pytest.mark.filterwarnings("ignore:XLA's CPU pool runs:RuntimeWarning")
def test_numpy_scalars_are_numbers_where_a_number_is_expected():
    # np.int64 is no int and np.float32 no float, but both are the numbers a NumPy user
    # has at hand (a shape's entry, an array's element): they are taken, as Python's own.
    import json

    from portablelayers.schedules import Step, from_description
    from portablelayers.threads import set_threads

    net = TwoLayerNet(4, 5, 3, seed=0)
    x, t = np.ones((6, 4), dtype=np.float32), np.arange(6) % 3
    assert net.accuracy(x, t, batch_size=np.int64(4)) == net.accuracy(x, t, batch_size=4)
    schedule = Step(np.float32(0.5), np.int64(2), gamma=np.float64(0.5))
    assert [schedule(e) for e in range(5)] == [0.5, 0.5, 0.25, 0.25, 0.125]
    text = json.dumps(schedule.describe())  # Python numbers inside, so JSON takes them
    assert from_description(json.loads(text))(4) == 0.125
    assert set_threads(np.int64(1)) == 1
    conv = pl.Convolution(np.ones((2, 1, 3, 3), dtype=np.float32), np.float32(0.5))
    np.testing.assert_array_equal(conv.params["b"], np.full(2, 0.5, dtype=np.float32))
