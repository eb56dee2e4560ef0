"""Convolution and pooling layers (chapter 7), built on im2col / col2im.

Convolution is the book's: im2col's windows, one matrix product, and col2im (the exact
adjoint) for the input gradient, with the windows kept per sample (see `forward`); on torch,
torch's own convolution kernels compute the same sums. Pooling works on the strided slabs
im2col is built from (one per window position) and adds gradients back the way col2im does,
so no layer needs scatter-add or fancy-index assignment, which the Array API standard does
not have.
"""

from __future__ import annotations

import math
import numbers

from .. import guards
from .._backend import (
    as_dtype,
    as_float,
    convolution,
    convolution_gradients,
    device,
    max_pool_indices,
    max_pool_indices_gradient,
    multiply_by_mask,
    namespace,
    static_shape,
    sum_per_channel,
)
from .._windows import check_window_settings, image_from_slabs, window_grid, window_slabs
from .base import BaseLayer, parameter

__all__ = ["AvgPooling", "Convolution", "Pooling"]


def _per_sample(xp, matrix, n):
    """`matrix` broadcast over a batch of `n`, for its product with per-sample windows.

    Given a 2-D by batched product, XLA makes one product over all the batch's windows,
    transposing the windows before it and the result after; broadcast, the product stays
    per sample and lands in the layer's layout. Under jax.jit on a 2-core CPU, one thread,
    each product compiled alone: SimpleConvNet's forward one (30x25 filters, 100x25x576
    windows) took 0.86-1.07 ms against 3.9-4.6 ms; the backward one of a 100x64x196
    gradient with 64x576 filters 33 ms against 66 ms. In whole compiled steps (in turns, one
    process) DeepConvNet's took 0.88x its time. NumPy and torch broadcast inside the product
    either way (the same times); Dask and eager JAX copy the broadcast, and eager JAX is
    faster for it too.
    """
    return xp.broadcast_to(matrix, (n, *matrix.shape))


