"""im2col / col2im, Convolution, Pooling and AvgPooling on every backend.

References are independent of the code under test: NumPy loops over windows written out
by hand, hand-computed values, and numerical gradients.
"""

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from conftest import BACKEND
from support import assert_close, assert_gradients_match, assert_same_dtype_device, make, to_numpy

from portablelayers import AvgPooling, Convolution, Pooling
from portablelayers.functions import col2im, im2col

lazy_xp_function(im2col)
lazy_xp_function(col2im)
for _cls in (Convolution, Pooling, AvgPooling):
    lazy_xp_function((_cls, "forward"), jax_jit=False)
    lazy_xp_function((_cls, "backward"), jax_jit=False)

# (filter_h, filter_w, stride, pad): square and non-square, overlapping, padded (0-2),
# pool-like (stride = window), stride larger than the window
WINDOWS = [(3, 3, 1, 0), (2, 3, 1, 1), (3, 2, 2, 2), (1, 1, 1, 0), (2, 2, 2, 0), (3, 3, 2, 1),
           (2, 1, 3, 0)]


# --- hand-written references -----------------------------------------------------------

def out_size(size, filter_size, stride, pad):
    return (size + 2 * pad - filter_size) // stride + 1


def ref_im2col(x, fh, fw, stride, pad):
    """One row per window, windows in (n, y, x) order, each flattened in (C, FH, FW) order."""
    N, C, H, W = x.shape
    img = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = []
    for n in range(N):
        for y in range(out_size(H, fh, stride, pad)):
            for x0 in range(out_size(W, fw, stride, pad)):
                window = img[n, :, y * stride:y * stride + fh, x0 * stride:x0 * stride + fw]
                rows.append(window.reshape(-1))
    return np.array(rows)


def ref_col2im(col, shape, fh, fw, stride, pad):
    """Add every row back into its window of a padded image, then crop."""
    N, C, H, W = shape
    img = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    rows = iter(col)
    for n in range(N):
        for y in range(out_size(H, fh, stride, pad)):
            for x0 in range(out_size(W, fw, stride, pad)):
                window = next(rows).reshape(C, fh, fw)
                img[n, :, y * stride:y * stride + fh, x0 * stride:x0 * stride + fw] += window
    return img[:, :, pad:pad + H, pad:pad + W]


def ref_pool(x, ph, pw, stride, pad, reduce):
    """reduce(window) for every window of every channel; padding is NaN, which the reducer
    must skip (max) or count as zero (mean over the full window)."""
    N, C, H, W = x.shape
    img = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=np.nan)
    oh, ow = out_size(H, ph, stride, pad), out_size(W, pw, stride, pad)
    out = np.empty((N, C, oh, ow))
    for y in range(oh):
        for x0 in range(ow):
            window = img[:, :, y * stride:y * stride + ph, x0 * stride:x0 * stride + pw]
            out[:, :, y, x0] = reduce(window.reshape(N, C, -1))
    return out


