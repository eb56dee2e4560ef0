"""BatchNormalization: per-feature and per-channel statistics, running statistics,
train/eval modes, gradients, agreement with torch, dtype and errors."""

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import (
    assert_close,
    assert_gradients_match,
    assert_same_dtype_device,
    make,
    rel_err,
    to_numpy,
)

from portablelayers import BatchNormalization

lazy_xp_function((BatchNormalization, "forward"), jax_jit=False)
lazy_xp_function((BatchNormalization, "backward"), jax_jit=False)

EPS = 10e-7  # the book's


def _axes(ndim):
    return (0, *range(2, ndim))


def _reference_train(x, gamma, beta, eps=EPS):
    """Batch norm by the textbook formula in NumPy: per channel (axis 1), biased variance."""
    axes, shape = _axes(x.ndim), (1, -1) + (1,) * (x.ndim - 2)
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    xn = (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * xn + beta.reshape(shape), mu, var


def _layer(xp, rng, channels, dtype="float64", **kwargs):
    gamma = make(xp, 1.0 + 0.5 * rng.standard_normal(channels), dtype)
    beta = make(xp, rng.standard_normal(channels), dtype)
    return BatchNormalization(gamma, beta, **kwargs)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2)])
def test_training_forward_and_running_stats_against_numpy(xp, rng, shape):
    layer = _layer(xp, rng, shape[1], momentum=0.8)
    gamma, beta = to_numpy(layer.gamma), to_numpy(layer.beta)
    running_mean, running_var = np.zeros(shape[1]), np.zeros(shape[1])  # the book's start
    for step in range(3):
        x_np = rng.standard_normal(shape) * (step + 1) + step
        out = layer.forward(make(xp, x_np))
        expected, mu, var = _reference_train(x_np, gamma, beta)
        running_mean = 0.8 * running_mean + 0.2 * mu
        running_var = 0.8 * running_var + 0.2 * var
        assert_close(out, expected, rtol=1e-10, atol=1e-12)
        assert_close(layer.running_mean, running_mean, rtol=1e-12)
        assert_close(layer.running_var, running_var, rtol=1e-12)


def test_4d_input_is_normalised_per_channel(xp, rng):
    # Every channel of the output has mean beta and standard deviation ~|gamma|.
    x_np = rng.standard_normal((5, 2, 3, 3)) * np.array([1.0, 10.0]).reshape(1, 2, 1, 1) + 4.0
    layer = _layer(xp, rng, 2)
    out = to_numpy(layer.forward(make(xp, x_np)))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), to_numpy(layer.beta), atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), np.abs(to_numpy(layer.gamma)), rtol=1e-5)


def test_eval_mode_uses_running_stats_and_leaves_them_alone(xp, rng):
    x_np = rng.standard_normal((4, 3)) * 3 + 1
    mean_np, var_np = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    layer = _layer(xp, rng, 3, running_mean=make(xp, mean_np), running_var=make(xp, var_np))
    gamma, beta = to_numpy(layer.gamma), to_numpy(layer.beta)
    out = layer.forward(make(xp, x_np), train_flg=False)
    assert_close(out, gamma * (x_np - mean_np) / np.sqrt(var_np + EPS) + beta, rtol=1e-12)
    assert_close(layer.running_mean, mean_np, rtol=0)
    assert_close(layer.running_var, var_np, rtol=0)
    # Training mode on the same batch normalises with the batch statistics instead.
    out_train = layer.forward(make(xp, x_np))
    assert_close(out_train, _reference_train(x_np, gamma, beta)[0], rtol=1e-10, atol=1e-12)
    assert not np.allclose(to_numpy(out), to_numpy(out_train))


def test_training_then_eval_uses_the_learned_statistics(xp, rng):
    layer = _layer(xp, rng, 2, momentum=0.0)  # momentum 0: running stats = last batch's
    x_np = rng.standard_normal((8, 2)) * 2 + 5
    out_train = layer.forward(make(xp, x_np))
    out_eval = layer.forward(make(xp, x_np), train_flg=False)
    assert_close(out_eval, to_numpy(out_train), rtol=1e-10)


def test_running_stats_left_none_are_zeros_like_gamma_in_state(xp, rng):
    layer = _layer(xp, rng, 3, "float32")
    gamma = layer.params["gamma"]
    # Made at construction (a compiled step needs them before its first call), as state.
    assert list(layer.state) == ["running_mean", "running_var"]
    assert layer.state["running_mean"] is layer.running_mean
    for stat in (layer.running_mean, layer.running_var):
        assert_same_dtype_device(stat, gamma)
        assert_close(stat, np.zeros(3), rtol=0)
    x_np = rng.standard_normal((2, 3))
    out = layer.forward(make(xp, x_np, "float32"), train_flg=False)
    # The book's zeros: out = gamma * x / sqrt(eps) + beta.
    expected = to_numpy(gamma) * x_np / np.sqrt(layer.eps) + to_numpy(layer.beta)
    assert_close(out, expected, rtol=1e-5)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 2)])
