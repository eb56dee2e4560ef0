"""Stateless functions of the book (softmax, cross-entropy, activations), portable and stable.

Every function takes its namespace from its arguments, never mutates them and returns
arrays of the input's dtype and device.

Integer and bool inputs to `sigmoid`, `softmax` and `log_softmax` are promoted to the
namespace's default floating dtype (float64 on NumPy, float32 on torch), as NumPy's own
`np.exp` would do; complex input is refused with a TypeError.
"""

from __future__ import annotations

import array_api_extra as xpx
from array_api_compat import is_writeable_array

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


# --- Convolution helpers: the book's im2col / col2im -------------------------------------
#
# The standard has no scatter-add and no fancy-index assignment, so everything here loops
# over the filter_h * filter_w kernel offsets (never over samples or pixels) and moves one
# strided slab of the image per offset. On the CPU this measured as fast as NumPy's
# sliding_window_view and faster than torch's unfold / fold: no backend needs its own version.


def _check_window_settings(filter_h, filter_w, stride, pad, names=("filter_h", "filter_w")):
    """(filter_h, filter_w, stride, pad) as Python ints; TypeError/ValueError unless the
    window sizes and stride are integers >= 1 and pad >= 0 (any integer type: numpy.int64
    too, through operator.index)."""
    return tuple(guards.index(name, value, low)
                 for name, value, low in ((names[0], filter_h, 1), (names[1], filter_w, 1),
                                          ("stride", stride, 1), ("pad", pad, 0)))


def _window_grid(shape, filter_h, filter_w, stride, pad, what="input"):
    """(out_h, out_w) for sliding a filter_h x filter_w window over `shape` (N, C, H, W).

    Raises TypeError/ValueError for a wrong ndim, non-integer or out-of-range settings, or a
    window larger than the padded input.
    """
    filter_h, filter_w, stride, pad = _check_window_settings(filter_h, filter_w, stride, pad)
    if len(shape) != 4:
        raise ValueError(f"{what} must have 4 axes (N, C, H, W), got shape {tuple(shape)}")
    H, W = shape[2], shape[3]
    if H is None or W is None:
        raise ValueError(f"{what} needs known height and width, got shape {tuple(shape)}")
    if filter_h > H + 2 * pad or filter_w > W + 2 * pad:
        raise ValueError(f"window {filter_h}x{filter_w} is larger than the padded {what} "
                         f"{H + 2 * pad}x{W + 2 * pad} (H={H}, W={W}, pad={pad})")
    return (H + 2 * pad - filter_h) // stride + 1, (W + 2 * pad - filter_w) // stride + 1


def _offset_slices(i, j, stride, out_h, out_w):
    """Index of the out_h x out_w strided slab at kernel offset (i, j) of an (N, C, H, W) image.

    Stops are the last index read + 1, so they lie inside the axis (strict checks this).
    """
    return (slice(None), slice(None), slice(i, i + stride * (out_h - 1) + 1, stride),
            slice(j, j + stride * (out_w - 1) + 1, stride))


def _window_slabs(x, filter_h, filter_w, stride, pad, out_h, out_w, pad_value=0):
    """`x` padded with `pad_value`, then for each kernel offset (i, j) in row-major order the
    slab of the values at that offset in every window:
    slab[n, c, y, x] = padded[n, c, i + stride*y, j + stride*x]."""
    if pad:
        x = xpx.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value,
                    xp=namespace(x))
    return [x[_offset_slices(i, j, stride, out_h, out_w)]
            for i in range(filter_h) for j in range(filter_w)]


def _image_from_slabs(slabs, input_shape, filter_w, stride, pad):
    """The adjoint of _window_slabs: an image of `input_shape` (N, C, H, W) in the slabs'
    dtype and device, each slab added back at its kernel offset and the padding cropped.

    Two ways to the same sums. Writeable arrays (NumPy, PyTorch, CuPy, array-api-strict;
    Dask's too, lazily) with stride 1 take strided in-place adds, the fastest there.
    Otherwise, and for every pooling-like stride, the slabs are laid on the stride's lattice
    (`_lattice_image`): pads, adds and one interleaving reshape, no scatter. Under jax.jit
    XLA compiles a strided scatter per slab into a slow loop: on a 2-core CPU, the adjoint of
    SimpleConvNet's 2x2 max-pool (batch 100) took 6.6 ms as scatters, 1.3 ms on the lattice
    (its whole step took 20 ms); NumPy's too is faster on the lattice (3.1 -> 1.8 ms).
    """
    if stride == 1 and is_writeable_array(slabs[0]):
        return _added_image(slabs, input_shape, filter_w, pad)
    return _lattice_image(slabs, input_shape, filter_w, stride, pad)


