"""Tanh, LeakyReLU, Identity, Flatten, SigmoidWithLoss and MeanSquaredError: values against
hand-computed references and torch, stability, gradients, dtype, errors."""

import math
import warnings

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from conftest import BACKEND
from support import (
    assert_close,
    assert_gradients_match,
    assert_same_dtype_device,
    make,
    rel_err,
    to_numpy,
)

from portablelayers import Flatten, Identity, LeakyReLU, MeanSquaredError, SigmoidWithLoss, Tanh

ELEMENTWISE = [Tanh, LeakyReLU, Identity]
LOSSES = [SigmoidWithLoss, MeanSquaredError]

for _cls in [*ELEMENTWISE, Flatten, *LOSSES]:
    lazy_xp_function((_cls, "forward"), jax_jit=False)
    lazy_xp_function((_cls, "backward"), jax_jit=False)


# ---- activations -------------------------------------------------------------------------

def test_tanh_values_and_gradient_by_hand(xp):
    x_np = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    layer = Tanh()
    expected = [math.tanh(v) for v in x_np]
    assert_close(layer.forward(make(xp, x_np)), expected, rtol=1e-14, atol=1e-300)
    assert_close(layer.backward(make(xp, np.full(5, 2.0))),
                 [2.0 * (1.0 - math.tanh(v) ** 2) for v in x_np], rtol=1e-13)


def test_leaky_relu_values_mask_and_gradient_by_hand(xp):
    layer = LeakyReLU(negative_slope=0.1)
    out = layer.forward(make(xp, [[1.0, -0.5], [-2.0, 3.0]]))
    assert_close(out, [[1.0, -0.05], [-0.2, 3.0]], rtol=1e-15)
    np.testing.assert_array_equal(to_numpy(layer.mask), [[False, True], [True, False]])
    dx = layer.backward(make(xp, [[5.0, 6.0], [7.0, 8.0]]))
    assert_close(dx, [[5.0, 0.6], [0.7, 8.0]], rtol=1e-15)
    assert LeakyReLU().negative_slope == 0.01


def test_identity_passes_values_through(xp, rng):
    x_np, dout_np = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    layer = Identity()
    assert_close(layer.forward(make(xp, x_np)), x_np, rtol=0)
    assert_close(layer.backward(make(xp, dout_np)), dout_np, rtol=0)


