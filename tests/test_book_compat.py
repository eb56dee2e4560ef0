"""The book's own patterns (chapters 5 to 8), written as the book writes them, on our layers.

Each test follows a script of "Deep Learning from Scratch" with only its imports changed:
a network kept in an OrderedDict of layers whose numerical gradient uses the book's
`numerical_gradient(lambda W: self.loss(x, t), self.params["W1"])`, labels shaped (N, 1)
(ch07/gradient_check.py), a filter applied with a scalar bias (ch07/apply_filter.py) and the
helpers of `common/util.py`. References are independent: backpropagation checked against
central differences, hand-computed values, and NumPy formulas written out here.
"""

import pickle
from collections import OrderedDict

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from conftest import BACKEND
from support import GRAD_TOL, assert_close, assert_same_dtype_device, make, to_numpy

from portablelayers import Affine, Convolution, Relu, SoftmaxWithLoss, util
from portablelayers.functions import col2im, cross_entropy_error, im2col, one_hot_targets
from portablelayers.gradcheck import numerical_gradient, relative_error
from portablelayers.nets import TwoLayerNet

lazy_xp_function(one_hot_targets)
lazy_xp_function(cross_entropy_error)
lazy_xp_function(util.smooth_curve, jax_jit=False)
lazy_xp_function(util.shuffle_dataset, jax_jit=False)

# JAX arrays cannot be written and Dask's are lazy: numerical_gradient perturbs copies there,
# so an f that ignores its argument (the book's idiom) cannot see the perturbation.
IN_PLACE = BACKEND not in ("jax", "dask")
needs_in_place = pytest.mark.skipif(
    not IN_PLACE, reason=f"{BACKEND} arrays are not written in place: f must use its argument")


