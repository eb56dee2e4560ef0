"""The checks that layers, functions, networks and the Trainer share, in one place.

Every public entry point calls these at its top, before it changes any state, so a call
that fails leaves its object as it was (the error contract, docs/design.md):

- TypeError: not an array (a list, a number where an array is needed), arrays of two
  libraries, a dtype the call cannot use (complex; a float where labels must be integers),
  a setting of the wrong type.
- ValueError: a wrong number of axes or shape, an empty batch where a mean over it is
  undefined, a setting or label out of range, arrays on two devices, data that are not
  finite where they enter training.
- RuntimeError: a call out of order (`backward` before `forward`).

Every message names the call, what it expected and what it got.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Mapping

from array_api_compat import is_dask_array

from ._backend import (
    as_float,
    default_float,
    device,
    is_array,
    is_real_floating,
    library_name,
    read_bool,
    same_shape,
    static_shape,
)
from ._backend import namespace as _namespace

__all__ = [
    "array",
    "arrays",
    "describe",
    "dout",
    "finite_data",
    "index",
    "ndim",
    "nonempty",
    "numeric",
    "real_floating",
    "scalar_dout",
]

_ARRAY_KINDS = ("an array of an Array API library (numpy.ndarray, torch.Tensor, jax.Array, "
                "dask.array.Array, cupy.ndarray, array_api_strict Array)")


def describe(value) -> str:
    """What `value` is, for a message: an array's library, shape and dtype, or a Python
    object's type and (short) repr."""
    if is_array(value):
        return f"{library_name(value)} of shape {static_shape(value)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def array(value, what: str):
    """`value` itself; TypeError naming `what` unless it is an array."""
    if not is_array(value):
        hint = ""
        if isinstance(value, list | tuple | numbers.Number):
            hint = " (convert it first, e.g. with xp.asarray(value))"
        raise TypeError(f"{what} must be {_ARRAY_KINDS}, got {describe(value)}{hint}")
    return value


def arrays(where: str, **named):
    """The namespace shared by the named arrays (None values are skipped).

    TypeError naming the argument unless every value is an array, and naming both
    libraries when two are mixed; ValueError naming both devices when the arrays are on
    two devices (a device that cannot be known, as a traced JAX array's, is not compared).
    """
    present = {name: value for name, value in named.items() if value is not None}
    xp = _all_fine(list(present.values()))
    if xp is not None:  # the common case, checked cheaply (every layer call comes here)
        return xp
    for name, value in present.items():
        array(value, f"{where}: {name}")
    try:
        xp = _namespace(*present.values())
    except TypeError:
        kinds = ", ".join(f"{name} is {library_name(v)}" for name, v in present.items())
        raise TypeError(f"{where}: all arrays must come from the same array library, got "
                        f"{kinds}") from None
    devices = {}
    for name, value in present.items():
        try:
            dev = device(value)
        except Exception:  # an array type array-api-compat does not know: not compared
            dev = None
        if dev is not None:
            devices.setdefault(str(dev), (name, dev))
    if len(devices) > 1:
        where_is = ", ".join(f"{name} on {dev}" for name, dev in devices.values())
        raise ValueError(f"{where}: all arrays must be on one device, got {where_is}")
    return xp


def _all_fine(values):
    """The namespace when `values` are arrays of one type on one device, else None (the
    caller's full checks then say what is wrong)."""
    if not values or not is_array(values[0]):
        return None
    kind = type(values[0])
    if any(type(v) is not kind for v in values[1:]):
        return None
    try:
        xp = _namespace(*values)
        if len(values) > 1 and kind.__module__ != "numpy":  # NumPy has the CPU only
            first = device(values[0])
            if any(device(v) != first for v in values[1:]):
                return None
    except Exception:  # an unknown device or library: the full checks decide
        return None
    return xp


def real_floating(xp, x, what: str):
    """`x` as a real floating array: integer and bool arrays are promoted to the
    namespace's default floating dtype (as NumPy's ufuncs do); complex and other dtypes
    are a TypeError naming `what`."""
    try:
        return as_float(xp, x, what)
    except TypeError:
        raise TypeError(f"{what} must have a real dtype (floating, integer or bool), got "
                        f"dtype {x.dtype}; complex input is not supported") from None


def numeric(xp, x, what: str):
    """`x` itself when its dtype is real (integer or floating, kept as it is); bool is
    promoted to the default floating dtype; complex is a TypeError naming `what`."""
    if xp.isdtype(x.dtype, ("integral", "real floating")):
        return x
    if xp.isdtype(x.dtype, "bool"):
        return xp.astype(x, default_float(xp, device(x)))
    raise TypeError(f"{what} must have a real dtype (floating, integer or bool), got dtype "
                    f"{x.dtype}; complex input is not supported")


