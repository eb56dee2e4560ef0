"""SoftmaxWithLoss: values against references, labels and one-hot, stability, errors."""

import math
import warnings

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from conftest import BACKEND
from support import assert_close, assert_gradients_match, assert_same_dtype_device, make, to_numpy

from portablelayers import SoftmaxWithLoss

lazy_xp_function((SoftmaxWithLoss, "forward"), jax_jit=False)
lazy_xp_function((SoftmaxWithLoss, "backward"), jax_jit=False)


def _reference_loss(x_np, labels):
    """Mean cross-entropy in plain Python floats: log(sum(exp(x - max))) + max - x[t]."""
    total = []
    for row, t in zip(np.atleast_2d(x_np).tolist(), np.atleast_1d(labels).tolist(), strict=True):
        m = max(row)
        total.append(math.log(math.fsum(math.exp(v - m) for v in row)) + m - row[t])
    return math.fsum(total) / len(total)


def _labels(xp, values):
    return xp.asarray(np.asarray(values, dtype=np.int64))


def test_loss_and_gradient_against_hand_reference(xp, rng):
    x_np, t_np = rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
    layer = SoftmaxWithLoss()
    loss = layer.forward(make(xp, x_np), _labels(xp, t_np))
    assert tuple(loss.shape) == ()
    assert_close(loss, _reference_loss(x_np, t_np), rtol=1e-12)
    y_ref = np.exp(x_np - x_np.max(axis=1, keepdims=True))
    y_ref /= y_ref.sum(axis=1, keepdims=True)
    assert_close(layer.y, y_ref, rtol=1e-12)
    assert_close(layer.backward(), (y_ref - np.eye(4)[t_np]) / 5, rtol=1e-10, atol=1e-15)


def test_labels_and_one_hot_give_the_same_result(xp, rng):
    x_np, t_np = rng.standard_normal((3, 4)), np.array([2, 0, 3])
    by_label, by_one_hot = SoftmaxWithLoss(), SoftmaxWithLoss()
    loss_a = by_label.forward(make(xp, x_np), _labels(xp, t_np))
    loss_b = by_one_hot.forward(make(xp, x_np), make(xp, np.eye(4)[t_np]))
    assert_close(loss_a, to_numpy(loss_b), rtol=1e-14)
    assert_close(by_label.backward(), to_numpy(by_one_hot.backward()), rtol=1e-14)


def test_agrees_with_torch_cross_entropy(xp, rng):
    torch = pytest.importorskip("torch")
    x_np, t_np = rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 5, 6)
    x_t = torch.tensor(x_np, requires_grad=True, device="cpu")
    ref = torch.nn.functional.cross_entropy(x_t, torch.tensor(t_np, device="cpu"))
    ref.backward()
    layer = SoftmaxWithLoss()
    loss = layer.forward(make(xp, x_np, "float32"), _labels(xp, t_np))
    assert_close(loss, ref.item(), rtol=1e-6)
    assert_close(layer.backward(), x_t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_stable_for_huge_logits(xp):
    x = make(xp, [[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]], "float32")
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, _labels(xp, [0, 2]))
    # Row 0 is certain and right (loss 0); row 1 splits evenly between two classes (log 2).
    assert_close(loss, math.log(2) / 2, rtol=1e-6)
    assert_close(layer.backward(), [[0.0, 0.0, 0.0], [0.0, 0.25, -0.25]], atol=1e-7)


def test_backward_scales_by_dout(xp, rng):
    x_np, t_np = rng.standard_normal((3, 4)), np.array([1, 2, 0])
    layer = SoftmaxWithLoss()
    layer.forward(make(xp, x_np), _labels(xp, t_np))
    base = to_numpy(layer.backward())
    assert_close(layer.backward(2.5), base * 2.5, rtol=1e-14)


def test_one_sample_as_1d(xp, rng):
    x_np = rng.standard_normal(4)
    layer = SoftmaxWithLoss()
    loss = layer.forward(make(xp, x_np), _labels(xp, 2))
    assert_close(loss, _reference_loss(x_np, [2]), rtol=1e-12)
    assert tuple(layer.backward().shape) == (4,)


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("shape", [(4,), (1, 3), (5, 4)])
def test_gradients_match_numerical(xp, rng, shape, one_hot):
    x_np = rng.standard_normal(shape)
    labels = rng.integers(0, shape[-1], shape[:-1])
    t = make(xp, np.eye(shape[-1])[labels]) if one_hot else _labels(xp, labels)
    assert_gradients_match(SoftmaxWithLoss(), make(xp, x_np),
                           forward=lambda layer, x: layer.forward(x, t), dout=1.7)


def test_soft_targets_of_any_weight_get_their_true_gradient(xp, rng):
    # Rows weighing 0 (a sample that counts for nothing), 0.5 and 1.3: the book's y - t
    # holds only for rows summing to 1.
    t = make(xp, [[0.0, 0.0, 0.0], [0.25, 0.0, 0.25], [0.3, 0.5, 0.5]])
    assert_gradients_match(SoftmaxWithLoss(), make(xp, rng.standard_normal((3, 3))),
                           forward=lambda layer, x: layer.forward(x, t), dout=1.7)