def test_tanh_and_leaky_relu_extreme_inputs_no_warning(xp):
    x = make(xp, [-1e4, -50.0, 0.0, 50.0, 1e4], "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tanh = Tanh()
        out, dx = tanh.forward(x), tanh.backward(make(xp, np.ones(5), "float32"))
        leaky = LeakyReLU().forward(x)
    np.testing.assert_array_equal(to_numpy(out), [-1.0, -1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(to_numpy(dx), [0.0, 0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(to_numpy(leaky), [-100.0, -0.5, 0.0, 50.0, 1e4], rtol=1e-6)


@pytest.mark.parametrize("name", ["tanh", "leaky_relu"])
def test_activations_agree_with_torch(xp, rng, name):
    torch = pytest.importorskip("torch")
    x_np = rng.standard_normal((4, 5)).astype(np.float32) * 3
    dout_np = rng.standard_normal((4, 5)).astype(np.float32)
    x_t = torch.tensor(x_np, requires_grad=True, device="cpu")
    if name == "tanh":
        layer, ref = Tanh(), torch.tanh(x_t)
    else:
        layer, ref = LeakyReLU(0.2), torch.nn.functional.leaky_relu(x_t, 0.2)
    ref.backward(torch.tensor(dout_np, device="cpu"))
    out = layer.forward(make(xp, x_np, "float32"))
    dx = layer.backward(make(xp, dout_np, "float32"))
    assert rel_err(to_numpy(out), ref.detach().numpy()) <= 1e-5
    assert rel_err(to_numpy(dx), x_t.grad.numpy()) <= 1e-5


def test_leaky_relu_gradient_at_zero_is_the_slope_like_torch(xp):
    torch = pytest.importorskip("torch")
    x_t = torch.zeros(3, requires_grad=True, device="cpu")
    torch.nn.functional.leaky_relu(x_t, 0.2).sum().backward()
    layer = LeakyReLU(0.2)
    layer.forward(make(xp, np.zeros(3), "float32"))
    assert_close(layer.backward(make(xp, np.ones(3), "float32")), x_t.grad.numpy(), rtol=0)


@pytest.mark.parametrize("Layer", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(5,), (2, 3, 2)])
def test_activation_gradients_match_numerical(xp, rng, Layer, shape):
    x_np = rng.standard_normal(shape)
    x_np[np.abs(x_np) < 0.05] += 0.1  # keep LeakyReLU away from its kink
    assert_gradients_match(Layer(), make(xp, x_np))


# ---- Flatten -----------------------------------------------------------------------------

def test_flatten_shapes_and_values(xp, rng):
    x_np = rng.standard_normal((2, 3, 2, 2))
    layer = Flatten()
    out = layer.forward(make(xp, x_np))
    assert tuple(out.shape) == (2, 12)
    assert_close(out, x_np.reshape(2, 12), rtol=0)
    dout_np = rng.standard_normal((2, 12))
    dx = layer.backward(make(xp, dout_np))
    assert tuple(dx.shape) == (2, 3, 2, 2)
    assert_close(dx, dout_np.reshape(2, 3, 2, 2), rtol=0)


def test_flatten_gradients_match_numerical(xp, rng):
    assert_gradients_match(Flatten(), make(xp, rng.standard_normal((2, 2, 3))))


def test_flatten_errors(xp):
    layer = Flatten()
    with pytest.raises(ValueError, match="at least 2 axes.*\\(4,\\)"):
        layer.forward(make(xp, np.zeros(4)))
    with pytest.raises(RuntimeError, match="Flatten.backward.*before"):
        layer.backward(make(xp, np.zeros((2, 6))))
    layer.forward(make(xp, np.zeros((2, 3, 2))))
    with pytest.raises(ValueError, match=r"\(2, 6\).*\(3, 4\)"):
        layer.backward(make(xp, np.zeros((3, 4))))


# ---- SigmoidWithLoss ---------------------------------------------------------------------

def _bce_by_hand(x, t):
    """Mean over elements of -(t log s + (1 - t) log(1 - s)), s = sigmoid(x), in floats."""
    terms = []
    for xi, ti in zip(np.ravel(x).tolist(), np.ravel(t).tolist(), strict=True):
        s = 1.0 / (1.0 + math.exp(-xi))
        terms.append(-(ti * math.log(s) + (1.0 - ti) * math.log(1.0 - s)))
    return math.fsum(terms) / len(terms)


def test_sigmoid_with_loss_against_hand_reference(xp, rng):
    x_np = rng.standard_normal((3, 2)) * 2
    t_np = np.array([[1.0, 0.0], [0.25, 1.0], [0.0, 0.5]])  # labels and probabilities
    layer = SigmoidWithLoss()
    loss = layer.forward(make(xp, x_np), make(xp, t_np))
    assert tuple(loss.shape) == ()
    assert_close(loss, _bce_by_hand(x_np, t_np), rtol=1e-12)
    sig = 1.0 / (1.0 + np.exp(-x_np))
    assert_close(layer.backward(), (sig - t_np) / 6, rtol=1e-12)
    assert_close(layer.backward(make(xp, 3.0)), 3.0 * (sig - t_np) / 6, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_with_loss_is_stable_for_huge_logits(xp, dtype):
    x = make(xp, [1e4, -1e4, 1e4, -1e4], dtype)
    t = make(xp, [1.0, 0.0, 0.0, 1.0], dtype)
    layer = SigmoidWithLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = layer.forward(x, t)
        dx = layer.backward()
    assert_close(loss, 5000.0, rtol=1e-7)  # terms 0, 0, 1e4, 1e4
    assert_close(dx, [0.0, 0.0, 0.25, -0.25], rtol=0)
    assert_same_dtype_device(loss, x)
    assert_same_dtype_device(dx, x)


def test_sigmoid_with_loss_agrees_with_torch(xp, rng):
    torch = pytest.importorskip("torch")
    x_np = (rng.standard_normal((5, 3)) * 3).astype(np.float32)
    t_np = rng.uniform(0, 1, (5, 3)).astype(np.float32)
    x_t = torch.tensor(x_np, requires_grad=True, device="cpu")
    t_t = torch.tensor(t_np, device="cpu")
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x_t, t_t)
    ref.backward()
    layer = SigmoidWithLoss()
    loss = layer.forward(make(xp, x_np, "float32"), make(xp, t_np, "float32"))
    assert rel_err(to_numpy(loss), ref.item()) <= 1e-5
    assert rel_err(to_numpy(layer.backward()), x_t.grad.numpy()) <= 1e-5


def test_sigmoid_with_loss_accepts_integer_or_bool_labels(xp, rng):
    x_np, t_np = rng.standard_normal(6), np.array([1, 0, 0, 1, 1, 0])
    by_float, by_int, by_bool = SigmoidWithLoss(), SigmoidWithLoss(), SigmoidWithLoss()
    expected = to_numpy(by_float.forward(make(xp, x_np), make(xp, t_np)))
    assert_close(by_int.forward(make(xp, x_np), xp.asarray(t_np)), expected, rtol=1e-15)
    assert_close(by_bool.forward(make(xp, x_np), xp.asarray(t_np == 1)), expected, rtol=1e-15)


def test_sigmoid_with_loss_errors(xp):
    layer = SigmoidWithLoss()
    with pytest.raises(RuntimeError, match="SigmoidWithLoss.backward.*before"):
        layer.backward()
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        layer.forward(make(xp, np.zeros((2, 3))), make(xp, np.zeros((3, 2))))
    assert layer.y is None
    if BACKEND != "dask":  # reading values would compute the graph: the check is skipped
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            layer.forward(make(xp, np.zeros(3)), make(xp, [0.0, 2.0, 1.0]))
        assert layer.y is None


# ---- MeanSquaredError --------------------------------------------------------------------

BOOK_Y = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]  # the book's example


def test_mean_squared_error_book_example(xp):
    t = make(xp, np.eye(10)[2])
    layer = MeanSquaredError()
    loss = layer.forward(make(xp, BOOK_Y), t)  # 1-D: one sample
    assert tuple(loss.shape) == ()
    assert_close(loss, 0.0975, rtol=1e-12)  # the value printed in the book
    assert_close(layer.backward(), np.array(BOOK_Y) - np.eye(10)[2], rtol=1e-15)


def test_mean_squared_error_averages_over_the_batch(xp, rng):
    y_np, t_np = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    layer = MeanSquaredError()
    loss = layer.forward(make(xp, y_np), make(xp, t_np))
    assert_close(loss, 0.5 * math.fsum(((y_np - t_np) ** 2).ravel()) / 4, rtol=1e-12)
    assert_close(layer.backward(make(xp, 2.0)), 2.0 * (y_np - t_np) / 4, rtol=1e-14)
    # Integer (one-hot) targets are taken in y's dtype.
    by_int = MeanSquaredError()
    labels = np.eye(3, dtype=np.int64)[[0, 2, 1, 1]]
    loss = by_int.forward(make(xp, y_np), xp.asarray(labels))
    assert_close(loss, 0.5 * ((y_np - labels) ** 2).sum() / 4, rtol=1e-12)


def test_mean_squared_error_agrees_with_torch(xp, rng):
    torch = pytest.importorskip("torch")
    y_np = rng.standard_normal((5, 3)).astype(np.float32)
    t_np = rng.standard_normal((5, 3)).astype(np.float32)
    y_t = torch.tensor(y_np, requires_grad=True, device="cpu")
    t_t = torch.tensor(t_np, device="cpu")
    ref = 0.5 * torch.nn.functional.mse_loss(y_t, t_t, reduction="sum") / 5
    ref.backward()
    layer = MeanSquaredError()
    loss = layer.forward(make(xp, y_np, "float32"), make(xp, t_np, "float32"))
    assert rel_err(to_numpy(loss), ref.item()) <= 1e-5
    assert rel_err(to_numpy(layer.backward()), y_t.grad.numpy()) <= 1e-5


def test_mean_squared_error_errors(xp):
    layer = MeanSquaredError()
    with pytest.raises(RuntimeError, match="MeanSquaredError.backward.*before"):
        layer.backward()
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        layer.forward(make(xp, np.zeros((2, 3))), make(xp, np.zeros((2, 4))))
    assert layer.y is None


@pytest.mark.parametrize("Layer", LOSSES)
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
def test_loss_gradients_match_numerical(xp, rng, Layer, shape):
    x_np = rng.standard_normal(shape)
    t = make(xp, rng.uniform(0, 1, shape))
    assert_gradients_match(Layer(), make(xp, x_np), forward=lambda lyr, inp: lyr.forward(inp, t))


# ---- all layers: dtype, device, no mutation, backward before forward ----------------------

@pytest.mark.parametrize("Layer", [*ELEMENTWISE, Flatten, *LOSSES])
def test_float32_kept_and_inputs_untouched(xp, rng, Layer):
    x = make(xp, rng.standard_normal((2, 3, 2)), "float32")
    t = make(xp, rng.uniform(0, 1, (2, 3, 2)), "float32")
    x_np, t_np = to_numpy(x).copy(), to_numpy(t).copy()
    layer = Layer()
    if Layer in LOSSES:
        out, dout = layer.forward(x, t), make(xp, 1.5, "float32")
    else:
        out = layer.forward(x)
        dout = make(xp, rng.standard_normal(tuple(out.shape)), "float32")
    dout_np = to_numpy(dout).copy()
    dx = layer.backward(dout)
    assert_same_dtype_device(out, x)
    assert_same_dtype_device(dx, x)
    assert tuple(dx.shape) == tuple(x.shape)
    for array, before in ((x, x_np), (t, t_np), (dout, dout_np)):
        np.testing.assert_array_equal(to_numpy(array), before)


@pytest.mark.parametrize("Layer", [*ELEMENTWISE, Flatten])
def test_backward_before_forward_is_a_runtime_error(xp, Layer):
    with pytest.raises(RuntimeError, match=f"{Layer.__name__}.backward.*before"):
        Layer().backward(make(xp, np.ones((2, 2))))
