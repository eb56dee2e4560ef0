"""Batch normalization (the book's chapter 6), per feature on 2-D input, per channel on 4-D."""

from __future__ import annotations

import numbers

from .. import guards
from .._backend import (
    device,
    mean_per_channel,
    namespace,
    static_shape,
    sum_per_channel,
)
from .base import BaseLayer, parameter, state_entry

__all__ = ["BatchNormalization"]


class BatchNormalization(BaseLayer):
    """Batch normalisation: ``out = gamma * (x - mean) / sqrt(var + eps) + beta``.

    Input (N, D) is normalised per feature, input (N, C, H, W) (or any (N, C, ...)) per
    channel over the batch and all spatial positions; gamma and beta have shape (D,) or (C,).

    `forward(x, train_flg=True)` normalises with the batch mean and the biased batch
    variance, and updates the running statistics as the book does:
    running = momentum * running + (1 - momentum) * batch_stat. `running_var` stores the
    biased batch variance (the book's choice; torch stores the unbiased one). With
    `train_flg=False` the running statistics are used instead. They live in `state`
    ("running_mean", "running_var"; `bn.running_mean` is an alias); left as None they are
    made as zeros (like the book) in gamma's dtype and device, here, so that a compiled
    step finds them before its first call. `eps` defaults to the book's 10e-7 (torch 1e-5).

    Parameters
    ----------
    gamma, beta : array
        Scale and shift, shape (D,) or (C,).
    momentum : float, default 0.9
        Weight of the old running statistics in each update.
    running_mean, running_var : array, optional
        Initial running statistics; zeros when None.
    eps : float, default 1e-6
        Added to the variance.

    Raises
    ------
    ValueError
        For parameters of different shapes, `momentum` outside [0, 1] or `eps` <= 0; from
        `forward`, for an input whose features or channels do not match `gamma`, or an
        empty training batch.
    RuntimeError
        From `backward`, when no training `forward` came before it.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import BatchNormalization
    >>> bn = BatchNormalization(np.ones(2), np.zeros(2))
    >>> bn.forward(np.array([[1.0, 10.0], [3.0, 30.0]])).round(3)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> bn.running_mean
    array([0.2, 2. ])
    """

    gamma, dgamma = parameter("gamma")
    beta, dbeta = parameter("beta")
    running_mean = state_entry("running_mean")
    running_var = state_entry("running_var")

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None,
                 eps=10e-7):
        super().__init__()
        xp = guards.arrays("BatchNormalization", gamma=gamma, beta=beta,
                           running_mean=running_mean, running_var=running_var)
        # Integer parameters become floats: gradients and statistics would be truncated.
        gamma = guards.real_floating(xp, gamma, "BatchNormalization gamma")
        beta = guards.real_floating(xp, beta, "BatchNormalization beta")
        shape = tuple(gamma.shape)
        if len(shape) != 1 or tuple(beta.shape) != shape:
            raise ValueError(f"BatchNormalization needs gamma and beta of the same shape (C,), "
                             f"got gamma {shape} and beta {tuple(beta.shape)}")
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None and tuple(stat.shape) != shape:
                raise ValueError(f"{name} must have the shape of gamma {shape}, "
                                 f"got {tuple(stat.shape)}")
        for name, value in (("momentum", momentum), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"BatchNormalization {name} must be a real number, got "
                                f"{type(value).__name__} {value!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        if not eps > 0.0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.params = {"gamma": gamma, "beta": beta}
        self.grads = {"gamma": None, "beta": None}
        def zeros_like_gamma():
            return xp.zeros(shape, dtype=gamma.dtype, device=device(gamma))

        self.state = {
            "running_mean": zeros_like_gamma() if running_mean is None else running_mean,
            "running_var": zeros_like_gamma() if running_var is None else running_var,
        }
        self.momentum, self.eps = float(momentum), float(eps)
        self.input_shape = None
        self.train_flg = None  # the mode of the last forward, which backward differentiates
        self.xn = None  # normalised input
        self.std = None  # sqrt(var + eps), broadcastable against x

    def forward(self, x, train_flg=True):
        gamma, beta = self.params["gamma"], self.params["beta"]
        running_mean, running_var = self.state["running_mean"], self.state["running_var"]
        xp = guards.arrays("BatchNormalization.forward", x=x, gamma=gamma, beta=beta,
                           running_mean=running_mean, running_var=running_var)
        x = guards.real_floating(xp, x, "BatchNormalization input")
        self._check_input(x)
        axes, stat_shape = self._axes(x)
        if train_flg:  # batch statistics of nothing would turn the running ones into NaN
            guards.nonempty(x, axes, "BatchNormalization training input")

        if train_flg:
            mu = mean_per_channel(xp, x, keepdims=True)
            xc = x - mu
            var = mean_per_channel(xp, xc * xc, keepdims=True)  # biased, as the book
            std = xp.sqrt(var + self.eps)
            m = self.momentum
            # New arrays rebound in state: an in-place update would be lost on JAX.
            self.state["running_mean"] = self._blend(xp, running_mean, mu, m)
            self.state["running_var"] = self._blend(xp, running_var, var, m)
        else:
            mean = xp.astype(xp.reshape(running_mean, stat_shape), x.dtype, copy=False)
            var = xp.astype(xp.reshape(running_var, stat_shape), x.dtype, copy=False)
            xc = x - mean
            std = xp.sqrt(var + self.eps)
        xn = xc / std
        self.input_shape, self.train_flg, self.xn, self.std = tuple(x.shape), train_flg, xn, std
        return xp.reshape(gamma, stat_shape) * xn + xp.reshape(beta, stat_shape)

    def backward(self, dout):
        xn = self.saved(self.xn)
        gamma = self.params["gamma"]
        self.check_dout(dout, static_shape(xn), xn)
        xp = namespace(dout, gamma)
        _, stat_shape = self._axes(xn)
        dbeta = sum_per_channel(xp, dout)
        dgamma = sum_per_channel(xp, xn * dout)
        dxn = xp.reshape(gamma, stat_shape) * dout
        if self.train_flg:
            # The book's chain dxn -> dxc -> dstd -> dvar -> dmu, collected into one line:
            # mean and variance depend on every x, which adds the two mean terms.
            dx = (dxn - mean_per_channel(xp, dxn, keepdims=True)
                  - xn * mean_per_channel(xp, dxn * xn, keepdims=True)) / self.std
        else:  # the running statistics are constants
            dx = dxn / self.std
        self.grads["gamma"] = xp.astype(dgamma, gamma.dtype, copy=False)
        self.grads["beta"] = xp.astype(dbeta, self.params["beta"].dtype, copy=False)
        return dx

    def _check_input(self, x):
        """ValueError unless x is (N, C, ...) with C = len(gamma); no state changes before."""
        channels = self.params["gamma"].shape[0]
        shape = static_shape(x)
        if x.ndim < 2 or shape[1] not in (channels, None):
            raise ValueError(f"BatchNormalization input must have shape (N, {channels}) or "
                             f"(N, {channels}, H, W) to match gamma of shape ({channels},), "
                             f"got {shape}")

    @staticmethod
    def _axes(x):
        """The axes a statistic is taken over (all but the channel axis 1), and the shape
        that broadcasts a (C,) vector against x."""
        axes = (0, *range(2, x.ndim))
        return axes, (1, -1) + (1,) * (x.ndim - 2)

    @staticmethod
    def _blend(xp, running, batch_stat, momentum):
        """momentum * running + (1 - momentum) * batch_stat, kept in running's dtype."""
        new = momentum * running + (1.0 - momentum) * xp.reshape(batch_stat, running.shape)
        return xp.astype(new, running.dtype, copy=False)
