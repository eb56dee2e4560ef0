"""Namespace errors: mixing libraries, non-arrays; and resolve_namespace."""

import numpy as np
import pytest
from conftest import BACKEND
from support import assert_close, make, to_numpy

from portablelayers import Affine, MulLayer, SoftmaxWithLoss
from portablelayers._backend import device, library_name, namespace, resolve_namespace


class ForeignArray:
    """A stand-in for an array of another Array API library."""

    shape, ndim, dtype = (2, 6), 2, "float64"

    def __array_namespace__(self, api_version=None):
        return ForeignNamespace  # any namespace other than NumPy's


class ForeignNamespace:
    __name__ = "foreign"


def _other_library_array(xp):
    """An array of a library different from the one under test."""
    return ForeignArray() if BACKEND == "numpy" else np.ones((2, 6))


def test_mixed_libraries_name_both(xp, rng):
    layer = Affine(make(xp, rng.standard_normal((6, 3))), make(xp, np.zeros(3)))
    foreign = _other_library_array(xp)
    names = [library_name(foreign), library_name(layer.W)]
    with pytest.raises(TypeError, match="same array library") as info:
        layer.forward(foreign)
    assert all(name in str(info.value) for name in names), str(info.value)
    # The layer is still usable afterwards.
    assert tuple(layer.forward(make(xp, np.ones((2, 6)))).shape) == (2, 3)


def test_mixed_libraries_in_mul_and_loss(xp):
    foreign = _other_library_array(xp)
    with pytest.raises(TypeError, match="same array library"):
        MulLayer().forward(make(xp, np.ones((2, 6))), foreign)
    with pytest.raises(TypeError, match="same array library"):
        SoftmaxWithLoss().forward(make(xp, np.ones((2, 6))), foreign)


def test_namespace_needs_an_array():
    with pytest.raises(TypeError, match="expected at least one array, got int, float"):
        namespace(1, 2.0)


def test_resolve_namespace_accepts_names_modules_and_namespaces(xp):
    assert resolve_namespace(xp) is xp
    assert resolve_namespace(BACKEND) is xp
    assert resolve_namespace(None).__name__ == "array_api_compat.numpy"
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        resolve_namespace("tensorflow")


def test_layers_keep_a_second_device(xp, rng):
    """array-api-strict simulates a second device: every output and gradient stays there."""
    if BACKEND != "array_api_strict":
        pytest.skip("a second device is simulated by array-api-strict only")
    from portablelayers import ReLU, Sigmoid
    from portablelayers._backend import device

    dev = xp.Device("device1")

    def on_dev(values):
        return xp.asarray(np.asarray(values), dtype=xp.float32, device=dev)

    affine = Affine(on_dev(rng.standard_normal((6, 3))), on_dev(np.zeros(3)))
    relu, sigmoid, loss_layer = ReLU(), Sigmoid(), SoftmaxWithLoss()
    x = on_dev(rng.standard_normal((4, 6)))
    t = xp.asarray(np.array([0, 2, 1, 1]), device=dev)
    loss = loss_layer.forward(sigmoid.forward(relu.forward(affine.forward(x))), t)
    dx = affine.backward(relu.backward(sigmoid.backward(loss_layer.backward())))
    mul_out = MulLayer().forward(x, 2.0)
    for array in (loss, dx, affine.dW, affine.db, mul_out):
        assert device(array) == dev and array.dtype == xp.float32


