"""Checkpoints: portable .npz round trips across backends, atomic writes, all-or-nothing
loading with clear errors, and the book's parameter pickles behind allow_pickle."""

import os
import pickle

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from conftest import BACKEND
from support import make, to_numpy

from portablelayers import BatchNormalization, SoftmaxWithLoss, checkpoint
from portablelayers._backend import device
from portablelayers.checkpoint import load_arrays, save_arrays, to_host
from portablelayers.nets import MultiLayerNetExtend, Sequential, SimpleConvNet, TwoLayerNet

lazy_xp_function((Sequential, "predict"), jax_jit=False)

# A small SimpleConvNet: 1x5x5 -> 2 filters 3x3, pad 1 -> pool -> 8 -> 3 -> 2.
CONV = {"input_dim": (1, 5, 5),
        "conv_param": {"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1},
        "hidden_size": 3, "output_size": 2}


def _host_params(net):
    return {name: to_numpy(value) for name, value in net.params.items()}


def _assert_same_params(net, expected):
    assert set(net.params) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(to_numpy(net.params[name]), value, err_msg=name)


def _bn_net(xp, seed, dtype="float32"):
    return MultiLayerNetExtend(4, [3], 2, use_batchnorm=True, xp=xp, seed=seed, dtype=dtype)


def _train_batchnorm(net, xp, rng, dtype="float32"):
    """One training forward, so the running statistics are no longer zeros and ones."""
    x = make(xp, rng.standard_normal((6, 4)) * 3.0 + 1.0, dtype)
    net.loss(x, xp.asarray(np.arange(6) % 2))


def test_round_trip_restores_params_and_predictions(xp, rng, tmp_path):
    net = SimpleConvNet(**CONV, xp=xp, seed=1)
    path = tmp_path / "params.npz"
    net.save_params(path)
    other = SimpleConvNet(**CONV, xp=xp, seed=2)
    other.load_params(path)
    _assert_same_params(other, _host_params(net))
    for name, value in other.params.items():
        assert value.dtype == xp.float32 and device(value) == device(net.params[name])
    x = make(xp, rng.standard_normal((3, 1, 5, 5)), "float32")
    np.testing.assert_array_equal(to_numpy(other.predict(x)), to_numpy(net.predict(x)))


def test_the_file_is_a_plain_npz_of_book_names(xp, tmp_path):
    net = TwoLayerNet(4, 3, 2, xp=xp, seed=0)
    path = tmp_path / "two_layer.npz"
    net.save_params(path)
    with np.load(path, allow_pickle=False) as npz:  # no object arrays, no pickle
        assert sorted(npz.files) == ["W1", "W2", "b1", "b2"]
        for name, value in _host_params(net).items():
            np.testing.assert_array_equal(npz[name], value)
            assert npz[name].dtype == np.float32


def test_batchnorm_running_statistics_are_saved_and_restored(xp, rng, tmp_path):
    net = _bn_net(xp, seed=0)
    _train_batchnorm(net, xp, rng)
    path = tmp_path / "bn.npz"
    net.save_params(path)
    with np.load(path) as npz:
        assert {"running_mean1", "running_var1"} <= set(npz.files)
    other = _bn_net(xp, seed=5)
    other.load_params(path)
    for name in ("running_mean1", "running_var1"):
        np.testing.assert_array_equal(to_numpy(other.state[name]), to_numpy(net.state[name]))
    x = make(xp, rng.standard_normal((5, 4)), "float32")
    np.testing.assert_array_equal(to_numpy(other.predict(x)), to_numpy(net.predict(x)))


def test_saved_on_this_backend_loads_on_numpy_and_back(xp, rng, tmp_path):
    net = _bn_net(xp, seed=3)
    _train_batchnorm(net, xp, rng)
    net.save_params(tmp_path / "from_xp.npz")
    on_numpy = _bn_net(np_xp, seed=4)
    on_numpy.load_params(tmp_path / "from_xp.npz")
    _assert_same_params(on_numpy, _host_params(net))
    np.testing.assert_array_equal(to_numpy(on_numpy.state["running_var1"]),
                                  to_numpy(net.state["running_var1"]))
    assert all(isinstance(v, np.ndarray) for v in on_numpy.params.values())

    on_numpy.params["W1"] = on_numpy.params["W1"] * 2.0
    on_numpy.save_params(tmp_path / "from_numpy.npz")
    net.load_params(tmp_path / "from_numpy.npz")
    _assert_same_params(net, _host_params(on_numpy))
    assert net.params["W1"].dtype == xp.float32


def test_loading_casts_to_the_networks_dtype(xp, tmp_path):
    net64 = TwoLayerNet(3, 2, 2, xp=xp, seed=0, dtype="float64")
    net64.save_params(tmp_path / "f64.npz")
    net32 = TwoLayerNet(3, 2, 2, xp=xp, seed=1)
    net32.load_params(tmp_path / "f64.npz")
    for name, value in _host_params(net64).items():
        assert net32.params[name].dtype == xp.float32
        np.testing.assert_array_equal(to_numpy(net32.params[name]), value.astype(np.float32))


def test_load_keeps_the_device(xp, tmp_path):
    if BACKEND != "array_api_strict":
        pytest.skip("a second device is simulated by array-api-strict only")
    import array_api_strict

    dev = array_api_strict.Device("device1")
    net = TwoLayerNet(3, 2, 2, xp=xp, device=dev, seed=0)
    net.save_params(tmp_path / "dev.npz")  # DLPack moves it to the host
    other = TwoLayerNet(3, 2, 2, xp=xp, device=dev, seed=1)
    other.load_params(tmp_path / "dev.npz")
    assert all(device(v) == dev for v in other.params.values())
    np.testing.assert_array_equal(to_host(other.params["W1"]), to_host(net.params["W1"]))


# --- mismatches: a clear ValueError, and the network unchanged ---------------------------

def _assert_unchanged(net, before):
    for name, value in before.items():
        assert net.params[name] is value


def test_missing_and_unexpected_names_are_all_named(xp, tmp_path):
    net = TwoLayerNet(3, 2, 2, xp=xp, seed=0)
    arrays = _host_params(net)
    del arrays["b2"]
    arrays["W9"] = np.zeros((2, 2), np.float32)
    save_arrays(tmp_path / "bad.npz", arrays)
    before = dict(net.params)
    with pytest.raises(ValueError, match=r"missing b2; unexpected W9"):
        net.load_params(tmp_path / "bad.npz")
    _assert_unchanged(net, before)


def test_wrong_shape_names_both_shapes_and_changes_nothing(xp, tmp_path):
    net = TwoLayerNet(3, 2, 2, xp=xp, seed=0)
    bigger = TwoLayerNet(3, 5, 2, xp=xp, seed=1)  # W1 is the first in the file and fits
    arrays = _host_params(bigger)
    arrays["W1"] = _host_params(net)["W1"]
    save_arrays(tmp_path / "bad.npz", arrays)
    before = dict(net.params)
    with pytest.raises(ValueError, match=r"b1 has shape \(5,\), the network's has \(2,\)"):
        net.load_params(tmp_path / "bad.npz")
    _assert_unchanged(net, before)


def test_wrong_running_statistics_shape_changes_nothing(xp, rng, tmp_path):
    net = _bn_net(xp, seed=0)
    arrays = {name: to_numpy(v) for name, v in net.params.items()}
    arrays["running_mean1"] = np.zeros(7, np.float32)
    save_arrays(tmp_path / "bad.npz", arrays)
    params, state = dict(net.params), dict(net.state)
    with pytest.raises(ValueError, match=r"running_mean1 has shape \(7,\)"):
        net.load_params(tmp_path / "bad.npz")
    _assert_unchanged(net, params)
    assert all(net.state[k] is v for k, v in state.items())


def test_a_file_without_running_statistics_keeps_the_networks(xp, rng, tmp_path):
    net = _bn_net(xp, seed=0)
    _train_batchnorm(net, xp, rng)
    stats = dict(net.state)
    save_arrays(tmp_path / "params_only.npz", _host_params(_bn_net(np_xp, seed=1)))
    net.load_params(tmp_path / "params_only.npz")
    _assert_same_params(net, _host_params(_bn_net(np_xp, seed=1)))
    assert all(net.state[k] is v for k, v in stats.items())


def test_running_statistics_left_none_are_loaded_like_gamma(xp, rng, tmp_path):
    gamma, beta = make(xp, np.ones(3), "float32"), make(xp, np.zeros(3), "float32")
    net = Sequential(BatchNormalization(gamma, beta), SoftmaxWithLoss())
    stats = {"running_mean1": rng.standard_normal(3), "running_var1": rng.uniform(1, 2, 3)}
    save_arrays(tmp_path / "bn.npz", {"gamma1": np.ones(3), "beta1": np.zeros(3), **stats})
    net.load_params(tmp_path / "bn.npz")
    for name, value in stats.items():
        assert net.state[name].dtype == xp.float32 and device(net.state[name]) == device(gamma)
        np.testing.assert_array_equal(to_numpy(net.state[name]), value.astype(np.float32))


def test_not_a_checkpoint(tmp_path):
    net = TwoLayerNet(3, 2, 2, seed=0)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        net.load_params(tmp_path / "one.npy")
    np.savez(tmp_path / "objects.npz", W1=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        net.load_params(tmp_path / "objects.npz")


# --- atomic writes -----------------------------------------------------------------------

def test_a_failed_write_leaves_the_old_file_and_no_temporary(xp, tmp_path, monkeypatch):
    net = TwoLayerNet(3, 2, 2, xp=xp, seed=0)
    path = tmp_path / "params.npz"
    net.save_params(path)
    old = path.read_bytes()
    assert os.listdir(tmp_path) == ["params.npz"]

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # a crash mid-write, as late as it can come

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    net.params["W1"] = net.params["W1"] + 1.0
    with pytest.raises(KeyboardInterrupt):
        net.save_params(path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["params.npz"]
    with pytest.raises(KeyboardInterrupt):
        net.save_params(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == ["params.npz"]  # no truncated new.npz


def test_saved_file_has_a_normal_mode_and_exact_name(tmp_path):
    net = TwoLayerNet(3, 2, 2, seed=0)
    net.save_params(tmp_path / "weights.bin")  # the name is kept, no suffix added
    assert os.listdir(tmp_path) == ["weights.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "weights.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(load_arrays(tmp_path / "weights.bin")) == ["W1", "W2", "b1", "b2"]


# --- the book's pickles ------------------------------------------------------------------

def _book_pickle(path, params):
    """What the book's save_params writes: a pickled dict of float64 NumPy arrays."""
    with open(path, "wb") as f:
        pickle.dump({k: np.asarray(v, dtype=np.float64) for k, v in params.items()}, f)


def test_book_pickle_needs_allow_pickle(xp, tmp_path):
    net = SimpleConvNet(**CONV, xp=xp, seed=0)
    _book_pickle(tmp_path / "params.pkl", _host_params(SimpleConvNet(**CONV, seed=1)))
    before = dict(net.params)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        net.load_params(tmp_path / "params.pkl")
    _assert_unchanged(net, before)


def test_book_pickle_loads_cast_and_on_the_networks_backend(xp, rng, tmp_path):
    source = SimpleConvNet(**CONV, seed=1, dtype="float64")  # the book's NumPy float64
    expected = _host_params(source)
    _book_pickle(tmp_path / "params.pkl", expected)
    net = SimpleConvNet(**CONV, xp=xp, seed=0)
    net.load_params(tmp_path / "params.pkl", allow_pickle=True)
    like = make(xp, np.zeros(1), "float32")
    for name, value in expected.items():
        assert type(net.params[name]) is type(like)
        assert net.params[name].dtype == xp.float32 and device(net.params[name]) == device(like)
        np.testing.assert_array_equal(to_numpy(net.params[name]), value.astype(np.float32))
    x_np = rng.standard_normal((2, 1, 5, 5))
    np.testing.assert_allclose(to_numpy(net.predict(make(xp, x_np, "float32"))),
                               to_numpy(source.predict(x_np)), rtol=1e-4, atol=1e-5)


def test_a_pickle_that_is_not_a_dict_of_arrays(tmp_path):
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([np.zeros(2)], f)
    with pytest.raises(ValueError, match="expected a pickled dict"):
        TwoLayerNet(3, 2, 2).load_params(tmp_path / "list.pkl", allow_pickle=True)


# --- to_host -----------------------------------------------------------------------------

def test_to_host_gives_an_independent_numpy_copy(xp, rng):
    values = rng.standard_normal((2, 3))
    x = make(xp, values, "float32")
    host = to_host(x)
    assert type(host) is np.ndarray and host.dtype == np.float32
    np.testing.assert_array_equal(host, values.astype(np.float32))
    host[0, 0] = 99.0
    assert to_numpy(x)[0, 0] == np.float32(values[0, 0])