class Convolution(BaseLayer):
    """2-D convolution (the book's chapter 7), built on im2col's windows and `col2im`.

    `forward(x)` takes input (N, C, H, W) and returns (N, FN, out_h, out_w) with
    ``out_h = (H + 2*pad - FH) // stride + 1`` (likewise out_w); padding is zeros.
    `backward(dout)` returns the input's gradient and fills ``grads["W"]``, ``grads["b"]``.

    Parameters
    ----------
    W : array
        Filters of shape (FN, C, FH, FW).
    b : array or number
        Bias of shape (FN,); a scalar is broadcast to one per filter (as ch07's
        ``apply_filter.py`` passes 0).
    stride : int, default 1
        Step of the window.
    pad : int, default 0
        Zero padding on each side.

    Raises
    ------
    ValueError
        For a bad stride or padding, or from `forward` for an input whose channels differ
        from C or that is smaller than a filter.
    RuntimeError
        From `backward`, when no `forward` came before it.

    Notes
    -----
    On torch, for float32 and float64 input, torch's own kernels compute the same sums
    (`_backend.convolution`: `conv2d` and its `convolution_backward`, two operations where
    the windows and products take seven); `col` then stays None, and `col_W` holds the
    filters as the product would use them.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import Convolution
    >>> conv = Convolution(np.ones((1, 1, 2, 2)), np.zeros(1))
    >>> conv.forward(np.arange(9.0).reshape(1, 1, 3, 3))
    array([[[[ 8., 12.],
             [20., 24.]]]])
    >>> conv.backward(np.ones((1, 1, 2, 2))).shape
    (1, 1, 3, 3)
    """

    W, dW = parameter("W")
    b, db = parameter("b")

    def __init__(self, W, b, stride=1, pad=0):
        """Parameters
        ----------
        W : array
            Filters, (FN, C, FH, FW).
        b : array or number
            Biases, (FN,). A Python number or a 0-D array (the book's filter demo passes
            `b = 0`) is broadcast to (FN,) in W's dtype and on W's device, so optimizers
            and checkpoints see an ordinary bias vector.
        stride, pad : int
            The step of the window and the zero padding of each border.
        """
        super().__init__()
        xp = guards.arrays("Convolution", W=W, b=b if hasattr(b, "shape") else None)
        # Integer parameters become floats: their gradients would be truncated to integers.
        W = guards.real_floating(xp, W, "Convolution W")
        if hasattr(b, "shape"):
            b = guards.real_floating(xp, b, "Convolution b")
        if W.ndim == 4 and not hasattr(b, "shape"):  # a Python number
            if isinstance(b, bool) or not isinstance(b, numbers.Real):
                raise TypeError(f"Convolution bias must be an array or a real number, got "
                                f"{type(b).__name__}")
            b = xp.full((W.shape[0],), b, dtype=W.dtype, device=device(W))
        elif W.ndim == 4 and b.ndim == 0:  # a new (FN,) array, not a read-only broadcast view
            b = xp.zeros((W.shape[0],), dtype=W.dtype, device=device(W)) + xp.astype(b, W.dtype)
        if W.ndim != 4 or tuple(b.shape) != (W.shape[0],):
            raise ValueError(f"Convolution needs W of shape (FN, C, FH, FW) and b of shape "
                             f"(FN,), got W {tuple(W.shape)} and b "
                             f"{tuple(b.shape) if hasattr(b, 'shape') else repr(b)}")
        _, _, stride, pad = check_window_settings(W.shape[2], W.shape[3], stride, pad,
                                                   names=("FH", "FW"))
        self.params = {"W": W, "b": b}
        self.grads = {"W": None, "b": None}
        self.stride, self.pad = stride, pad
        # Saved by forward, as in the book.
        self.x = None
        self.col = None
        self.col_W = None

    def forward(self, x):
        W, b = self.params["W"], self.params["b"]
        xp = guards.arrays("Convolution.forward", x=x, W=W, b=b)
        FN, C, FH, FW = W.shape
        shape = static_shape(x)
        if x.ndim != 4:
            raise ValueError(f"Convolution input must have 4 axes (N, C, H, W), got shape "
                             f"{shape}")
        if shape[1] != C:
            raise ValueError(f"Convolution input of shape {shape} has {shape[1]} channels, "
                             f"but W of shape {tuple(W.shape)} expects {C}")
        out_h, out_w = window_grid(shape, FH, FW, self.stride, self.pad)
        x = as_float(xp, x, "Convolution input")
        dtype = xp.result_type(x, W)  # torch refuses matmul of mixed dtypes: one dtype
        x = xp.astype(x, dtype, copy=False)

        # im2col's windows, kept per sample: col[n] is (C*FH*FW, out_h*out_w), one column
        # per window. The book's one (N*out_h*out_w, C*FH*FW) matrix is the same numbers
        # transposed per sample; this order makes W's product land as (N, FN, out_h*out_w),
        # already the output's layout, where the book's needs a transpose after forward and
        # two more in backward (a third of NumPy's SimpleConvNet step; under jax.jit they
        # block XLA's fusions).
        N = shape[0]
        col_W = xp.astype(xp.reshape(W, (FN, -1)), dtype, copy=False)    # (FN, C*FH*FW)
        # torch's own kernel where `_backend` has one: the same sums, no windows kept
        fast = convolution(xp, x, W, b, self.stride, self.pad)
        if fast is not None:
            self.x, self.col, self.col_W = x, None, col_W
            return fast
        slabs = window_slabs(x, FH, FW, self.stride, self.pad, out_h, out_w)
        col = xp.reshape(xp.stack(slabs, axis=2), (N, C * FH * FW, out_h * out_w))
        out = (xp.matmul(_per_sample(xp, col_W, N), col)
               + xp.reshape(as_dtype(xp, b, dtype), (FN, 1)))  # no copy

        self.x, self.col, self.col_W = x, col, col_W
        return xp.reshape(out, (N, FN, out_h, out_w))

    def backward(self, dout, input_grad=True):
        col_W = self.saved(self.col_W)
        FN, C, FH, FW = self.params["W"].shape
        shape = static_shape(self.x)
        out_h, out_w = window_grid(shape, FH, FW, self.stride, self.pad)
        self.check_dout(dout, (shape[0], FN, out_h, out_w), col_W)
        xp = namespace(dout, col_W)
        if self.col is None:  # forward ran torch's own kernel: so does backward
            dx, dW, db = convolution_gradients(dout, self.x, xp.reshape(col_W, (FN, C, FH, FW)),
                                               self.stride, self.pad, input_grad)
            self._keep_gradients(xp, dW, db)
            return dx

        db = sum_per_channel(xp, dout)  # from (N, FN, out_h, out_w): two fast stages
        dout = xp.reshape(dout, (shape[0], FN, out_h * out_w))             # as forward's out
        dW = xp.sum(xp.matmul(dout, xp.matrix_transpose(self.col)), axis=0)  # (FN, C*FH*FW)
        self._keep_gradients(xp, xp.reshape(dW, (FN, C, FH, FW)), db)
        if not input_grad:  # a network's first layer: nothing uses dx (col2im saved)
            return None

        # col2im of dcol, per sample: each kernel offset's slab (N, C, out_h, out_w) is
        # contiguous in memory, which keeps col2im's strided adds fast on NumPy.
        dcol = xp.matmul(_per_sample(xp, xp.matrix_transpose(col_W), shape[0]),
                         dout)                                             # (N, C*FH*FW, P)
        dcol = xp.reshape(dcol, (shape[0], C, FH * FW, out_h, out_w))
        slabs = [dcol[:, :, k, :, :] for k in range(FH * FW)]
        return image_from_slabs(slabs, self.x.shape, FW, self.stride, self.pad)

    def _keep_gradients(self, xp, dW, db):
        """grads["W"] and grads["b"], each in its parameter's dtype (x may have been promoted
        to a wider one)."""
        self.grads["W"] = xp.astype(dW, self.params["W"].dtype, copy=False)
        self.grads["b"] = xp.astype(db, self.params["b"].dtype, copy=False)


