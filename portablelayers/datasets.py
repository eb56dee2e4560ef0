"""Datasets for training examples: MNIST from its IDX files, and the 8x8 digits shipped inside
the package (no network needed).

Every loader returns the book's layout, `(x_train, t_train), (x_test, t_test)`, as NumPy arrays:
images as uint8 or, with `normalize=True`, float32 in [0, 1]; flat rows `(N, H*W)` or, with
`flatten=False`, `(N, 1, H, W)`; labels as uint8 class indices or, with `one_hot_label=True`,
float32 rows `(N, 10)`. Pass `xp=` (a backend name or module) and `device=` to get them on
another backend instead, or call `to_backend` later.

This is an I/O module: it reads files on the host with NumPy, which layer code never does.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "DataFileError",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "download_mnist",
    "holdout_split",
    "load_digits",
    "load_idx",
    "load_mnist",
    "load_mnist_test",
    "mnist_dir",
    "mnist_file",
    "to_backend",
    "validation_split",
]

# The four official files and the md5 of each (gzipped) file.
MNIST_FILES = {
    "train_img": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_label": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_img": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_label": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
# Mirrors of the original files (yann.lecun.com no longer serves them reliably).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_ENV = "PORTABLELAYERS_MNIST"

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFileError(ValueError):
    """A data file exists but is not what it should be (corrupt, truncated, wrong checksum).

    A subclass of ValueError; its message names the file and says what to do.

    Examples
    --------
    >>> from portablelayers.datasets import DataFileError
    >>> issubclass(DataFileError, ValueError)
    True
    """


# --- IDX files -------------------------------------------------------------------------------

def load_idx(path) -> np.ndarray:
    """The array stored in one IDX file (gzipped or raw), in native byte order.

    Parameters
    ----------
    path : str or path-like
        The IDX file (gzipped or not).

    Returns
    -------
    numpy.ndarray
        A writable copy of the stored array.

    Raises
    ------
    DataFileError
        Naming the file, when it is not IDX, is truncated or has extra bytes.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> from portablelayers.datasets import load_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny-idx1-ubyte")
    >>> with open(path, "wb") as f:  # magic: 0, 0, type 0x08 (uint8), 1 axis; then 3 items
    ...     _ = f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([7, 8, 9]))
    >>> load_idx(path)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'empty'}, "
                            "expected 0000 followed by a type code and the number of axes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated IDX header ({len(raw)} bytes, expected at "
                            f"least {header}); delete the file and fetch it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataFileError(f"{path}: IDX file {what} ({len(raw)} bytes, expected {expected} "
                            f"for shape {shape}); delete the file and fetch it again")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":  # not gzip: a raw (already unpacked) file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(f"{path}: corrupt or truncated gzip file ({exc}); delete the file "
                            "and fetch it again") from None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- MNIST -----------------------------------------------------------------------------------

