"""Output layers that end a network in a scalar loss."""

from __future__ import annotations

from .._backend import as_float, namespace
from ..functions import log_softmax, one_hot_targets
from .base import Layer

__all__ = ["SoftmaxWithLoss"]


class SoftmaxWithLoss(Layer):
    """Softmax followed by the mean cross-entropy against `t`.

    `forward(x, t)` takes logits x of shape (N, C) (or (C,) for one sample) and `t` as
    integer class indices of shape (N,) or one-hot of shape (N, C); it returns the loss as
    a 0-D array. The loss comes from log-softmax directly, so logits as large as 1e4
    neither overflow nor lose the loss. `backward(dout=1)` returns (y - t) * dout / N.
    """

    def __init__(self):
        super().__init__()
        self.loss = None
        self.y = None  # softmax output
        self.t = None  # the targets as given
        self._t_one_hot = None

    def forward(self, x, t):
        xp = namespace(x, t)
        x = as_float(xp, x)
        t_one_hot = one_hot_targets(t, x)  # validates t before any state changes
        log_y = log_softmax(x)
        batch_size = 1 if x.ndim == 1 else x.shape[0]
        self.t, self._t_one_hot = t, t_one_hot
        self.y = xp.exp(log_y)
        self.loss = -xp.sum(t_one_hot * log_y) / batch_size
        return self.loss

    def backward(self, dout=1):
        y = self.saved(self.y)
        batch_size = 1 if y.ndim == 1 else y.shape[0]
        return (y - self._t_one_hot) * (dout / batch_size)
