"""ReLU and Sigmoid: values, stability, gradients, no mutation, dtype kept."""

import warnings

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import assert_close, assert_gradients_match, assert_same_dtype_device, make, to_numpy

from portablelayers import ReLU, Relu, Sigmoid

lazy_xp_function((ReLU, "forward"), jax_jit=False)
lazy_xp_function((ReLU, "backward"), jax_jit=False)
lazy_xp_function((Sigmoid, "forward"), jax_jit=False)
lazy_xp_function((Sigmoid, "backward"), jax_jit=False)


def test_relu_is_the_books_relu():
    assert Relu is ReLU


def test_relu_values_and_mask(xp):
    x_np = np.array([[1.0, -0.5], [-2.0, 3.0]])  # the chapter's example
    layer = ReLU()
    assert_close(layer.forward(make(xp, x_np)), [[1.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(to_numpy(layer.mask), x_np <= 0)
    assert_close(layer.backward(make(xp, [[5.0, 6.0], [7.0, 8.0]])), [[5.0, 0.0], [0.0, 8.0]])


def test_relu_backward_does_not_overwrite_dout(xp):
    # The book's ReLU.backward writes zeros into dout; ours returns a new array.
    layer = ReLU()
    layer.forward(make(xp, [[1.0, -0.5], [-2.0, 3.0]]))
    dout = make(xp, [[5.0, 6.0], [7.0, 8.0]])
    layer.backward(dout)
    np.testing.assert_array_equal(to_numpy(dout), [[5.0, 6.0], [7.0, 8.0]])


def test_sigmoid_values_against_math(xp, rng):
    x_np = rng.standard_normal((3, 4)) * 5
    expected = np.vectorize(lambda v: 1.0 / (1.0 + np.exp(-v)))(x_np)
    assert_close(Sigmoid().forward(make(xp, x_np)), expected, rtol=1e-12)


def test_sigmoid_extreme_inputs_no_warning_no_nan(xp):
    layer = Sigmoid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = layer.forward(make(xp, [-1000.0, -50.0, 0.0, 50.0, 1000.0], "float32"))
        dx = layer.backward(make(xp, np.ones(5), "float32"))
    out_np, dx_np = to_numpy(out), to_numpy(dx)
    assert not np.isnan(out_np).any() and not np.isnan(dx_np).any()
    np.testing.assert_array_equal(out_np[[0, 2, 4]], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(dx_np[[0, 4]], [0.0, 0.0])


@pytest.mark.parametrize("Layer", [ReLU, Sigmoid])
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 2, 3)])
def test_gradients_match_numerical(xp, rng, Layer, shape):
    x_np = rng.standard_normal(shape)
    x_np[np.abs(x_np) < 0.05] += 0.1  # keep ReLU away from its kink
    assert_gradients_match(Layer(), make(xp, x_np))


@pytest.mark.parametrize("Layer", [ReLU, Sigmoid])
def test_float32_kept_and_input_untouched(xp, rng, Layer):
    x = make(xp, rng.standard_normal((2, 3)), "float32")
    dout = make(xp, rng.standard_normal((2, 3)), "float32")
    x_before, dout_before = to_numpy(x).copy(), to_numpy(dout).copy()
    layer = Layer()
    assert_same_dtype_device(layer.forward(x), x)
    assert_same_dtype_device(layer.backward(dout), x)
    np.testing.assert_array_equal(to_numpy(x), x_before)
    np.testing.assert_array_equal(to_numpy(dout), dout_before)


def test_sigmoid_promotes_integer_input_to_the_default_float(xp):
    out = Sigmoid().forward(xp.asarray([0, 1, -1]))
    assert xp.isdtype(out.dtype, "real floating")
    assert_close(out, [0.5, 1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))], rtol=1e-6)


@pytest.mark.parametrize("Layer", [ReLU, Sigmoid])
def test_backward_before_forward_is_a_runtime_error(xp, Layer):
    with pytest.raises(RuntimeError, match=f"{Layer.__name__}.backward.*before"):
        Layer().backward(make(xp, [1.0]))
