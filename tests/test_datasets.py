"""Dataset loaders: IDX parsing, MNIST files and checksums, downloads (offline), the bundled
digits, and moving data to the backend under test."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import array_namespace, is_jax_array
from support import idx_bytes, to_numpy

from portablelayers import datasets
from portablelayers.datasets import (
    DataFileError,
    download_mnist,
    holdout_split,
    load_digits,
    load_idx,
    load_mnist,
    load_mnist_test,
    mnist_dir,
    to_backend,
    validation_split,
)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --- IDX -------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, rng, gz, dtype):
    array = (rng.random((3, 4, 5)) * 100).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(array), gz)
    out = load_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_idx_one_axis(tmp_path):
    labels = np.array([7, 2, 1, 0], dtype=np.uint8)
    np.testing.assert_array_equal(load_idx(write(tmp_path / "l", idx_bytes(labels), False)),
                                  labels)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_bad_magic(tmp_path, gz):
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[0] = 0x12
    path = write(tmp_path / "bad.idx", bytes(data), gz)
    with pytest.raises(DataFileError, match=r"bad\.idx.*not an IDX file"):
        load_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated(tmp_path, gz):
    data = idx_bytes(np.ones((4, 5, 5), np.uint8))[:-7]
    path = write(tmp_path / "short.idx", data, gz)
    with pytest.raises(DataFileError, match=r"short\.idx.*truncated"):
        load_idx(path)


def test_idx_truncated_header_and_trailing_bytes(tmp_path):
    full = idx_bytes(np.ones((4, 5), np.uint8))
    with pytest.raises(DataFileError, match="truncated IDX header"):
        load_idx(write(tmp_path / "h", full[:6], False))
    with pytest.raises(DataFileError, match="longer than its header says"):
        load_idx(write(tmp_path / "t", full + b"\0", False))


def test_truncated_gzip_stream(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(10, 20)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFileError, match=r"cut\.gz.*corrupt or truncated gzip"):
        load_idx(path)


# --- MNIST files -----------------------------------------------------------------------------

def fake_mnist(folder: Path, rng, n_train=5, n_test=3, gz=True) -> dict:
    """Tiny files with MNIST's names and layout; returns their arrays and md5 table."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays, table = {}, {}
    for key, n in (("train", n_train), ("test", n_test)):
        arrays[f"{key}_img"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{key}_label"] = rng.integers(0, 10, (n,), dtype=np.uint8)
    for key, (name, _) in datasets.MNIST_FILES.items():
        path = folder / (name if gz else name.removesuffix(".gz"))
        write(path, idx_bytes(arrays[key]), gz)
        table[key] = (name, hashlib.md5(path.read_bytes()).hexdigest())
    return arrays, table


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(datasets.MNIST_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_book_layout(tmp_path, rng, monkeypatch, gz):
    arrays, table = fake_mnist(tmp_path, rng, gz=gz)
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    (x, t), (x_test, t_test) = load_mnist(path=tmp_path)
    assert x.shape == (5, 784) and x.dtype == np.float32 and x_test.shape == (3, 784)
    np.testing.assert_allclose(x, arrays["train_img"].reshape(5, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(t, arrays["train_label"])
    np.testing.assert_array_equal(t_test, arrays["test_label"])
    assert t.dtype == np.uint8

    (x, t), _ = load_mnist(normalize=False, flatten=False, one_hot_label=True, path=tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], arrays["train_img"])
    assert t.shape == (5, 10) and t.dtype == np.float32
    np.testing.assert_array_equal(np.argmax(t, axis=1), arrays["train_label"])
    np.testing.assert_array_equal(t.sum(axis=1), np.ones(5))


def test_load_mnist_reads_environment_variable(tmp_path, rng, monkeypatch):
    _, table = fake_mnist(tmp_path / "env", rng)
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    monkeypatch.setenv(datasets.MNIST_ENV, str(tmp_path / "env"))
    assert mnist_dir() == tmp_path / "env"
    (x, _), _ = load_mnist()
    assert x.shape == (5, 784)


def test_default_cache_folder(no_env, tmp_path):
    assert mnist_dir() == tmp_path / "cache" / "portablelayers" / "mnist"
    assert mnist_dir(tmp_path / "x") == tmp_path / "x"


def test_wrong_checksum_names_file(tmp_path, rng):
    fake_mnist(tmp_path, rng)  # real MNIST names, but not the official bytes
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte\.gz: md5 .* official"):
        load_mnist(path=tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_the_dask_loader_checks_the_files_as_load_mnist_does(tmp_path, rng, monkeypatch, gz):
    pytest.importorskip("dask")
    arrays, table = fake_mnist(tmp_path / "ok", rng, gz=gz)
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    (x, t), _ = datasets.load_mnist_dask(tmp_path / "ok", chunk_rows=2)
    np.testing.assert_array_equal(t.compute(), arrays["train_label"])
    np.testing.assert_allclose(x.compute(), arrays["train_img"].reshape(5, 784) / 255.0,
                               rtol=1e-6)
    # One-hot rows as load_mnist makes them, built on the chunks (nothing read yet).
    (_, hot), (_, hot_test) = datasets.load_mnist_dask(tmp_path / "ok", chunk_rows=2,
                                                       one_hot_label=True)
    assert hot.shape == (5, 10) and hot.dtype == np.float32 and hot.chunks[0] == (2, 2, 1)
    expected = np.zeros((5, 10), dtype=np.float32)
    expected[np.arange(5), arrays["train_label"]] = 1.0
    np.testing.assert_array_equal(hot.compute(), expected)
    assert hot_test.compute().argmax(axis=1).tolist() == arrays["test_label"].tolist()
    (_, hot_np), _ = load_mnist(path=tmp_path / "ok", one_hot_label=True)
    np.testing.assert_array_equal(hot.compute(), hot_np)
    # Other bytes under the same names: an md5 mismatch (gz) or a label out of 0..9 (raw).
    arrays["train_label"][1] = 200
    (tmp_path / "bad").mkdir()
    write(tmp_path / "bad" / table["train_label"][0] if gz else
          tmp_path / "bad" / table["train_label"][0].removesuffix(".gz"),
          idx_bytes(arrays["train_label"]), gz)
    for key, (name, _) in table.items():
        if key != "train_label":
            name = name if gz else name.removesuffix(".gz")
            (tmp_path / "bad" / name).write_bytes((tmp_path / "ok" / name).read_bytes())
    with pytest.raises(DataFileError, match="md5" if gz else "labels in 0..9"):
        datasets.load_mnist_dask(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match=r"load_mnist\(download=True\)") as info:
        datasets.load_mnist_dask(tmp_path / "none")  # it takes no download= of its own
    assert "load_mnist_test" not in str(info.value)


def test_dask_from_idx_finds_a_truncated_raw_file_and_reads_an_empty_one(tmp_path):
    pytest.importorskip("dask")
    data = idx_bytes(np.arange(40, dtype=np.uint8).reshape(10, 4))
    (tmp_path / "short-idx2-ubyte").write_bytes(data[:-5])
    with pytest.raises(DataFileError, match="truncated"):
        datasets.dask_from_idx(tmp_path / "short-idx2-ubyte")
    (tmp_path / "long-idx2-ubyte").write_bytes(data + b"\0\0")  # as load_idx refuses it
    with pytest.raises(DataFileError, match="longer than its header says"):
        datasets.dask_from_idx(tmp_path / "long-idx2-ubyte")
    (tmp_path / "empty-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0, dtype=np.uint8)))
    assert datasets.dask_from_idx(tmp_path / "empty-idx1-ubyte").compute().shape == (0,)


def test_missing_files_say_which_and_what_to_do(tmp_path, rng, monkeypatch, no_env):
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz.*download=True"):
        load_mnist(path=tmp_path)
    _, table = fake_mnist(tmp_path, rng)
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    (tmp_path / table["train_img"][0]).unlink()
    (tmp_path / table["train_label"][0]).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(path=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "t10k" not in message.split("not found")[0]
    assert "load_mnist_test" in message
    x, t = load_mnist_test(path=tmp_path)
    assert x.shape == (3, 784) and t.shape == (3,)


def test_corrupt_label_values(tmp_path, rng, monkeypatch):
    arrays, _ = fake_mnist(tmp_path, rng)
    bad = arrays["test_label"].copy()
    bad[0] = 11
    name = datasets.MNIST_FILES["test_label"][0]
    write(tmp_path / name, idx_bytes(bad), True)
    table = {k: (n, hashlib.md5((tmp_path / n).read_bytes()).hexdigest())
             for k, (n, _) in datasets.MNIST_FILES.items()}
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte\.gz.*labels in 0\.\.9"):
        load_mnist_test(path=tmp_path)


# --- Downloads (never touch the network) ------------------------------------------------------

def test_download_from_mirror_folder(tmp_path, rng, monkeypatch, capsys):
    arrays, table = fake_mnist(tmp_path / "mirror", rng)
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    bad_mirror = (tmp_path / "nowhere").as_uri() + "/"
    mirrors = (bad_mirror, (tmp_path / "mirror").as_uri() + "/")
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", mirrors)
    (x, t), _ = load_mnist(path=tmp_path / "dest", download=True, normalize=False)
    np.testing.assert_array_equal(x.reshape(5, 28, 28), arrays["train_img"])
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(
        n for n, _ in table.values())  # no partial files left behind
    assert "t10k-images" in capsys.readouterr().err  # progress is shown


def test_download_offline_fails_clearly(tmp_path, no_env):
    with pytest.raises(ConnectionError) as info:
        download_mnist(tmp_path, mirrors=("http://127.0.0.1:9/", (tmp_path / "no").as_uri()),
                       timeout=2.0, progress=False)
    message = str(info.value)
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert "127.0.0.1:9" in message and "offline" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


def test_download_rejects_wrong_checksum(tmp_path, rng):
    fake_mnist(tmp_path / "mirror", rng)  # right names, wrong contents
    with pytest.raises(ConnectionError, match="md5"):
        download_mnist(tmp_path / "dest", mirrors=((tmp_path / "mirror").as_uri(),),
                       progress=False)
    assert not any((tmp_path / "dest").iterdir())


# --- Real MNIST test set (when the shared folder is present) ----------------------------------

needs_shared_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"MNIST test set not present at {SHARED_MNIST}")


@needs_shared_mnist
def test_real_mnist_test_set():
    x, t = load_mnist_test(path=SHARED_MNIST)  # checksums verified on the way
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert t.shape == (10000,) and t.dtype == np.uint8
    np.testing.assert_array_equal(t[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])  # the known first ten
    np.testing.assert_array_equal(np.bincount(t), [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                   974, 1009])
    assert 0.0 <= x.min() and x.max() == 1.0
    assert abs(float(x.mean()) - 0.1325) < 1e-3  # the well-known MNIST test-set mean
    (x_tr, t_tr), (x_ho, t_ho) = holdout_split(x, t, 8000)
    assert x_tr.shape == (8000, 784) and x_ho.shape == (2000, 784) and t_ho[-1] == t[-1]


# --- Bundled digits ---------------------------------------------------------------------------

def test_digits_split_and_layout():
    (x, t), (x_test, t_test) = load_digits()
    assert x.shape == (1497, 64) and x_test.shape == (300, 64)
    assert x.dtype == np.float32 and t.dtype == np.uint8
    assert 0.0 <= x.min() and x.max() == 1.0
    assert set(np.unique(t)) == set(range(10)) and set(np.unique(t_test)) == set(range(10))
    (x2, t2), (x2_test, _) = load_digits()
    np.testing.assert_array_equal(x2, x)  # the split is deterministic
    (x3, t3), _ = load_digits(normalize=False, flatten=False, one_hot_label=True)
    assert x3.shape == (1497, 1, 8, 8) and x3.dtype == np.uint8 and x3.max() == 16
    np.testing.assert_array_equal(x3.reshape(1497, 64) / 16.0, x)
    assert t3.shape == (1497, 10) and t3.dtype == np.float32
    np.testing.assert_array_equal(np.argmax(t3, axis=1), t)
    (x4, _), (x4_test, _) = load_digits(test_size=100, seed=1)
    assert x4.shape == (1697, 64) and x4_test.shape == (100, 64)
    with pytest.raises(ValueError, match="test_size"):
        load_digits(test_size=0)


def test_digits_match_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    (x, t), (x_test, t_test) = load_digits(normalize=False)
    ours = np.concatenate([np.c_[x, t], np.c_[x_test, t_test]]).astype(np.int64)
    theirs = np.c_[reference.data, reference.target].astype(np.int64)
    # The same 1,797 rows, each exactly once.
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))
    assert len(ours) == len(theirs)


# --- On the backend under test ----------------------------------------------------------------

def test_to_backend(xp):
    (x, t), (x_test, t_test) = load_digits(flatten=False, xp=xp)
    assert array_namespace(x, t, x_test, t_test) == array_namespace(xp.asarray(0.0))
    assert x.dtype == xp.float32 and t.dtype == xp.uint8
    assert tuple(x.shape) == (1497, 1, 8, 8) and tuple(t_test.shape) == (300,)
    (x_np, t_np), _ = load_digits(flatten=False)
    np.testing.assert_array_equal(to_numpy(x), x_np)
    np.testing.assert_array_equal(to_numpy(t), t_np)
    moved = to_backend([x_np, (t_np,)], xp)
    assert isinstance(moved, list) and isinstance(moved[1], tuple)
    np.testing.assert_array_equal(to_numpy(moved[1][0]), t_np)
    (x_tr, _), (x_ho, t_ho) = holdout_split(x, t, 1000)
    assert tuple(x_ho.shape) == (497, 1, 8, 8)
    np.testing.assert_array_equal(to_numpy(t_ho), t_np[1000:])


def test_to_backend_leaves_the_callers_arrays_alone(xp, tmp_path):
    # Another library's array must not share the NumPy array's memory: writing to it would
    # change the caller's data, and with a read-only memory map torch crashed the process.
    np.save(tmp_path / "x.npy", np.zeros(4, dtype=np.float32))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    given = np.zeros(4, dtype=np.float32)
    for source in (given, mapped):
        moved = to_backend(source, xp)
        if isinstance(moved, np.ndarray):  # NumPy to NumPy: the data as given, no copy
            continue
        moved = moved + 1 if is_jax_array(moved) else moved
        if not is_jax_array(moved) and not hasattr(moved, "dask"):
            moved[0] = 5.0  # written in place where the library allows it
        np.testing.assert_array_equal(source, np.zeros(4, dtype=np.float32))
    # Nor the other way: writing to the NumPy array later leaves the moved one as it was.
    moved = to_backend(given, xp)
    if not isinstance(moved, np.ndarray):
        given[0] = 7.0
        np.testing.assert_array_equal(to_numpy(moved), np.zeros(4, dtype=np.float32))


def test_holdout_split_checks_size():
    x = np.zeros((10, 3))
    for split in (lambda: holdout_split(x, np.zeros(12), 8),
                  lambda: validation_split(x, np.zeros(12), 0.2)):
        with pytest.raises(ValueError, match="same number of samples, got 10 and 12"):
            split()
    with pytest.raises(ValueError, match=r"n_train must lie in \[1, 9\]"):
        holdout_split(x, np.zeros(10), 10)


def test_to_backend_unknown_name():
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        to_backend(np.zeros(3), "nope")
