"""The array libraries portablelayers runs on: one registry, read by the `portablelayers`
command, the tests' conftest and the noxfile alike.

Each `Backend` says how it is imported (the module users know and the Array API namespace
the tests use), which pip extra installs it, whether the CPU test sessions run it, what
its test session needs in the environment, how its devices are named, and how a
precision policy and a default device are set. Nothing else in the package names a
library by its import path; layers never do.

This module imports nothing but the standard library at import time, so that the noxfile
can load it by path without the package's dependencies.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

__all__ = ["BACKENDS", "CPU_BACKENDS", "PRECISIONS", "Backend", "allow_float64", "backend_of",
           "cupy_extra_for_driver", "parse_device", "set_default_device", "set_precision",
           "split_device"]


@dataclass(frozen=True)
class Backend:
    """One array library as portablelayers knows it.

    Parameters
    ----------
    name : str
        The name the CLI, the nox sessions and PORTABLELAYERS_BACKEND spell.
    module : str
        The module a user imports ("jax.numpy", "dask.array", ...).
    namespace : str
        The Array API namespace the tests use (array-api-compat's wrapper).
    extra : str or None
        The pip extra that installs it; None for a runtime dependency.
    cpu : bool
        Whether the CPU test sessions (and CI) run it.
    doc : str
        One sentence about its test session.
    env : dict, optional
        Environment variables of its test session.

    Examples
    --------
    >>> from portablelayers.backends import BACKENDS
    >>> BACKENDS["jax"].module, BACKENDS["jax"].extra
    ('jax.numpy', 'jax')
    """

    name: str  # as the CLI, the nox sessions and PORTABLELAYERS_BACKEND spell it
    module: str  # what a user imports
    namespace: str  # the Array API namespace the tests use (array-api-compat's wrapper)
    extra: str | None  # the pip extra that installs it (None: a runtime dependency)
    cpu: bool  # runs in the CPU test sessions (and CI)
    doc: str
    env: dict = field(default_factory=dict)  # environment of its test session


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("numpy", "numpy", "array_api_compat.numpy", None, True,
            "Tests on NumPy (the runtime dependency itself, no extra)."),
    Backend("array_api_strict", "array_api_strict", "array_api_strict", "array_api_strict",
            True, "Tests on array-api-strict: proof that layers use only the standard."),
    Backend("torch", "torch", "array_api_compat.torch", "torch", True,
            "Tests on PyTorch (CPU build of the pinned version)."),
    Backend("jax", "jax.numpy", "jax.numpy", "jax", True,
            "Tests on JAX with 64-bit floats enabled (immutable arrays).",
            {"JAX_ENABLE_X64": "1"}),
    Backend("dask", "dask.array", "array_api_compat.dask.array", "dask", True,
            "Tests on Dask: layers must stay lazy (no compute())."),
    Backend("cupy", "cupy", "array_api_compat.cupy", "cupy", False,
            "Tests on CuPy; needs an NVIDIA GPU (skipped elsewhere)."),
)}
CPU_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.cpu)

PRECISIONS = ("highest", "default")


def backend_of(x) -> str:
    """The registry name of the library array `x` belongs to ("numpy", "torch", ...).

    Parameters
    ----------
    x : array
        An array of any library in `BACKENDS`.

    Returns
    -------
    str
        The library's name in `BACKENDS`.

    Raises
    ------
    TypeError
        When `x` is not an array of a known library.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.backends import backend_of
    >>> backend_of(np.zeros(3))
    'numpy'
    """
    import array_api_compat as compat

    for name, test in (("numpy", compat.is_numpy_array), ("torch", compat.is_torch_array),
                       ("jax", compat.is_jax_array), ("dask", compat.is_dask_array),
                       ("cupy", compat.is_cupy_array)):
        if test(x):
            return name
    if type(x).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    raise TypeError(f"not an array of a known library: {type(x).__name__}")


# --- devices ---------------------------------------------------------------------------

def split_device(text: str) -> tuple[str, int | None]:
    """Split a device name into its kind and its index.

    'cuda:1' -> ('cuda', 1), 'gpu' -> ('gpu', None), '0' -> ('', 0). Names are lower-cased.

    Parameters
    ----------
    text : str
        A device name such as 'cpu', 'cuda', 'cuda:1', 'gpu:0' or '0'.

    Returns
    -------
    kind : str
        The lower-cased kind ('' when only an index is given).
    index : int or None
        The index (None when none is given).

    Raises
    ------
    ValueError
        For anything else, or an index without a colon ('cuda1').

    Examples
    --------
    >>> from portablelayers.backends import split_device
    >>> split_device("CUDA:1")
    ('cuda', 1)
    >>> split_device("gpu")
    ('gpu', None)
    >>> split_device("0")
    ('', 0)
    """
    match = re.fullmatch(r"\s*([a-zA-Z_]*)\s*(?::?\s*(\d+))?\s*", str(text))
    if not match or not (match.group(1) or match.group(2)):
        raise ValueError(f"unknown device {text!r}: devices are named like 'cpu', 'cuda', "
                         "'cuda:1', 'gpu:0' or '0'")
    kind, index = match.group(1).lower(), match.group(2)
    if kind and index is not None and ":" not in text:
        raise ValueError(f"write the device index after a colon ('{kind}:{index}'), got "
                         f"{text!r}")
    return kind, None if index is None else int(index)


def parse_device(backend: str, text: str | None):
    """The device of `backend` named `text` (None: the library's default, returned as None).

    numpy, dask: 'cpu'. torch: 'cpu', 'cuda', 'cuda:1' (or an index: 'cuda:N').
    jax: 'cpu', 'gpu', 'gpu:0', 'cuda:0' (or an index of the default platform's devices).
    cupy: '0', 'cuda:0', 'gpu:0'. array_api_strict: its device names ('CPU_DEVICE',
    'device1').

    Parameters
    ----------
    backend : str
        A name in `BACKENDS`.
    text : str or None
        The device's name; None for the library's default.

    Returns
    -------
    object or None
        The library's device object (a string for NumPy and Dask); None when `text` is None.

    Raises
    ------
    ValueError
        For an unknown backend or device; the message names what was asked and what exists.

    Examples
    --------
    >>> from portablelayers.backends import parse_device
    >>> parse_device("numpy", "cpu")
    'cpu'
    >>> parse_device("numpy", None) is None
    True
    """
    if text is None:
        return None
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "array_api_strict":
        strict = importlib.import_module("array_api_strict")
        devices = strict.__array_namespace_info__().devices()
        for dev in devices:
            if str(text).lower() in {str(dev).lower(), str(dev).split("'")[1].lower()
                                     if "'" in str(dev) else str(dev).lower()}:
                return dev
        raise ValueError(_unknown(backend, text, [str(d).split("'")[1] if "'" in str(d)
                                                  else str(d) for d in devices]))
    if backend in ("numpy", "dask"):
        listed = _listed_devices(backend)
        for dev in listed:  # the names the library lists ("cpu", Dask's "DASK_DEVICE")
            if str(text).lower() == str(dev).lower():
                return dev
        kind, index = split_device(text)
        if kind in ("", "cpu") and index in (None, 0):
            return "cpu"
        raise ValueError(_unknown(backend, text, [str(d) for d in listed] or ["cpu"]))
    kind, index = split_device(text)
    if backend == "torch":
        torch = importlib.import_module("torch")
        if kind in ("", "gpu"):
            kind = "cuda"
        if kind not in ("cpu", "cuda", "mps", "xpu", "meta"):
            raise ValueError(_unknown(backend, text, ["cpu", "cuda", "cuda:N"]))
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"torch device {text!r}: this torch sees no CUDA device")
        count = torch.cuda.device_count() if kind == "cuda" else 1
        if index is not None and index >= count:
            raise ValueError(f"torch device {text!r}: there are {count} {kind} device(s)")
        return torch.device(kind if index is None else f"{kind}:{index}")
    if backend == "jax":
        jax = importlib.import_module("jax")
        platform = {"": None, "cuda": "gpu", "rocm": "gpu"}.get(kind, kind)
        try:
            devices = jax.devices(platform) if platform else jax.devices()
        except RuntimeError:
            raise ValueError(f"jax device {text!r}: JAX has no {platform} platform here "
                             f"(it has {', '.join(sorted({d.platform for d in jax.devices()}))})"
                             ) from None
        index = index or 0
        if index >= len(devices):
            raise ValueError(f"jax device {text!r}: there are {len(devices)} "
                             f"{platform or devices[0].platform} device(s)")
        return devices[index]
    # cupy: every device is a GPU
    if kind not in ("", "cuda", "gpu"):
        raise ValueError(_unknown(backend, text, ["0", "cuda:0", "gpu:0"]))
    cupy = importlib.import_module("cupy")
    count = cupy.cuda.runtime.getDeviceCount()
    index = index or 0
    if index >= count:
        raise ValueError(f"cupy device {text!r}: there are {count} GPU(s)")
    return cupy.cuda.Device(index)


def _listed_devices(backend):
    import warnings

    import array_api_compat

    try:
        module = importlib.import_module(BACKENDS[backend].module)
    except ImportError:  # not installed: only the names every such backend has
        return []
    xp = array_api_compat.array_namespace(module.asarray(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [d for d in xp.__array_namespace_info__().devices() if d is not None]


def _unknown(backend, text, names):
    return f"unknown device {text!r} for {backend}; available: {', '.join(names)}"


def set_default_device(backend: str, text: str | None):
    """Make `text` the device new arrays of `backend` go to by default.

    Sets torch's `set_default_device`, JAX's `jax_default_device` or CuPy's current device:
    how the test suites run on a GPU (PORTABLELAYERS_DEVICE).

    Parameters
    ----------
    backend : str
        A name in `BACKENDS`.
    text : str or None
        The device's name (see `parse_device`); None changes nothing.

    Returns
    -------
    object or None
        The device, as `parse_device` returns it.

    Raises
    ------
    ValueError
        For an unknown backend or device.

    Examples
    --------
    >>> from portablelayers.backends import set_default_device
    >>> set_default_device("numpy", "cpu")
    'cpu'
    """
    dev = parse_device(backend, text)
    if dev is None:
        return None
    if backend == "torch":
        importlib.import_module("torch").set_default_device(dev)
    elif backend == "jax":
        importlib.import_module("jax").config.update("jax_default_device", dev)
    elif backend == "cupy":
        dev.use()
    return dev


# --- precision -------------------------------------------------------------------------

def set_precision(backend: str, precision: str = "highest"):
    """The precision of float32 matrix products and convolutions.

    'highest': full float32 everywhere (JAX's matmul precision 'highest', torch with
    TF32 off for matmul and cuDNN); exact tolerances hold. 'default': what each library
    does by default; on NVIDIA GPUs JAX and torch's cuDNN convolutions then use TF32
    (about 1e-3 relative error, faster); CuPy and every CPU compute full float32 either way.

    Parameters
    ----------
    backend : str
        A name in `BACKENDS` (only "jax" and "torch" have a setting to change).
    precision : {"highest", "default"}, default "highest"
        The precision policy.

    Raises
    ------
    ValueError
        For a precision not in `PRECISIONS`.

    Examples
    --------
    >>> from portablelayers.backends import set_precision
    >>> set_precision("numpy", "highest")
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")
    highest = precision == "highest"
    if backend == "jax":
        importlib.import_module("jax").config.update(
            "jax_default_matmul_precision", "highest" if highest else None)
    elif backend == "torch":
        torch = importlib.import_module("torch")
        torch.backends.cuda.matmul.allow_tf32 = not highest
        torch.backends.cudnn.allow_tf32 = not highest


def allow_float64(backend: str):
    """Make float64 arrays possible on `backend`.

    JAX keeps 64-bit types off by default (its float64 arrays would quietly be float32),
    so this turns on `jax_enable_x64`; every other backend has float64 already.

    Parameters
    ----------
    backend : str
        A name in `BACKENDS`.

    Examples
    --------
    >>> from portablelayers.backends import allow_float64
    >>> allow_float64("numpy")
    """
    if backend == "jax":
        importlib.import_module("jax").config.update("jax_enable_x64", True)


# --- packaging -------------------------------------------------------------------------

def cupy_extra_for_driver(nvidia_smi_output: str) -> str:
    """The extra whose CuPy wheel matches the driver ('cupy-cuda13x' or 'cupy-cuda12x').

    Parameters
    ----------
    nvidia_smi_output : str
        What `nvidia-smi` prints (it contains "CUDA Version: 13.0" or the like).

    Returns
    -------
    str
        'cupy-cuda13x' for CUDA 13 or newer, 'cupy-cuda12x' for CUDA 12.

    Raises
    ------
    ValueError
        When the output names no CUDA version, or one older than 12.

    Examples
    --------
    >>> from portablelayers.backends import cupy_extra_for_driver
    >>> cupy_extra_for_driver("Driver Version: 580.65  CUDA Version: 13.0")
    'cupy-cuda13x'
    >>> cupy_extra_for_driver("CUDA Version: 12.4")
    'cupy-cuda12x'
    """
    match = re.search(r"CUDA Version:\s*(\d+)\.", nvidia_smi_output)
    if not match:
        raise ValueError("nvidia-smi printed no 'CUDA Version': install portablelayers"
                         "[cupy-cuda12x] or [cupy-cuda13x] to match your driver")
    major = int(match.group(1))
    if major >= 13:
        return "cupy-cuda13x"
    if major == 12:
        return "cupy-cuda12x"
    raise ValueError(f"the driver supports CUDA {major}; CuPy wheels need CUDA 12 or 13: "
                     "update the NVIDIA driver")
