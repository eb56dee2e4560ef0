"""Test helpers: moving arrays to NumPy, and a gradient check for any layer."""

from __future__ import annotations

import gzip
import struct

import numpy as np
from array_api_compat import is_cupy_array, is_dask_array, is_torch_array

from portablelayers._backend import device, namespace
from portablelayers.gradcheck import numerical_gradient, relative_error

GRAD_TOL = 1e-6  # relative error of analytic vs numerical gradients in float64


def to_numpy(x) -> np.ndarray:
    """A NumPy copy of an array of any backend (computes Dask arrays)."""
    if is_dask_array(x):
        x = x.compute()
    if is_cupy_array(x):
        return x.get()
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def make(xp, value, dtype="float64"):
    """`value` (NumPy array or nested lists) as an array of `xp` with the named dtype."""
    return xp.asarray(np.asarray(value), dtype=getattr(xp, dtype))


def assert_close(actual, expected, rtol=1e-7, atol=0.0):
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected), rtol=rtol, atol=atol)


def rel_err(actual, expected) -> float:
    """max |actual - expected| / max |expected| of two host (NumPy) arrays, in float64."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


def assert_same_dtype_device(actual, like):
    assert actual.dtype == like.dtype, f"dtype {actual.dtype} != {like.dtype}"
    assert device(actual) == device(like), f"device {device(actual)} != {device(like)}"


def layer_gradient_errors(layer, x, forward=None, dout=None, seed=0):
    """Relative errors of `layer.backward` against central differences, per input.

    `forward(layer, x)` runs the layer (default `layer.forward(x)`). The scalar checked is
    sum(forward(layer, x) * dout) with a fixed random `dout` (or the given one), so every
    output element takes part. Returns {"x": err, "W": err, ...} for x and each param.
    """
    xp = namespace(x)
    forward = forward or (lambda lyr, inp: lyr.forward(inp))
    out = forward(layer, x)
    if dout is None:
        values = np.random.default_rng(seed).standard_normal(tuple(out.shape))
        dout = xp.asarray(values, dtype=out.dtype, device=device(out))
    analytic = {"x": layer.backward(dout)}
    analytic.update({name: layer.grads[name] for name in layer.params})

    def objective(inp):
        return xp.sum(forward(layer, inp) * dout)

    numeric = {"x": numerical_gradient(objective, x)}
    for name, original in list(layer.params.items()):
        def objective_of_param(p, name=name):
            layer.params[name] = p
            return xp.sum(forward(layer, x) * dout)

        numeric[name] = numerical_gradient(objective_of_param, original)
        layer.params[name] = original
    return {name: relative_error(analytic[name], numeric[name]) for name in analytic}


def assert_gradients_match(layer, x, **kwargs):
    errors = layer_gradient_errors(layer, x, **kwargs)
    bad = {k: v for k, v in errors.items() if not v <= GRAD_TOL}
    assert not bad, f"relative gradient errors above {GRAD_TOL}: {errors}"


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written independently of the loader: magic, big-endian dims, data."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    big = array.astype(array.dtype.newbyteorder(">"))
    header = struct.pack(">BBBB", 0, 0, code[array.dtype], array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + big.tobytes()


def write_idx(path, array: np.ndarray, gz: bool = True):
    """`array` as an IDX file at `path`, gzipped unless gz=False."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
