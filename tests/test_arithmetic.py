"""MulLayer and AddLayer on arrays: values, broadcasting gradients, no mutation."""

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import assert_close, assert_same_dtype_device, make, to_numpy

from portablelayers import AddLayer, MulLayer
from portablelayers.gradcheck import numerical_gradient, relative_error

lazy_xp_function((MulLayer, "forward"), jax_jit=False)
lazy_xp_function((MulLayer, "backward"), jax_jit=False)
lazy_xp_function((AddLayer, "forward"), jax_jit=False)
lazy_xp_function((AddLayer, "backward"), jax_jit=False)


@pytest.mark.parametrize("Layer", [MulLayer, AddLayer])
def test_broadcast_gradients_take_each_input_shape(xp, rng, Layer):
    x_np, y_np = rng.standard_normal((3, 1)), rng.standard_normal(4)
    dout_np = rng.standard_normal((3, 4))
    layer = Layer()
    out = layer.forward(make(xp, x_np), make(xp, y_np))
    dx, dy = layer.backward(make(xp, dout_np))
    assert tuple(dx.shape) == (3, 1) and tuple(dy.shape) == (4,)
    if Layer is MulLayer:
        assert_close(out, x_np * y_np)
        assert_close(dx, (dout_np * y_np).sum(axis=1, keepdims=True))
        assert_close(dy, (dout_np * x_np).sum(axis=0))
    else:
        assert_close(out, x_np + y_np)
        assert_close(dx, dout_np.sum(axis=1, keepdims=True))
        assert_close(dy, dout_np.sum(axis=0))


@pytest.mark.parametrize("Layer", [MulLayer, AddLayer])
@pytest.mark.parametrize("shapes", [((2, 3), (2, 3)), ((2, 1, 3), (4, 1)), ((3,), (2, 2, 3))])
def test_gradients_match_numerical(xp, rng, Layer, shapes):
    x = make(xp, rng.standard_normal(shapes[0]))
    y = make(xp, rng.standard_normal(shapes[1]))
    layer = Layer()
    out = layer.forward(x, y)
    dout = make(xp, rng.standard_normal(tuple(out.shape)))
    dx, dy = layer.backward(dout)
    num_dx = numerical_gradient(lambda v: xp.sum(Layer().forward(v, y) * dout), x)
    num_dy = numerical_gradient(lambda v: xp.sum(Layer().forward(x, v) * dout), y)
    assert relative_error(dx, num_dx) <= 1e-6
    assert relative_error(dy, num_dy) <= 1e-6


def test_python_number_times_array(xp, rng):
    x_np = rng.standard_normal((2, 3))
    layer = MulLayer()
    out = layer.forward(make(xp, x_np, "float32"), 2.5)
    assert out.dtype == xp.float32
    assert_close(out, x_np * 2.5, rtol=1e-6)
    dx, dy = layer.backward(make(xp, np.ones((2, 3)), "float32"))
    assert_close(dx, np.full((2, 3), 2.5))
    assert tuple(dy.shape) == ()  # the scalar's gradient: summed over the broadcast
    assert_close(dy, x_np.sum(), rtol=1e-5)


def test_float32_stays_float32_and_inputs_are_untouched(xp, rng):
    x, y = make(xp, rng.standard_normal((2, 3)), "float32"), make(xp, rng.standard_normal(3),
                                                                  "float32")
    dout = make(xp, rng.standard_normal((2, 3)), "float32")
    before = [to_numpy(a).copy() for a in (x, y, dout)]
    for Layer in (MulLayer, AddLayer):
        layer = Layer()
        assert_same_dtype_device(layer.forward(x, y), x)
        for grad in layer.backward(dout):
            assert_same_dtype_device(grad, x)
    for a, b in zip((x, y, dout), before, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)


@pytest.mark.parametrize("Layer", [MulLayer, AddLayer])
def test_backward_before_forward_is_a_runtime_error(Layer):
    with pytest.raises(RuntimeError, match="before .*forward"):
        Layer().backward(1.0)