@pytest.mark.parametrize("shape", [(7, 3), (5, 4, 6, 2), (2, 3, 4), (0, 3, 2, 2)])
def test_per_channel_reductions_equal_the_plain_ones(xp, rng, shape):
    # The two-stage form (trailing axes, then the batch) is the same sum as one reduction.
    from portablelayers._backend import mean_per_channel, sum_per_channel

    x_np = rng.standard_normal(shape)
    axes = (0, *range(2, len(shape)))
    x = make(xp, x_np)
    assert_close(sum_per_channel(xp, x), x_np.sum(axis=axes), rtol=1e-12, atol=1e-12)
    kept = sum_per_channel(xp, x, keepdims=True)
    assert tuple(kept.shape) == tuple(1 if i != 1 else n for i, n in enumerate(shape))
    if shape[0]:
        assert_close(mean_per_channel(xp, x, keepdims=True),
                     x_np.mean(axis=axes, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_clip_below_equals_the_portable_maximum(xp, dtype):
    # The one dispatch point for max(x, number): torch's clamp, everywhere else the
    # standard's maximum; the same values, NaN and infinities included.
    from portablelayers._backend import clip_below

    values = np.array([-np.inf, -2.5, -0.0, 0.0, 0.5, 3.0, np.inf, np.nan])
    if dtype == "int32":
        values = np.array([-7, -1, 0, 1, 5])
    x = make(xp, values, dtype)
    for low in (0, -1.0 if dtype != "int32" else -1, 2):
        out = clip_below(xp, x, low)
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(to_numpy(out), to_numpy(xp.maximum(x, low)))
        np.testing.assert_array_equal(to_numpy(out), np.maximum(values, low).astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_add_equals_the_portable_product_and_sum(xp, rng, dtype):
    # The one dispatch point for Affine's x @ W + b: torch's addmm (which may add the bias
    # inside the product, so another rounding), everywhere else the two operations.
    from portablelayers._backend import matmul_add

    a, b, c = rng.standard_normal((5, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)
    out = matmul_add(xp, make(xp, a, dtype), make(xp, b, dtype), make(xp, c, dtype))
    assert out.dtype == getattr(xp, dtype) and tuple(out.shape) == (5, 3)
    assert_close(out, a @ b + c, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
    # mixed dtypes: the standard's promotion (torch's addmm would refuse them)
    mixed = matmul_add(xp, make(xp, a, "float64"), make(xp, b, "float64"),
                       make(xp, c, "float32"))
    assert mixed.dtype == xp.float64
    assert_close(mixed, a @ b + c.astype(np.float32), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf - inf, as asked
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_softmax_last_equals_the_shifted_formula(xp, dtype):
    # torch's one-kernel log_softmax against the formula every other library runs, computed
    # here in NumPy float64: large scores, a -inf score (-inf out), +inf and NaN (NaN rows).
    from portablelayers._backend import log_softmax_last

    rows = np.array([[1000.0, 1000.0, 999.0], [-np.inf, 0.0, 1.0], [3.0, -2.0, 0.5],
                     [np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0]])
    with np.errstate(invalid="ignore"):
        shifted = rows - rows.max(axis=-1, keepdims=True)
        expected = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    out = log_softmax_last(xp, make(xp, rows, dtype))
    assert out.dtype == getattr(xp, dtype)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-6 if dtype == "float32" else
                               1e-13, equal_nan=True)
    assert np.isnan(to_numpy(out)[3:]).all() and to_numpy(out)[1, 0] == -np.inf


def test_fused_subtract_scaled_is_torchs_one_kernel_update(xp, rng):
    # x -= scale * y in one torch kernel, written into x; elsewhere (and for another dtype)
    # no fast path, and the optimizers take the standard's two operations.
    from portablelayers._backend import fused_subtract_scaled

    x_np, y_np = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    expected = x_np - 0.25 * y_np
    for scale in (0.25, make(xp, 0.25, "float64")):
        x, y = make(xp, x_np.copy()), make(xp, y_np)  # a copy: torch may share x_np's memory
        out = fused_subtract_scaled(x, scale, y)
        if BACKEND != "torch":
            assert out is None
            continue
        assert out is x  # written into x, as `x -= scale * y` does
        assert_close(out, expected, rtol=1e-15)
    # float32 and a scale that rounds: the fused product may round once, so within an ulp
    for scale in (0.1, 3, make(xp, 0.1, "float32")):
        x32, y32 = x_np.astype(np.float32), y_np.astype(np.float32)
        out = fused_subtract_scaled(make(xp, x32.copy(), "float32"), scale,
                                    make(xp, y32, "float32"))
        if BACKEND == "torch":
            assert out.dtype == xp.float32
            assert_close(out, x32 - np.float32(to_numpy(scale) if hasattr(scale, "shape")
                                               else scale) * y32, rtol=3e-7, atol=3e-7)
        else:
            assert out is None
    assert fused_subtract_scaled(make(xp, x_np), 0.25, make(xp, y_np, "float32")) is None
    assert fused_subtract_scaled(make(xp, x_np), make(xp, 0.25, "float32"),
                                 make(xp, y_np)) is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_multiply_by_mask_equals_the_cast_product(xp, dtype):
    # torch multiplies by the boolean mask itself; everywhere else the mask is cast first.
    # Same values either way, NaN where an inf or NaN meets a False (computed here in NumPy).
    from portablelayers._backend import multiply_by_mask

    values = np.array([[1.5, -2.0, np.inf], [np.nan, 0.0, -np.inf]])
    mask = np.array([[True, False, False], [False, True, True]])
    with np.errstate(invalid="ignore"):
        expected = values * mask.astype(float)
    out = multiply_by_mask(xp, make(xp, values, dtype), make(xp, mask, "bool"))
    assert out.dtype == getattr(xp, dtype) and tuple(out.shape) == (2, 3)
    np.testing.assert_array_equal(to_numpy(out), expected.astype(dtype))


def test_as_array_like_copies_into_the_likes_library_dtype_and_device(xp):
    # A 0-D NumPy array too (torch refused one for a GPU); never sharing memory.
    from portablelayers._backend import as_array_like

    like = make(xp, np.zeros((2, 3)), "float32")
    count = make(xp, 0, "int32")
    host = np.arange(6.0).reshape(2, 3)
    out = as_array_like(host, like)
    assert out.dtype == like.dtype and device(out) == device(like)
    host[0, 0] = 99.0
    assert to_numpy(out)[0, 0] == 0.0  # a copy
    step = as_array_like(np.array(7, dtype=np.int64), count)
    assert step.dtype == count.dtype and step.shape == () and int(to_numpy(step)) == 7
    assert device(step) == device(count)


def test_reads_wait_for_a_device_only_on_a_gpu(xp):
    # Where an eager step skips the layers' value checks: CuPy, and torch or JAX on a GPU.
    from conftest import DEVICE

    from portablelayers._backend import reads_wait_for_a_device

    on_gpu = BACKEND == "cupy" or DEVICE not in (None, "cpu")
    assert reads_wait_for_a_device(make(xp, [1.0, 2.0])) == on_gpu
    assert reads_wait_for_a_device(np.ones(2)) is False