def ndim(x, allowed, what: str, layout: str):
    """ValueError unless x.ndim is in `allowed`; `layout` says what is expected, as
    "(N, C, H, W)"."""
    if x.ndim not in allowed:
        raise ValueError(f"{what} must have shape {layout}, got shape {static_shape(x)} "
                         f"({x.ndim} axes)")


def nonempty(x, axes, what: str, why: str = "a mean over it is undefined"):
    """ValueError when one of `axes` of x has length 0 (a mean over it is undefined); an
    unknown length (Dask) passes."""
    shape = static_shape(x)
    for axis in axes:
        if shape[axis] == 0:
            raise ValueError(f"{what} of shape {shape} is empty along axis {axis}: {why}")


def dout(where: str, value, expected, like=None):
    """The dout given to a `backward`: an array of the forward output's shape `expected`
    (unknown Dask dimensions match anything), of a real dtype, in the library of `like`.

    When the forward output was a Python number or a 0-D array (`expected == ()`), a real
    Python number is accepted too. TypeError / ValueError naming what was expected.
    """
    expected = tuple(None if d is None or d != d else int(d) for d in expected)
    if expected == () and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    xp = arrays(where, dout=value, forward_input=like if is_array(like) else None)
    got = static_shape(value)
    if not same_shape(got, expected):
        raise ValueError(f"{where} expects dout of shape {expected} (the forward output), "
                         f"got {got}")
    _real_dout(xp, where, value)
    return value


def _real_dout(xp, where, value):
    if is_real_floating(xp, value.dtype):  # the usual case, remembered per dtype
        return
    if not xp.isdtype(value.dtype, "integral"):
        raise TypeError(f"{where}: dout must have a real dtype (floating or integer), got "
                        f"dtype {value.dtype}")


def scalar_dout(where: str, value, like=None):
    """The dout of a loss layer's backward: a real number or a 0-D array (the loss is a
    scalar). A larger array would broadcast into a silently wrong gradient: ValueError."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    array(value, f"{where}: dout")
    xp = arrays(where, dout=value, scores=like)
    if value.ndim != 0:
        raise ValueError(f"{where} expects dout as a number or a 0-D array (the loss is a "
                         f"scalar), got shape {static_shape(value)}")
    _real_dout(xp, where, value)
    return value


def index(name: str, value, low: int) -> int:
    """`value` as a Python int (any integer type: int, numpy.int64, a 0-D integer array
    with __index__), checked >= `low`. bool and floats are a TypeError."""
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} "
                        f"{value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def compiler_options(where: str, options) -> dict:
    """XLA compiler options as a dict, from None or a mapping of names to values.

    The names are str, the values str, bool, int or float (TypeError otherwise); whether
    XLA knows a name is XLA's to say, when it compiles."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"{where}: compiler_options must be a dict of XLA option names to "
                        f"values, got {type(options).__name__}")
    for name, value in options.items():
        if not isinstance(name, str) or not isinstance(value, (str, bool, int, float)):
            raise TypeError(f"{where}: compiler_options maps option names (str) to str, "
                            f"bool, int or float values, got {name!r}: "
                            f"{type(value).__name__}")
    return dict(options)


def _computed(value):
    return value.compute() if is_dask_array(value) else value


def _read_now(flag):
    """A 0-D bool read where data enter: computed on Dask (once, as the labels are),
    skipped only where no value exists (jax.jit, `no_value_checks()`)."""
    if is_dask_array(flag):
        flag = flag.compute()
    return read_bool(flag)


def finite_data(xp, **named) -> None:
    """ValueError naming the first array of `named` that holds NaN or inf.

    For data where they enter training (the Trainer): one device read for all of them (a
    Dask computation there, as for the labels), skipped where no value exists (jax.jit,
    `no_value_checks()`); a second read only to say which array and how many values.
    Integer and bool arrays are always finite and are not read.
    """
    floats = {name: a for name, a in named.items()
              if is_array(a) and xp.isdtype(a.dtype, ("real floating", "complex floating"))}
    if not floats:
        return
    bad = [xp.any(~xp.isfinite(a)) for a in floats.values()]
    any_bad = bad[0]
    for flag in bad[1:]:
        any_bad = any_bad | flag
    if not _read_now(any_bad):
        return
    for (name, a), flag in zip(floats.items(), bad, strict=True):
        if _read_now(flag):
            nans = int(_computed(xp.sum(xp.astype(xp.isnan(a), xp.int32))))
            infs = int(_computed(xp.sum(xp.astype(xp.isinf(a), xp.int32))))
            raise ValueError(f"{name} holds {nans} NaN and {infs} infinite values; training "
                             "needs finite data (drop or impute those samples first)")