def mnist_dir(path=None) -> Path:
    """Where MNIST is read from: `path`, else $PORTABLELAYERS_MNIST, else the user cache.

    The user cache is ~/.cache/portablelayers/mnist, or under $XDG_CACHE_HOME.

    Parameters
    ----------
    path : str or path-like, optional
        The folder, when the caller names one.

    Returns
    -------
    pathlib.Path
        The folder (not created).

    Examples
    --------
    >>> from portablelayers.datasets import mnist_dir
    >>> mnist_dir("/data/mnist").as_posix()
    '/data/mnist'
    """
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(MNIST_ENV):
        return Path(os.environ[MNIST_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "portablelayers" / "mnist"


def mnist_file(directory, key: str) -> Path | None:
    """The file of one of MNIST's four arrays in a folder, gzipped or unpacked.

    Parameters
    ----------
    directory : str or path-like
        The folder.
    key : {"train_img", "train_label", "test_img", "test_label"}
        Which array.

    Returns
    -------
    pathlib.Path or None
        The file under its official .gz name, or the same name unpacked; None where
        neither is there.

    Examples
    --------
    >>> import tempfile
    >>> from portablelayers.datasets import mnist_file
    >>> mnist_file(tempfile.mkdtemp(), "test_img") is None
    True
    """
    directory = Path(directory)
    name = MNIST_FILES[key][0]
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _require(directory: Path, keys, fetch="pass download=True (needs network)",
             test_set_hint=True) -> dict[str, Path]:
    found = {key: mnist_file(directory, key) for key in keys}
    missing = [MNIST_FILES[key][0] for key, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST file(s) {', '.join(missing)} not found in {directory}. Put the official "
            f"files there (gzipped or unpacked), point path= or ${MNIST_ENV} at the folder that "
            f"holds them, or {fetch}."
            + ("" if not test_set_hint or "train_img" not in keys
               or mnist_file(directory, "test_img") is None else
               " This folder holds the test set: load_mnist_test() reads it alone."))
    return found


def _check_mnist_md5(img_path: Path, label_path: Path, img_key: str, label_key: str):
    """Gzipped files against the official md5 (an unpacked file has no official checksum:
    it is checked by parsing, IDX structure, shapes and label range)."""
    for key, p in ((img_key, img_path), (label_key, label_path)):
        name, md5 = MNIST_FILES[key]
        if p.suffix == ".gz" and (got := _md5(p)) != md5:
            raise DataFileError(f"{p}: md5 {got} differs from the official {name} ({md5}); "
                                "the file is corrupt or not MNIST: delete it and fetch it again")


def _check_mnist_arrays(img_path, label_path, images_dtype, images_shape, labels):
    """The images' dtype and shape (from the header is enough) and the labels themselves."""
    if images_dtype != np.uint8 or len(images_shape) != 3 or images_shape[1:] != (28, 28):
        raise DataFileError(f"{img_path}: expected uint8 images of shape (N, 28, 28), got "
                            f"{images_dtype} {images_shape}")
    if labels.dtype != np.uint8 or labels.shape != (images_shape[0],) or labels.max(
            initial=0) > 9:
        raise DataFileError(f"{label_path}: expected {images_shape[0]} uint8 labels in 0..9, "
                            f"got {labels.dtype} {labels.shape}")


def _read_mnist_pair(img_path: Path, label_path: Path, img_key: str, label_key: str):
    """Images (N, 28, 28) and labels (N,) as uint8, checked against the official files."""
    _check_mnist_md5(img_path, label_path, img_key, label_key)
    images, labels = load_idx(img_path), load_idx(label_path)
    _check_mnist_arrays(img_path, label_path, images.dtype, images.shape, labels)
    return images, labels


def load_mnist(normalize=True, flatten=True, one_hot_label=False, path=None, download=False,
               *, xp=None, device=None):
    """MNIST as the book loads it: `((x_train, t_train), (x_test, t_test))`, 60,000 + 10,000.

    Files are read from `path`, $PORTABLELAYERS_MNIST or the cache (see `mnist_dir`);
    `download=True` fetches the missing ones first. Gzipped files are checked against the
    official md5; unpacked ones (which have no official checksum) by parsing: IDX structure,
    shapes and label range. A missing or corrupt file gives an error naming it and saying
    what to do.

    Parameters
    ----------
    normalize : bool, default True
        Pixels as float32 in [0, 1], else uint8.
    flatten : bool, default True
        Images as (N, 784) rows, else (N, 1, 28, 28).
    one_hot_label : bool, default False
        Labels as one-hot rows (N, 10), else class indices (N,).
    path : str or path-like, optional
        The folder of the IDX files.
    download : bool, default False
        Fetch missing files first (needs network).
    xp : str or module, optional
        Backend of the returned arrays (a name such as "torch", a module or a namespace);
        NumPy when None.
    device : object, optional
        Device of the returned arrays.

    Returns
    -------
    (x_train, t_train), (x_test, t_test) : tuple of tuple of array
        60,000 training and 10,000 test images.

    Raises
    ------
    FileNotFoundError
        For a missing file (the message says how to get it).
    DataFileError
        For a corrupt, truncated or wrong file.

    Examples
    --------
    >>> from portablelayers.datasets import load_mnist
    >>> (x_train, t_train), (x_test, t_test) = load_mnist()  # doctest: +SKIP
    """
    directory = mnist_dir(path)
    if download:
        download_mnist(directory)
    files = _require(directory, MNIST_FILES)
    train = _read_mnist_pair(files["train_img"], files["train_label"], "train_img",
                             "train_label")
    test = _read_mnist_pair(files["test_img"], files["test_label"], "test_img", "test_label")
    out = tuple(_book_layout(x, t, 255.0, normalize, flatten, one_hot_label)
                for x, t in (train, test))
    return to_backend(out, xp, device)


def load_mnist_test(normalize=True, flatten=True, one_hot_label=False, path=None,
                    *, xp=None, device=None):
    """Only the 10,000-image MNIST test set, from a folder that may lack the training files.

    `holdout_split` divides it.

    Parameters
    ----------
    normalize : bool, default True
        Pixels as float32 in [0, 1], else uint8.
    flatten : bool, default True
        Images as (N, 784) rows, else (N, 1, 28, 28).
    one_hot_label : bool, default False
        Labels as one-hot rows (N, 10), else class indices (N,).
    path : str or path-like, optional
        The folder of the IDX files (see `mnist_dir`).
    xp : str or module, optional
        Backend of the returned arrays; NumPy when None.
    device : object, optional
        Device of the returned arrays.

    Returns
    -------
    x_test, t_test : tuple of array
        10,000 test images and their labels.

    Raises
    ------
    FileNotFoundError
        For a missing file (the message says how to get it).
    DataFileError
        For a corrupt, truncated or wrong file.

    Examples
    --------
    >>> from portablelayers.datasets import load_mnist_test
    >>> x_test, t_test = load_mnist_test()  # doctest: +SKIP
    """
    files = _require(mnist_dir(path), ("test_img", "test_label"))
    x, t = _read_mnist_pair(files["test_img"], files["test_label"], "test_img", "test_label")
    return to_backend(_book_layout(x, t, 255.0, normalize, flatten, one_hot_label), xp, device)


def _paired_length(x, t):
    """The number of samples in (x, t); ValueError when x and t hold different numbers."""
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"x and t must hold the same number of samples, got {x.shape[0]} "
                         f"and {t.shape[0]}")
    return x.shape[0]


def holdout_split(x, t, n_train):
    """Split (x, t) in order: the first `n_train` samples train, the rest are held out.

    For example 8,000 / 2,000 of the MNIST test set.

    Parameters
    ----------
    x, t : array
        Samples and labels, N each.
    n_train : int
        The number of training samples, in [1, N - 1].

    Returns
    -------
    (x_train, t_train), (x_held, t_held) : tuple of tuple of array
        ``((x[:n_train], t[:n_train]), (x[n_train:], t[n_train:]))``.

    Raises
    ------
    ValueError
        For an `n_train` that leaves a part empty.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.datasets import holdout_split
    >>> (x, t), (x_held, t_held) = holdout_split(np.arange(5), np.arange(5), 3)
    >>> x, x_held
    (array([0, 1, 2]), array([3, 4]))
    """
    n = _paired_length(x, t)
    if not 0 < n_train < n:
        raise ValueError(f"n_train must lie in [1, {n - 1}] for {n} samples, got {n_train}")
    return (x[:n_train, ...], t[:n_train, ...]), (x[n_train:, ...], t[n_train:, ...])


def validation_split(x, t, fraction, seed=0):
    """Hold ``round(fraction * N)`` samples out of (x, t) for validation.

    A permutation seeded with `seed` chooses them; the order of the rest is kept. Each
    part keeps at least one sample.

    Parameters
    ----------
    x, t : numpy.ndarray
        Samples and labels, N each.
    fraction : float
        The share held out, in (0, 1).
    seed : int, default 0
        Seed of the choice.

    Returns
    -------
    (x_train, t_train), (x_val, t_val) : tuple of tuple of numpy.ndarray
        The remaining and the held-out samples.

    Raises
    ------
    ValueError
        For a fraction that leaves a part empty, or x and t of different lengths.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.datasets import validation_split
    >>> (x, t), (x_val, t_val) = validation_split(np.arange(10), np.arange(10), 0.2)
    >>> len(x), len(x_val)
    (8, 2)
    """
    n = _paired_length(x, t)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    k = min(max(round(fraction * n), 1), n - 1)
    if n < 2:
        raise ValueError(f"{n} sample(s) cannot be split into training and validation")
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).permutation(n)[:k]] = True
    return (x[~held], t[~held]), (x[held], t[held])


