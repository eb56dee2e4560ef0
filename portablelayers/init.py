"""Weight initialisation as the book does it: a standard normal scaled by a std.

The std is a number, or a name as the book's `weight_init_std` accepts it:
'relu'/'he' -> sqrt(2 / fan_in) (He, for ReLU), 'sigmoid'/'xavier' -> sqrt(1 / fan_in)
(Xavier/Glorot as the book simplifies it, for sigmoid and tanh).

    init = Initializer("torch", seed=0)            # float32 on torch's default device
    W1 = init.weight((784, 50), "he")
    b1 = init.zeros((50,))

The normal draws are made on the host (portablelayers.random.host_normal), so the same
seed gives the same weights on every backend; they are then created in the requested
dtype on the requested device.
"""

from __future__ import annotations

import math
import numbers
import secrets
import warnings

from ._backend import resolve_namespace
from .random import host_normal

__all__ = ["Initializer", "weight_std"]

# Accepted names -> the numerator of std = sqrt(numerator / fan_in).
_NAMED_STDS = {"relu": 2.0, "he": 2.0, "sigmoid": 1.0, "xavier": 1.0, "glorot": 1.0, "tanh": 1.0}


def weight_std(weight_init_std, fan_in) -> float:
    """The standard deviation for a book-style `weight_init_std` and `fan_in`.

    Parameters
    ----------
    weight_init_std : float or str
        A number (used as it is) or a name: "relu"/"he" give ``sqrt(2 / fan_in)``,
        "sigmoid"/"xavier"/"glorot"/"tanh" give ``sqrt(1 / fan_in)``.
    fan_in : int
        Inputs per unit; needed for a name.

    Returns
    -------
    float
        The standard deviation.

    Raises
    ------
    ValueError
        For an unknown name, a bad `fan_in`, or a negative or non-finite number.
    TypeError
        For anything else.

    Examples
    --------
    >>> from portablelayers.init import weight_std
    >>> weight_std("he", 50), weight_std(0.01, 50)
    (0.2, 0.01)
    """
    if isinstance(weight_init_std, str):
        key = weight_init_std.lower()
        if key not in _NAMED_STDS:
            raise ValueError(f"weight_init_std must be a number or one of "
                             f"{', '.join(map(repr, _NAMED_STDS))}, got {weight_init_std!r}")
        if isinstance(fan_in, bool) or not isinstance(fan_in, numbers.Integral) or fan_in < 1:
            raise ValueError(f"fan_in must be a positive integer for weight_init_std="
                             f"{weight_init_std!r}, got {fan_in!r}")
        return math.sqrt(_NAMED_STDS[key] / int(fan_in))
    if isinstance(weight_init_std, bool) or not isinstance(weight_init_std, numbers.Real):
        raise TypeError(f"weight_init_std must be a number or one of "
                        f"{', '.join(map(repr, _NAMED_STDS))}, got "
                        f"{type(weight_init_std).__name__} {weight_init_std!r}")
    std = float(weight_init_std)
    if not (math.isfinite(std) and std >= 0.0):
        raise ValueError(f"weight_init_std must be finite and >= 0, got {weight_init_std!r}")
    return std


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0
               for n in shape):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    return tuple(int(n) for n in shape)


def _default_fan_in(shape: tuple[int, ...]) -> int:
    """Inputs per output unit: D of an Affine W (D, M); C*FH*FW of conv filters (FN, C, FH, FW)."""
    if len(shape) <= 2:
        return shape[0] if shape else 1
    return math.prod(shape[1:])


class Initializer:
    """Seeded weights, zeros and ones in namespace `xp`, on `device`, of `dtype`.

    `xp` is None (NumPy), a backend name ("torch"), an array module or a namespace;
    `dtype` defaults to float32 and may be a dtype or its name ("float64"). One seed gives
    a reproducible sequence: the first weight() call draws W1, the second W2, and so on.

    Parameters
    ----------
    xp : str or module, optional
        Backend name, array module or namespace; None is NumPy.
    device : object, optional
        Device of the arrays; None is the namespace's default.
    dtype : dtype or str, optional
        A real floating dtype or its name; float32 when None.
    seed : int, optional
        Non-negative seed; None draws one (kept in `seed`).

    Raises
    ------
    ValueError
        For an unknown dtype name, a non-floating dtype or a negative seed.
    ImportError
        For a backend that is not installed (the message names the extra).

    Examples
    --------
    >>> from portablelayers.init import Initializer
    >>> init = Initializer(seed=0)
    >>> W = init.weight((3, 2), "he")
    >>> W.shape, W.dtype, init.zeros((2,))
    ((3, 2), dtype('float32'), array([0., 0.], dtype=float32))
    """

    def __init__(self, xp=None, device=None, dtype=None, seed=None):
        self.xp = resolve_namespace(xp)
        if isinstance(dtype, str):
            if not hasattr(self.xp, dtype):
                raise ValueError(f"unknown dtype name {dtype!r} for {self.xp.__name__}")
            dtype = getattr(self.xp, dtype)
        self.dtype = self.xp.float32 if dtype is None else dtype
        if not self.xp.isdtype(self.dtype, "real floating"):
            raise ValueError(f"Initializer dtype must be a real floating dtype, got {self.dtype}")
        with warnings.catch_warnings():  # JAX warns as well; the error below says more
            warnings.simplefilter("ignore", UserWarning)
            made = self.xp.zeros((), dtype=self.dtype).dtype
        if made != self.dtype:  # JAX without 64-bit mode gives float32 for float64
            asked = getattr(self.dtype, "__name__", self.dtype)
            raise ValueError(f"{self.xp.__name__} makes {made} arrays when asked for "
                             f"{asked}; on JAX, float64 needs "
                             "jax.config.update('jax_enable_x64', True) (or "
                             "portablelayers.backends.allow_float64('jax'))")
        self.device = device
        if seed is None:  # a fresh seed, kept so the run can be repeated
            seed = secrets.randbits(63)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = int(seed)
        self._draws = 0  # weight() calls so far: each draws from its own sub-stream

    def weight(self, shape, weight_init_std=0.01, fan_in=None):
        """`std * standard normal` of `shape`; std as in `weight_std` (fan_in from shape)."""
        shape = _check_shape(shape)
        std = weight_std(weight_init_std, _default_fan_in(shape) if fan_in is None else fan_in)
        # Seeding NumPy with (seed, k) gives independent, reproducible streams W1, W2, ...
        z = host_normal(self.xp, shape, [self.seed, self._draws], self.dtype, self.device)
        self._draws += 1
        return std * z

    def zeros(self, shape):
        """Zeros of `shape` (the book's biases)."""
        return self.xp.zeros(_check_shape(shape), dtype=self.dtype, device=self.device)

    def ones(self, shape):
        """Ones of `shape` (BatchNorm's gamma)."""
        return self.xp.ones(_check_shape(shape), dtype=self.dtype, device=self.device)

    def __repr__(self):
        return (f"Initializer(xp={self.xp.__name__}, device={self.device!r}, "
                f"dtype={self.dtype}, seed={self.seed})")
