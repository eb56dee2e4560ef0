"""Output layers that end a network in a scalar loss."""

from __future__ import annotations

from .. import guards
from .._backend import clip_below, namespace, read_bool, size, static_shape, value_checks
from ..functions import class_hits, log_softmax, sigmoid
from .base import BaseLayer

__all__ = ["MeanSquaredError", "SigmoidWithLoss", "SoftmaxWithLoss"]


class SoftmaxWithLoss(BaseLayer):
    """Softmax followed by the mean cross-entropy against `t`.

    `forward(x, t)` takes logits `x` of shape (N, C) (or (C,) for one sample) and `t` as
    integer class indices of shape (N,) or one-hot of shape (N, C); it returns the loss as
    a 0-D array. The loss comes from log-softmax directly, so logits as large as 1e4
    neither overflow nor lose the loss. `backward(dout=1)` returns ``(y - t) * dout / N``.

    Attributes
    ----------
    y : array
        The softmax probabilities of the last `forward`.
    t : array
        The labels of the last `forward`.
    loss : array
        The last loss (0-D).

    Raises
    ------
    ValueError
        From `forward`, for float labels, labels of the wrong length or out of range.
    RuntimeError
        From `backward`, when no `forward` came before it.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import SoftmaxWithLoss
    >>> layer = SoftmaxWithLoss()
    >>> loss = layer.forward(np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 0]))
    >>> round(float(loss), 4)
    1.1269
    >>> layer.backward().round(4)
    array([[-0.0596,  0.0596],
           [-0.4404,  0.4404]])
    """

    def __init__(self):
        super().__init__()
        self.loss = None
        self.y = None  # softmax output
        self.t = None  # the targets as given
        self._hits = None  # class-index targets: True at each row's class
        self._t_one_hot = None  # one-hot targets: in x's dtype

    def forward(self, x, t):
        xp = guards.arrays("SoftmaxWithLoss.forward", x=x, t=t)
        x = guards.real_floating(xp, x, "SoftmaxWithLoss scores x")
        guards.ndim(x, (1, 2), "SoftmaxWithLoss scores x", "(N, C) or (C,)")
        guards.nonempty(x, range(x.ndim), "SoftmaxWithLoss scores x")
        # t checked, and one-hot t cast, before any state changes; hits is None if one-hot
        hits = class_hits(t, x)
        t_one_hot = None if hits is not None else xp.astype(t, x.dtype)
        log_y = log_softmax(x)
        batch_size = 1 if x.ndim == 1 else x.shape[0]
        # Each row adds log_y of its targets' classes, weighted; classes a target gives no
        # weight add nothing, also where their log_y is -inf (a masked logit): 0 * -inf
        # would be NaN. A -inf target logit gives inf, as torch.
        if hits is not None:  # class indices: weight 1 on one class, a select does it
            picked = xp.where(hits, log_y, 0.0)
        else:
            picked = t_one_hot * xp.where(t_one_hot != 0, log_y, 0.0)
        self.t, self._hits, self._t_one_hot = t, hits, t_one_hot
        self.y = xp.exp(log_y)
        self.loss = xp.sum(picked) / -batch_size  # = -(a / n), one operation fewer
        return self.loss

    def backward(self, dout=1):
        y = self.saved(self.y)
        guards.scalar_dout("SoftmaxWithLoss.backward", dout, y)
        xp = namespace(y)
        batch_size = 1 if y.ndim == 1 else y.shape[0]
        if self._hits is not None:  # the book's y - t, t one-hot from class indices
            return (y - xp.astype(self._hits, y.dtype)) * (dout / batch_size)
        # Forward also takes soft rows of any weight (0: a sample that counts for nothing),
        # whose gradient is y*sum - t; for rows that sum to 1 that is the book's y - t.
        t = self._t_one_hot
        weight = xp.sum(t, axis=-1, keepdims=True)
        return (y * weight - t) * (dout / batch_size)


def _targets_like(xp, t, x, what):
    """`t` in x's dtype after checking it has x's shape (ValueError naming both)."""
    if static_shape(t) != static_shape(x):
        raise ValueError(f"{what} needs targets t of the input's shape {static_shape(x)}, "
                         f"got {static_shape(t)}")
    return xp.astype(guards.real_floating(xp, t, f"{what} targets t"), x.dtype, copy=False)