def download_mnist(path=None, *, mirrors=None, timeout=30.0, progress=True) -> Path:
    """Fetch the MNIST files missing from `path` (see `mnist_dir`) and return the folder.

    Each file is tried from `mirrors` in turn and kept only when its md5 matches the
    official one.

    Parameters
    ----------
    path : str or path-like, optional
        The folder (see `mnist_dir`); created when missing.
    mirrors : sequence of str, optional
        Base URLs to try in turn; `MNIST_MIRRORS` by default.
    timeout : float, default 30.0
        Seconds to wait for a mirror's answer.
    progress : bool, default True
        Print each file's progress.

    Returns
    -------
    pathlib.Path
        The folder that now holds the files.

    Raises
    ------
    ConnectionError
        With every mirror's reason, when no mirror can deliver a file (for example offline).

    Examples
    --------
    >>> from portablelayers.datasets import download_mnist
    >>> folder = download_mnist()  # doctest: +SKIP
    """
    directory = mnist_dir(path)
    directory.mkdir(parents=True, exist_ok=True)
    for name, md5 in MNIST_FILES.values():
        target = directory / name
        if target.is_file() and _md5(target) == md5:
            continue
        _fetch(name, md5, target, MNIST_MIRRORS if mirrors is None else mirrors, timeout,
               progress)
    return directory


