"""Self-describing checkpoints: a network rebuilt from its file on any backend, the
optimizer's state carried, and parameter-only files still loading."""

from __future__ import annotations

import os

import numpy as np
import pytest
from support import make, to_numpy

from portablelayers import checkpoint, cli, load_model, optim
from portablelayers.models import (
    architecture,
    build,
    build_optimizer,
    optimizer_description,
    read_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from portablelayers.nets import DeepConvNet, MultiLayerNetExtend, SimpleConvNet, TwoLayerNet

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
ONCE = pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")
CONV = {"input_dim": (1, 6, 6),
        "conv_param": {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
        "hidden_size": 5, "output_size": 4}


def _train(net, optimizer, xp, rng, steps=3, shape=(8, 1, 6, 6), classes=4):
    for _ in range(steps):
        x = make(xp, rng.standard_normal(shape), "float32")
        t = xp.asarray(rng.integers(0, classes, shape[0]))
        optimizer.update(net.params, net.gradient(x, t))


def test_load_model_rebuilds_the_network_without_naming_it(xp, rng, tmp_path):
    net = build("SimpleConvNet", xp=xp, seed=3, **CONV)
    _train(net, optim.Adam(lr=0.01), xp, rng)
    path = tmp_path / "m.npz"
    save_checkpoint(path, net)
    loaded = load_model(path, xp=xp)
    assert type(loaded) is SimpleConvNet
    assert set(loaded.params) == set(net.params)
    for name, value in net.params.items():
        np.testing.assert_array_equal(to_numpy(loaded.params[name]), to_numpy(value))
        assert loaded.params[name].dtype == xp.float32
    x = make(xp, rng.standard_normal((5, 1, 6, 6)), "float32")
    np.testing.assert_array_equal(to_numpy(loaded.predict(x)), to_numpy(net.predict(x)))


def test_saved_here_loads_on_numpy_in_another_dtype(xp, rng, tmp_path):
    net = build("TwoLayerNet", xp=xp, seed=1, input_size=4, hidden_size=3, output_size=2)
    save_checkpoint(tmp_path / "m.npz", net)
    loaded = load_model(tmp_path / "m.npz", dtype="float64")
    assert isinstance(loaded.params["W1"], np.ndarray) and loaded.params["W1"].dtype == np.float64
    np.testing.assert_array_equal(loaded.params["W1"],
                                  to_numpy(net.params["W1"]).astype(np.float64))


def test_the_description_is_json_beside_the_book_names(xp, tmp_path):
    net = build("SimpleConvNet", xp=xp, seed=0, **CONV)
    save_checkpoint(tmp_path / "m.npz", net, optim.Momentum(lr=0.1, momentum=0.8))
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        names = set(npz.files)
    assert {"W1", "b1", "W2", "b2", "W3", "b3", checkpoint.META_KEY} <= names
    meta = checkpoint.load_meta(tmp_path / "m.npz")
    import portablelayers

    assert meta["package_version"] == portablelayers.__version__
    assert meta["network"] == {"class": "SimpleConvNet", "seed": 0, "kwargs": {
        **CONV, "input_dim": [1, 6, 6]}}
    assert meta["dtype"] == "float32"
    assert meta["optimizer"] == {"class": "Momentum", "hyper": {
        "lr": 0.1, "momentum": 0.8, "clip_norm": None}}


def test_optimizer_state_round_trip_continues_identically(xp, rng, tmp_path):
    net = build("TwoLayerNet", xp=xp, seed=2, input_size=5, hidden_size=4, output_size=3)
    adam = optim.Adam(lr=0.05, beta1=0.8, clip_norm=3.0)
    _train(net, adam, xp, rng, shape=(6, 5), classes=3)
    save_checkpoint(tmp_path / "m.npz", net, adam)
    x = make(xp, rng.standard_normal((6, 5)), "float32")
    t = xp.asarray(rng.integers(0, 3, 6))

    loaded, ckpt = load_model(tmp_path / "m.npz", xp=xp, with_checkpoint=True)
    other = build_optimizer(ckpt.meta["optimizer"])
    assert type(other) is optim.Adam and (other.lr, other.beta1, other.clip_norm) == (
        0.05, 0.8, 3.0)
    restore_optimizer(other, loaded.params, ckpt.optimizer_arrays)
    assert int(to_numpy(other.state["iter"])) == 3
    # The next update from the file equals the next update of the original run.
    adam.update(net.params, net.gradient(x, t))
    other.update(loaded.params, loaded.gradient(x, t))
    for name in net.params:
        np.testing.assert_array_equal(to_numpy(loaded.params[name]), to_numpy(net.params[name]))


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop",
                                  "Adam", "AdamW"])
