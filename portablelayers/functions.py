"""Stateless functions of the book (softmax, cross-entropy, activations), portable and stable.

Every function takes its namespace from its arguments, never mutates them and returns
arrays of the input's dtype and device.

Integer and bool inputs to `sigmoid`, `softmax` and `log_softmax` are promoted to the
namespace's default floating dtype (float64 on NumPy, float32 on torch), as NumPy's own
`np.exp` would do; complex input is refused with a TypeError.
"""

from __future__ import annotations

from . import guards
from ._backend import (
    clip_below,
    default_int,
    device,
    log_softmax_last,
    namespace,
    read_bool,
    static_shape,
    value_checks,
)
from ._windows import check_window_settings, image_from_slabs, window_grid, window_slabs

__all__ = [
    "class_hits",
    "class_indices",
    "col2im",
    "cross_entropy_error",
    "im2col",
    "log_softmax",
    "one_hot_targets",
    "predicted_classes",
    "relu",
    "sigmoid",
    "softmax",
]


def sigmoid(x):
    """The logistic sigmoid ``1 / (1 + exp(-x))``, elementwise.

    It is computed from ``exp(-|x|)``, so it never overflows, for any `x`.

    Parameters
    ----------
    x : array
        Any shape; integer or bool input is promoted to the default floating dtype.

    Returns
    -------
    array
        Values in [0, 1], x's shape.

    Raises
    ------
    TypeError
        For an input that is not a real array.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import sigmoid
    >>> sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """
    xp = guards.arrays("sigmoid", x=x)
    x = guards.real_floating(xp, x, "sigmoid input")
    e = xp.exp(-xp.abs(x))  # in (0, 1]: no overflow for any x
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def relu(x):
    """The rectified linear function ``max(x, 0)``, elementwise (NaN stays NaN).

    Parameters
    ----------
    x : array
        Any shape, a numeric dtype.

    Returns
    -------
    array
        Same shape and dtype as `x`.

    Raises
    ------
    TypeError
        For an input that is not a numeric array.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import relu
    >>> relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    """
    xp = guards.arrays("relu", x=x)
    return clip_below(xp, guards.numeric(xp, x, "relu input"), 0)


def log_softmax(x):
    """The logarithm of `softmax` over the last axis, computed without overflow.

    The scores are shifted by their maximum first, so `exp` never overflows.

    Parameters
    ----------
    x : array
        Scores of shape (N, C) or (C,).

    Returns
    -------
    array
        Same shape as `x`; ``exp`` of each row sums to 1.

    Raises
    ------
    TypeError
        For an input that is not a real array.
    ValueError
        For a 0-D input.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import log_softmax
    >>> log_softmax(np.array([1000.0, 1000.0]))
    array([-0.69314718, -0.69314718])
    """
    xp = guards.arrays("log_softmax", x=x)
    return log_softmax_last(xp, _scores(xp, x, "log_softmax input"))


def softmax(x):
    """Softmax over the last axis: ``exp(x) / sum(exp(x))``, each row summing to 1.

    Parameters
    ----------
    x : array
        Scores of shape (N, C) or (C,).

    Returns
    -------
    array
        Probabilities of x's shape.

    Raises
    ------
    TypeError
        For an input that is not a real array.
    ValueError
        For a 0-D input.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import softmax
    >>> softmax(np.array([[0.3, 2.9, 4.0]])).round(4)
    array([[0.0182, 0.2452, 0.7366]])
    """
    xp = guards.arrays("softmax", x=x)
    x = _scores(xp, x, "softmax input")
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _scores(xp, x, what):
    """x as real floating scores with at least one axis and one class (TypeError,
    ValueError naming `what`)."""
    x = guards.real_floating(xp, x, what)
    if x.ndim == 0:
        raise ValueError(f"{what} must have a class axis, shape (C,) or (N, C), got a 0-D "
                         "array")
    guards.nonempty(x, (-1,), what, "scores need at least one class")
    return x


