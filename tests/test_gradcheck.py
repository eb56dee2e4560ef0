"""numerical_gradient itself, against gradients known in closed form."""

import numpy as np
import pytest
from support import assert_close, make, to_numpy

from portablelayers.gradcheck import numerical_gradient, relative_error


def test_gradient_of_sum_of_cubes(xp, rng):
    x_np = rng.standard_normal((2, 3))
    x = make(xp, x_np)
    grad = numerical_gradient(lambda v: xp.sum(v**3), x)
    assert grad.dtype == xp.float64 and tuple(grad.shape) == (2, 3)
    # atol: the central difference's error is absolute (h^2 from the third derivative,
    # and the sum's rounding / h), about 1e-10; relative to a small 3 x^2 it can pass 1e-8
    assert_close(grad, 3 * x_np**2, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(to_numpy(x), x_np)  # x was not written to


def test_float32_input_is_differentiated_in_float64(xp):
    x = make(xp, [0.5, -1.25], "float32")
    grad = numerical_gradient(lambda v: xp.sum(xp.sin(v)), x)
    assert grad.dtype == xp.float64
    assert_close(grad, np.cos(np.array([0.5, -1.25])), rtol=1e-8)


def test_relative_error(xp):
    a, b = make(xp, [1.0, 2.0, -4.0]), make(xp, [1.0, 2.0, -4.004])
    assert abs(relative_error(a, b) - 0.001) < 1e-6
    assert relative_error(a, a) == 0.0


def test_relative_error_of_other_shapes_tiny_values_and_nothing(xp):
    with pytest.raises(ValueError, match=r"one shape, got \(3,\) and \(2, 3\)"):
        relative_error(xp.zeros(3), xp.zeros((2, 3)))
    tiny = xp.asarray([1e-305], dtype=xp.float64)  # normal: XLA flushes subnormals
    assert relative_error(xp.zeros(1, dtype=xp.float64), tiny) == 1.0  # not 1e-5 (floor 1e-300)
    assert relative_error(xp.zeros((0, 2)), xp.zeros((0, 2))) == 0.0
