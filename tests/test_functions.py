"""portablelayers.functions: softmax, log_softmax, cross_entropy_error, sigmoid, relu."""

import math
import warnings

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import assert_close, assert_same_dtype_device, make, to_numpy

from portablelayers.functions import (
    class_hits,
    class_indices,
    cross_entropy_error,
    log_softmax,
    predicted_classes,
    relu,
    sigmoid,
    softmax,
)

for _f in (softmax, log_softmax, sigmoid, relu):
    lazy_xp_function(_f)
lazy_xp_function(cross_entropy_error, jax_jit=False)  # validates label values eagerly


def test_softmax_rows_sum_to_one_and_match_exp_ratio(xp, rng):
    a = rng.standard_normal((3, 5)) * 3
    out = softmax(make(xp, a))
    expected = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    assert_close(out, expected, rtol=1e-12)
    assert_close(xp.sum(out, axis=-1), np.ones(3), rtol=1e-12)


def test_softmax_of_huge_logits_is_finite(xp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = softmax(make(xp, [1e4, 1e4, -1e4], "float32"))
        log_out = log_softmax(make(xp, [1e4, 0.0], "float32"))
    assert_close(out, [0.5, 0.5, 0.0], rtol=1e-6)
    assert_close(log_out, [0.0, -1e4], rtol=1e-6)


def test_cross_entropy_error_matches_the_book_formula(xp, rng):
    y = rng.random((4, 3)) + 0.1
    y /= y.sum(axis=1, keepdims=True)
    t = np.array([0, 2, 1, 2])
    expected = -np.sum(np.eye(3)[t] * np.log(y + 1e-7)) / 4  # the book's definition
    assert_close(cross_entropy_error(make(xp, y), xp.asarray(t)), expected, rtol=1e-12)
    assert_close(cross_entropy_error(make(xp, y), make(xp, np.eye(3)[t])), expected, rtol=1e-12)
    # One sample as a 1-D array, the book's example: y = softmax output, t one-hot.
    y1 = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    t1 = np.eye(10)[2]
    assert_close(cross_entropy_error(make(xp, y1), make(xp, t1)), 0.510825457099338, rtol=1e-9)


def test_sigmoid_and_relu_values(xp):
    x = make(xp, [-2.0, 0.0, 3.0])
    assert_close(sigmoid(x), [1 / (1 + math.e**2), 0.5, 1 / (1 + math.e**-3)], rtol=1e-12)
    assert_close(relu(x), [0.0, 0.0, 3.0])


@pytest.mark.parametrize("func", [softmax, log_softmax, sigmoid, relu])
def test_dtype_kept_and_input_untouched(xp, rng, func):
    x = make(xp, rng.standard_normal((2, 3)), "float32")
    before = to_numpy(x).copy()
    assert_same_dtype_device(func(x), x)
    np.testing.assert_array_equal(to_numpy(x), before)


@pytest.mark.parametrize("func", [softmax, log_softmax, sigmoid])
def test_integer_input_is_promoted_to_default_float(xp, func):
    out = func(xp.asarray([[1, 2, 3]]))
    assert xp.isdtype(out.dtype, "real floating")
    reference = func(xp.asarray([[1.0, 2.0, 3.0]], dtype=out.dtype))
    assert_close(out, to_numpy(reference))


def test_predicted_classes_is_the_argmax_or_a_single_logits_sign(xp, rng):
    scores = rng.standard_normal((7, 4))
    assert np.array_equal(to_numpy(predicted_classes(make(xp, scores))),
                          np.argmax(scores, axis=1))
    # One score per row: a binary classifier's logit, class 1 where sigmoid > 0.5.
    logits = np.array([[0.3], [-2.0], [0.0], [1e-30], [-1e-30]])
    assert to_numpy(predicted_classes(make(xp, logits))).tolist() == [1, 0, 0, 1, 0]
    # Logits without the column axis (SigmoidWithLoss takes any shape): the same.
    assert to_numpy(predicted_classes(make(xp, logits[:, 0]))).tolist() == [1, 0, 0, 1, 0]
    with pytest.raises(ValueError, match=r"scores of shape \(N, C\), \(N, 1\) or \(N,\)"):
        predicted_classes(make(xp, np.zeros((2, 3, 4))))


def test_class_hits_of_every_label_layout(xp):
    # Class indices become a boolean mask of the scores' shape, True at each row's class
    # (np.eye's rows as the reference); one-hot targets give None after their check.
    scores = make(xp, np.zeros((3, 4)))
    expected = np.eye(4, dtype=bool)[[2, 0, 3]]
    for labels in (np.array([2, 0, 3]), np.array([[2], [0], [3]]),
                   np.array([2, 0, 3], dtype=np.uint8)):
        hits = class_hits(xp.asarray(labels), scores)
        assert hits.dtype == xp.bool
        np.testing.assert_array_equal(to_numpy(hits), expected)
    one = class_hits(xp.asarray(np.asarray(1)), make(xp, np.zeros(3)))  # one sample
    np.testing.assert_array_equal(to_numpy(one), [False, True, False])
    assert class_hits(make(xp, np.eye(4)[[2, 0, 3]]), scores) is None
    with pytest.raises(ValueError, match="must have the shape of the scores"):
        class_hits(make(xp, np.eye(3)), scores)
    with pytest.raises(ValueError, match="integer dtype"):
        class_hits(make(xp, np.array([2.0, 0.0, 3.0])), scores)


def test_class_indices_of_every_label_layout(xp):
    one_hot = np.array([[0, 0, 1], [1, 0, 0]])
    assert to_numpy(class_indices(xp.asarray(one_hot))).tolist() == [2, 0]
    assert to_numpy(class_indices(xp.asarray(np.array([[2], [0]])))).tolist() == [2, 0]
    assert to_numpy(class_indices(xp.asarray(np.array([2, 0])))).tolist() == [2, 0]
    # A floating or bool column is a binary classifier's targets: not one-hot of width 1
    # (whose argmax would make every label 0).
    floats = class_indices(make(xp, np.array([[1.0], [0.0], [0.9], [0.2]]), "float32"))
    assert to_numpy(floats).tolist() == [1, 0, 1, 0]
    assert xp.isdtype(floats.dtype, "integral")
    bools = class_indices(xp.asarray(np.array([[True], [False]])))
    assert to_numpy(bools).tolist() == [1, 0]
    flat = class_indices(make(xp, np.array([1.0, 0.0, 0.9, 2.0]), "float32"))
    assert to_numpy(flat).tolist() == [1, 0, 1, 2] and xp.isdtype(flat.dtype, "integral")
