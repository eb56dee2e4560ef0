"""Networks: Sequential's behaviour and the book's five networks, with whole-network
gradient checks on every backend (float64, tiny sizes)."""

import math

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import GRAD_TOL, assert_close, assert_same_dtype_device, make, to_numpy

from portablelayers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    ReLU,
    Sigmoid,
    SigmoidWithLoss,
    SoftmaxWithLoss,
)
from portablelayers.gradcheck import relative_error
from portablelayers.init import Initializer
from portablelayers.nets import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)
from portablelayers.optim import Adam

lazy_xp_function((Sequential, "predict"), jax_jit=False)
lazy_xp_function((Sequential, "loss"), jax_jit=False)
lazy_xp_function((Sequential, "gradient"), jax_jit=False)
lazy_xp_function((Sequential, "numerical_gradient"), jax_jit=False)  # stacks, never reads

F64 = {"dtype": "float64"}
# A SimpleConvNet small enough for gradient checks (44 parameters): 1x5x5 -> 2 filters 3x3
# with pad 1 -> 2x5x5 -> pool 2x2x2 -> 8 features -> 2 hidden -> 2 classes. Shared by the
# tests, so that JAX compiles its operations once.
SMALL_CONV = {"input_dim": (1, 5, 5),
              "conv_param": {"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1},
              "hidden_size": 2, "output_size": 2}


def _data(xp, rng, shape, classes, dtype="float64"):
    x = make(xp, rng.standard_normal(shape), dtype)
    t_np = np.arange(shape[0]) % classes
    return x, xp.asarray(t_np)


def _freeze_dropout(net, xp, x, t):
    """Give every Dropout a fixed mask (every third unit dropped) for all later forwards,
    so that the loss is a fixed, non-degenerate function of the parameters."""
    net.loss(x, t, train_flg=True)  # a real training pass: each mask gets its shape
    for layer in net.layers.values():
        if isinstance(layer, Dropout):
            shape = tuple(layer.mask.shape)
            kept = xp.reshape(xp.arange(math.prod(shape)) % 3 != 1, shape)
            layer.mask, scale = kept, 1.0 / (1.0 - layer.dropout_ratio)

            def frozen(inp, train_flg=True, mask=kept, scale=scale):
                return xp.where(mask, inp * scale, 0.0) if train_flg else inp

            layer.forward = frozen


def _random_biases(net, xp, rng):
    """Biases away from their initial zeros: with a zero bias, a unit whose inputs are all
    zero (a padding-only window, or all of the previous ReLUs cut) sits exactly on the
    ReLU's kink, where no numerical gradient is meaningful."""
    for name in net.params:
        if name.startswith("b"):
            net.params[name] = make(xp, rng.uniform(0.1, 0.5, tuple(net.params[name].shape)))


def assert_network_gradients_match(net, x, t):
    analytic = net.gradient(x, t)
    numeric = net.numerical_gradient(x, t)
    assert set(analytic) == set(numeric) == set(net.params)
    errors = {}
    for name in analytic:
        a, n = to_numpy(analytic[name]), to_numpy(numeric[name])
        if max(np.abs(a).max(), np.abs(n).max()) < 1e-7:
            # A gradient that is zero (a bias before BatchNorm): relative error is noise.
            errors[name] = 0.0 if np.abs(a - n).max() < 1e-8 else np.inf
        else:
            errors[name] = relative_error(analytic[name], numeric[name])
    bad = {k: v for k, v in errors.items() if not v <= GRAD_TOL}
    assert not bad, f"relative gradient errors above {GRAD_TOL}: {errors}"
    for name, g in analytic.items():
        assert_same_dtype_device(g, net.params[name])
    # Not a vacuous check: the gradient reaches the first layer.
    assert np.abs(to_numpy(analytic["W1"])).max() > 1e-3


def test_numerical_gradient_with_live_dropout_uses_one_mask(xp, rng):
    # Each evaluation starts from the same state (dropout's stream not advanced between
    # f(w+h) and f(w-h)), so it matches backprop of one training forward from that state.
    if xp.__name__.endswith("dask.array"):
        pytest.skip("every central difference a lazy forward: minutes on Dask")
    net = MultiLayerNetExtend(6, [5], 3, use_dropout=True, dropout_ratio=0.3,
                              use_batchnorm=True, xp=xp, dtype=xp.float64, seed=4)
    _random_biases(net, xp, rng)
    x = make(xp, rng.standard_normal((4, 6)))
    t = xp.asarray(rng.integers(0, 3, 4))
    numeric = net.numerical_gradient(x, t)  # leaves the state as it found it
    analytic = net.gradient(x, t)  # the same mask: the same step of the stream
    for name in analytic:
        a, n = to_numpy(analytic[name]), to_numpy(numeric[name])
        if max(np.abs(a).max(), np.abs(n).max()) < 1e-7:  # the bias before batch norm: 0
            assert np.abs(a - n).max() < 1e-8, name
        else:
            assert relative_error(analytic[name], numeric[name]) <= 1e-6, name


def test_multi_layer_net_extends_loss_is_in_inference_mode_by_default(xp, rng):
    # As the book's: logging the loss moves neither batch norm's statistics nor dropout.
    net = MultiLayerNetExtend(6, [5], 3, use_dropout=True, use_batchnorm=True, xp=xp,
                              seed=4)
    x = make(xp, rng.standard_normal((4, 6)), "float32")
    t = xp.asarray(rng.integers(0, 3, 4))
    state = {k: to_numpy(v).copy() for k, v in net.state.items()}
    first, second = float(net.loss(x, t)), float(net.loss(x, t))
    assert first == second == float(net.loss(x, t, train_flg=False))
    for name, value in state.items():
        np.testing.assert_array_equal(to_numpy(net.state[name]), value, err_msg=name)


# --- Sequential --------------------------------------------------------------------------

def _small_sequential(xp, rng, dtype="float64", **kwargs):
    W1, b1 = rng.standard_normal((4, 5)), rng.standard_normal(5)
    W2, b2 = rng.standard_normal((5, 3)), rng.standard_normal(3)
    net = Sequential(Affine(make(xp, W1, dtype), make(xp, b1, dtype)), ReLU(),
                     Affine(make(xp, W2, dtype), make(xp, b2, dtype)), SoftmaxWithLoss(),
                     **kwargs)
    return net, (W1, b1, W2, b2)


def _softmax_loss_np(scores, t):
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_y = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_y[np.arange(len(t)), t].mean()


def test_sequential_predict_and_loss_match_numpy(xp, rng):
    net, (W1, b1, W2, b2) = _small_sequential(xp, rng)
    x_np = rng.standard_normal((6, 4))
    t_np = np.array([0, 1, 2, 2, 1, 0])
    scores = np.maximum(x_np @ W1 + b1, 0.0) @ W2 + b2
    assert_close(net.predict(make(xp, x_np)), scores, rtol=1e-12)
    loss = net.loss(make(xp, x_np), xp.asarray(t_np))
    assert loss.ndim == 0
    assert_close(loss, _softmax_loss_np(scores, t_np), rtol=1e-12)


def test_sequential_names_layers_and_params_like_the_book(xp, rng):
    net, _ = _small_sequential(xp, rng)
    assert list(net.layers) == ["Affine1", "ReLU1", "Affine2"]
    assert isinstance(net.last_layer, SoftmaxWithLoss)
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert net.params["W2"] is net.layers["Affine2"].params["W"]
    named = Sequential(("first", ReLU()), ("loss", SoftmaxWithLoss()))
    assert list(named.layers) == ["first"] and len(named.params) == 0


def test_sequential_numbers_each_parameter_name_separately(xp, rng):
    f = {"dtype": "float64"}
    conv = Convolution(make(xp, rng.standard_normal((2, 1, 3, 3)), **f),
                       make(xp, np.zeros(2), **f))
    bn = BatchNormalization(make(xp, np.ones(3), **f), make(xp, np.zeros(3), **f))
    affine = Affine(make(xp, rng.standard_normal((8, 3)), **f), make(xp, np.zeros(3), **f))
    net = Sequential(conv, ReLU(), Pooling(2, 2, 2), affine, bn, SoftmaxWithLoss())
    assert list(net.params) == ["W1", "b1", "W2", "b2", "gamma1", "beta1"]
    assert list(net.state) == ["running_mean1", "running_var1"]
    x, t = _data(xp, rng, (2, 1, 6, 6), 3)
    net.loss(x, t)
    assert net.state["running_mean1"] is bn.running_mean  # the view follows the rebinding


@pytest.mark.parametrize("train_flg", [True, False])
def test_layers_that_take_train_flg_are_given_it(xp, rng, train_flg):
    seen = []

    class Spy(ReLU):
        def forward(self, x, train_flg=None):
            seen.append(train_flg)
            return super().forward(x)

    net = Sequential(Spy(), ReLU(), SoftmaxWithLoss())
    x, t = _data(xp, rng, (2, 3), 3)
    net.predict(x, train_flg=train_flg)
    net.loss(x, t, train_flg=train_flg)
    assert seen == [train_flg, train_flg]
    net.predict(x)
    net.loss(x, t)
    assert seen[2:] == [False, True]  # predict defaults to inference, loss to training


def test_params_view_rebinds_the_layers_entry(xp, rng):
    net, (W1, b1, W2, b2) = _small_sequential(xp, rng)
    new_W1 = rng.standard_normal((4, 5))
    net.params["W1"] = make(xp, new_W1)
    assert net.layers["Affine1"].W is net.params["W1"]
    x_np = rng.standard_normal((2, 4))
    assert_close(net.predict(make(xp, x_np)),
                 np.maximum(x_np @ new_W1 + b1, 0.0) @ W2 + b2, rtol=1e-12)
    assert len(net.params) == 4 and dict(net.params).keys() == {"W1", "b1", "W2", "b2"}


def test_params_view_copy_is_a_snapshot_dict(xp, rng):
    net, _ = _small_sequential(xp, rng)
    snapshot = net.params.copy()
    assert type(snapshot) is dict and list(snapshot) == list(net.params)
    assert all(snapshot[name] is net.params[name] for name in net.params)
    old_W1 = net.params["W1"]
    net.params["W1"] = make(xp, rng.standard_normal((4, 5)))
    assert snapshot["W1"] is old_W1 and net.params["W1"] is not old_W1
    assert net.state.copy() == dict(net.state)


def test_params_view_errors_leave_the_network_unchanged(xp, rng):
    net, _ = _small_sequential(xp, rng)
    W1 = net.params["W1"]
    with pytest.raises(ValueError, match=r"'W1' has shape \(4, 5\), got \(5, 4\)"):
        net.params["W1"] = make(xp, np.zeros((5, 4)))
    with pytest.raises(KeyError, match="W3"):
        net.params["W3"] = make(xp, np.zeros((4, 5)))
    with pytest.raises(TypeError, match="must be an array"):
        net.params["W1"] = np.zeros((4, 5)).tolist()
    with pytest.raises(TypeError, match="cannot be deleted"):
        del net.params["W1"]
    assert net.params["W1"] is W1 and list(net.params) == ["W1", "b1", "W2", "b2"]


def test_the_books_update_loop_trains_through_the_params_view(xp, rng):
    # The book's `params[key] -= lr * grad[key]`: in place where arrays allow it, and a
    # rebinding of the layer's entry on JAX and Dask, where arrays cannot change.
    net, _ = _small_sequential(xp, rng)
    x, t = _data(xp, rng, (6, 4), 3)
    first = float(net.loss(x, t))
    for _ in range(30):
        grads = net.gradient(x, t)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.1 * grads[key]
    assert float(net.loss(x, t)) < 0.5 * first
    assert net.layers["Affine2"].W is net.params["W2"]


def test_optimizers_update_the_layers(xp, rng):
    net = TwoLayerNet(3, 4, 2, weight_init_std=0.5, xp=xp, seed=0)
    x, t = _data(xp, rng, (6, 3), 2, "float32")
    first, before = float(net.loss(x, t)), to_numpy(net.layers["Affine1"].W).copy()
    optimizer = Adam(lr=0.1)
    for _ in range(5):
        optimizer.update(net.params, net.gradient(x, t))
    assert float(net.loss(x, t)) < first
    assert not np.allclose(to_numpy(net.layers["Affine1"].W), before)
    assert net.layers["Affine1"].W is net.params["W1"]
    assert net.params["W1"].dtype == xp.float32


def test_sequential_construction_errors():
    with pytest.raises(ValueError, match="loss layer"):
        Sequential(ReLU(), ReLU())
    with pytest.raises(ValueError, match="at least one layer"):
        Sequential(SoftmaxWithLoss())
    with pytest.raises(TypeError, match="forward, backward and params"):
        Sequential(object(), SoftmaxWithLoss())
    with pytest.raises(ValueError, match="two layers are named 'a'"):
        Sequential(("a", ReLU()), ("a", ReLU()), SoftmaxWithLoss())
    with pytest.raises(ValueError, match="weight_decay_lambda"):
        Sequential(ReLU(), SoftmaxWithLoss(), weight_decay_lambda=-1.0)


def test_weight_decay_adds_to_loss_and_weight_gradients(xp, rng):
    lam = 0.3
    plain, (W1, _, W2, _) = _small_sequential(xp, np.random.default_rng(1))
    decayed, _ = _small_sequential(xp, np.random.default_rng(1), weight_decay_lambda=lam)
    x, t = _data(xp, rng, (5, 4), 3)
    penalty = 0.5 * lam * ((W1**2).sum() + (W2**2).sum())
    assert_close(decayed.loss(x, t), float(plain.loss(x, t)) + penalty, rtol=1e-12)
    g_plain, g_decayed = plain.gradient(x, t), decayed.gradient(x, t)
    assert_close(g_decayed["W1"], to_numpy(g_plain["W1"]) + lam * W1, rtol=1e-12)
    assert_close(g_decayed["W2"], to_numpy(g_plain["W2"]) + lam * W2, rtol=1e-12)
    assert_close(g_decayed["b1"], to_numpy(g_plain["b1"]), rtol=1e-12)  # biases: no decay


def test_gradient_leaves_inputs_untouched_and_returns_a_new_dict(xp, rng):
    net, _ = _small_sequential(xp, rng, dtype="float32")
    x, t = _data(xp, rng, (3, 4), 3, "float32")
    x_before, t_before = to_numpy(x).copy(), to_numpy(t).copy()
    grads = net.gradient(x, t)
    assert grads is not net.gradient(x, t)
    np.testing.assert_array_equal(to_numpy(x), x_before)
    np.testing.assert_array_equal(to_numpy(t), t_before)
    for name in net.params:
        assert_same_dtype_device(grads[name], x)


def test_numerical_gradient_restores_params_and_running_statistics(xp, rng):
    net = MultiLayerNetExtend(2, [2], 2, use_batchnorm=True, xp=xp, seed=0)  # float32
    x, t = _data(xp, rng, (3, 2), 2, "float32")
    params, state = dict(net.params), dict(net.state)
    grads = net.numerical_gradient(x, t)
    assert all(g.dtype == xp.float64 for g in grads.values())
    assert all(net.params[k] is v for k, v in params.items())
    assert all(net.state[k] is v for k, v in state.items())


# --- accuracy ----------------------------------------------------------------------------

def _accuracy_case(xp, rng):
    net, (W1, b1, W2, b2) = _small_sequential(xp, rng)
    x_np = rng.standard_normal((7, 4))
    predicted = (np.maximum(x_np @ W1 + b1, 0.0) @ W2 + b2).argmax(axis=1)
    t_np = predicted.copy()
    t_np[[1, 4, 6]] = (t_np[[1, 4, 6]] + 1) % 3  # exactly 3 of 7 wrong, the last one too
    return net, make(xp, x_np), t_np


@pytest.mark.parametrize("batch_size", [None, 1, 3, 7, 100])
def test_accuracy_counts_every_sample(xp, rng, batch_size):
    net, x, t_np = _accuracy_case(xp, rng)
    acc = net.accuracy(x, xp.asarray(t_np), batch_size=batch_size)
    assert type(acc) is float and acc == pytest.approx(4 / 7, abs=1e-15)


def test_accuracy_takes_one_hot_labels(xp, rng):
    net, x, t_np = _accuracy_case(xp, rng)
    one_hot = make(xp, np.eye(3)[t_np])
    assert net.accuracy(x, one_hot, batch_size=3) == pytest.approx(4 / 7, abs=1e-15)


def test_accuracy_errors(xp, rng):
    net, x, t_np = _accuracy_case(xp, rng)
    with pytest.raises(ValueError, match="batch_size"):
        net.accuracy(x, xp.asarray(t_np), batch_size=0)
    with pytest.raises(ValueError, match=r"t \(6,\)"):
        net.accuracy(x, xp.asarray(t_np[:6]))


# --- the book's networks -----------------------------------------------------------------

def test_two_layer_net_is_the_books(xp):
    net = TwoLayerNet(6, 4, 3, weight_init_std=0.5, xp=xp, seed=7)
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert net.lastLayer is net.last_layer
    assert {k: tuple(v.shape) for k, v in net.params.items()} == {
        "W1": (6, 4), "b1": (4,), "W2": (4, 3), "b2": (3,)}
    init = Initializer(xp, seed=7)  # the same draws, in the book's order
    assert_close(net.params["W1"], to_numpy(init.weight((6, 4), 0.5)))
    assert_close(net.params["W2"], to_numpy(init.weight((4, 3), 0.5)))
    assert not np.any(to_numpy(net.params["b1"]))
    for value in net.params.values():
        assert value.dtype == xp.float32  # the default dtype


@pytest.mark.parametrize("activation, std", [("relu", "relu"), ("sigmoid", "xavier")])
def test_multi_layer_net_is_the_books(xp, activation, std):
    net = MultiLayerNet(5, [4, 3], 2, activation=activation, weight_init_std=std, xp=xp,
                        seed=3)
    assert list(net.layers) == ["Affine1", "Activation_function1", "Affine2",
                                "Activation_function2", "Affine3"]
    kind = ReLU if activation == "relu" else Sigmoid
    assert isinstance(net.layers["Activation_function2"], kind)
    numerator = 2.0 if activation == "relu" else 1.0
    init = Initializer(xp, seed=3)
    for idx, (fan_in, out) in enumerate([(5, 4), (4, 3), (3, 2)], start=1):
        expected = init.weight((fan_in, out), math.sqrt(numerator / fan_in))
        assert_close(net.params[f"W{idx}"], to_numpy(expected), rtol=1e-6)
    assert net.hidden_layer_num == 2


def test_multi_layer_net_extend_builds_batchnorm_and_dropout(xp):
    net = MultiLayerNetExtend(5, [4, 3], 2, use_dropout=True, dropout_ration=0.25,
                              use_batchnorm=True, xp=xp, seed=0)
    assert list(net.layers) == [
        "Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
        "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3"]
    assert list(net.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2",
                                "W3", "b3"]
    # State is every layer's state by the contract: running statistics, dropout counters.
    assert list(net.state) == ["running_mean1", "running_var1", "step1", "running_mean2",
                               "running_var2", "step2"]
    assert net.layers["Dropout2"].dropout_ratio == 0.25
    spelt = MultiLayerNetExtend(5, [4], 2, use_dropout=True, dropout_ratio=0.1, xp=xp)
    assert spelt.layers["Dropout1"].dropout_ratio == 0.1
    with pytest.raises(TypeError, match="not both"):
        MultiLayerNetExtend(5, [4], 2, dropout_ration=0.2, dropout_ratio=0.1, xp=xp)
    with pytest.raises(TypeError, match="not both"):  # the book's default, given: still two
        MultiLayerNetExtend(5, [4], 2, dropout_ration=0.5, dropout_ratio=0.3, xp=xp)
    same = MultiLayerNetExtend(5, [4], 2, use_dropout=True, dropout_ration=0.3,
                               dropout_ratio=0.3, xp=xp)
    assert same.layers["Dropout1"].dropout_ratio == 0.3
    default = MultiLayerNetExtend(5, [4], 2, use_dropout=True, xp=xp)
    assert default.layers["Dropout1"].dropout_ratio == 0.5
    plain = MultiLayerNetExtend(5, [4], 2, xp=xp)
    assert list(plain.layers) == ["Affine1", "Activation_function1", "Affine2"]


def test_dropout_and_batchnorm_follow_train_flg(xp, rng):
    net = MultiLayerNetExtend(5, [6], 3, use_dropout=True, use_batchnorm=True, xp=xp,
                              seed=1, **F64)
    x, t = _data(xp, rng, (8, 5), 3)
    mean_before = to_numpy(net.state["running_mean1"]).copy()
    first = to_numpy(net.predict(x))
    np.testing.assert_array_equal(to_numpy(net.predict(x)), first)  # inference: no dropout
    np.testing.assert_array_equal(to_numpy(net.state["running_mean1"]), mean_before)
    train = to_numpy(net.predict(x, train_flg=True))
    assert not np.allclose(train, first)
    assert not np.allclose(to_numpy(net.state["running_mean1"]), mean_before)


def test_simple_conv_net_sizes_follow_input_and_conv_params(xp, rng):
    net = SimpleConvNet(xp=xp, seed=0)
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    assert tuple(net.params["W1"].shape) == (30, 1, 5, 5)
    assert tuple(net.params["W2"].shape) == (30 * 12 * 12, 100)  # the book's 4320
    # Non-square input, stride 2 and padding: conv 5x4, pool 2x2 -> 4 * 2 * 2 features.
    net = SimpleConvNet(input_dim=(3, 10, 8),
                        conv_param={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 2},
                        hidden_size=5, output_size=2, xp=xp, seed=0)
    assert tuple(net.params["W2"].shape) == (16, 5)
    x, t = _data(xp, rng, (2, 3, 10, 8), 2, "float32")
    assert tuple(net.predict(x).shape) == (2, 2)
    # A partial conv_param is completed from the book's defaults.
    net = SimpleConvNet(input_dim=(1, 9, 9), conv_param={"filter_num": 2}, xp=xp)
    assert tuple(net.params["W1"].shape) == (2, 1, 5, 5)
    assert tuple(net.params["W2"].shape) == (2 * 2 * 2, 100)


def test_simple_conv_net_errors(xp):
    with pytest.raises(ValueError, match="too small"):
        SimpleConvNet(input_dim=(1, 4, 4), xp=xp)
    with pytest.raises(ValueError, match="unknown keys"):
        SimpleConvNet(conv_param={"filters": 3}, xp=xp)
    with pytest.raises(ValueError, match="input_dim"):
        SimpleConvNet(input_dim=(28, 28), xp=xp)


def test_deep_conv_net_is_the_books(xp):
    net = DeepConvNet(xp=xp, seed=5)
    kinds = [type(layer).__name__ for layer in net.layers.values()]
    block = ["Convolution", "ReLU", "Convolution", "ReLU", "Pooling"]
    assert kinds == block * 3 + ["Affine", "ReLU", "Dropout", "Affine", "Dropout"]
    assert [net.params[f"W{i}"].shape[0] for i in range(1, 7)] == [16, 16, 32, 32, 64, 64]
    assert net.layers["Conv4"].pad == 2 and net.layers["Conv3"].pad == 1
    assert tuple(net.params["W7"].shape) == (64 * 4 * 4, 50)
    # He initialisation with the book's hard-coded fan-ins (pre_node_nums).
    pre_node_nums = [1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3, 64 * 3 * 3,
                     64 * 4 * 4, 50]
    init = Initializer(xp, seed=5)
    for idx, fan_in in enumerate(pre_node_nums, start=1):
        shape = tuple(net.params[f"W{idx}"].shape)
        expected = init.weight(shape, math.sqrt(2.0 / fan_in))
        assert_close(net.params[f"W{idx}"], to_numpy(expected), rtol=1e-6)


def test_deep_conv_net_smallest_input(xp):
    # 4x4 -> pool 2x2 -> conv 4 (pad 2) 4x4 -> pool 2x2 -> pool 1x1 (the gradient check runs it)
    net = DeepConvNet(input_dim=(1, 4, 4), hidden_size=3, output_size=2, xp=xp, seed=0)
    assert tuple(net.params["W7"].shape) == (64, 3)
    with pytest.raises(ValueError, match="too small"):
        DeepConvNet(input_dim=(1, 3, 3), xp=xp)


def test_constructor_errors(xp):
    with pytest.raises(ValueError, match="activation"):
        MultiLayerNet(3, [2], 2, activation="tanh", xp=xp)
    with pytest.raises(ValueError, match="weight_init_std"):
        TwoLayerNet(3, 2, 2, weight_init_std="gauss", xp=xp)


def test_same_seed_same_weights_on_every_backend(xp):
    on_xp = SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3}, 4, 2, xp=xp, seed=9)
    on_numpy = SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3}, 4, 2, seed=9)
    for name in on_numpy.params:
        np.testing.assert_array_equal(to_numpy(on_xp.params[name]),
                                      to_numpy(on_numpy.params[name]))