def test_float32_kept_and_inputs_untouched(xp, rng):
    x = make(xp, rng.standard_normal((3, 4)), "float32")
    t = make(xp, np.eye(4)[[0, 1, 3]], "float32")
    copies = to_numpy(x).copy(), to_numpy(t).copy()
    layer = SoftmaxWithLoss()
    assert_same_dtype_device(layer.forward(x, t), x)
    assert_same_dtype_device(layer.backward(), x)
    np.testing.assert_array_equal(to_numpy(x), copies[0])
    np.testing.assert_array_equal(to_numpy(t), copies[1])


@pytest.mark.parametrize("labels, message", [
    (np.array([0.0, 1.0, 2.0]), "integer dtype"),
    (np.array([0, 1]), "one label per sample"),
    (np.ones((3, 4, 1), dtype=np.int64), "class indices of shape"),
])
def test_bad_labels_raise_value_error_and_keep_state(xp, rng, labels, message):
    layer = SoftmaxWithLoss()
    x = make(xp, rng.standard_normal((3, 4)))
    layer.forward(x, _labels(xp, [0, 1, 2]))
    before = to_numpy(layer.backward()).copy()
    with pytest.raises(ValueError, match=message):
        layer.forward(make(xp, rng.standard_normal((3, 4))), xp.asarray(labels))
    np.testing.assert_array_equal(to_numpy(layer.backward()), before)


def test_one_layer_takes_either_kind_of_targets_in_turn(xp, rng):
    # Class indices, then one-hot rows of weight 2 (soft targets), then indices again: each
    # call's loss and gradient are those of a fresh layer (no state of the other kind left).
    x_np, t_np = rng.standard_normal((4, 3)), np.array([2, 0, 1, 1])
    calls = [_labels(xp, t_np), make(xp, 2.0 * np.eye(3)[t_np]), _labels(xp, [1, 1, 0, 2])]
    layer = SoftmaxWithLoss()
    for t in calls:
        fresh = SoftmaxWithLoss()
        assert_close(layer.forward(make(xp, x_np), t), to_numpy(fresh.forward(make(xp, x_np), t)),
                     rtol=1e-15)
        assert_close(layer.backward(), to_numpy(fresh.backward()), rtol=1e-15, atol=1e-300)


def test_one_hot_targets_that_cannot_be_cast_keep_the_state(xp, rng):
    # One-hot targets are cast to the scores' dtype before any state changes: where the cast
    # fails (complex targets; array-api-strict refuses, NumPy and torch only warn), the
    # layer keeps its last forward.
    layer = SoftmaxWithLoss()
    layer.forward(make(xp, rng.standard_normal((2, 3))), _labels(xp, [0, 1]))
    before = to_numpy(layer.backward()).copy()
    t = xp.asarray(np.eye(3, dtype=np.complex128)[[2, 0]])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer.forward(make(xp, rng.standard_normal((2, 3))), t)
    except (TypeError, ValueError):
        np.testing.assert_array_equal(to_numpy(layer.backward()), before)
    else:
        assert not np.array_equal(to_numpy(layer.backward()), before)


def test_out_of_range_labels_raise_value_error(xp, rng):
    if BACKEND == "dask":
        pytest.skip("on Dask, label values are not read (that would compute the graph)")
    layer = SoftmaxWithLoss()
    for bad in ([0, 4, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            layer.forward(make(xp, rng.standard_normal((3, 4))), _labels(xp, bad))
    assert layer.y is None


def test_uint8_labels_of_more_classes_than_uint8_holds(xp, rng):
    # 300 classes, labels stored as uint8 values below 256: the loss and the range check
    # must not compare in uint8 (where 300 is 44).
    x_np, t_np = rng.standard_normal((4, 300)), np.array([5, 44, 255, 0], dtype=np.uint8)
    layer = SoftmaxWithLoss()
    loss = layer.forward(make(xp, x_np), xp.asarray(t_np))
    assert_close(loss, _reference_loss(x_np, t_np.astype(np.int64)), rtol=1e-12)
    y_ref = np.exp(x_np - x_np.max(axis=1, keepdims=True))
    y_ref /= y_ref.sum(axis=1, keepdims=True)
    assert_close(layer.backward(), (y_ref - np.eye(300)[t_np]) / 4, rtol=1e-10, atol=1e-15)


def test_one_hot_of_the_wrong_shape_raises(xp, rng):
    with pytest.raises(ValueError, match="shape of the scores"):
        SoftmaxWithLoss().forward(make(xp, rng.standard_normal((3, 4))), make(xp, np.eye(3)))


def test_backward_before_forward_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="before SoftmaxWithLoss.forward"):
        SoftmaxWithLoss().backward()


def test_uint8_labels_of_256_classes(xp, rng):
    # The largest uint8 label, 255, is a class of a 256-class network: the range check
    # must compare in a dtype that holds 256 (in uint8, t >= 256 would wrap).
    scores = rng.standard_normal((4, 256))
    t = np.array([0, 255, 17, 255], dtype=np.uint8)
    log_y = scores - scores.max(axis=1, keepdims=True)
    log_y -= np.log(np.exp(log_y).sum(axis=1, keepdims=True))
    expected = -log_y[np.arange(4), t.astype(int)].mean()
    loss = SoftmaxWithLoss().forward(make(xp, scores), xp.asarray(t))
    assert_close(loss, expected, rtol=1e-10)


def test_softmax_over_one_output_is_refused(xp):
    # A softmax over one score is 1: loss and gradient 0, nothing would train.
    with pytest.raises(ValueError, match="hold one class.*use SigmoidWithLoss"):
        SoftmaxWithLoss().forward(make(xp, np.ones((3, 1))), xp.asarray(np.array([[0], [1],
                                                                                 [0]])))
