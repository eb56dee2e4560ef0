"""Saving and loading a network's parameters: the one I/O edge, so NumPy is used here.

The file is a plain `.npz` (one NumPy array per name: "W1", "b1", ..., and BatchNorm
running statistics "running_mean1", ...), so parameters saved from any backend or device
load into any other. Writing is atomic: the file appears complete under its name or not
at all. Loading validates every name and shape before it assigns anything.

The book ships its trained parameters as pickles (a dict of NumPy arrays). Unpickling
runs code from the file, so those load only with an explicit `allow_pickle=True`.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
import zlib

import array_api_compat
import numpy as np
from array_api_compat import is_dask_array

from ._backend import as_array_like, static_shape

__all__ = ["META_KEY", "check_network_arrays", "clean_stale_temporaries", "load_arrays",
           "load_meta", "load_params", "load_params_from_arrays", "network_arrays",
           "save_arrays", "save_params", "to_host"]

META_KEY = "__portablelayers__.json"  # the checkpoint's description, JSON as uint8
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip (.npz), possibly empty
_NPY_MAGIC = b"\x93NUMPY"


def to_host(x) -> np.ndarray:
    """A NumPy copy of an array of any backend and device (a Dask array is computed).

    Parameters
    ----------
    x : array
        An array of any supported library, on any device.

    Returns
    -------
    numpy.ndarray
        A host copy with the same values and dtype.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from portablelayers.checkpoint import to_host
    >>> to_host(xp.asarray([1.0, 2.0]))
    array([1., 2.])
    """
    if is_dask_array(x):
        x = x.compute()  # an I/O edge: computing is what saving means
    if not isinstance(x, np.ndarray):
        try:
            x = np.from_dlpack(x, device="cpu")  # any DLPack producer, copied off a GPU
        except (AttributeError, BufferError, RuntimeError, TypeError, ValueError):
            x = np.asarray(array_api_compat.to_device(x, "cpu"))
    # Our own writeable copy: a DLPack view may share the source's memory or be read-only.
    return np.array(x, copy=True)


def network_arrays(net) -> dict[str, np.ndarray]:
    """The network's parameters and its running statistics created so far, on the host.

    Parameters
    ----------
    net : object
        A network with `params` (and optionally `state`).

    Returns
    -------
    dict of str to numpy.ndarray
        Name -> a NumPy copy of each array.

    Examples
    --------
    >>> from portablelayers.checkpoint import network_arrays
    >>> from portablelayers.nets import TwoLayerNet
    >>> arrays = network_arrays(TwoLayerNet(4, 5, 3, seed=0))
    >>> {name: a.shape for name, a in arrays.items()}
    {'W1': (4, 5), 'b1': (5,), 'W2': (5, 3), 'b2': (3,)}
    """
    arrays = {name: to_host(value) for name, value in net.params.items()}
    arrays.update({name: to_host(value) for name, value in getattr(net, "state", {}).items()
                   if value is not None})
    return arrays


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or unknowable: keep its file)
    return True


def clean_stale_temporaries(path) -> list[str]:
    """Remove the temporary files that saves to `path` left behind when killed mid-write.

    These are `.NAME.pidPID.XXXX.tmp` files whose process is gone, and the older
    `.NAME.XXXX.tmp` form. A save in progress in a live process keeps its file.

    Parameters
    ----------
    path : str or path-like
        The file the saves wrote.

    Returns
    -------
    list of str
        The paths removed.

    Examples
    --------
    >>> import os, tempfile
    >>> from portablelayers.checkpoint import clean_stale_temporaries
    >>> directory = tempfile.mkdtemp()
    >>> open(os.path.join(directory, ".model.npz.abc123.tmp"), "wb").close()
    >>> [os.path.basename(p) for p in clean_stale_temporaries(os.path.join(directory, "model.npz"))]
    ['.model.npz.abc123.tmp']
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        middle = name[len(prefix):-len(".tmp")]
        if middle.startswith("pid"):
            pid = middle[3:].split(".", 1)[0]
            if pid.isdigit() and _pid_alive(int(pid)):
                continue
        try:
            os.remove(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
        except OSError:
            pass
    return removed


def save_arrays(path, arrays: dict, meta: dict | None = None) -> None:
    """Write `arrays` (name -> NumPy array) to the .npz `path` atomically.

    The arrays go into a temporary file in the same directory, then renamed over `path`.
    Temporaries of earlier saves to `path` whose process was killed are removed first.

    Parameters
    ----------
    path : str or path-like
        The .npz file to write.
    arrays : dict of str to numpy.ndarray
        The arrays, of numbers only.
    meta : dict, optional
        JSON-able description, stored as the entry `META_KEY` (UTF-8 bytes of JSON).

    Raises
    ------
    TypeError
        For an array that is not of numbers.
    ValueError
        For an array named `META_KEY`.
    OSError
        When the file cannot be written; the message names `path`, never the temporary.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from portablelayers.checkpoint import load_arrays, load_meta, save_arrays
    >>> path = os.path.join(tempfile.mkdtemp(), "arrays.npz")
    >>> save_arrays(path, {"W": np.arange(3.0)}, meta={"note": "demo"})
    >>> load_arrays(path), load_meta(path)
    ({'W': array([0., 1., 2.])}, {'note': 'demo'})
    """
    for name, value in arrays.items():
        if value.dtype.kind not in "biuf":
            raise TypeError(f"array {name!r} has dtype {value.dtype}; only numbers are saved")
        if name == META_KEY:
            raise ValueError(f"{META_KEY!r} is reserved for the checkpoint's description")
    if meta is not None:
        text = json.dumps(meta, allow_nan=False, sort_keys=True)
        arrays = {**arrays, META_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    clean_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory,
                                   prefix=f".{os.path.basename(path)}.pid{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it visible
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give a normal file's mode
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def load_arrays(path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """Name -> NumPy array from a .npz, or from a pickled dict (the book's params.pkl).

    The format is recognised from the content, not the suffix.

    Parameters
    ----------
    path : str or path-like
        The file.
    allow_pickle : bool, default False
        Read a pickle too (unpickling runs code from the file: only for trusted files).

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays, without the checkpoint's description (see `load_meta`).

    Raises
    ------
    ValueError
        For a truncated or corrupt .npz, a single .npy, a pickle without `allow_pickle`, or
        a pickle of something other than a dict of arrays.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from portablelayers.checkpoint import load_arrays
    >>> path = os.path.join(tempfile.mkdtemp(), "arrays.npz")
    >>> np.savez(path, b=np.zeros(2))
    >>> load_arrays(path)
    {'b': array([0., 0.])}
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(_ZIP_MAGIC):
        try:  # our own handle: np.load leaves its own open when the zip is broken
            with open(path, "rb") as f, np.load(f, allow_pickle=allow_pickle) as npz:
                return {name: npz[name] for name in npz.files if name != META_KEY}
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{path} is not a complete .npz checkpoint (truncated or "
                             f"corrupt: {exc})") from None
    if magic.startswith(_NPY_MAGIC):
        raise ValueError(f"{path} is a single .npy array; a checkpoint is a .npz of named "
                         "arrays")
    if not allow_pickle:
        raise ValueError(f"{path} is not a .npz file. If it is a pickle (such as the book's "
                         "params.pkl), loading it runs code stored in the file, so it is "
                         "refused by default: if you trust the file, pass allow_pickle=True "
                         f"to load_params, as in network.load_params({path!r}, "
                         "allow_pickle=True) (or to load_arrays)")
    with open(path, "rb") as f:
        data = pickle.load(f)  # the caller opted in
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"{path}: expected a pickled dict of name -> array, got "
                         f"{type(data).__name__}")
    return {name: np.asarray(value) for name, value in data.items()}


def load_meta(path) -> dict:
    """The JSON description a checkpoint carries.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    dict
        The description; {} for a file of parameters only, or a file that is not a .npz.

    Raises
    ------
    ValueError
        For a corrupt .npz, or a description that is not a JSON object.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from portablelayers.checkpoint import load_meta
    >>> path = os.path.join(tempfile.mkdtemp(), "arrays.npz")
    >>> np.savez(path, b=np.zeros(2))
    >>> load_meta(path)
    {}
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        if not f.read(6).startswith(_ZIP_MAGIC):
            return {}
    try:  # our own handle: np.load leaves its own open when the zip is broken
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                return {}
            raw = npz[META_KEY]
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is not a complete .npz checkpoint (truncated or corrupt: "
                         f"{exc})") from None
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: its description is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its description is not a JSON object")
    return meta


def save_params(net, path) -> None:
    """Save `net.params` and `net.state` (running statistics) to the .npz `path`.

    The file is written atomically and holds no pickle; it loads on any backend.

    Parameters
    ----------
    net : Sequential
        The network.
    path : str or path-like
        The .npz file.

    Raises
    ------
    OSError
        When the file cannot be written (the message names `path`).

    Examples
    --------
    >>> import os, tempfile
    >>> from portablelayers.checkpoint import load_params, save_params
    >>> from portablelayers.nets import TwoLayerNet
    >>> path = os.path.join(tempfile.mkdtemp(), "params.npz")
    >>> save_params(TwoLayerNet(4, 5, 3, seed=0), path)
    >>> net = TwoLayerNet(4, 5, 3, seed=1)
    >>> load_params(net, path)
    >>> bool((net.params["W1"] == TwoLayerNet(4, 5, 3, seed=0).params["W1"]).all())
    True
    """
    save_arrays(path, network_arrays(net))


def load_params(net, path, allow_pickle: bool = False) -> None:
    """Load parameters (and running statistics) saved by `save_params` into `net`.

    Each array is cast to its parameter's dtype and device. The book's pickled parameters
    load too, with ``allow_pickle=True``.

    Parameters
    ----------
    net : Sequential
        The network, built as the saved one was.
    path : str or path-like
        A .npz file, or the book's pickle.
    allow_pickle : bool, default False
        Accept a pickle (unpickling runs code from the file: only for files you trust).

    Raises
    ------
    ValueError
        Naming every missing, unexpected or wrongly shaped array; `net` is unchanged then.

    Examples
    --------
    See `save_params`.
    """
    load_params_from_arrays(net, load_arrays(path, allow_pickle=allow_pickle), path)


def check_network_arrays(net, arrays, what="the arrays") -> None:
    """Check that host arrays are the network's, before anything is assigned from them.

    Every parameter must be there, every name must be a parameter or a state entry of the
    network, and each array must have its shape and hold numbers.

    Parameters
    ----------
    net : object
        A network with `params` (and optionally `state`).
    arrays : dict of str to numpy.ndarray
        Name -> array, as `network_arrays` gives them.
    what : str, default "the arrays"
        What names the arrays in errors.

    Raises
    ------
    ValueError
        Naming every missing or unexpected name and every wrong shape or dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.checkpoint import check_network_arrays, network_arrays
    >>> from portablelayers.nets import TwoLayerNet
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> check_network_arrays(net, network_arrays(net))
    >>> check_network_arrays(net, {"W1": np.zeros((4, 5))})
    Traceback (most recent call last):
        ...
    ValueError: the arrays and the network do not match: missing b1, W2, b2
    """
    params, state = net.params, getattr(net, "state", {})
    missing = [name for name in params if name not in arrays]
    unexpected = [name for name in arrays if name not in params and name not in state]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name, value in arrays.items():
        view = params if name in params else state if name in state else None
        if view is None or view[name] is None:  # a state entry not made yet takes any
            continue
        expected = static_shape(view[name])
        if tuple(np.shape(value)) != expected:
            problems.append(f"{name} has shape {tuple(np.shape(value))}, the network's has "
                            f"{expected}")
        elif np.asarray(value).dtype.kind not in "biuf":
            problems.append(f"{name} has dtype {np.asarray(value).dtype}, not numbers")
    if problems:
        raise ValueError(f"{what} and the network do not match: {'; '.join(problems)}")


def load_params_from_arrays(net, arrays, path="the arrays") -> None:
    """`load_params` from name -> NumPy array.

    Every name and shape is checked before anything is assigned.

    Parameters
    ----------
    net : object
        The network to load into (its `params` and `state`).
    arrays : dict of str to numpy.ndarray
        The arrays; names with a "/" (an optimizer's state) are ignored.
    path : str, default "the arrays"
        What names the arrays in errors.

    Raises
    ------
    ValueError
        For missing or unexpected names, or arrays of the wrong shape or dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.checkpoint import load_params_from_arrays, network_arrays
    >>> from portablelayers.nets import TwoLayerNet
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> arrays = {name: np.ones_like(a) for name, a in network_arrays(net).items()}
    >>> load_params_from_arrays(net, arrays)
    >>> float(net.params["W1"].sum())
    20.0
    """
    # A full checkpoint also holds the optimizer's state ("optimizer/m/W1"): not the net's.
    arrays = {name: value for name, value in arrays.items() if "/" not in name}
    check_network_arrays(net, arrays, path)
    params, state = net.params, net.state

    # Convert everything first: a failure here must not leave the network half loaded.
    # Copies: NumPy and torch would otherwise share memory with the arrays given (a read
    # checkpoint, the Trainer's best weights), and training in place would rewrite them.
    converted = {}
    for name, value in arrays.items():
        view = params if name in params else state
        converted[name] = (view, as_array_like(value, view.like(name)))
    for name, (view, value) in converted.items():
        view.rebind(name, value)