def test_float32_network_keeps_float32(xp, rng):
    net = SimpleConvNet(**SMALL_CONV, xp=xp, seed=0)
    x, t = _data(xp, rng, (2, 1, 5, 5), 2, "float32")
    loss = net.loss(x, t)
    assert_same_dtype_device(loss, x)
    assert_same_dtype_device(net.predict(x), x)
    for name, g in net.gradient(x, t).items():
        assert_same_dtype_device(g, x)
        assert_same_dtype_device(net.params[name], x)


# --- whole-network gradient checks (float64) ---------------------------------------------

def test_two_layer_net_gradient_check(xp, rng):
    net = TwoLayerNet(3, 3, 2, weight_init_std=0.5, xp=xp, seed=0, **F64)
    _random_biases(net, xp, rng)
    x, t = _data(xp, rng, (3, 3), 2)
    assert_network_gradients_match(net, x, t)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_multi_layer_net_gradient_check_with_weight_decay(xp, rng, activation):
    net = MultiLayerNet(3, [3, 2], 2, activation=activation, weight_decay_lambda=0.1,
                        xp=xp, seed=1, **F64)
    _random_biases(net, xp, rng)
    x, t = _data(xp, rng, (3, 3), 2)
    assert_network_gradients_match(net, x, t)


def test_multi_layer_net_extend_gradient_check(xp, rng):
    net = MultiLayerNetExtend(3, [3, 2], 2, weight_decay_lambda=0.05, use_dropout=True,
                              dropout_ratio=0.3, use_batchnorm=True, xp=xp, seed=2, **F64)
    _random_biases(net, xp, rng)
    x, t = _data(xp, rng, (4, 3), 2)
    _freeze_dropout(net, xp, x, t)
    assert_network_gradients_match(net, x, t)