class Pooling(BaseLayer):
    """Max pooling over ``pool_h x pool_w`` windows, moved by `stride`, of each channel.

    Parameters
    ----------
    pool_h, pool_w : int
        Window height and width.
    stride : int, default 2
        Step of the window.
    pad : int, default 0
        Padding on each side; smaller than the window.

    Raises
    ------
    ValueError
        For a window, stride or padding that cannot work; from `forward`, for an input that
        is not 4-D or smaller than a window.
    RuntimeError
        From `backward`, when no `forward` came before it.

    Notes
    -----
    The padding is -inf, so it never wins a window's maximum (unless the window's real
    values are all -inf too: then a padding cell may come first and the gradient is
    dropped); `pad` must be smaller than the window so that no window is padding only.
    Where a window holds several equal maxima, the gradient goes to the first one (as the
    book's argmax does). The gradient is laid out by multiplying with 0/1 masks, so an inf
    or NaN in `dout` gives NaN in the window's other cells.

    The book reduces each row of im2col's matrix; this works on the pool_h*pool_w strided
    slabs that matrix is made of (one per window position), which gives the same numbers
    without copying the input twice or reducing along a short axis. On torch, for float32
    and float64 input without padding, torch's own kernel does it instead
    (`_backend.max_pool_indices`: the same numbers, two kernels instead of about thirty);
    the layer then keeps each window's winner in `indices` rather than `winners`.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import Pooling
    >>> pool = Pooling(2, 2)
    >>> pool.forward(np.arange(16.0).reshape(1, 1, 4, 4))
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        super().__init__()
        pool_h, pool_w, stride, pad = check_window_settings(pool_h, pool_w, stride, pad,
                                                             names=("pool_h", "pool_w"))
        if pad >= pool_h or pad >= pool_w:
            raise ValueError(f"pad must be smaller than the pool window {pool_h}x{pool_w} "
                             f"(else a window can hold padding only), got pad={pad}")
        self.pool_h, self.pool_w = pool_h, pool_w
        self.stride, self.pad = stride, pad
        self.x = None
        self.winners = None  # per window position, where it holds the window's maximum
        self.indices = None  # or, from torch's own kernel, each window's winner (flat)

    def _checked(self, xp, x):
        """(x as a float array, out_h, out_w), after checking x's shape fits the window."""
        shape = static_shape(x)
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} input must have 4 axes (N, C, H, W), got "
                             f"shape {shape}")
        out_h, out_w = window_grid(shape, self.pool_h, self.pool_w, self.stride, self.pad)
        return as_float(xp, x, f"{type(self).__name__} input"), out_h, out_w

    def _slabs(self, x, out_h, out_w, pad_value):
        """x's window slabs after padding with `pad_value`."""
        return window_slabs(x, self.pool_h, self.pool_w, self.stride, self.pad, out_h, out_w,
                             pad_value)

    def _input_gradient(self, slabs):
        """col2im for slabs: add each back at its window position, then crop the padding."""
        return image_from_slabs(slabs, self.x.shape, self.pool_w, self.stride, self.pad)

    def forward(self, x):
        xp = guards.arrays("Pooling.forward", x=x)
        x, out_h, out_w = self._checked(xp, x)
        # torch's own kernel where `_backend` has one: the same maxima and winners
        fast = max_pool_indices(xp, x, self.pool_h, self.pool_w, self.stride, self.pad)
        if fast is not None:
            out, indices = fast
            self.x, self.winners, self.indices = x, None, indices
            return out
        slabs = self._slabs(x, out_h, out_w, -math.inf)
        out = slabs[0]
        for slab in slabs[1:]:
            out = xp.maximum(out, slab)
        # One-hot over the window positions: the first position holding the maximum wins,
        # as with the book's argmax; in a window holding NaN (whose maximum is NaN) the
        # first NaN does, as argmax and torch's max_pool2d pick a NaN. Boolean masks, not
        # integer indices: no scatter needed.
        taken = xp.zeros(out.shape, dtype=xp.bool, device=device(out))
        winners = []
        for slab in slabs:
            wins = ((slab == out) | (slab != slab)) & ~taken
            winners.append(wins)
            taken = taken | wins
        self.x, self.winners, self.indices = x, winners, None
        return out

    def backward(self, dout):
        if self.indices is not None:
            self.check_dout(dout, static_shape(self.indices), self.indices)
            return max_pool_indices_gradient(dout, self.x, self.indices, self.pool_h,
                                             self.pool_w, self.stride)
        winners = self.saved(self.winners)
        self.check_dout(dout, static_shape(winners[0]), winners[0])
        xp = namespace(dout, winners[0])
        # Each window's gradient goes to its winner only. (Multiplying by the 0/1 mask is
        # several times faster than xp.where on NumPy, whose where branches per element.)
        return self._input_gradient([multiply_by_mask(xp, dout, wins) for wins in winners])