def _fetch(name, md5, target: Path, mirrors, timeout, progress):
    part = target.with_name(target.name + ".part")
    reasons = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                _copy_with_progress(response, f, total, name if progress else None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reasons.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        if (got := _md5(part)) == md5:
            os.replace(part, target)
            return
        reasons.append(f"{url}: md5 {got}, expected {md5}")
    part.unlink(missing_ok=True)
    raise ConnectionError(
        f"could not download {name} ({'; '.join(reasons)}). If this machine is offline, copy "
        f"the official MNIST files into {target.parent} by hand or point ${MNIST_ENV} at them.")


def _copy_with_progress(src, dst, total, label):
    """Copy a download to `dst`, with a tqdm bar (when installed) if `label` is given."""
    bar = None
    if label is not None:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr)
        except ImportError:
            print(f"downloading {label} ...", file=sys.stderr)
    try:
        while chunk := src.read(1 << 16):
            dst.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


# --- The 8x8 digits shipped with the package -------------------------------------------------

def load_digits(normalize=True, flatten=True, one_hot_label=False, *, test_size=300, seed=0,
                xp=None, device=None):
    """The 1,797 8x8 handwritten digits bundled with the package.

    No network and no scikit-learn are needed. A fixed permutation (`seed`) splits them
    into 1,497 training and `test_size` test images. Source and licence:
    ``portablelayers/data/DIGITS_LICENSE``.

    Parameters
    ----------
    normalize : bool, default True
        Divide the pixels (0..16) by 16, as float32.
    flatten : bool, default True
        Images as (N, 64) rows, else (N, 1, 8, 8).
    one_hot_label : bool, default False
        Labels as one-hot rows (N, 10), else class indices (N,).
    test_size : int, default 300
        Images in the test set.
    seed : int, default 0
        Seed of the split.
    xp : str or module, optional
        Backend of the returned arrays (a name such as "torch", a module or a namespace);
        NumPy when None.
    device : object, optional
        Device of the returned arrays.

    Returns
    -------
    (x_train, t_train), (x_test, t_test) : tuple of tuple of array
        The book's layout.

    Raises
    ------
    ValueError
        For a `test_size` outside [1, 1796].

    Examples
    --------
    >>> from portablelayers.datasets import load_digits
    >>> (x_train, t_train), (x_test, t_test) = load_digits()
    >>> x_train.shape, x_train.dtype, t_test.shape
    ((1497, 64), dtype('float32'), (300,))
    """
    data_file = resources.files("portablelayers") / "data" / "digits.csv.gz"
    with data_file.open("rb") as f:
        table = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.uint8)
    images, labels = np.reshape(table[:, :64], (-1, 8, 8)), table[:, 64]
    n = labels.shape[0]
    if not 0 < test_size < n:
        raise ValueError(f"test_size must lie in [1, {n - 1}], got {test_size}")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[test_size:], order[:test_size]
    out = tuple(_book_layout(images[i], labels[i], 16.0, normalize, flatten, one_hot_label)
                for i in (train, test))
    return to_backend(out, xp, device)


