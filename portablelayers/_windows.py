"""Windows over an image batch: the strided slabs that im2col, Convolution and Pooling
are built from, and their adjoint. Used by `functions` (im2col, col2im) and by the
convolution layers.

The standard has no scatter-add and no fancy-index assignment, so everything here loops
over the filter_h * filter_w kernel offsets (never over samples or pixels) and moves one
strided slab of the image per offset. On the CPU this measured as fast as NumPy's
sliding_window_view and faster than torch's unfold / fold: no backend needs its own version.
"""

from __future__ import annotations

import array_api_extra as xpx
from array_api_compat import is_writeable_array

from . import guards
from ._backend import device, namespace

__all__ = ["check_window_settings", "image_from_slabs", "window_grid", "window_slabs"]


def check_window_settings(filter_h, filter_w, stride, pad, names=("filter_h", "filter_w")):
    """(filter_h, filter_w, stride, pad) as Python ints; TypeError/ValueError unless the
    window sizes and stride are integers >= 1 and pad >= 0 (any integer type: numpy.int64
    too, through operator.index)."""
    return tuple(guards.index(name, value, low)
                 for name, value, low in ((names[0], filter_h, 1), (names[1], filter_w, 1),
                                          ("stride", stride, 1), ("pad", pad, 0)))


def window_grid(shape, filter_h, filter_w, stride, pad, what="input"):
    """(out_h, out_w) for sliding a filter_h x filter_w window over `shape` (N, C, H, W).

    Raises TypeError/ValueError for a wrong ndim, non-integer or out-of-range settings, or a
    window larger than the padded input.
    """
    filter_h, filter_w, stride, pad = check_window_settings(filter_h, filter_w, stride, pad)
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


def window_slabs(x, filter_h, filter_w, stride, pad, out_h, out_w, pad_value=0):
    """`x` padded with `pad_value`, then for each kernel offset (i, j) in row-major order the
    slab of the values at that offset in every window:
    slab[n, c, y, x] = padded[n, c, i + stride*y, j + stride*x]."""
    if pad:
        x = xpx.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value,
                    xp=namespace(x))
    return [x[_offset_slices(i, j, stride, out_h, out_w)]
            for i in range(filter_h) for j in range(filter_w)]


def image_from_slabs(slabs, input_shape, filter_w, stride, pad):
    """The adjoint of window_slabs: an image of `input_shape` (N, C, H, W) in the slabs'
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
    """`image_from_slabs` for stride 1, by in-place adds into a zero image."""
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
    """`image_from_slabs` without writing into any array.

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