def no_ties(rng, shape):
    """Distinct values 0.1 apart, shuffled: max pooling has one clear winner per window."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


# --- im2col / col2im ---------------------------------------------------------------------

@pytest.mark.parametrize("window", WINDOWS)
def test_im2col_matches_a_loop_over_windows(xp, rng, window):
    x_np = rng.standard_normal((2, 3, 5, 6))
    col = im2col(make(xp, x_np), *window)
    assert_close(col, ref_im2col(x_np, *window), rtol=0, atol=0)


@pytest.mark.parametrize("window", WINDOWS)
def test_col2im_matches_a_loop_and_is_the_adjoint_of_im2col(xp, rng, window):
    x_np = rng.standard_normal((2, 3, 5, 6))
    c_np = rng.standard_normal(ref_im2col(x_np, *window).shape)
    img = col2im(make(xp, c_np), x_np.shape, *window)
    assert_close(img, ref_col2im(c_np, x_np.shape, *window), rtol=1e-12)
    # <col2im(c), x> == <c, im2col(x)>, with both sides from the code under test
    lhs = np.sum(to_numpy(img) * x_np)
    rhs = np.sum(c_np * to_numpy(im2col(make(xp, x_np), *window)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("window", WINDOWS)
def test_col2im_without_writing_in_place_gives_the_same_image(rng, window):
    # NumPy writes stride-1 images in place; a read-only col takes the path JAX takes
    # (no array written), which must give the same sums.
    c_np = rng.standard_normal(ref_im2col(np.zeros((2, 3, 5, 6)), *window).shape)
    frozen = c_np.copy()
    frozen.flags.writeable = False
    np.testing.assert_allclose(col2im(frozen, (2, 3, 5, 6), *window),
                               ref_col2im(c_np, (2, 3, 5, 6), *window), rtol=1e-12)


def test_im2col_of_the_book_example_shape(xp, rng):
    # The book: x1 = np.random.rand(1, 3, 7, 7); im2col(x1, 5, 5) has shape (9, 75).
    col = im2col(make(xp, rng.random((1, 3, 7, 7))), 5, 5, stride=1, pad=0)
    assert tuple(col.shape) == (9, 75)
    col = im2col(make(xp, rng.random((10, 3, 7, 7))), 5, 5, stride=1, pad=0)
    assert tuple(col.shape) == (90, 75)


def test_im2col_col2im_keep_float32_and_device_and_do_not_mutate(xp, rng):
    x_np, c_np = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2 * 4 * 4, 2 * 4))
    x, c = make(xp, x_np, "float32"), make(xp, c_np, "float32")
    col = im2col(x, 2, 2, stride=1, pad=0)
    img = col2im(c, (2, 2, 5, 5), 2, 2, stride=1, pad=0)
    assert_same_dtype_device(col, x)
    assert_same_dtype_device(img, c)
    np.testing.assert_array_equal(to_numpy(x), x_np.astype(np.float32))
    np.testing.assert_array_equal(to_numpy(c), c_np.astype(np.float32))


@pytest.mark.parametrize("args, error, match", [
    (((2, 5, 5), 2, 2), ValueError, "4 axes"),
    (((1, 2, 5, 5), 6, 2), ValueError, "larger than the padded"),
    (((1, 2, 5, 5), 2, 8, 1, 1), ValueError, "larger than the padded"),
    (((1, 2, 5, 5), 2, 2, 0), ValueError, "stride must be >= 1"),
    (((1, 2, 5, 5), 2, 2, 1, -1), ValueError, "pad must be >= 0"),
    (((1, 2, 5, 5), 2.0, 2), TypeError, "filter_h must be an int"),
])
def test_im2col_bad_arguments(xp, args, error, match):
    shape, *rest = args
    with pytest.raises(error, match=match):
        im2col(make(xp, np.zeros(shape)), *rest)


def test_col2im_bad_col_shape(xp):
    with pytest.raises(ValueError, match=r"expects col of shape \(32, 8\)"):
        col2im(make(xp, np.zeros((32, 9))), (2, 2, 5, 5), 2, 2)


# --- Convolution -------------------------------------------------------------------------

def _conv(xp, rng, shape=(3, 2, 2, 3), stride=1, pad=0, dtype="float64"):
    W_np, b_np = rng.standard_normal(shape), rng.standard_normal(shape[0])
    return Convolution(make(xp, W_np, dtype), make(xp, b_np, dtype), stride, pad), W_np, b_np


def ref_conv(x, W, b, stride, pad):
    """Cross-correlation written as a loop over windows (independent of im2col)."""
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    img = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = out_size(H, FH, stride, pad), out_size(Wd, FW, stride, pad)
    out = np.empty((N, FN, oh, ow))
    for y in range(oh):
        for x0 in range(ow):
            window = img[:, :, y * stride:y * stride + FH, x0 * stride:x0 * stride + FW]
            out[:, :, y, x0] = np.einsum("nchw,fchw->nf", window, W) + b
    return out


def test_convolution_by_hand(xp):
    # One 2x2 filter summing its window, bias 1, on a 3x3 image of 1..9 (stride 1, pad 0).
    conv = Convolution(make(xp, np.ones((1, 1, 2, 2))), make(xp, np.array([1.0])))
    out = conv.forward(make(xp, np.arange(1.0, 10.0).reshape(1, 1, 3, 3)))
    assert_close(out, [[[[1 + 2 + 4 + 5 + 1, 2 + 3 + 5 + 6 + 1],
                         [4 + 5 + 7 + 8 + 1, 5 + 6 + 8 + 9 + 1]]]], rtol=1e-12)
    # Each input pixel gets the summed dout of every window that covers it.
    dx = conv.backward(make(xp, np.ones((1, 1, 2, 2))))
    assert_close(dx, [[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]], rtol=1e-12)
    assert_close(conv.db, [4.0], rtol=1e-12)
    assert_close(conv.dW, [[[[12, 16], [24, 28]]]], rtol=1e-12)


@pytest.mark.parametrize("kernel, stride, pad", [((2, 3), 1, 1), ((3, 2), 2, 0), ((3, 3), 2, 2)])
def test_convolution_forward_matches_a_loop(xp, rng, kernel, stride, pad):
    conv, W_np, b_np = _conv(xp, rng, (3, 2, *kernel), stride, pad)
    x_np = rng.standard_normal((2, 2, 5, 6))
    out = conv.forward(make(xp, x_np))
    assert_close(out, ref_conv(x_np, W_np, b_np, stride, pad), rtol=1e-12, atol=1e-12)


# Two cases cover batch 1 and 2, stride 1 and 2, pad 0 and 1, 3x2 and 2x3 kernels, and keep
# the gradient checks (one forward pass per element, twice) fast on Dask and JAX.
GRAD_CASES = [((1, 2, 5, 6), (3, 2), 2, 1), ((2, 2, 5, 5), (2, 3), 1, 0)]


@pytest.mark.parametrize("x_shape, kernel, stride, pad", GRAD_CASES)
def test_convolution_gradients_match_numerical(xp, rng, x_shape, kernel, stride, pad):
    conv, _, _ = _conv(xp, rng, (2, 2, *kernel), stride, pad)
    assert_gradients_match(conv, make(xp, rng.standard_normal(x_shape)))


def test_convolution_float32_stays_float32_and_nothing_is_mutated(xp, rng):
    conv, W_np, b_np = _conv(xp, rng, dtype="float32", stride=2, pad=1)
    x_np = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    x = make(xp, x_np, "float32")
    out = conv.forward(x)
    dout_np = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    dout = make(xp, dout_np, "float32")
    dx = conv.backward(dout)
    for arr in (out, dx, conv.dW, conv.db):
        assert_same_dtype_device(arr, x)
    for arr, original in ((x, x_np), (dout, dout_np), (conv.W, W_np), (conv.b, b_np)):
        np.testing.assert_array_equal(to_numpy(arr), original.astype(np.float32))


def test_convolution_mixed_dtypes(xp, rng):
    # float64 input through float32 weights: computed in float64, gradients in float32.
    conv, W_np, b_np = _conv(xp, rng, dtype="float32")
    x_np = rng.standard_normal((1, 2, 4, 4))
    out = conv.forward(make(xp, x_np))
    assert out.dtype == xp.float64
    conv.backward(make(xp, np.ones(tuple(out.shape))))
    assert conv.dW.dtype == xp.float32 and conv.db.dtype == xp.float32
    ref = ref_conv(x_np, W_np.astype(np.float32), b_np.astype(np.float32), 1, 0)
    assert_close(out, ref, rtol=1e-6)


def test_convolution_rebinding_params_is_used_by_the_next_forward(xp, rng):
    conv, _, b_np = _conv(xp, rng)
    x_np = rng.standard_normal((1, 2, 4, 4))
    new_W = rng.standard_normal((3, 2, 2, 3))
    conv.params["W"] = make(xp, new_W)  # what an optimizer does on JAX
    assert_close(conv.forward(make(xp, x_np)), ref_conv(x_np, new_W, b_np, 1, 0), rtol=1e-12)
    assert conv.W is conv.params["W"]


def test_convolution_bad_input_raises_before_state_changes(xp, rng):
    conv, _, _ = _conv(xp, rng, (3, 2, 2, 3), pad=0)
    x_ok = make(xp, rng.standard_normal((1, 2, 4, 4)))
    conv.forward(x_ok)
    saved = (conv.x, conv.col, conv.col_W)
    cases = [
        ((1, 3, 4, 4), "has 3 channels, but W of shape \\(3, 2, 2, 3\\) expects 2"),
        ((2, 4, 4), "4 axes"),
        ((1, 2, 4, 2), "larger than the padded input"),
    ]
    for shape, match in cases:
        with pytest.raises(ValueError, match=match):
            conv.forward(make(xp, np.zeros(shape)))
        assert all(now is before for now, before in zip((conv.x, conv.col, conv.col_W), saved,
                                                        strict=True))
    with pytest.raises(ValueError, match="dout of shape \\(1, 3, 3, 2\\)"):
        conv.backward(make(xp, np.zeros((1, 3, 2, 3))))
    assert conv.dW is None


@pytest.mark.parametrize("W_shape, b_shape, kwargs, match", [
    ((3, 2, 2), (3,), {}, "W of shape \\(FN, C, FH, FW\\)"),
    ((3, 2, 2, 2), (2,), {}, "b of shape"),
    ((3, 2, 2, 2), (3,), {"stride": 0}, "stride must be >= 1"),
    ((3, 2, 2, 2), (3,), {"pad": -1}, "pad must be >= 0"),
])
def test_convolution_bad_construction(xp, W_shape, b_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Convolution(make(xp, np.zeros(W_shape)), make(xp, np.zeros(b_shape)), **kwargs)


def test_convolution_backward_before_forward(xp, rng):
    conv, _, _ = _conv(xp, rng)
    with pytest.raises(RuntimeError, match="before Convolution.forward"):
        conv.backward(make(xp, np.zeros((1, 3, 2, 2))))


# --- Pooling and AvgPooling --------------------------------------------------------------

POOLS = [(2, 2, 2, 0), (3, 2, 2, 1), (2, 3, 1, 1)]


def test_pooling_signature_defaults():
    for cls in (Pooling, AvgPooling):
        layer = cls(2, 2)
        assert (layer.pool_h, layer.pool_w, layer.stride, layer.pad) == (2, 2, 2, 0)


@pytest.mark.parametrize("pool", POOLS)
def test_max_pooling_forward_matches_a_loop(xp, rng, pool):
    x_np = rng.standard_normal((2, 3, 5, 6))
    out = Pooling(*pool).forward(make(xp, x_np))
    assert_close(out, ref_pool(x_np, *pool, lambda w: np.nanmax(w, axis=-1)), rtol=0)


@pytest.mark.parametrize("pool", POOLS)
def test_avg_pooling_forward_counts_padding_as_zeros(xp, rng, pool):
    x_np = rng.standard_normal((2, 3, 5, 6))
    out = AvgPooling(*pool).forward(make(xp, x_np))
    ref = ref_pool(x_np, *pool, lambda w: np.nansum(w, axis=-1) / w.shape[-1])
    assert_close(out, ref, rtol=1e-12, atol=1e-15)


def test_pooling_by_hand(xp):
    x = make(xp, np.array([[[[1.0, 5.0, 2.0], [3.0, 4.0, 0.0], [-1.0, 6.0, 9.0]]]]))
    # 2x2 windows, stride 1: maxima and means of the four windows.
    assert_close(Pooling(2, 2, stride=1).forward(x), [[[[5, 5], [6, 9]]]], rtol=0)
    assert_close(AvgPooling(2, 2, stride=1).forward(x), [[[[13 / 4, 11 / 4], [12 / 4, 19 / 4]]]],
                 rtol=1e-12)
    # pad=1, stride 2: windows at the corners see one real value and three padded ones.
    assert_close(Pooling(2, 2, stride=2, pad=1).forward(x), [[[[1, 5], [3, 9]]]], rtol=0)
    assert_close(AvgPooling(2, 2, stride=2, pad=1).forward(x),
                 [[[[1 / 4, 7 / 4], [2 / 4, 19 / 4]]]], rtol=1e-12)


def test_max_pooling_padding_never_wins(xp):
    # All inputs very negative: padding (-inf) must lose to them, and get no gradient.
    x = make(xp, np.full((1, 1, 3, 3), -1e30))
    pool = Pooling(2, 2, stride=1, pad=1)
    out = pool.forward(x)
    assert_close(out, np.full((1, 1, 4, 4), -1e30), rtol=0)
    dx = pool.backward(make(xp, np.ones((1, 1, 4, 4))))
    assert float(np.sum(to_numpy(dx))) == 16.0  # every window's gradient reached the input


def test_max_pooling_ties_go_to_the_first_maximum(xp):
    pool = Pooling(2, 2, stride=2)
    pool.forward(make(xp, np.ones((1, 1, 2, 4))))
    dx = pool.backward(make(xp, np.array([[[[3.0, 5.0]]]])))
    assert_close(dx, [[[[3, 0, 5, 0], [0, 0, 0, 0]]]], rtol=0)


def test_max_pooling_backward_routes_to_the_argmax(xp, rng):
    x_np = no_ties(rng, (2, 2, 4, 4))
    pool = Pooling(2, 2, stride=2)
    pool.forward(make(xp, x_np))
    dout_np = rng.standard_normal((2, 2, 2, 2))
    dx = to_numpy(pool.backward(make(xp, dout_np)))
    windows = x_np.reshape(2, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)  # (.., y, x, 2, 2)
    is_max = windows == windows.max(axis=(-2, -1), keepdims=True)
    expected = np.where(is_max, dout_np[..., None, None], 0.0)
    np.testing.assert_array_equal(dx, expected.transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 4, 4))


@pytest.mark.parametrize("filters, stride, pad", [((4, 3, 3, 3), 1, 0), ((4, 3, 3, 2), 2, 1),
                                                  ((2, 3, 5, 5), 1, 2)])
@pytest.mark.parametrize("dtypes", [("float32",) * 3, ("float64",) * 3,
                                    ("float64", "float32", "float32"),
                                    ("float32", "float64", "float32")],
                         ids=["float32", "float64", "x64-W32", "x32-W64-dout32"])
def test_convolution_fast_path_equals_the_windows(xp, rng, monkeypatch, filters, stride, pad,
                                                  dtypes):
    # _backend.convolution is torch's conv2d (float input of one dtype once promoted),
    # elsewhere none: the same output, input gradient and parameter gradients (in their
    # parameters' dtypes) as im2col's windows and products, without the input gradient for
    # a first layer; a gradient of another dtype is promoted as the products promote it.
    from portablelayers._backend import convolution
    from portablelayers.layers import conv

    x_dtype, w_dtype, dout_dtype = dtypes
    x_np = rng.standard_normal((2, 3, 7, 8))
    W_np, b_np = rng.standard_normal(filters), rng.standard_normal(filters[0])

    def run(input_grad):
        layer = Convolution(make(xp, W_np, w_dtype), make(xp, b_np, w_dtype), stride, pad)
        out = layer.forward(make(xp, x_np, x_dtype))
        dout = make(xp, rng_dout.standard_normal(tuple(out.shape)), dout_dtype)
        return layer, out, layer.backward(dout, input_grad=input_grad)

    rng_dout = np.random.default_rng(5)
    fast, out, dx = run(True)
    if BACKEND != "torch":
        x = make(xp, x_np)
        assert convolution(xp, x, make(xp, W_np), make(xp, b_np), 1, 0) is None
        assert fast.col is not None
        return
    assert fast.col is None  # torch's kernel ran: no windows kept
    first, _, no_dx = run(False)  # a network's first layer: parameter gradients only
    assert no_dx is None
    monkeypatch.setattr(conv, "convolution", lambda *args: None)
    rng_dout = np.random.default_rng(5)
    slow, out_slow, dx_slow = run(True)
    slow_first, _, _ = run(False)
    assert slow.col is not None
    tol = 1e-5 if "float32" in (x_dtype, w_dtype) else 1e-12
    for a, b in ((out, out_slow), (dx, dx_slow), (fast.grads["W"], slow.grads["W"]),
                 (fast.grads["b"], slow.grads["b"]), (first.grads["W"], slow_first.grads["W"]),
                 (first.grads["b"], slow_first.grads["b"])):
        assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=tol, atol=tol)
    assert fast.grads["W"].dtype == getattr(xp, w_dtype)
    # float16 keeps the windows
    x16 = make(xp, x_np, "float16")
    assert convolution(xp, x16, make(xp, W_np, "float16"), make(xp, b_np, "float16"), 1, 0) is None


def test_convolution_backward_follows_the_path_of_the_last_forward(xp, rng):
    # float16 filters: float16 input takes im2col's windows everywhere, float32 input is
    # promoted to float32 (on torch, torch's kernels). One layer alternating the two gives
    # each backward of a fresh layer given the same forward.
    if not hasattr(xp, "float16"):
        pytest.skip(f"{xp.__name__} has no float16")
    W_np, b_np = rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    layer = Convolution(make(xp, W_np, "float16"), make(xp, b_np, "float16"))
    for dtype in ("float16", "float32", "float16"):
        x = make(xp, rng.standard_normal((2, 3, 5, 5)), dtype)
        dout = make(xp, rng.standard_normal((2, 2, 3, 3)), dtype)
        fresh = Convolution(make(xp, W_np, "float16"), make(xp, b_np, "float16"))
        assert_close(layer.forward(x), to_numpy(fresh.forward(x)), rtol=0, atol=0)
        assert (layer.col is None) == (fresh.col is None)
        assert_close(layer.backward(dout), to_numpy(fresh.backward(dout)), rtol=0, atol=0)
        assert_close(layer.dW, to_numpy(fresh.dW), rtol=0, atol=0)


def test_convolution_over_no_channels_gives_the_biases(xp):
    # A degenerate input without channels: every output is its filter's bias (torch's
    # conv2d would return no filters at all, so this keeps im2col's windows).
    if BACKEND == "dask":
        pytest.skip("Dask cannot reshape the empty windows (reduce() of an empty iterable)")
    conv = Convolution(make(xp, np.zeros((2, 0, 3, 3))), make(xp, np.array([1.0, -2.0])))
    out = conv.forward(make(xp, np.zeros((2, 0, 5, 5))))
    np.testing.assert_array_equal(to_numpy(out), np.broadcast_to([[[[1.0]], [[-2.0]]]],
                                                                  (2, 2, 3, 3)))
    dx = conv.backward(make(xp, np.ones((2, 2, 3, 3))))
    assert tuple(dx.shape) == (2, 0, 5, 5) and tuple(conv.dW.shape) == (2, 0, 3, 3)
    np.testing.assert_array_equal(to_numpy(conv.db), [18.0, 18.0])


@pytest.mark.parametrize("pool, stride", [((2, 2), 2), ((3, 3), 2), ((2, 3), 1)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pooling_fast_path_equals_the_window_slabs(xp, rng, monkeypatch, pool, stride,
                                                       dtype):
    # _backend.max_pool_indices is torch's max_pool2d (unpadded float input), elsewhere
    # none: the same maxima, winners and input gradient as the portable slabs, ties (ReLU's
    # zeros), NaN and -inf windows included; overlapping windows too. (Of several NaN in
    # one window, torch's kernel routes the gradient to the last, the slabs to the first.)
    from portablelayers._backend import max_pool_indices
    from portablelayers.layers import conv

    x_np = np.maximum(rng.standard_normal((2, 3, 7, 8)), 0.0)
    x_np[0, 0, :3, :3] = -np.inf
    x_np[1, 2, 1, 1], x_np[1, 2, 5, 6] = np.nan, np.nan  # no window holds both
    dout_shape = (2, 3, (7 - pool[0]) // stride + 1, (8 - pool[1]) // stride + 1)
    dout_np = rng.standard_normal(dout_shape)

    def run(layer):
        out = layer.forward(make(xp, x_np, dtype))
        return out, layer.backward(make(xp, dout_np, dtype))

    fast = Pooling(*pool, stride)
    out, dx = run(fast)
    if BACKEND != "torch":
        assert max_pool_indices(xp, make(xp, x_np), 2, 2, 2, 0) is None and fast.indices is None
        return
    assert fast.indices is not None and fast.winners is None  # torch's kernel ran
    monkeypatch.setattr(conv, "max_pool_indices", lambda *args: None)
    slabs = Pooling(*pool, stride)
    out_slabs, dx_slabs = run(slabs)
    assert slabs.winners is not None
    assert out.dtype == dx.dtype == out_slabs.dtype == getattr(xp, dtype)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(out_slabs))
    # overlapping windows add their gradients in another order: the last bit may differ
    np.testing.assert_allclose(to_numpy(dx), to_numpy(dx_slabs), rtol=1e-6, atol=0)
    # padding, and float16, keep the slabs
    assert max_pool_indices(xp, make(xp, x_np), 2, 2, 2, 1) is None
    assert max_pool_indices(xp, make(xp, x_np, "float16"), 2, 2, 2, 0) is None
    # A gradient of another dtype than the input's (torch's own backward kernel refuses it:
    # the scatter-add instead) comes back in its own dtype, as from the slabs.
    other = "float32" if dtype == "float64" else "float64"
    mixed = [Pooling(*pool, stride), Pooling(*pool, stride)]
    monkeypatch.undo()
    mixed[0].forward(make(xp, x_np, dtype))
    assert mixed[0].indices is not None
    monkeypatch.setattr(conv, "max_pool_indices", lambda *args: None)
    mixed[1].forward(make(xp, x_np, dtype))
    dx_fast, dx_slabs = (layer.backward(make(xp, dout_np, other)) for layer in mixed)
    assert dx_fast.dtype == dx_slabs.dtype == getattr(xp, other)
    np.testing.assert_allclose(to_numpy(dx_fast), to_numpy(dx_slabs), rtol=1e-6, atol=0)


@pytest.mark.parametrize("cls", [Pooling, AvgPooling])
@pytest.mark.parametrize("x_shape, kernel, stride, pad", GRAD_CASES)
def test_pooling_gradients_match_numerical(xp, rng, cls, x_shape, kernel, stride, pad):
    assert_gradients_match(cls(*kernel, stride, pad), make(xp, no_ties(rng, x_shape)))


@pytest.mark.parametrize("cls", [Pooling, AvgPooling])
def test_pooling_float32_stays_float32_and_nothing_is_mutated(xp, rng, cls):
    x_np = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    x = make(xp, x_np, "float32")
    pool = cls(3, 2, stride=2, pad=1)
    out = pool.forward(x)
    dout_np = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    dout = make(xp, dout_np, "float32")
    dx = pool.backward(dout)
    assert_same_dtype_device(out, x)
    assert_same_dtype_device(dx, x)
    assert tuple(dx.shape) == x_np.shape
    np.testing.assert_array_equal(to_numpy(x), x_np)
    np.testing.assert_array_equal(to_numpy(dout), dout_np)


@pytest.mark.parametrize("cls", [Pooling, AvgPooling])
def test_pooling_bad_input_raises_before_state_changes(xp, rng, cls):
    pool = cls(3, 2, stride=1, pad=1)
    pool.forward(make(xp, rng.standard_normal((1, 2, 4, 4))))
    saved_x = pool.x
    for shape, match in (((2, 4, 4), "4 axes"), ((1, 2, 0, 4), "larger than the padded")):
        with pytest.raises(ValueError, match=match):
            pool.forward(make(xp, np.zeros(shape)))
        assert pool.x is saved_x
    with pytest.raises(ValueError, match="dout of shape \\(1, 2, 4, 5\\)"):
        pool.backward(make(xp, np.zeros((1, 2, 4, 4))))


@pytest.mark.parametrize("cls", [Pooling, AvgPooling])
@pytest.mark.parametrize("args, error, match", [
    ((2, 2, 2, 2), ValueError, "pad must be smaller than the pool window"),
    ((3, 1, 1, 1), ValueError, "pad must be smaller than the pool window"),
    ((0, 2), ValueError, "pool_h must be >= 1"),
    ((2, 2, 0), ValueError, "stride must be >= 1"),
    ((2, 2.5), TypeError, "pool_w must be an int"),
])
def test_pooling_bad_construction(cls, args, error, match):
    with pytest.raises(error, match=match):
        cls(*args)


@pytest.mark.parametrize("cls", [Pooling, AvgPooling])
def test_pooling_backward_before_forward(xp, cls):
    with pytest.raises(RuntimeError, match=f"before {cls.__name__}.forward"):
        cls(2, 2).backward(make(xp, np.zeros((1, 1, 1, 1))))
