"""Dropout (the book's chapter 6): inverted by default, the book's own form on request."""

from __future__ import annotations

import numbers

from .. import guards
from .._backend import (
    device,
    move_to,
    multiply_by_mask,
    namespace,
    resolve_namespace,
    static_shape,
)
from ..random import BITS, counter_bits, seed_key
from .base import BaseLayer, state_entry

__all__ = ["Dropout"]


class Dropout(BaseLayer):
    """Drops each element with probability `dropout_ratio` in training.

    Inverted (the default): each kept element is scaled by 1 / (1 - p) in training, so
    that test time is the identity. `inverted=False` is the book's form: kept elements pass
    unscaled in training and test time multiplies by 1 - p. Both give the same expected
    output; inverted dropout leaves inference untouched, which is why it is the default.

    `mask` marks the kept elements, as in the book. Masks come from a counter-based random
    stream (`portablelayers.random.counter_bits`) keyed by `seed`: its only state is
    `state["step"]`, a 0-D int32 array that each training forward advances. So the same
    seed gives the same sequence of masks on every backend and device, and a compiled
    training step, which carries `state`, draws a fresh mask every step. The counter is
    made with `xp` and `device` (default NumPy; it moves to the input's library and device
    on the first forward, and is made on the right one by the networks that build it).

    Parameters
    ----------
    dropout_ratio : float, default 0.5
        The probability p that an element is dropped, in [0, 1).
    seed : int, optional
        Key of the random stream; None draws one.
    inverted : bool, default True
        Scale kept elements by 1 / (1 - p) in training (False: the book's form).
    xp : str or module, optional
        Namespace of the counter (a backend name, module or namespace; default NumPy).
    device : object, optional
        Device of the counter.

    Raises
    ------
    TypeError
        For a ratio that is not a real number; from `forward`, for an input that is not a
        real floating array.
    ValueError
        For a ratio outside [0, 1).
    RuntimeError
        From `backward`, when no training `forward` came before it.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import Dropout
    >>> drop = Dropout(0.5, seed=0)
    >>> out = drop.forward(np.ones(8), train_flg=True)
    >>> sorted(set(out.tolist()))
    [0.0, 2.0]
    >>> drop.forward(np.ones(3), train_flg=False)
    array([1., 1., 1.])
    """

    step = state_entry("step")

    def __init__(self, dropout_ratio=0.5, seed=None, inverted=True, *, xp=None, device=None):
        super().__init__()
        if isinstance(dropout_ratio, bool) or not isinstance(dropout_ratio, numbers.Real):
            raise TypeError(f"dropout_ratio must be a real number in [0, 1), got "
                            f"{guards.describe(dropout_ratio)}")
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"dropout_ratio must lie in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = float(dropout_ratio)
        self.inverted = bool(inverted)
        if seed is None:  # a fresh seed from the OS, drawn once so the stream is reproducible
            import secrets

            seed = secrets.randbits(63)
        self.seed = guards.index("seed", seed, -(1 << 63))
        self._key = seed_key(self.seed)
        # Elements whose 24-bit draw is below this are dropped: probability dropout_ratio.
        self._threshold = round(self.dropout_ratio * (1 << BITS))
        space = resolve_namespace(xp)
        self.state = {"step": space.zeros((), dtype=space.int32, device=device)}
        self.mask = None
        self._out_shape = self._like = None  # the last input's shape, and the input
        self.train_flg = None  # the mode of the last forward

    def forward(self, x, train_flg=True):
        xp = guards.arrays("Dropout.forward", x=x)
        x = guards.real_floating(xp, x, "Dropout input")
        if not train_flg:
            self.train_flg, self._out_shape, self._like = False, static_shape(x), x
            return x if self.inverted else x * (1.0 - self.dropout_ratio)
        step = move_to(xp, self.state["step"], device(x))
        bits = counter_bits(xp, x.shape, self._key, step, device(x))
        self.mask = bits >= self._threshold  # True with probability 1 - p
        self.state["step"] = step + 1
        self.train_flg, self._out_shape, self._like = True, static_shape(x), x
        return multiply_by_mask(xp, x, self.mask) * self._scale

    def backward(self, dout):
        train_flg = self.saved(self.train_flg)
        self.check_dout(dout, self._out_shape, self._like)
        if not train_flg:
            return dout if self.inverted else dout * (1.0 - self.dropout_ratio)
        xp = namespace(dout)
        return multiply_by_mask(xp, dout, self.mask) * self._scale

    @property
    def _scale(self):
        return 1.0 / (1.0 - self.dropout_ratio) if self.inverted else 1.0