# --- Shared conventions ----------------------------------------------------------------------

def _book_layout(images, labels, scale, normalize, flatten, one_hot_label):
    """Images (N, H, W) uint8 and labels (N,) in the book's conventions."""
    x = images.astype(np.float32) / np.float32(scale) if normalize else images
    x = x.reshape(x.shape[0], -1) if flatten else x[:, np.newaxis, :, :]
    t = _one_hot_rows(labels) if one_hot_label else labels
    return np.ascontiguousarray(x), t


def to_backend(arrays, xp=None, device=None):
    """Arrays moved to backend `xp` and `device`, keeping their dtypes.

    Except on JAX without 64-bit mode: there, as in all of JAX, float64 and int64 become
    float32 and int32 (`backends.allow_float64("jax")` keeps them).

    Parameters
    ----------
    arrays : array or nested tuple or list of array
        NumPy arrays.
    xp : str or module, optional
        A backend name such as "torch", a module or a namespace; None keeps NumPy unless a
        device is given.
    device : object, optional
        The device.

    Returns
    -------
    array or nested tuple or list of array
        The same structure in the new backend.

    Raises
    ------
    ImportError
        For a backend that is not installed (the message names the extra).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.datasets import to_backend
    >>> x, t = to_backend((np.zeros(2), np.arange(2)), "array_api_strict")
    >>> type(x).__module__
    'array_api_strict._array_object'
    """
    if xp is None and device is None:
        return arrays
    from ._backend import from_host, resolve_namespace

    namespace = resolve_namespace(xp)
    # Copies in another library: torch and array-api-strict would share the NumPy array's
    # memory, so writing to the result would change the caller's array (or, for a read-only
    # memory map, crash the process). NumPy to NumPy stays the array given.
    copy = None if namespace.__name__.startswith(("numpy", "array_api_compat.numpy")) else True

    def move(a):
        if isinstance(a, (tuple, list)):
            return type(a)(move(item) for item in a)
        return from_host(namespace, a, device, copy)

    return move(arrays)


# --- Larger than memory: chunked Dask arrays, read where they are computed -------------------
# Only a file's header is read on the client; each chunk is a task that reads its own rows
# (a memory map of a raw IDX or .npy file; a gzipped IDX file is decompressed up to its rows),
# so a worker of a cluster reads its part from a file all machines see, and Dask reads a
# chunk again if the worker holding it is lost.

__all__ += ["dask_from_idx", "dask_from_npy", "idx_header", "load_mnist_dask", "to_dask"]