def test_simple_conv_net_gradient_check(xp, rng):
    net = SimpleConvNet(**SMALL_CONV, weight_init_std=0.3, xp=xp, seed=3, **F64)
    _random_biases(net, xp, rng)
    x, t = _data(xp, rng, (2, 1, 5, 5), 2)
    assert_network_gradients_match(net, x, t)


def test_deep_conv_net_gradient_check(xp, rng):
    # The book's architecture on its smallest input (4x4) with one filter per convolution:
    # every layer is there, and the check stays at 70 parameters.
    one = {"filter_num": 1}
    net = DeepConvNet((1, 4, 4), one, one, one, one, one, one, hidden_size=2, output_size=2,
                      xp=xp, seed=4, **F64)
    _random_biases(net, xp, rng)
    x, t = _data(xp, rng, (2, 1, 4, 4), 2)
    _freeze_dropout(net, xp, x, t)
    assert_network_gradients_match(net, x, t)


# --- against PyTorch autograd ------------------------------------------------------------

def test_simple_conv_net_matches_torch_autograd(xp, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = SimpleConvNet(**SMALL_CONV, weight_init_std=0.4, xp=xp, seed=6, **F64)
    _random_biases(net, xp, rng)
    x_np, t_np = rng.standard_normal((2, 1, 5, 5)), np.array([1, 0])
    p = {k: torch.tensor(to_numpy(v), requires_grad=True, device="cpu")
         for k, v in net.params.items()}
    x_t = torch.tensor(x_np, device="cpu")
    h = F.max_pool2d(F.relu(F.conv2d(x_t, p["W1"], p["b1"], padding=1)), 2, 2)
    h = F.relu(h.flatten(1) @ p["W2"] + p["b2"])
    loss = F.cross_entropy(h @ p["W3"] + p["b3"], torch.tensor(t_np, device="cpu"))
    loss.backward()
    x = make(xp, x_np)
    assert_close(net.loss(x, xp.asarray(t_np)), loss.item(), rtol=1e-12)
    for name, g in net.gradient(x, xp.asarray(t_np)).items():
        assert_close(g, p[name].grad.numpy(), rtol=1e-9, atol=1e-14)


def test_accuracy_takes_a_column_of_labels_as_class_indices(xp, rng):
    # The book's size rule: (N, 1) integer labels are indices, not one-hot of width 1.
    net, _ = _small_sequential(xp, rng)
    x, t = _data(xp, rng, (6, 4), 3)
    scores = to_numpy(net.predict(x))
    expected = float(np.mean(np.argmax(scores, axis=1) == to_numpy(t)))
    assert net.accuracy(x, xp.reshape(t, (6, 1))) == expected == net.accuracy(x, t)


def test_accuracy_of_a_binary_classifier_thresholds_its_logit(xp, rng):
    # One output and SigmoidWithLoss: the class is 1 where the logit is above 0; the
    # targets are a float column of 0.0 / 1.0 (an argmax would call every sample 0).
    W, b = rng.standard_normal((4, 1)), np.array([0.1])
    net = Sequential(Affine(make(xp, W), make(xp, b)), SigmoidWithLoss())
    x_np = rng.standard_normal((9, 4))
    t_np = (rng.random((9, 1)) < 0.5).astype(np.float64)
    expected = float(np.mean(((x_np @ W + b) > 0) == (t_np == 1.0)))
    assert 0.0 < expected < 1.0
    x, t = make(xp, x_np), make(xp, t_np)
    assert net.accuracy(x, t) == expected
    assert net.accuracy(x, t, batch_size=4) == expected


def test_backward_stops_at_the_first_layer_with_parameters(xp, rng):
    # Nothing uses the gradient of the network's input: layers before the first with
    # parameters get no backward call, and that one is asked for its gradients only.
    calls = []

    class Spy(Dropout):
        def backward(self, dout):
            calls.append("dropout")
            return super().backward(dout)

    class FirstAffine(Affine):
        def backward(self, dout, input_grad=True):
            calls.append(("affine", input_grad))
            return super().backward(dout, input_grad=input_grad)

    W1, b1 = make(xp, rng.standard_normal((4, 5))), make(xp, np.zeros(5))
    W2, b2 = make(xp, rng.standard_normal((5, 3))), make(xp, np.zeros(3))
    net = Sequential(Spy(0.0), FirstAffine(W1, b1), ReLU(), FirstAffine(W2, b2),
                     SoftmaxWithLoss())
    x, t = _data(xp, rng, (6, 4), 3)
    loss, grads = net.loss_and_gradient(x, t)
    assert calls == [("affine", True), ("affine", False)]
    numerical = net.numerical_gradient(x, t)
    for name in ("W1", "b1", "W2", "b2"):
        assert relative_error(grads[name], numerical[name]) < GRAD_TOL, name


@pytest.mark.parametrize("first", ["affine", "convolution"])
def test_a_layer_asked_for_gradients_only_fills_the_same_grads(xp, rng, first):
    # backward(dout, input_grad=False): the same grads as a full backward, no input gradient
    if first == "affine":
        layer = Affine(make(xp, rng.standard_normal((6, 3))), make(xp, rng.standard_normal(3)))
        x = make(xp, rng.standard_normal((4, 6)))
    else:
        layer = Convolution(make(xp, rng.standard_normal((2, 1, 3, 3))),
                            make(xp, rng.standard_normal(2)), pad=1)
        x = make(xp, rng.standard_normal((4, 1, 5, 5)))
    dout = layer.forward(x) * 0.5 + 1.0
    dx = layer.backward(dout)
    full = {k: to_numpy(v) for k, v in layer.grads.items()}
    assert dx is not None and tuple(dx.shape) == tuple(x.shape)
    assert layer.backward(dout, input_grad=False) is None
    for key, value in layer.grads.items():
        np.testing.assert_array_equal(to_numpy(value), full[key], err_msg=key)


def test_a_users_first_layer_without_the_keyword_is_called_as_before(xp, rng):
    # A layer of the user's own whose backward takes no `input_grad`: called with dout only.
    class Plain:
        def __init__(self, W):
            self.params, self.grads, self.state = {"W": W}, {"W": None}, {}

        def forward(self, x):
            self.x = x
            return x @ self.params["W"]

        def backward(self, dout):
            self.grads["W"] = self.x.T @ dout
            return dout @ self.params["W"].T

    net = Sequential(Plain(make(xp, rng.standard_normal((4, 3)))), SoftmaxWithLoss())
    x, t = _data(xp, rng, (5, 4), 3)
    _, grads = net.loss_and_gradient(x, t)
    numerical = net.numerical_gradient(x, t)
    assert relative_error(grads["W1"], numerical["W1"]) < GRAD_TOL


def test_backward_follows_layers_replaced_after_construction(xp, rng):
    # `layers` is the book's public dict: a parameter-free layer replaced, removed or moved
    # after construction is what backward runs through, as forward does.
    W1, b1 = make(xp, rng.standard_normal((4, 5))), make(xp, np.zeros(5))
    W2, b2 = make(xp, rng.standard_normal((5, 3))), make(xp, np.zeros(3))
    net = Sequential(Affine(W1, b1), ReLU(), Dropout(0.0), Affine(W2, b2), SoftmaxWithLoss())
    x, t = _data(xp, rng, (6, 4), 3)
    net.loss_and_gradient(x, t)  # the plan for these layers is made and kept
    net.layers["ReLU1"] = Sigmoid()
    del net.layers["Dropout1"]
    _, grads = net.loss_and_gradient(x, t)
    numerical = net.numerical_gradient(x, t)
    for name in ("W1", "b1", "W2", "b2"):
        assert relative_error(grads[name], numerical[name]) < GRAD_TOL, name