class BookTwoLayerNet:
    """ch05/two_layer_net.py as the book writes it, with the test's namespace for arrays."""

    def __init__(self, xp, input_size, hidden_size, output_size, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {}
        self.params["W1"] = make(xp, 0.5 * rng.standard_normal((input_size, hidden_size)))
        self.params["b1"] = make(xp, 0.1 * rng.standard_normal(hidden_size))
        self.params["W2"] = make(xp, 0.5 * rng.standard_normal((hidden_size, output_size)))
        self.params["b2"] = make(xp, 0.1 * rng.standard_normal(output_size))

        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self.lastLayer.forward(y, t)

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t)  # noqa: E731  (the book's own line)

        grads = {}
        grads["W1"] = numerical_gradient(loss_W, self.params["W1"])
        grads["b1"] = numerical_gradient(loss_W, self.params["b1"])
        grads["W2"] = numerical_gradient(loss_W, self.params["W2"])
        grads["b2"] = numerical_gradient(loss_W, self.params["b2"])
        return grads

    def gradient(self, x, t):
        self.loss(x, t)
        dout = 1
        dout = self.lastLayer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)
        grads = {}
        grads["W1"], grads["b1"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W2"], grads["b2"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads


def _labels(xp, kind, labels, num_classes):
    labels = np.asarray(labels)
    if kind == "indices":
        return xp.asarray(labels)
    if kind == "column":  # ch07/gradient_check.py: T = np.array([1]).reshape((1, 1))
        return xp.asarray(labels.reshape(-1, 1))
    return make(xp, np.eye(num_classes)[labels])


# --- numerical_gradient: the book's in-place contract ------------------------------------

@needs_in_place
@pytest.mark.parametrize("kind", ["indices", "column", "one_hot"])
def test_book_network_numerical_gradient_matches_backprop(xp, rng, kind):
    net = BookTwoLayerNet(xp, 4, 5, 3)
    x = make(xp, rng.standard_normal((2, 4)))
    t = _labels(xp, kind, [2, 0], 3)
    before = {k: to_numpy(v).copy() for k, v in net.params.items()}

    grad_numerical = net.numerical_gradient(x, t)
    grad_backprop = net.gradient(x, t)

    for key in ("W1", "b1", "W2", "b2"):
        assert float(np.max(np.abs(to_numpy(grad_numerical[key])))) > 1e-3  # not all zeros
        assert relative_error(grad_numerical[key], grad_backprop[key]) <= GRAD_TOL, key
        np.testing.assert_array_equal(to_numpy(net.params[key]), before[key])  # restored


@needs_in_place
def test_f_that_ignores_its_argument_sees_the_perturbation(xp):
    # The small case: the book gives [[2, 4], [6, 8]].
    W = make(xp, [[1.0, 2.0], [3.0, 4.0]])
    grad = numerical_gradient(lambda w: xp.sum(W**2), W)
    assert_close(grad, [[2.0, 4.0], [6.0, 8.0]], rtol=1e-8)
    np.testing.assert_array_equal(to_numpy(W), [[1.0, 2.0], [3.0, 4.0]])


@needs_in_place
def test_f_gets_the_float64_array_itself(xp):
    W = make(xp, [0.5, -1.5, 2.0])
    seen = []
    numerical_gradient(lambda w: seen.append(w is W) or 0.0, W)
    assert seen == [True] * 6  # two calls per element, each with W itself (the book's f(x))


@needs_in_place
def test_float32_shared_array_is_perturbed_in_its_own_dtype(xp):
    W = make(xp, [[0.5, -1.25], [3.0, 20.0]], "float32")
    original = to_numpy(W).copy()
    # f reads the shared float32 array (in float64) and ignores its argument.
    grad = numerical_gradient(lambda w: xp.sum(xp.astype(W, xp.float64) ** 3), W)
    assert grad.dtype == xp.float64
    assert_close(grad, 3 * original.astype(np.float64) ** 2, rtol=1e-6)
    assert W.dtype == xp.float32
    np.testing.assert_array_equal(to_numpy(W), original)


@needs_in_place
def test_array_is_restored_exactly_when_f_raises(xp):
    values = np.array([0.1, -0.0, 1e-300, 7.0])
    x = make(xp, values)
    calls = []

    def f(w):
        calls.append(1)
        if len(calls) == 3:  # in the middle of the second element
            raise RuntimeError("boom")
        return xp.sum(w)

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    restored = to_numpy(x)
    np.testing.assert_array_equal(restored, values)
    assert np.signbit(restored[1])  # -0.0 stays -0.0: restored from a copy, not recomputed


def test_f_that_uses_its_argument_works_on_every_backend(xp, rng):
    # The portable idiom (also where arrays are immutable or lazy): rebind the parameter
    # inside f. On JAX and Dask numerical_gradient hands f new arrays, on the others x.
    net = BookTwoLayerNet(xp, 3, 4, 3)
    x = make(xp, rng.standard_normal((2, 3)))
    t = _labels(xp, "column", [1, 2], 3)
    grad_backprop = net.gradient(x, t)
    for key, (layer_name, name) in {"W1": ("Affine1", "W"), "b2": ("Affine2", "b")}.items():
        layer = net.layers[layer_name]
        original = layer.params[name]

        def loss_at(w, layer=layer, name=name):
            layer.params[name] = w
            return net.loss(x, t)

        grad = numerical_gradient(loss_at, original)
        layer.params[name] = original
        assert relative_error(grad, grad_backprop[key]) <= GRAD_TOL, key
        np.testing.assert_array_equal(to_numpy(original), to_numpy(net.params[key]))


# --- labels shaped (N, 1) ----------------------------------------------------------------

def _ref_softmax_loss(x, labels):
    shifted = x - x.max(axis=1, keepdims=True)
    log_y = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(log_y[np.arange(len(labels)), labels])


def test_column_labels_are_class_indices_in_softmax_with_loss(xp, rng):
    x_np = rng.standard_normal((4, 3))
    labels = np.array([2, 0, 1, 2])
    layer = SoftmaxWithLoss()
    loss = layer.forward(make(xp, x_np), xp.asarray(labels.reshape(4, 1)))
    assert tuple(loss.shape) == ()
    assert_close(loss, _ref_softmax_loss(x_np, labels), rtol=1e-12)
    y = np.exp(x_np) / np.exp(x_np).sum(axis=1, keepdims=True)
    assert_close(layer.backward(), (y - np.eye(3)[labels]) / 4, rtol=1e-12)


def test_column_labels_are_class_indices_in_cross_entropy_error(xp, rng):
    y_np = rng.uniform(0.05, 1.0, (3, 4))
    y_np /= y_np.sum(axis=1, keepdims=True)
    labels = np.array([3, 1, 0])
    expected = -np.mean(np.log(y_np[np.arange(3), labels] + 1e-7))
    loss = cross_entropy_error(make(xp, y_np), xp.asarray(labels.reshape(3, 1)))
    assert_close(loss, expected, rtol=1e-12)
    # One sample: y (C,) with one label of shape (1,), as the book accepts.
    single = cross_entropy_error(make(xp, y_np[1]), xp.asarray(labels[1:2]))
    assert_close(single, -np.log(y_np[1, 1] + 1e-7), rtol=1e-12)


def test_column_labels_keep_their_checks(xp, rng):
    scores = make(xp, rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match="integer dtype"):
        one_hot_targets(make(xp, [[1.0], [0.0], [2.0]]), scores)
    with pytest.raises(ValueError, match="one label per sample"):
        one_hot_targets(xp.asarray(np.array([[1], [0]])), scores)
    # Label values are not read on Dask (it would compute) nor under jax.jit, which the
    # lazy_xp_function tag above applies to one_hot_targets here.
    if BACKEND not in ("dask", "jax"):
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            one_hot_targets(xp.asarray(np.array([[1], [4], [0]])), scores)


# --- ch07/apply_filter.py: a filter with a scalar bias ------------------------------------

def _ref_filter(img, w, b):
    """Cross-correlation of one (H, W) image with one (FH, FW) filter, 'valid', plus b."""
    FH, FW = w.shape
    H, W = img.shape
    out = np.empty((H - FH + 1, W - FW + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(img[i:i + FH, j:j + FW] * w) + b
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bias", [0, 0.5, "0-D array"])
def test_filter_with_a_scalar_bias(xp, rng, dtype, bias):
    img_np = rng.uniform(0.0, 1.0, (6, 7))
    w_np = rng.standard_normal((3, 3))
    w = make(xp, w_np.reshape(1, 1, 3, 3), dtype)
    b = make(xp, 0.25, dtype) if bias == "0-D array" else bias
    b_value = 0.25 if bias == "0-D array" else bias

    conv_layer = Convolution(w, b)  # the book: w = w.reshape(1, *w.shape); b = 0
    out = conv_layer.forward(make(xp, img_np.reshape(1, 1, 6, 7), dtype))

    assert tuple(conv_layer.params["b"].shape) == (1,)
    assert_same_dtype_device(conv_layer.params["b"], w)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert_close(out, _ref_filter(img_np, w_np, b_value).reshape(1, 1, 4, 5), rtol=rtol,
                 atol=1e-6)
    dout = make(xp, rng.standard_normal((1, 1, 4, 5)), dtype)
    conv_layer.backward(dout)
    assert_close(conv_layer.db, [to_numpy(dout).sum()], rtol=rtol)


def test_scalar_bias_is_broadcast_to_every_filter(xp, rng):
    w = make(xp, rng.standard_normal((3, 2, 2, 2)))
    layer = Convolution(w, 1)
    assert_close(layer.b, np.ones(3))
    # A new array per layer, not a view of a shared scalar: rebinding one entry is local.
    layer.params["b"] = layer.params["b"] * 2.0
    assert_close(Convolution(w, 1).b, np.ones(3))


@pytest.mark.parametrize("bias", [True, "0", None])
def test_bias_that_is_not_a_number_is_refused(xp, rng, bias):
    w = make(xp, rng.standard_normal((2, 1, 3, 3)))
    with pytest.raises(TypeError, match="bias must be an array or a real number"):
        Convolution(w, bias)


# --- common/util.py ----------------------------------------------------------------------

def _ref_smooth_curve(x):
    """The book's smooth_curve, with NumPy's own Kaiser window and convolution."""
    window_len = 11
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


@pytest.mark.parametrize("n", [11, 12, 40])
def test_smooth_curve_of_a_list_of_losses_equals_the_books(n, rng):
    losses = [float(v) for v in rng.uniform(0.0, 2.5, n)]
    smoothed = util.smooth_curve(losses)
    assert isinstance(smoothed, np.ndarray) and smoothed.dtype == np.float64
    np.testing.assert_allclose(smoothed, _ref_smooth_curve(np.array(losses)), rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_smooth_curve_of_an_array_stays_in_its_namespace(xp, rng, dtype):
    values = rng.uniform(0.0, 2.5, 30)
    x = make(xp, values, dtype)
    smoothed = util.smooth_curve(x)
    assert_same_dtype_device(smoothed, x)
    rtol = 1e-13 if dtype == "float64" else 1e-6
    assert_close(smoothed, _ref_smooth_curve(to_numpy(x).astype(np.float64)), rtol=rtol)
    # A list of 0-D arrays (a loop appending each loss) gives the same curve.
    as_list = [x[i] for i in range(30)]
    assert_close(util.smooth_curve(as_list), to_numpy(smoothed), rtol=1e-12)


def test_smooth_curve_keeps_a_constant_curve_and_refuses_short_ones():
    np.testing.assert_allclose(util.smooth_curve([0.7] * 15), np.full(15, 0.7), rtol=1e-14)
    with pytest.raises(ValueError, match="at least 11 values, got 10"):
        util.smooth_curve([1.0] * 10)


@pytest.mark.parametrize("x_shape", [(20, 3), (20, 1, 2, 2)])
def test_shuffle_dataset_permutes_samples_and_labels_together(xp, x_shape):
    n = x_shape[0]
    rows = np.arange(n * int(np.prod(x_shape[1:])), dtype=np.float64).reshape(x_shape)
    labels = np.arange(n) * 7
    x, t = make(xp, rows), xp.asarray(labels)

    xs, ts = util.shuffle_dataset(x, t, seed=3)

    xs_np, ts_np = to_numpy(xs), to_numpy(ts)
    order = ts_np // 7  # where each shuffled sample came from
    assert sorted(order.tolist()) == list(range(n))  # a permutation
    assert order.tolist() != list(range(n))  # and not the identity
    np.testing.assert_array_equal(xs_np, rows[order])  # each x row kept its label
    assert_same_dtype_device(xs, x)
    np.testing.assert_array_equal(to_numpy(x), rows)  # the inputs are unchanged
    again = util.shuffle_dataset(x, t, seed=3)[1]
    np.testing.assert_array_equal(to_numpy(again), ts_np)  # a seed fixes the order
    other = util.shuffle_dataset(x, t, seed=4)[1]
    assert to_numpy(other).tolist() != ts_np.tolist()


def test_shuffle_dataset_needs_matching_lengths(xp):
    with pytest.raises(ValueError, match="same known first axis"):
        util.shuffle_dataset(make(xp, np.zeros((4, 2))), xp.asarray(np.arange(3)))


@pytest.mark.parametrize("args, expected", [
    ((28, 5), 24),          # SimpleConvNet's 28x28 input, 5x5 filters
    ((28, 3, 1, 1), 28),    # DeepConvNet's "same" padding
    ((14, 3, 1, 2), 16),    # DeepConvNet's conv4 (pad 2)
    ((24, 2, 2), 12),       # 2x2 pooling, stride 2
    ((7, 3, 2, 1), 4),      # a stride that does not divide: floor, as im2col
])
def test_conv_output_size(args, expected):
    assert util.conv_output_size(*args) == expected


def test_conv_output_size_is_what_im2col_produces(xp, rng):
    x = make(xp, rng.standard_normal((1, 1, 9, 7)))
    for fh, fw, stride, pad in [(3, 3, 2, 1), (2, 4, 3, 0), (5, 1, 1, 2)]:
        rows = im2col(x, fh, fw, stride, pad).shape[0]
        assert rows == (util.conv_output_size(9, fh, stride, pad)
                        * util.conv_output_size(7, fw, stride, pad))


def test_util_exports_the_books_im2col_and_col2im():
    assert util.im2col is im2col and util.col2im is col2im
    assert set(util.__all__) >= {"smooth_curve", "shuffle_dataset", "conv_output_size",
                                 "im2col", "col2im"}


# --- the book's pickles ------------------------------------------------------------------

def test_pickle_refusal_says_what_to_pass(tmp_path):
    net = TwoLayerNet(3, 2, 2, seed=0)
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:  # what the book's save_params writes
        pickle.dump({k: np.asarray(v) for k, v in net.params.items()}, f)
    with pytest.raises(ValueError) as info:
        net.load_params(path)
    assert f"load_params({str(path)!r}, allow_pickle=True)" in str(info.value)
    assert "trust" in str(info.value)
    net.load_params(path, allow_pickle=True)  # and that is what works
