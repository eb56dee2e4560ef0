"""Learning-rate schedules: `schedule(epoch) -> lr`, epoch counted from 0.

    trainer = Trainer(..., optimizer_param={"lr": 0.01},
                      lr_schedule=warmup(cosine(0.01, epochs=20), epochs=2))

The Trainer sets `optimizer.lr = schedule(epoch)` at the start of each epoch. The package's
optimizers keep the rate as a 0-D array in their state, which a compiled step (jax.jit, a
CUDA graph) reads as data, so a new rate needs no new compilation.
Schedules are plain JSON-describable objects (`describe()`), so a checkpoint records the
one a run used and `from_description` rebuilds it.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["Constant", "Cosine", "Step", "Warmup", "constant", "cosine", "from_description",
           "step", "warmup"]


def _check(name, value, ok, expected):
    # Any real number (NumPy's too: np.int64 is no int); the callers convert to int/float.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


class _Schedule:
    def describe(self) -> dict:
        return {"kind": type(self).__name__.lower(), **self._args()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._args().items())
        return f"{type(self).__name__}({args})"


class Constant(_Schedule):
    """The same learning rate for every epoch.

    Parameters
    ----------
    lr : float
        The rate, >= 0 and finite.

    Raises
    ------
    ValueError
        For a negative, infinite or non-numeric `lr`.

    Examples
    --------
    >>> from portablelayers.schedules import Constant
    >>> schedule = Constant(0.1)
    >>> schedule(0), schedule(9)
    (0.1, 0.1)
    >>> schedule.describe()
    {'kind': 'constant', 'lr': 0.1}
    """

    def __init__(self, lr):
        self.lr = float(_check("lr", lr, lambda v: 0 <= v < math.inf, ">= 0 and finite"))

    def __call__(self, epoch):
        return self.lr

    def _args(self):
        return {"lr": self.lr}


class Step(_Schedule):
    """A rate multiplied by `gamma` every `step_size` epochs: lr * gamma ** (epoch // step_size).

    Parameters
    ----------
    lr : float
        The rate of the first `step_size` epochs, >= 0 and finite.
    step_size : int
        The number of epochs between two decays, >= 1.
    gamma : float, default 0.1
        The factor of each decay, in (0, 1].

    Raises
    ------
    ValueError
        For an argument out of its range.

    Examples
    --------
    >>> from portablelayers.schedules import Step
    >>> schedule = Step(1.0, step_size=2, gamma=0.5)
    >>> [schedule(epoch) for epoch in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = float(_check("lr", lr, lambda v: 0 <= v < math.inf, ">= 0 and finite"))
        self.step_size = int(_check("step_size", step_size,
                                    lambda v: 1 <= v < math.inf and int(v) == v, "a positive int"))
        self.gamma = float(_check("gamma", gamma, lambda v: 0 < v <= 1, "in (0, 1]"))

    def __call__(self, epoch):
        return self.lr * self.gamma ** (epoch // self.step_size)

    def _args(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class Cosine(_Schedule):
    """A rate from lr at epoch 0 down to min_lr at epoch `epochs` along half a cosine.

    SGDR without restarts; min_lr after epoch `epochs`.

    Parameters
    ----------
    lr : float
        The rate at epoch 0, >= 0 and finite.
    epochs : int
        The epoch at which the rate reaches `min_lr`, >= 1.
    min_lr : float, default 0.0
        The final rate, in [0, lr].

    Raises
    ------
    ValueError
        For an argument out of its range.

    Examples
    --------
    >>> from portablelayers.schedules import Cosine
    >>> schedule = Cosine(1.0, epochs=4)
    >>> [round(schedule(epoch), 4) for epoch in range(6)]
    [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """

    def __init__(self, lr, epochs, min_lr=0.0):
        self.lr = float(_check("lr", lr, lambda v: 0 <= v < math.inf, ">= 0 and finite"))
        self.epochs = int(_check("epochs", epochs, lambda v: 1 <= v < math.inf and int(v) == v,
                                 "a positive int"))
        self.min_lr = float(_check("min_lr", min_lr, lambda v: 0 <= v <= self.lr,
                                   "in [0, lr]"))

    def __call__(self, epoch):
        t = min(epoch, self.epochs) / self.epochs
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * t))

    def _args(self):
        return {"lr": self.lr, "epochs": self.epochs, "min_lr": self.min_lr}


class Warmup(_Schedule):
    """A linear warm-up before another schedule.

    Epoch e < `epochs` gets after(epochs) * (e + 1) / (epochs + 1); later epochs get
    `after`, counted from epoch 0.

    Parameters
    ----------
    after : callable or float
        The schedule after the warm-up, or a number for a constant rate.
    epochs : int
        The number of warm-up epochs, >= 0.

    Raises
    ------
    ValueError
        For a negative or non-integer `epochs`, or an invalid number `after`.

    Examples
    --------
    >>> from portablelayers.schedules import Warmup
    >>> schedule = Warmup(0.3, epochs=2)
    >>> [round(schedule(epoch), 4) for epoch in range(4)]
    [0.1, 0.2, 0.3, 0.3]
    """

    def __init__(self, after, epochs):
        self.after = after if callable(after) else Constant(after)
        self.epochs = int(_check("epochs", epochs, lambda v: 0 <= v < math.inf and int(v) == v,
                                 "an int >= 0"))

    def __call__(self, epoch):
        if epoch < self.epochs:
            return self.after(self.epochs) * (epoch + 1) / (self.epochs + 1)
        return self.after(epoch)

    def _args(self):
        after = self.after.describe() if hasattr(self.after, "describe") else repr(self.after)
        return {"after": after, "epochs": self.epochs}


constant, step, cosine, warmup = Constant, Step, Cosine, Warmup
_KINDS = {"constant": Constant, "step": Step, "cosine": Cosine, "warmup": Warmup}


def from_description(description):
    """A schedule back from `describe()`'s dict.

    Parameters
    ----------
    description : dict
        What a schedule's `describe()` returned: its "kind" and its arguments.

    Returns
    -------
    Constant, Step, Cosine or Warmup
        The schedule the description describes.

    Raises
    ------
    ValueError
        For an unknown kind, or arguments out of their range.

    Examples
    --------
    >>> from portablelayers.schedules import Step, from_description
    >>> from_description(Step(0.1, step_size=3).describe())
    Step(lr=0.1, step_size=3, gamma=0.1)
    """
    args = dict(description)
    kind = args.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {', '.join(_KINDS)}")
    if kind == "warmup" and isinstance(args.get("after"), dict):
        args["after"] = from_description(args["after"])
    elif kind == "warmup" and isinstance(args.get("after"), str):
        # describe() wrote a plain function as its repr: there is nothing to rebuild it from
        raise ValueError(f"a Warmup around {args['after']} cannot be rebuilt from its "
                         "description: only this module's schedules and numbers can")
    return _KINDS[kind](**args)