def one_hot_targets(t, scores, what: str = "t"):
    """Targets `t` as one-hot rows in the dtype of `scores` (shape (N, C) or (C,)).

    Parameters
    ----------
    t : array
        Integer class indices of shape (N,) (one axis fewer than `scores`), the same as a
        column (N, 1) (the book takes any `t` whose size differs from the scores' as
        indices), or one-hot of the shape of `scores`.
    scores : array
        The scores or probabilities, (N, C) or (C,) for one sample.
    what : str
        The name of `t` in error messages.

    Returns
    -------
    array
        One-hot targets of the shape and dtype of `scores`.

    Raises
    ------
    ValueError
        As `class_hits`.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import one_hot_targets
    >>> one_hot_targets(np.array([2, 0]), np.zeros((2, 3)))
    array([[0., 0., 1.],
           [1., 0., 0.]])
    """
    xp = guards.arrays("one_hot_targets", t=t, scores=scores)
    hits = class_hits(t, scores, what)
    return xp.astype(t if hits is None else hits, scores.dtype)


def class_hits(t, scores, what: str = "t"):
    """Class-index targets `t` as a boolean mask, True at each row's class (None if one-hot).

    The mask has the shape of `scores`; either way `t` is checked against `scores` first. It
    is what a loss over class indices needs: where it picks each row's score, and
    (as floats) the one-hot rows; one-hot targets of any weight need more work.

    Parameters
    ----------
    t, scores : array
        The targets and the scores, as for `one_hot_targets`.
    what : str
        The name of `t` in error messages.

    Returns
    -------
    array of bool or None
        The mask for class indices, None where `t` is one-hot (of the shape of `scores`).

    Raises
    ------
    ValueError
        For scores of one class, float labels, a wrong length, or labels outside [0, C)
        (the last check runs only where values can be read without forcing a lazy
        computation: not on Dask, not under jax.jit).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import class_hits
    >>> class_hits(np.array([2, 0]), np.zeros((2, 3)))
    array([[False, False,  True],
           [ True, False, False]])
    >>> class_hits(np.eye(3), np.zeros((3, 3))) is None
    True
    """
    xp = guards.arrays("class_hits", t=t, scores=scores)
    _scores(xp, scores, "scores")
    s_shape, t_shape = static_shape(scores), static_shape(t)
    if s_shape[-1:] == (1,):
        raise ValueError(f"scores of shape {s_shape} hold one class: a softmax over it is 1 "
                         f"whatever the {what}, so the loss and its gradient are 0. A "
                         "network with one output is a binary classifier: use "
                         "SigmoidWithLoss")
    if t.ndim == scores.ndim and t_shape[-1:] == (1,) and s_shape[-1] != 1:
        # A column of class indices, (N, 1): the book's size rule makes it indices too.
        if not xp.isdtype(t.dtype, "integral"):
            raise ValueError(f"class-index {what} of shape {t_shape} must have an integer "
                             f"dtype, got {t.dtype} (one-hot {what} has the shape of the "
                             f"scores {s_shape})")
        t = t[..., 0]
        t_shape = t_shape[:-1]
    if t.ndim == scores.ndim:
        if t_shape != s_shape:
            raise ValueError(f"one-hot {what} must have the shape of the scores {s_shape}, "
                             f"got {t_shape}")
        return None
    if t.ndim != scores.ndim - 1:
        raise ValueError(f"{what} must be class indices of shape {s_shape[:-1]} or "
                         f"{(*s_shape[:-1], 1)}, or one-hot of shape {s_shape}, got shape "
                         f"{t_shape}")
    if not xp.isdtype(t.dtype, "integral"):
        raise ValueError(f"class-index {what} must have an integer dtype, got {t.dtype}")
    if t_shape != s_shape[:-1]:
        raise ValueError(f"{what} has {t_shape} labels for scores of shape {s_shape}: "
                         "one label per sample expected")
    num_classes = s_shape[-1]
    if xp.iinfo(t.dtype).max < num_classes:
        # uint8 labels of 300 classes: the comparisons below need a dtype that holds every
        # class index (in uint8, 300 would wrap to 44).
        t = xp.astype(t, xp.int32)
    if value_checks() and read_bool(xp.any((t < 0) | (t >= num_classes))):
        raise ValueError(f"class-index {what} must lie in [0, {num_classes}), got "
                         f"values from {int(xp.min(t))} to {int(xp.max(t))}")
    # A comparison with arange, not xpx.one_hot: torch's one_hot checks the labels on the
    # device (a host sync, refused inside a CUDA graph); this is one elementwise kernel.
    classes = xp.arange(num_classes, dtype=t.dtype, device=device(t))
    return t[..., None] == classes