def idx_header(path):
    """(dtype, shape, data offset in the unpacked bytes, gzipped?) of an IDX file, from its
    first bytes only."""
    path = Path(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES:
            raise DataFileError(f"{path}: not an IDX file (magic number {head.hex() or 'empty'})")
        dims = f.read(4 * head[3])
    if len(dims) != 4 * head[3]:
        raise DataFileError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{head[3]}I", dims)
    return np.dtype(_IDX_DTYPES[head[2]]), shape, 4 + 4 * head[3], gz


def _read_rows(path, gz, offset, dtype, shape, start, stop, scale, out_dtype, out_shape,
               version=None):
    """Rows [start, stop) of the array stored at `offset` of `path`: a memory map of a raw
    file (only those rows are read), or the gzip stream decompressed up to them. `version`
    (size and time of the file) only names the task."""
    dtype = np.dtype(dtype)
    row = math.prod(shape[1:]) * dtype.itemsize
    if gz:
        with gzip.open(path, "rb") as f:
            f.seek(offset + start * row)
            raw = f.read((stop - start) * row)
        if len(raw) != (stop - start) * row:
            raise DataFileError(f"{path} is truncated: rows {start} to {stop} need "
                                f"{(stop - start) * row:,} bytes, it has {len(raw):,}")
        rows = np.frombuffer(raw, dtype=dtype).reshape((stop - start, *shape[1:]))
    else:
        mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
        # A copy in the worker's memory: a view would page rows in from the file (slowly,
        # at random) at every step, and pickle the whole map when the chunk moves.
        rows = np.array(mapped[start:stop], copy=True)
        del mapped
    rows = np.asarray(rows, dtype=dtype.newbyteorder("="))
    if scale is not None:
        rows = rows.astype(out_dtype) / np.asarray(scale, dtype=out_dtype)
    return np.ascontiguousarray(rows.astype(out_dtype, copy=False).reshape(
        (stop - start, *out_shape)))


def _dask_rows(path, gz, offset, dtype, shape, chunk_rows, scale, out_dtype, out_shape):
    import dask
    import dask.array as da

    if chunk_rows is None or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    stat = os.stat(path)
    out_dtype = np.dtype(out_dtype)
    needed = offset + math.prod(shape) * np.dtype(dtype).itemsize
    if not gz and stat.st_size != needed:  # found here, not as a failing chunk later
        what = "truncated" if stat.st_size < needed else "longer than its header says"
        raise DataFileError(f"{path} is {what}: its header promises {needed:,} bytes, the "
                            f"file has {stat.st_size:,} (load_idx refuses it too)")
    if shape[0] == 0:
        return da.from_array(np.empty((0, *out_shape), out_dtype))
    parts = []
    for start in range(0, shape[0], chunk_rows):
        stop = min(start + chunk_rows, shape[0])
        # The file's size and time enter the task's name: a changed file is read anew.
        task = dask.delayed(_read_rows, pure=True)(
            str(path), gz, offset, np.dtype(dtype).str, tuple(shape), start, stop, scale,
            out_dtype.str, tuple(out_shape), (stat.st_size, stat.st_mtime_ns))
        parts.append(da.from_delayed(task, shape=(stop - start, *out_shape), dtype=out_dtype,
                                     meta=np.empty((0,) * (1 + len(out_shape)), out_dtype)))
    return da.concatenate(parts, axis=0)


def dask_from_idx(path, chunk_rows=10_000, *, scale=None, dtype=None, shape=None):
    """The array of an IDX file as a Dask array of `chunk_rows` samples a chunk, without
    reading the data on the client (raw files are memory-mapped; a gzipped file is read
    from the start up to each chunk's rows, so unpack large files). Values are divided by
    `scale` when given (as `dtype`, default float32), and each sample reshaped to `shape`
    (e.g. (784,) or (1, 28, 28)) when given."""
    file_dtype, file_shape, offset, gz = idx_header(path)
    out_dtype = np.dtype(dtype or (np.float32 if scale is not None else file_dtype.newbyteorder(
        "=")))
    out_shape = tuple(shape) if shape is not None else tuple(file_shape[1:])
    if math.prod(out_shape) != math.prod(file_shape[1:]):
        raise ValueError(f"{path}: samples of shape {file_shape[1:]} cannot become {out_shape}")
    return _dask_rows(Path(path), gz, offset, file_dtype, file_shape, chunk_rows, scale,
                      out_dtype, out_shape)


def dask_from_npy(path, chunk_rows=10_000, *, scale=None, dtype=None, shape=None):
    """A .npy file as a Dask array of `chunk_rows` samples a chunk: each chunk reads its
    rows through a memory map, so the file may be larger than any machine's memory (only
    its header is read here). `scale`, `dtype` and `shape` as for `dask_from_idx`."""
    mapped = np.load(path, mmap_mode="r")  # reads the header; maps, does not load
    if mapped.ndim < 1 or not mapped.flags.c_contiguous:
        raise ValueError(f"{path}: expected a C-ordered array with a sample axis")
    file_dtype, file_shape, offset = mapped.dtype, mapped.shape, mapped.offset
    del mapped
    out_dtype = np.dtype(dtype or (np.float32 if scale is not None else file_dtype))
    out_shape = tuple(shape) if shape is not None else tuple(file_shape[1:])
    if math.prod(out_shape) != math.prod(file_shape[1:]):
        raise ValueError(f"{path}: samples of shape {file_shape[1:]} cannot become {out_shape}")
    return _dask_rows(Path(path), False, offset, file_dtype, file_shape, chunk_rows, scale,
                      out_dtype, out_shape)


def load_mnist_dask(path=None, chunk_rows=10_000, normalize=True, flatten=True,
                    one_hot_label=False):
    """MNIST as `load_mnist` gives it (float32 in [0, 1] with `normalize`, (N, 784) or
    (N, 1, 28, 28), uint8 class labels or with `one_hot_label` float32 one-hot rows
    (N, 10)), as chunked Dask arrays read from the files by the workers (see
    `dask_from_idx`): `((x_train, t_train), (x_test, t_test))`."""
    files = _require(mnist_dir(path), MNIST_FILES, test_set_hint=False,
                     fetch="fetch them first with load_mnist(download=True) (needs network)")
    shape = (784,) if flatten else (1, 28, 28)
    out = []
    for img, label in (("train_img", "train_label"), ("test_img", "test_label")):
        # The checks load_mnist makes, where data enter: md5s, the images' header, and the
        # labels (small: read here).
        _check_mnist_md5(files[img], files[label], img, label)
        images_dtype, images_shape, _, _ = idx_header(files[img])
        _check_mnist_arrays(files[img], files[label], images_dtype, images_shape,
                            load_idx(files[label]))
        x = dask_from_idx(files[img], chunk_rows, scale=255.0 if normalize else None,
                          shape=shape)
        t = dask_from_idx(files[label], chunk_rows)
        if one_hot_label:  # made chunk by chunk where the labels are read
            t = t.map_blocks(_one_hot_rows, dtype=np.float32, new_axis=1,
                             chunks=(t.chunks[0], (10,)))
        out.append((x, t))
    return tuple(out)


def _one_hot_rows(labels):
    """Class labels (N,) as float32 one-hot rows (N, 10), as `load_mnist` makes them."""
    return np.eye(10, dtype=np.float32)[labels]


def to_dask(arrays, client=None, chunk_rows=None):
    """NumPy arrays (nested tuples/lists of them) as Dask arrays chunked along the samples:
    `chunk_rows` a chunk, by default one chunk per worker of `client` (else one). With a
    `client` they are persisted on its workers; their task graph holds the data, so a
    chunk lost with its worker is made again."""
    import warnings

    import dask.array as da

    workers = len(client.scheduler_info(n_workers=-1)["workers"]) if client is not None else 1

    def chunked(a):
        if isinstance(a, (tuple, list)):
            return type(a)(chunked(item) for item in a)
        rows = chunk_rows or max(1, math.ceil(a.shape[0] / max(workers, 1)))
        return da.from_array(np.asarray(a), chunks=(rows, *a.shape[1:]))

    out = chunked(arrays)
    if client is None:
        return out
    flat = []

    def collect(a):
        if isinstance(a, (tuple, list)):
            for item in a:
                collect(item)
        else:
            flat.append(a)

    collect(out)
    with warnings.catch_warnings():  # the data are in the graph on purpose: recoverable
        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
        persisted = iter(client.persist(flat))

    def rebuild(a):
        if isinstance(a, (tuple, list)):
            return type(a)(rebuild(item) for item in a)
        return next(persisted)

    return rebuild(out)
