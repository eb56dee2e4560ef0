"""Convolution, Pooling and AvgPooling against torch.nn.functional and autograd.

Our layers run on the backend under test; torch (CPU, float32) is the independent
reference for the forward pass and, through autograd, for every gradient.
"""

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import make, to_numpy

from portablelayers import AvgPooling, Convolution, Pooling

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")

for _cls in (Convolution, Pooling, AvgPooling):
    lazy_xp_function((_cls, "forward"), jax_jit=False)
    lazy_xp_function((_cls, "backward"), jax_jit=False)

TOL = 1e-5  # max |ours - torch| / max |torch|, in float32
X_SHAPE = (4, 3, 13, 12)


def rel_err(ours, reference):
    ours, reference = to_numpy(ours).astype(np.float64), reference.detach().numpy()
    assert ours.shape == reference.shape
    return np.max(np.abs(ours - reference)) / np.max(np.abs(reference))


def assert_matches(named_pairs):
    errors = {name: rel_err(ours, ref) for name, (ours, ref) in named_pairs.items()}
    bad = {name: err for name, err in errors.items() if not err <= TOL}
    assert not bad, f"relative errors against torch above {TOL}: {errors}"


def run_ours(xp, layer, x_np, dout_np):
    out = layer.forward(make(xp, x_np, "float32"))
    dx = layer.backward(make(xp, dout_np, "float32"))
    assert out.dtype == xp.float32 and dx.dtype == xp.float32
    return out, dx


@pytest.mark.parametrize("kernel, stride, pad", [
    ((3, 3), 1, 0), ((3, 2), 2, 1), ((2, 3), 1, 2), ((5, 4), 3, 1),
])
def test_convolution_matches_torch(xp, rng, kernel, stride, pad):
    x_np = rng.standard_normal(X_SHAPE).astype(np.float32)
    W_np = rng.standard_normal((5, 3, *kernel)).astype(np.float32)
    b_np = rng.standard_normal(5).astype(np.float32)
    x, W, b = (torch.tensor(a, requires_grad=True, device="cpu") for a in (x_np, W_np, b_np))
    ref = F.conv2d(x, W, b, stride=stride, padding=pad)
    dout_np = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
    ref.backward(torch.tensor(dout_np, device="cpu"))

    conv = Convolution(make(xp, W_np, "float32"), make(xp, b_np, "float32"), stride, pad)
    out, dx = run_ours(xp, conv, x_np, dout_np)
    assert conv.dW.dtype == xp.float32 and conv.db.dtype == xp.float32
    assert_matches({"out": (out, ref), "dx": (dx, x.grad), "dW": (conv.dW, W.grad),
                    "db": (conv.db, b.grad)})


POOLS = [((2, 2), 2, 0), ((3, 2), 2, 1), ((2, 3), 1, 1)]


@pytest.mark.parametrize("ours, theirs", [(Pooling, F.max_pool2d), (AvgPooling, F.avg_pool2d)],
                         ids=["max", "avg"])
@pytest.mark.parametrize("kernel, stride, pad", POOLS)
def test_pooling_matches_torch(xp, rng, ours, theirs, kernel, stride, pad):
    x_np = rng.standard_normal(X_SHAPE).astype(np.float32)
    x = torch.tensor(x_np, requires_grad=True, device="cpu")
    ref = theirs(x, kernel, stride=stride, padding=pad)  # avg: count_include_pad=True
    dout_np = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
    ref.backward(torch.tensor(dout_np, device="cpu"))

    out, dx = run_ours(xp, ours(*kernel, stride=stride, pad=pad), x_np, dout_np)
    assert_matches({"out": (out, ref), "dx": (dx, x.grad)})


def test_max_pooling_of_all_negative_input_with_padding_matches_torch(xp, rng):
    # torch pads max pooling with -inf; a zero padding would win every border window here.
    x_np = -1.0 - rng.random((2, 2, 6, 6)).astype(np.float32)
    x = torch.tensor(x_np, requires_grad=True, device="cpu")
    ref = F.max_pool2d(x, 3, stride=2, padding=1)
    dout_np = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
    ref.backward(torch.tensor(dout_np, device="cpu"))
    out, dx = run_ours(xp, Pooling(3, 3, stride=2, pad=1), x_np, dout_np)
    assert_matches({"out": (out, ref), "dx": (dx, x.grad)})