def class_indices(t):
    """Labels `t` as class indices of shape (N,).

    One-hot rows (N, C) become their argmax, a column (N, 1) its only column, and indices
    (N,) stay as they are; floating and bool labels of either layout (a binary
    classifier's 0.0 / 1.0 targets) are rounded to integers.

    Parameters
    ----------
    t : array
        Labels of shape (N,), (N, 1) or (N, C).

    Returns
    -------
    array
        Class indices of shape (N,).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import class_indices
    >>> class_indices(np.array([[0, 1, 0], [1, 0, 0]]))
    array([1, 0])
    >>> class_indices(np.array([[1.0], [0.0]]))
    array([1, 0])
    """
    xp = namespace(t)
    if t.ndim == 2 and static_shape(t)[1] != 1:
        return xp.argmax(t, axis=1)
    labels = t[:, 0] if t.ndim == 2 else t
    if xp.isdtype(t.dtype, "integral"):
        return labels
    if xp.isdtype(t.dtype, "real floating"):
        labels = xp.round(labels)
    return xp.astype(labels, default_int(xp, device(t)))


def predicted_classes(scores):
    """The class each row of scores predicts, as accuracy counts it.

    For scores (N, C), the index of the row's highest score. For one score per row ((N, 1)
    or (N,): a binary classifier's logit, as `SigmoidWithLoss` takes it), 1 where the
    score is above 0 (a probability above 0.5), else 0.

    Parameters
    ----------
    scores : array
        Scores of shape (N, C), (N, 1) or (N,): a network's `predict`.

    Returns
    -------
    array
        Class indices of shape (N,), integers.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import predicted_classes
    >>> predicted_classes(np.array([[0.1, 2.0], [3.0, -1.0]]))
    array([1, 0])
    >>> predicted_classes(np.array([[0.3], [-2.0]]))
    array([1, 0])
    """
    xp = namespace(scores)
    if scores.ndim == 2 and static_shape(scores)[1] != 1:
        return xp.argmax(scores, axis=1)
    if scores.ndim not in (1, 2):
        raise ValueError(f"predicted_classes needs scores of shape (N, C), (N, 1) or (N,), "
                         f"got {static_shape(scores)}")
    logits = scores[:, 0] if scores.ndim == 2 else scores
    return xp.astype(logits > 0, default_int(xp, device(scores)))


def cross_entropy_error(y, t):
    """The book's mean cross-entropy of probabilities `y` against labels `t`.

    Like the book it adds 1e-7 inside the log, so a zero probability gives a finite loss.

    Parameters
    ----------
    y : array
        Probabilities of shape (N, C); a 1-D `y` is one sample.
    t : array
        Class indices, (N,) or (N, 1), or one-hot (N, C) (see `one_hot_targets`).

    Returns
    -------
    array
        The mean loss over the samples, 0-D.

    Raises
    ------
    ValueError
        For an empty batch, or labels that `one_hot_targets` refuses.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import cross_entropy_error
    >>> y = np.array([[0.1, 0.6, 0.3], [0.8, 0.1, 0.1]])
    >>> round(float(cross_entropy_error(y, np.array([1, 0]))), 4)
    0.367
    """
    xp = guards.arrays("cross_entropy_error", y=y, t=t)
    y = _scores(xp, y, "cross_entropy_error y")
    guards.ndim(y, (1, 2), "cross_entropy_error y", "(N, C) or (C,)")
    guards.nonempty(y, (0,), "cross_entropy_error y", "the mean loss over no samples is "
                    "undefined")
    t = one_hot_targets(t, y)
    if y.ndim == 1:
        y, t = xp.reshape(y, (1, -1)), xp.reshape(t, (1, -1))
    return -xp.sum(t * xp.log(y + 1e-7)) / y.shape[0]