@pytest.mark.parametrize("train_flg", [True, False])
def test_gradients_match_numerical(xp, rng, shape, train_flg):
    channels = shape[1]
    layer = _layer(xp, rng, channels, running_mean=make(xp, rng.standard_normal(channels)),
                   running_var=make(xp, rng.uniform(0.5, 2.0, channels)))
    x = make(xp, rng.standard_normal(shape) * 2 + 1)
    assert_gradients_match(layer, x, forward=lambda lyr, inp: lyr.forward(inp, train_flg))


def test_gradients_against_hand_formulas(xp, rng):
    # dbeta = sum(dout), dgamma = sum(xn * dout); in eval mode dx = gamma * dout / std.
    x_np, dout_np = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    var_np = np.array([0.5, 2.0])
    layer = _layer(xp, rng, 2, running_mean=make(xp, np.zeros(2)), running_var=make(xp, var_np))
    layer.forward(make(xp, x_np), train_flg=False)
    dx = layer.backward(make(xp, dout_np))
    std = np.sqrt(var_np + EPS)
    assert_close(dx, to_numpy(layer.gamma) * dout_np / std, rtol=1e-12)
    assert_close(layer.dbeta, dout_np.sum(axis=0), rtol=1e-12)
    assert_close(layer.dgamma, (x_np / std * dout_np).sum(axis=0), rtol=1e-12)
    assert layer.dgamma is layer.grads["gamma"] and layer.dbeta is layer.grads["beta"]


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2)])
def test_agrees_with_torch_batch_norm(xp, rng, shape):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    channels, momentum, eps = shape[1], 0.9, 1e-5
    count = int(np.prod(shape)) // channels  # values per channel
    gamma_np = (1.0 + 0.5 * rng.standard_normal(channels)).astype(np.float32)
    beta_np = rng.standard_normal(channels).astype(np.float32)
    mean0, var0 = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    layer = BatchNormalization(make(xp, gamma_np, "float32"), make(xp, beta_np, "float32"),
                               momentum, make(xp, mean0, "float32"), make(xp, var0, "float32"),
                               eps=eps)
    t_mean = torch.tensor(mean0, dtype=torch.float32, device="cpu")
    t_var = torch.tensor(var0, dtype=torch.float32, device="cpu")
    for step in range(1, 4):
        x_np = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        dout_np = rng.standard_normal(shape).astype(np.float32)
        x_t = torch.tensor(x_np, requires_grad=True, device="cpu")
        g_t = torch.tensor(gamma_np, requires_grad=True, device="cpu")
        b_t = torch.tensor(beta_np, requires_grad=True, device="cpu")
        # torch's momentum is the weight of the new batch: 1 - ours.
        ref = F.batch_norm(x_t, t_mean, t_var, g_t, b_t, training=True,
                           momentum=1 - momentum, eps=eps)
        ref.backward(torch.tensor(dout_np, device="cpu"))
        out = layer.forward(make(xp, x_np, "float32"))
        dx = layer.backward(make(xp, dout_np, "float32"))
        assert rel_err(to_numpy(out), ref.detach().numpy()) <= 1e-5
        assert rel_err(to_numpy(dx), x_t.grad.numpy()) <= 1e-5
        assert rel_err(to_numpy(layer.dgamma), g_t.grad.numpy()) <= 1e-5
        assert rel_err(to_numpy(layer.dbeta), b_t.grad.numpy()) <= 1e-5
        assert rel_err(to_numpy(layer.running_mean), t_mean.numpy()) <= 1e-5
        # torch blends in the unbiased variance, we the biased one (count - 1) / count of it;
        # both recursions start from var0, whose share after `step` updates is momentum**step.
        start = momentum**step * var0
        expected_var = start + (count - 1) / count * (t_var.numpy() - start)
        assert rel_err(to_numpy(layer.running_var), expected_var) <= 1e-5
    # Eval mode against torch's eval mode with the same running statistics.
    x_np = rng.standard_normal(shape).astype(np.float32)
    dout_np = rng.standard_normal(shape).astype(np.float32)
    x_t = torch.tensor(x_np, requires_grad=True, device="cpu")
    g_t = torch.tensor(gamma_np, requires_grad=True, device="cpu")
    ours_var = torch.tensor(to_numpy(layer.running_var), device="cpu")
    ours_mean = torch.tensor(to_numpy(layer.running_mean), device="cpu")
    ref = F.batch_norm(x_t, ours_mean, ours_var, g_t, torch.tensor(beta_np, device="cpu"),
                       training=False, eps=eps)
    ref.backward(torch.tensor(dout_np, device="cpu"))
    out = layer.forward(make(xp, x_np, "float32"), train_flg=False)
    dx = layer.backward(make(xp, dout_np, "float32"))
    assert rel_err(to_numpy(out), ref.detach().numpy()) <= 1e-5
    assert rel_err(to_numpy(dx), x_t.grad.numpy()) <= 1e-5
    assert rel_err(to_numpy(layer.dgamma), g_t.grad.numpy()) <= 1e-5


