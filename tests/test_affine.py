"""Affine: values, N-D and 1-D inputs, gradients, params rebinding, errors."""

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import assert_close, assert_gradients_match, assert_same_dtype_device, make, to_numpy

from portablelayers import Affine

lazy_xp_function((Affine, "forward"), jax_jit=False)
lazy_xp_function((Affine, "backward"), jax_jit=False)


def _affine(xp, rng, d=6, m=3, dtype="float64"):
    W_np, b_np = rng.standard_normal((d, m)), rng.standard_normal(m)
    return Affine(make(xp, W_np, dtype), make(xp, b_np, dtype)), W_np, b_np


def test_forward_backward_values(xp, rng):
    layer, W_np, b_np = _affine(xp, rng)
    x_np, dout_np = rng.standard_normal((4, 6)), rng.standard_normal((4, 3))
    assert_close(layer.forward(make(xp, x_np)), x_np @ W_np + b_np, rtol=1e-12)
    dx = layer.backward(make(xp, dout_np))
    assert_close(dx, dout_np @ W_np.T, rtol=1e-12)
    assert_close(layer.dW, x_np.T @ dout_np, rtol=1e-12)
    assert_close(layer.db, dout_np.sum(axis=0), rtol=1e-12)
    assert layer.dW is layer.grads["W"] and layer.W is layer.params["W"]


def test_nd_input_is_flattened_and_dx_keeps_its_shape(xp, rng):
    layer, W_np, b_np = _affine(xp, rng)
    x_np = rng.standard_normal((4, 2, 3))
    out = layer.forward(make(xp, x_np))
    assert_close(out, x_np.reshape(4, 6) @ W_np + b_np, rtol=1e-12)
    assert tuple(layer.backward(make(xp, np.ones((4, 3)))).shape) == (4, 2, 3)


def test_1d_input_is_one_sample(xp, rng):
    layer, W_np, b_np = _affine(xp, rng)
    x_np = rng.standard_normal(6)
    out = layer.forward(make(xp, x_np))
    assert tuple(out.shape) == (3,)
    assert_close(out, x_np @ W_np + b_np, rtol=1e-12)
    dout_np = rng.standard_normal(3)
    dx = layer.backward(make(xp, dout_np))
    assert tuple(dx.shape) == (6,)
    assert_close(layer.dW, np.outer(x_np, dout_np), rtol=1e-12)


@pytest.mark.parametrize("x_shape", [(4, 6), (1, 6), (3, 2, 3), (2, 1, 2, 3), (6,)])
def test_gradients_match_numerical(xp, rng, x_shape):
    layer, _, _ = _affine(xp, rng)
    assert_gradients_match(layer, make(xp, rng.standard_normal(x_shape)))


def test_rebinding_params_is_used_by_the_next_forward(xp, rng):
    layer, _, b_np = _affine(xp, rng)
    x_np = rng.standard_normal((2, 6))
    new_W = rng.standard_normal((6, 3))
    layer.params["W"] = make(xp, new_W)  # what an optimizer does on JAX
    assert_close(layer.forward(make(xp, x_np)), x_np @ new_W + b_np, rtol=1e-12)
    layer.W = make(xp, 2 * new_W)  # the book's attribute access rebinds the same entry
    assert_close(layer.params["W"], 2 * new_W)
    assert_close(layer.forward(make(xp, x_np)), x_np @ (2 * new_W) + b_np, rtol=1e-12)


def test_float32_kept_and_inputs_untouched(xp, rng):
    layer, _, _ = _affine(xp, rng, dtype="float32")
    x = make(xp, rng.standard_normal((4, 6)), "float32")
    dout = make(xp, rng.standard_normal((4, 3)), "float32")
    copies = [to_numpy(a).copy() for a in (x, dout, layer.W, layer.b)]
    assert_same_dtype_device(layer.forward(x), x)
    assert_same_dtype_device(layer.backward(dout), x)
    assert_same_dtype_device(layer.dW, x)
    assert_same_dtype_device(layer.db, x)
    for a, before in zip((x, dout, layer.W, layer.b), copies, strict=True):
        np.testing.assert_array_equal(to_numpy(a), before)


def test_feature_mismatch_names_both_shapes_and_keeps_state(xp, rng):
    layer, _, _ = _affine(xp, rng)
    good = make(xp, rng.standard_normal((2, 6)))
    layer.forward(good)
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(6, 3\)"):
        layer.forward(make(xp, rng.standard_normal((2, 5))))
    assert tuple(layer.x.shape) == (2, 6)  # the failed call left the saved input alone
    assert tuple(layer.backward(make(xp, np.ones((2, 3)))).shape) == (2, 6)


def test_constructor_checks_shapes(xp):
    with pytest.raises(ValueError, match="W of shape"):
        Affine(make(xp, np.ones((2, 3))), make(xp, np.ones(2)))


def test_backward_before_forward_is_a_runtime_error(xp, rng):
    layer, _, _ = _affine(xp, rng)
    with pytest.raises(RuntimeError, match="before Affine.forward"):
        layer.backward(make(xp, np.ones((2, 3))))