def test_an_optimizer_saved_before_its_first_update_restores(xp, rng, tmp_path, name):
    net = build("TwoLayerNet", xp=xp, seed=2, input_size=5, hidden_size=4, output_size=3)
    fresh = getattr(optim, name)(lr=0.05)
    save_checkpoint(tmp_path / "m.npz", net, fresh)
    loaded, ckpt = load_model(tmp_path / "m.npz", xp=xp, with_checkpoint=True)
    restored = build_optimizer(ckpt.meta["optimizer"])
    restore_optimizer(restored, loaded.params, ckpt.optimizer_arrays)
    x = make(xp, rng.standard_normal((6, 5)), "float32")
    t = xp.asarray(rng.integers(0, 3, 6))
    for _ in range(2):  # from then on it trains as the fresh one does
        fresh.update(net.params, net.gradient(x, t))
        restored.update(loaded.params, loaded.gradient(x, t))
    for key in net.params:
        np.testing.assert_array_equal(to_numpy(loaded.params[key]), to_numpy(net.params[key]))


def test_a_restored_learning_rate_is_the_optimizers_lr_too(xp):
    # The rate a schedule had set when the run was saved: the steps use it, and so do the
    # Trainer's log, its comparison with the next epoch's rate, and the next save.
    params = {"W": make(xp, np.ones(3), "float32")}
    saved = optim.Adam(lr=0.05)
    saved.init_state(params)
    saved.lr = 0.001
    arrays = {key: to_numpy(value) for key, value in saved.state.items()}
    other = optim.Adam(lr=0.05)
    restore_optimizer(other, params, arrays)
    assert other.lr == pytest.approx(0.001) and float(other.state["lr"]) == pytest.approx(
        0.001)
    assert optimizer_description(other)["hyper"]["lr"] == pytest.approx(0.001)


def test_what_is_loaded_is_a_copy_that_training_does_not_write_back(xp, rng, tmp_path):
    # One read checkpoint restored twice must give the same run: loading copies (NumPy
    # and torch would share memory, and in-place updates rewrite the checkpoint's arrays).
    net = build("TwoLayerNet", xp=xp, seed=2, input_size=5, hidden_size=4, output_size=3)
    momentum = optim.Momentum(lr=0.1)
    _train(net, momentum, xp, rng, shape=(6, 5), classes=3)
    save_checkpoint(tmp_path / "m.npz", net, momentum)
    ckpt = read_checkpoint(tmp_path / "m.npz")
    saved = {k: v.copy() for k, v in {**ckpt.network_arrays, **ckpt.optimizer_arrays}.items()}
    runs = []
    for _ in range(2):
        loaded = load_model(tmp_path / "m.npz", xp=xp)
        checkpoint.load_params_from_arrays(loaded, ckpt.network_arrays)
        other = build_optimizer(ckpt.meta["optimizer"])
        restore_optimizer(other, loaded.params, ckpt.optimizer_arrays)
        _train(loaded, other, xp, np.random.default_rng(5), shape=(6, 5), classes=3)
        runs.append({name: to_numpy(value) for name, value in loaded.params.items()})
    for name, value in {**ckpt.network_arrays, **ckpt.optimizer_arrays}.items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)
    for name in runs[0]:
        np.testing.assert_array_equal(runs[1][name], runs[0][name], err_msg=name)


