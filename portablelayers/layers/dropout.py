"""Dropout (the book's chapter 6), in its inverted form."""

from __future__ import annotations

from .._backend import as_float, device, namespace, static_shape
from ..random import Generator
from .base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Inverted dropout: in training each element is kept with probability 1 - p and
    scaled by 1 / (1 - p), so that test time is the identity (the book instead scales by
    1 - p at test time; both give the same expected output).

    `mask` marks the kept elements, as in the book. The mask is drawn on the input's device
    by its library's own generator, seeded with `seed`: the same seed gives the same
    sequence of masks. The generator is made on the first forward and made anew (with the
    same seed) when the input's library or device changes.
    """

    def __init__(self, dropout_ratio=0.5, seed=None):
        super().__init__()
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"dropout_ratio must lie in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = float(dropout_ratio)
        self.seed = seed
        self.mask = None
        self.train_flg = None  # the mode of the last forward
        self._generator = None
        self._generator_for = None  # (namespace, device) the generator draws for

    def forward(self, x, train_flg=True):
        xp = namespace(x)
        if not train_flg:
            self.train_flg = False
            return x
        x = as_float(xp, x)
        u = self._generator_like(xp, x).uniform(x.shape, dtype=x.dtype)
        self.mask = u >= self.dropout_ratio  # True with probability 1 - p
        self.train_flg = True
        return xp.where(self.mask, x * (1.0 / (1.0 - self.dropout_ratio)), 0.0)

    def backward(self, dout):
        if not self.saved(self.train_flg):
            return dout  # the identity at test time
        xp = namespace(dout)
        self.check_dout(dout, static_shape(self.mask))
        return xp.where(self.mask, dout * (1.0 / (1.0 - self.dropout_ratio)), 0.0)

    def _generator_like(self, xp, x):
        """The seeded generator for x's namespace and device, made when first needed."""
        key = (xp, device(x))
        if self._generator is None or self._generator_for != key:
            self._generator = Generator(xp, self.seed, device(x))
            self._generator_for = key
        return self._generator