@pytest.mark.parametrize("train_flg", [True, False])
def test_float32_kept_and_inputs_untouched(xp, rng, train_flg):
    mean_np, var_np = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    running_mean, running_var = make(xp, mean_np, "float32"), make(xp, var_np, "float32")
    layer = _layer(xp, rng, 3, "float32", running_mean=running_mean, running_var=running_var)
    x = make(xp, rng.standard_normal((2, 3, 2, 2)), "float32")
    dout = make(xp, rng.standard_normal((2, 3, 2, 2)), "float32")
    gamma_np, x_np, dout_np = to_numpy(layer.gamma).copy(), to_numpy(x).copy(), to_numpy(dout)
    out = layer.forward(x, train_flg)
    dx = layer.backward(dout)
    for array in (out, dx, layer.dgamma, layer.dbeta, layer.running_mean, layer.running_var):
        assert_same_dtype_device(array, x)
    np.testing.assert_array_equal(to_numpy(x), x_np)
    np.testing.assert_array_equal(to_numpy(dout), dout_np)
    np.testing.assert_array_equal(to_numpy(layer.gamma), gamma_np)
    # The caller's running statistics are never written to: updates rebind new arrays.
    np.testing.assert_array_equal(to_numpy(running_mean), mean_np.astype(np.float32))
    np.testing.assert_array_equal(to_numpy(running_var), var_np.astype(np.float32))
    assert (layer.running_mean is running_mean) == (not train_flg)


def test_no_warnings_or_nan_for_a_constant_batch(xp):
    # Zero variance: eps keeps the division finite, and the output is beta.
    layer = BatchNormalization(make(xp, [2.0, 3.0]), make(xp, [0.5, -1.0]))
    out = layer.forward(make(xp, np.full((4, 2), 7.0)))
    dx = layer.backward(make(xp, np.ones((4, 2))))
    assert_close(out, np.tile([0.5, -1.0], (4, 1)), rtol=0)
    assert np.isfinite(to_numpy(dx)).all()


def test_params_dict_and_book_attributes(xp, rng):
    layer = _layer(xp, rng, 3)
    assert set(layer.params) == {"gamma", "beta"} and set(layer.grads) == {"gamma", "beta"}
    new_gamma = make(xp, np.full(3, 2.0))
    layer.params["gamma"] = new_gamma  # an optimizer rebinding the parameter
    assert layer.gamma is new_gamma
    x_np = rng.standard_normal((4, 3))
    expected = _reference_train(x_np, np.full(3, 2.0), to_numpy(layer.beta))[0]
    assert_close(layer.forward(make(xp, x_np)), expected, rtol=1e-10, atol=1e-12)


def test_wrong_channel_count_is_refused_before_any_state_changes(xp, rng):
    layer = _layer(xp, rng, 3)
    with pytest.raises(ValueError, match=r"\(N, 3\).*got \(2, 4\)"):
        layer.forward(make(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="at least|got \\(3,\\)"):
        layer.forward(make(xp, np.zeros(3)))
    assert_close(layer.running_mean, np.zeros(3), rtol=0)
    assert layer.xn is None


def test_constructor_errors(xp):
    three, two = make(xp, np.ones(3)), make(xp, np.ones(2))
    with pytest.raises(ValueError, match="gamma and beta"):
        BatchNormalization(three, two)
    with pytest.raises(ValueError, match="running_var"):
        BatchNormalization(three, three, running_var=two)
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(three, three, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        BatchNormalization(three, three, eps=0.0)


def test_backward_errors(xp, rng):
    layer = _layer(xp, rng, 2)
    with pytest.raises(RuntimeError, match="BatchNormalization.backward.*before"):
        layer.backward(make(xp, np.ones((3, 2))))
    layer.forward(make(xp, rng.standard_normal((3, 2))))
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 2\)"):
        layer.backward(make(xp, np.ones((2, 2))))
    assert layer.dgamma is None