# --- Convolution helpers: the book's im2col / col2im, on the slabs of `_windows` -----------


def im2col(x, filter_h, filter_w, stride=1, pad=0):
    """Unfold every filter-sized window of an image batch into one row.

    Parameters
    ----------
    x : array
        Images of shape (N, C, H, W).
    filter_h, filter_w : int
        The window's height and width.
    stride : int, default 1
        Step of the window.
    pad : int, default 0
        Zero padding on each side.

    Returns
    -------
    array
        Shape (N*out_h*out_w, C*filter_h*filter_w): rows in (N, out_h, out_w) order,
        columns in (C, filter_h, filter_w) order, exactly the book's layout.

    Raises
    ------
    ValueError
        For an input that is not 4-D, or a window larger than the padded image.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import im2col
    >>> im2col(np.arange(9.0).reshape(1, 1, 3, 3), 2, 2)
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    xp = guards.arrays("im2col", x=x)
    filter_h, filter_w, stride, pad = check_window_settings(filter_h, filter_w, stride, pad)
    out_h, out_w = window_grid(static_shape(x), filter_h, filter_w, stride, pad)
    C = x.shape[1]
    col = xp.stack(window_slabs(x, filter_h, filter_w, stride, pad, out_h, out_w), axis=2)
    col = xp.permute_dims(col, (0, 3, 4, 1, 2))  # (N, out_h, out_w, C, FH*FW)
    return xp.reshape(col, (-1, C * filter_h * filter_w))  # N*out_h*out_w rows


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The adjoint of `im2col`: sum every row of `col` back into its window of an image.

    Overlapping windows add up; the padding border is cropped.

    Parameters
    ----------
    col : array
        Rows as `im2col` makes them.
    input_shape : tuple of int
        The image batch's shape (N, C, H, W).
    filter_h, filter_w : int
        The window's height and width.
    stride : int, default 1
        Step of the window.
    pad : int, default 0
        Zero padding on each side.

    Returns
    -------
    array
        Shape `input_shape`, in the dtype and on the device of `col`.

    Raises
    ------
    ValueError
        When `col`'s shape does not fit `input_shape` and the window.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.functions import col2im
    >>> col2im(np.ones((4, 4)), (1, 1, 3, 3), 2, 2)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    xp = guards.arrays("col2im", col=col)
    filter_h, filter_w, stride, pad = check_window_settings(filter_h, filter_w, stride, pad)
    input_shape = tuple(guards.index("input_shape", d, 0) for d in input_shape)
    out_h, out_w = window_grid(input_shape, filter_h, filter_w, stride, pad, "input_shape")
    N, C = input_shape[:2]
    expected = (N * out_h * out_w, C * filter_h * filter_w)
    if static_shape(col) not in (expected, (None, expected[1])):
        raise ValueError(f"col2im expects col of shape {expected} for input_shape "
                         f"{input_shape}, got {static_shape(col)}")
    col = xp.reshape(col, (N, out_h, out_w, C, filter_h * filter_w))
    col = xp.permute_dims(col, (0, 3, 4, 1, 2))  # (N, C, FH*FW, out_h, out_w)
    slabs = [col[:, :, k, :, :] for k in range(filter_h * filter_w)]
    return image_from_slabs(slabs, input_shape, filter_w, stride, pad)