class AvgPooling(Pooling):
    """Average pooling with `Pooling`'s signature and window arithmetic.

    Padding counts as zeros in the average (every window divides by ``pool_h*pool_w``), as
    torch's `avg_pool2d` with its default ``count_include_pad=True``.

    Parameters
    ----------
    pool_h, pool_w : int
        Window height and width.
    stride : int, default 2
        Step of the window.
    pad : int, default 0
        Zero padding on each side.

    Raises
    ------
    ValueError
        As `Pooling`.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers import AvgPooling
    >>> AvgPooling(2, 2).forward(np.arange(16.0).reshape(1, 1, 4, 4))
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        super().__init__(pool_h, pool_w, stride, pad)
        self.out_shape = None

    def forward(self, x):
        xp = guards.arrays("AvgPooling.forward", x=x)
        x, out_h, out_w = self._checked(xp, x)
        slabs = self._slabs(x, out_h, out_w, 0.0)
        total = slabs[0]
        for slab in slabs[1:]:
            total = total + slab
        self.x, self.out_shape = x, static_shape(total)
        return total / (self.pool_h * self.pool_w)

    def backward(self, dout):
        out_shape = self.saved(self.out_shape)
        self.check_dout(dout, out_shape, self.x)
        # Every value of a window (padding included) got 1/pool_size of its mean.
        share = dout / (self.pool_h * self.pool_w)
        return self._input_gradient([share] * (self.pool_h * self.pool_w))