class SigmoidWithLoss(BaseLayer):
    """Sigmoid followed by the binary cross-entropy against `t`, for logits of any shape.

    `forward(x, t)`: `t` has x's shape and holds 0/1 labels or probabilities. The loss is
    the mean over all elements (torch's `binary_cross_entropy_with_logits` with
    ``reduction="mean"``), returned as a 0-D array. It is computed as
    ``max(x, 0) - x*t + log(1 + exp(-|x|))``, which is finite for logits as large as 1e4.
    `backward(dout=1)` returns ``(sigmoid(x) - t) * dout / x.size``.

    Raises
    ------
    ValueError
        From `forward`, when `t` does not have x's shape, or (where values can be read)
        holds a value outside [0, 1] (`target_range`).
    RuntimeError
        From `backward`, when no `forward` came before it.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import SigmoidWithLoss
    >>> layer = SigmoidWithLoss()
    >>> round(float(layer.forward(np.array([0.0, 0.0]), np.array([1.0, 0.0]))), 4)
    0.6931
    >>> layer.backward()
    array([-0.25,  0.25])
    """

    #: Floating targets are probabilities (`LossLayer`): checked where data enter too.
    target_range = (0.0, 1.0)

    def __init__(self):
        super().__init__()
        self.loss = None
        self.y = None  # sigmoid output
        self.t = None
        self._count = None  # elements averaged over

    def forward(self, x, t):
        xp = guards.arrays("SigmoidWithLoss.forward", x=x, t=t)
        x = guards.real_floating(xp, x, "SigmoidWithLoss scores x")
        guards.nonempty(x, range(x.ndim), "SigmoidWithLoss scores x")
        t = _targets_like(xp, t, x, "SigmoidWithLoss")
        # skipped on Dask, under jax.jit, in a compiled step and in an eager step on a GPU
        if value_checks() and read_bool(xp.any((t < 0.0) | (t > 1.0))):
            raise ValueError("SigmoidWithLoss targets t must lie in [0, 1]")
        count = size(x)
        if count is None:  # unknown Dask shape: count lazily
            count = xp.sum(xp.ones_like(x))
        per_element = clip_below(xp, x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
        self.t, self._count = t, count
        self.y = sigmoid(x)
        self.loss = xp.sum(per_element) / count
        return self.loss

    def backward(self, dout=1):
        y = self.saved(self.y)
        guards.scalar_dout("SigmoidWithLoss.backward", dout, y)
        return (y - self.t) * dout / self._count


class MeanSquaredError(BaseLayer):
    """The book's sum-of-squares error averaged over the batch: ``0.5 * sum((y - t)**2) / N``.

    `forward(y, t)` takes `y` and `t` of the same shape (N, ...); a 1-D `y` is one sample
    (N = 1). It returns the loss as a 0-D array. `backward(dout=1)` returns
    ``(y - t) * dout / N``.

    Raises
    ------
    ValueError
        From `forward`, when `y` and `t` differ in shape.
    RuntimeError
        From `backward`, when no `forward` came before it.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import MeanSquaredError
    >>> layer = MeanSquaredError()
    >>> float(layer.forward(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])))
    2.5
    >>> layer.backward()
    array([[1., 2.]])
    """

    def __init__(self):
        super().__init__()
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, y, t):
        xp = guards.arrays("MeanSquaredError.forward", y=y, t=t)
        y = guards.real_floating(xp, y, "MeanSquaredError y")
        guards.nonempty(y, range(min(y.ndim, 1)), "MeanSquaredError y")
        t = _targets_like(xp, t, y, "MeanSquaredError")
        self.y, self.t = y, t
        diff = y - t
        self.loss = 0.5 * xp.sum(diff * diff) / self._batch_size(y)
        return self.loss

    def backward(self, dout=1):
        y = self.saved(self.y)
        guards.scalar_dout("MeanSquaredError.backward", dout, y)
        return (y - self.t) * dout / self._batch_size(y)

    @staticmethod
    def _batch_size(y):
        return 1 if y.ndim <= 1 else y.shape[0]