def _added_image(slabs, input_shape, filter_w, pad):
    """`_image_from_slabs` for stride 1, by in-place adds into a zero image."""
    xp = namespace(slabs[0])
    N, C, H, W = input_shape
    out_h, out_w = slabs[0].shape[2], slabs[0].shape[3]
    img = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=slabs[0].dtype,
                   device=device(slabs[0]))
    for k, slab in enumerate(slabs):
        i, j = divmod(k, filter_w)
        img[_offset_slices(i, j, 1, out_h, out_w)] += slab
    return img[:, :, pad:pad + H, pad:pad + W]


def _lattice_image(slabs, input_shape, filter_w, stride, pad):
    """`_image_from_slabs` without writing into any array.

    Window (y, x)'s value at kernel offset (i, j) lands at padded row stride*y + i, column
    stride*x + j. Write i = stride*qi + ri (0 <= ri < stride), j likewise: the slab fills
    lattice phase (ri, rj), shifted by (qi, qj) lattice cells. So each phase is a sum of
    its slabs padded by their shifts, and the image is the phases interleaved: stacked on
    two new axes next to the cell axes and reshaped.
    """
    xp = namespace(slabs[0])
    N, C, H, W = input_shape
    out_h, out_w = slabs[0].shape[2], slabs[0].shape[3]
    filter_h = len(slabs) // filter_w
    cells_h = out_h + (filter_h - 1) // stride   # lattice cells that any slab reaches
    cells_w = out_w + (filter_w - 1) // stride
    phases = []
    for ri in range(stride):
        row = []
        for rj in range(stride):
            total = None
            for i in range(ri, filter_h, stride):
                for j in range(rj, filter_w, stride):
                    slab = slabs[i * filter_w + j]
                    qi, qj = i // stride, j // stride
                    if (cells_h, cells_w) != (out_h, out_w):
                        slab = xpx.pad(slab, ((0, 0), (0, 0), (qi, cells_h - out_h - qi),
                                              (qj, cells_w - out_w - qj)), xp=xp)
                    total = slab if total is None else total + slab
            if total is None:  # a phase no kernel offset reaches (stride > window)
                total = xp.zeros((N, C, cells_h, cells_w), dtype=slabs[0].dtype,
                                 device=device(slabs[0]))
            row.append(total)
        phases.append(xp.stack(row, axis=-1))                # (N, C, cells_h, cells_w, rj)
    img = xp.stack(phases, axis=3)                           # (N, C, cells_h, ri, cells_w, rj)
    img = xp.reshape(img, (N, C, cells_h * stride, cells_w * stride))
    # Rows and columns past the last window get no gradient: zeros up to the padded size.
    missing_h = max(0, pad + H - cells_h * stride)
    missing_w = max(0, pad + W - cells_w * stride)
    if missing_h or missing_w:
        img = xpx.pad(img, ((0, 0), (0, 0), (0, missing_h), (0, missing_w)), xp=xp)
    return img[:, :, pad:pad + H, pad:pad + W]


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
    filter_h, filter_w, stride, pad = _check_window_settings(filter_h, filter_w, stride, pad)
    out_h, out_w = _window_grid(static_shape(x), filter_h, filter_w, stride, pad)
    C = x.shape[1]
    col = xp.stack(_window_slabs(x, filter_h, filter_w, stride, pad, out_h, out_w), axis=2)
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
    filter_h, filter_w, stride, pad = _check_window_settings(filter_h, filter_w, stride, pad)
    input_shape = tuple(guards.index("input_shape", d, 0) for d in input_shape)
    out_h, out_w = _window_grid(input_shape, filter_h, filter_w, stride, pad, "input_shape")
    N, C = input_shape[:2]
    expected = (N * out_h * out_w, C * filter_h * filter_w)
    if static_shape(col) not in (expected, (None, expected[1])):
        raise ValueError(f"col2im expects col of shape {expected} for input_shape "
                         f"{input_shape}, got {static_shape(col)}")
    col = xp.reshape(col, (N, out_h, out_w, C, filter_h * filter_w))
    col = xp.permute_dims(col, (0, 3, 4, 1, 2))  # (N, C, FH*FW, out_h, out_w)
    slabs = [col[:, :, k, :, :] for k in range(filter_h * filter_w)]
    return _image_from_slabs(slabs, input_shape, filter_w, stride, pad)