def test_fully_connected_networks_are_described_from_their_layers(xp, rng, tmp_path):
    net = MultiLayerNetExtend(4, [5, 3], 2, use_batchnorm=True, use_dropout=True,
                              dropout_ratio=0.25, weight_decay_lambda=0.1, xp=xp, seed=0)
    x = make(xp, rng.standard_normal((6, 4)), "float32")
    net.loss(x, xp.asarray(np.arange(6) % 2))  # running statistics and dropout counter move
    assert architecture(net)["kwargs"]["dropout_ratio"] == 0.25
    save_checkpoint(tmp_path / "m.npz", net)
    loaded = load_model(tmp_path / "m.npz", xp=xp)
    assert type(loaded) is MultiLayerNetExtend and loaded.weight_decay_lambda == 0.1
    for name, value in {**dict(net.params), **dict(net.state)}.items():
        got = loaded.params[name] if name in loaded.params else loaded.state[name]
        np.testing.assert_array_equal(to_numpy(got), to_numpy(value), err_msg=name)
    np.testing.assert_array_equal(to_numpy(loaded.predict(x)), to_numpy(net.predict(x)))
    two = TwoLayerNet(3, 2, 2, xp=xp, seed=0)
    assert architecture(two) == {"class": "TwoLayerNet", "seed": 0, "kwargs": {
        "input_size": 3, "hidden_size": 2, "output_size": 2}}


def test_conv_networks_made_directly_load_without_naming_them(xp, rng, tmp_path):
    # Made the book's way, not through build(): their own config records the arguments.
    for net in (SimpleConvNet(xp=xp, seed=3, **CONV),
                DeepConvNet(input_dim=(1, 8, 8), hidden_size=5, output_size=4, xp=xp,
                            seed=3)):
        save_checkpoint(tmp_path / "c.npz", net)
        loaded = load_model(tmp_path / "c.npz", xp=xp)
        assert type(loaded) is type(net)
        x = make(xp, rng.standard_normal((2, *net.config["input_dim"])), "float32")
        np.testing.assert_array_equal(to_numpy(loaded.predict(x)), to_numpy(net.predict(x)))


def test_parameter_only_files_keep_loading_into_a_built_network(xp, tmp_path):
    net = SimpleConvNet(**CONV, xp=xp, seed=0)
    net.save_params(tmp_path / "old.npz")  # what earlier versions wrote
    with pytest.raises(ValueError, match="holds parameters only.*load_params"):
        load_model(tmp_path / "old.npz")
    other = SimpleConvNet(**CONV, xp=xp, seed=1)
    other.load_params(tmp_path / "old.npz")
    np.testing.assert_array_equal(to_numpy(other.params["W1"]), to_numpy(net.params["W1"]))
    # And a full checkpoint (with optimizer state) loads into a built network too.
    adam = optim.Adam()
    adam.init_state(net.params)
    save_checkpoint(tmp_path / "new.npz", net, adam)
    assert any(k.startswith("optimizer/") for k in np.load(tmp_path / "new.npz").files)
    other = SimpleConvNet(**CONV, xp=xp, seed=1)
    other.load_params(tmp_path / "new.npz")
    np.testing.assert_array_equal(to_numpy(other.params["W3"]), to_numpy(net.params["W3"]))
    assert read_checkpoint(tmp_path / "old.npz").meta == {}


@ONCE
def test_a_newer_format_is_refused_by_name(tmp_path):
    checkpoint.save_arrays(tmp_path / "m.npz", {"W1": np.zeros(2)}, meta={
        "format": "portablelayers-checkpoint", "format_version": 99, "package_version": "9.0"})
    with pytest.raises(ValueError, match="written by portablelayers 9.0 in a newer"):
        load_model(tmp_path / "m.npz")


@ONCE
def test_optimizer_descriptions_for_every_optimizer():
    for cls in (optim.SGD, optim.Momentum, optim.Nesterov, optim.AdaGrad, optim.RMSprop,
                optim.Adam, optim.AdamW):
        original = cls(lr=0.123)
        again = build_optimizer(optimizer_description(original))
        assert type(again) is cls and repr(again) == repr(original)


@ONCE
def test_cli_simple_conv_on_digits_loads_without_naming_its_filters(tmp_path, capsys):
    path = tmp_path / "m.npz"
    assert cli.main(["train", "--net", "simple-conv", "--epochs", "1", "--hidden-size", "8",
                     "--quiet", "--save", str(path)]) == 0
    printed = float(capsys.readouterr().out.split()[2])
    net = load_model(path)  # 30 filters of 3x3, pad 1: read from the file
    assert type(net) is SimpleConvNet and net.params["W1"].shape == (30, 1, 3, 3)
    from portablelayers.datasets import load_digits

    _, (x_test, t_test) = load_digits(flatten=False)
    assert net.accuracy(x_test, t_test) == pytest.approx(printed, abs=5e-5)
