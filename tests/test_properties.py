"""Property tests: random shapes, strides, pads and dtypes for Convolution, Pooling,
AvgPooling, Affine and BatchNormalization against loop references written out in NumPy
here, and their backward against numerical gradients (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND
from support import GRAD_TOL, layer_gradient_errors, to_numpy

import portablelayers as pl

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
from hypothesis import HealthCheck, given, settings  # noqa: E402

# Dask evaluates lazily and its numerical gradients evaluate one graph per element, and JAX
# compiles every new shape: fewer examples there.
EXAMPLES = 5 if BACKEND in ("dask", "jax") else 25
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
DTYPES = ["float64", "float32"]
RTOL = {"float64": 1e-10, "float32": 2e-4}


def host(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def dev(xp, values, dtype="float64"):
    return xp.asarray(np.asarray(values), dtype=getattr(xp, dtype))


@st.composite
def windows(draw, max_hw=6):
    """(N, C, H, W), a window (fh, fw), stride and pad that fit."""
    fh, fw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = draw(st.integers(0, 1))
    h = draw(st.integers(max(1, fh - 2 * pad), max_hw))
    w = draw(st.integers(max(1, fw - 2 * pad), max_hw))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), h, w)
    return shape, (fh, fw), draw(st.integers(1, 3)), pad


def conv_loop(x, W, b, stride, pad):
    """Direct convolution, one output element at a time."""
    N, C, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (H + 2 * pad - FH) // stride + 1, (Wd + 2 * pad - FW) // stride + 1
    out = np.empty((N, FN, oh, ow))
    for n in range(N):
        for f in range(FN):
            for i in range(oh):
                for j in range(ow):
                    patch = xp_[n, :, i * stride:i * stride + FH, j * stride:j * stride + FW]
                    out[n, f, i, j] = np.sum(patch * W[f]) + b[f]
    return out


def pool_loop(x, ph, pw, stride, pad, dout, kind):
    """Max (first maximum wins, -inf padding) or average (zeros counted) pooling and its
    input gradient, one window at a time."""
    N, C, H, W = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    oh, ow = (H + 2 * pad - ph) // stride + 1, (W + 2 * pad - pw) // stride + 1
    out = np.empty((N, C, oh, ow))
    dx = np.zeros_like(xp_)
    for n in range(N):
        for c in range(C):
            for i in range(oh):
                for j in range(ow):
                    rows = slice(i * stride, i * stride + ph)
                    cols = slice(j * stride, j * stride + pw)
                    window = xp_[n, c, rows, cols]
                    if kind == "max":
                        k = int(np.argmax(window))
                        out[n, c, i, j] = window.flat[k]
                        dx[n, c, i * stride + k // pw, j * stride + k % pw] += dout[n, c, i, j]
                    else:
                        out[n, c, i, j] = window.mean()
                        dx[n, c, rows, cols] += dout[n, c, i, j] / (ph * pw)
    return out, dx[:, :, pad:pad + H, pad:pad + W]


@SETTINGS
@given(windows(), st.integers(1, 3), st.sampled_from(DTYPES), st.integers(0, 2**16))
def test_convolution_matches_loop(xp, geometry, fn, dtype, seed):
    shape, (fh, fw), stride, pad = geometry
    x, W, b = host(seed, shape), host(seed + 1, (fn, shape[1], fh, fw)), host(seed + 2, (fn,))
    layer = pl.Convolution(dev(xp, W, dtype), dev(xp, b, dtype), stride=stride, pad=pad)
    out = layer.forward(dev(xp, x, dtype))
    assert out.dtype == getattr(xp, dtype)
    expected = conv_loop(x.astype(dtype), W.astype(dtype), b.astype(dtype), stride, pad)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=RTOL[dtype], atol=RTOL[dtype])


@SETTINGS
@given(windows(max_hw=5), st.integers(1, 2), st.integers(0, 2**16))
def test_convolution_gradients(xp, geometry, fn, seed):
    shape, (fh, fw), stride, pad = geometry
    layer = pl.Convolution(dev(xp, host(seed + 1, (fn, shape[1], fh, fw))),
                           dev(xp, host(seed + 2, (fn,))), stride=stride, pad=pad)
    errors = layer_gradient_errors(layer, dev(xp, host(seed, shape)), seed=seed)
    assert max(errors.values()) <= GRAD_TOL, errors


@SETTINGS
@given(windows(), st.sampled_from(["max", "avg"]), st.sampled_from(DTYPES),
       st.integers(0, 2**16))
def test_pooling_matches_loop(xp, geometry, kind, dtype, seed):
    shape, (ph, pw), stride, pad = geometry
    pad = min(pad, ph - 1, pw - 1)  # a window of padding only is refused
    if ph > shape[2] + 2 * pad or pw > shape[3] + 2 * pad:
        return
    x = host(seed, shape).astype(dtype)
    layer = (pl.Pooling if kind == "max" else pl.AvgPooling)(ph, pw, stride=stride, pad=pad)
    out = layer.forward(dev(xp, x, dtype))
    dout = host(seed + 1, tuple(out.shape)).astype(dtype)
    dx = layer.backward(dev(xp, dout, dtype))
    ref_out, ref_dx = pool_loop(x, ph, pw, stride, pad, dout, kind)
    np.testing.assert_allclose(to_numpy(out), ref_out, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(to_numpy(dx), ref_dx, rtol=RTOL[dtype], atol=RTOL[dtype])


@SETTINGS
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(1, 4),
       st.sampled_from(DTYPES), st.integers(0, 2**16))
def test_affine_matches_numpy_and_gradients(xp, sample_shape, m, dtype, seed):
    shape = (2, *sample_shape)
    d = int(np.prod(sample_shape))
    x, W, b = host(seed, shape), host(seed + 1, (d, m)), host(seed + 2, (m,))
    layer = pl.Affine(dev(xp, W, dtype), dev(xp, b, dtype))
    out = layer.forward(dev(xp, x, dtype))
    expected = x.reshape(2, d).astype(dtype) @ W.astype(dtype) + b.astype(dtype)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=RTOL[dtype], atol=RTOL[dtype])
    if dtype == "float64":
        errors = layer_gradient_errors(pl.Affine(dev(xp, W), dev(xp, b)), dev(xp, x), seed=seed)
        assert max(errors.values()) <= GRAD_TOL, errors


@SETTINGS
@given(st.sampled_from([(3, 2), (4, 3), (2, 2, 2, 3), (3, 1, 2, 2)]), st.booleans(),
       st.integers(0, 2**16))
def test_batchnorm_matches_numpy_and_gradients(xp, shape, train, seed):
    c = shape[1]
    x, gamma, beta = host(seed, shape), host(seed + 1, (c,)), host(seed + 2, (c,))
    rm, rv = host(seed + 3, (c,)), np.abs(host(seed + 4, (c,))) + 0.5
    layer = pl.BatchNormalization(dev(xp, gamma), dev(xp, beta), running_mean=dev(xp, rm),
                                  running_var=dev(xp, rv))
    out = layer.forward(dev(xp, x), train)
    axes = (0, *range(2, len(shape)))
    bshape = (1, c) + (1,) * (len(shape) - 2)
    mean = x.mean(axis=axes) if train else rm
    var = x.var(axis=axes) if train else rv
    expected = (gamma.reshape(bshape) * (x - mean.reshape(bshape))
                / np.sqrt(var.reshape(bshape) + 10e-7) + beta.reshape(bshape))
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-10, atol=1e-10)
    if train:
        np.testing.assert_allclose(to_numpy(layer.running_mean), 0.9 * rm + 0.1 * mean,
                                   rtol=1e-12)
    # Backward against torch's autograd of the same formula (central differences lose
    # too many digits on batches of two or three, whose training dx is a projection).
    torch = pytest.importorskip("torch")
    tx, tg, tb = (torch.tensor(v, requires_grad=True, device="cpu") for v in (x, gamma, beta))
    if train:
        tm = tx.mean(dim=axes, keepdim=True)
        tv = ((tx - tm) ** 2).mean(dim=axes, keepdim=True)
    else:
        tm, tv = (torch.tensor(v, device="cpu").reshape(bshape) for v in (rm, rv))
    ref = tg.reshape(bshape) * (tx - tm) / torch.sqrt(tv + 10e-7) + tb.reshape(bshape)
    dout = host(seed + 5, shape)
    (ref * torch.tensor(dout, device="cpu")).sum().backward()
    dx = layer.backward(dev(xp, dout))
    for got, want in ((dx, tx.grad), (layer.dgamma, tg.grad), (layer.dbeta, tb.grad)):
        np.testing.assert_allclose(to_numpy(got), want.numpy(), rtol=1e-9, atol=1e-12)
