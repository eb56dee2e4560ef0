"""Dropout: inverted scaling, keep rate, seeded masks on the backend's own generator,
identity at test time, gradients, dtype and errors."""

import math

import numpy as np
import pytest
from array_api_compat import numpy as compat_numpy
from array_api_extra.testing import lazy_xp_function
from support import assert_close, assert_gradients_match, assert_same_dtype_device, make, to_numpy

from portablelayers import Dropout

lazy_xp_function((Dropout, "forward"), jax_jit=False)
lazy_xp_function((Dropout, "backward"), jax_jit=False)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_ratio_outside_0_1_is_refused(ratio):
    with pytest.raises(ValueError, match=r"dropout_ratio must lie in \[0, 1\)"):
        Dropout(ratio)


@pytest.mark.parametrize("ratio", [0.3, 0.8])
def test_keep_rate_and_inverted_scaling(xp, ratio):
    n = 100_000
    layer = Dropout(ratio, seed=0)
    x = make(xp, np.full(n, 2.0), "float32")
    out_np, mask_np = to_numpy(layer.forward(x)), to_numpy(layer.mask)
    kept = int(mask_np.sum())
    sigma = math.sqrt(n * ratio * (1 - ratio))
    assert abs(kept - n * (1 - ratio)) <= 5 * sigma, (kept, n * (1 - ratio), sigma)
    assert mask_np.dtype == np.bool_
    # Kept values are scaled by 1 / (1 - p), dropped ones are exactly zero.
    np.testing.assert_allclose(out_np[mask_np], 2.0 / (1 - ratio), rtol=1e-6)
    np.testing.assert_array_equal(out_np[~mask_np], 0.0)


def test_backward_scales_dout_by_the_same_mask(xp, rng):
    layer = Dropout(0.4, seed=1)
    layer.forward(make(xp, rng.standard_normal((5, 6))))
    dout_np = rng.standard_normal((5, 6))
    mask_np = to_numpy(layer.mask)
    assert 0 < mask_np.sum() < mask_np.size  # both kinds present
    assert_close(layer.backward(make(xp, dout_np)), np.where(mask_np, dout_np / 0.6, 0.0),
                 rtol=1e-15)


def test_same_seed_gives_the_same_mask_sequence(xp):
    x = make(xp, np.ones((4, 25)))
    a, b, c = Dropout(0.5, seed=42), Dropout(0.5, seed=42), Dropout(0.5, seed=43)
    masks_a, masks_b, masks_c = [], [], []
    for _ in range(3):
        for layer, masks in ((a, masks_a), (b, masks_b), (c, masks_c)):
            layer.forward(x)
            masks.append(to_numpy(layer.mask))
    for mask_a, mask_b in zip(masks_a, masks_b, strict=True):
        np.testing.assert_array_equal(mask_a, mask_b)
    # Successive masks differ, and so do another seed's (100 elements: chance ~2**-100).
    assert not np.array_equal(masks_a[0], masks_a[1])
    assert not np.array_equal(masks_a[0], masks_c[0])


def test_seeds_that_share_their_low_bits_give_different_masks(xp):
    # A seed is folded 32 bits at a time: -1 and 2**32 - 1 (and -2**63 and 0) have the
    # same words but for the sign, and must still be different streams.
    x = make(xp, np.ones((4, 25)))
    seeds = [0, -1, 2**32 - 1, -(2**63), 2**63 - 1, -2, 2**32 - 2]
    masks = []
    for seed in seeds:
        layer = Dropout(0.5, seed=seed)
        layer.forward(x)
        masks.append(to_numpy(layer.mask))
    for i in range(len(seeds)):
        for j in range(i):
            assert not np.array_equal(masks[i], masks[j]), (seeds[i], seeds[j])


def test_masks_are_the_same_on_every_backend_and_follow_the_library(xp):
    # The counter-based stream is integer arithmetic: NumPy gives the reference masks, and
    # a layer whose counter was made on NumPy moves it to the input's library and goes on.
    host = compat_numpy.asarray(np.ones((3, 40)))
    reference = Dropout(0.5, seed=9)
    expected = [to_numpy(reference.forward(host) != 0) for _ in range(3)]
    layer = Dropout(0.5, seed=9)
    for mask in expected:
        layer.forward(make(xp, np.ones((3, 40))))
        np.testing.assert_array_equal(to_numpy(layer.mask), mask)
    assert int(to_numpy(layer.state["step"])) == 3
    assert_same_dtype_device(layer.state["step"], make(xp, np.zeros((), np.int32), "int32"))


def test_book_form_scales_at_test_time(xp, rng):
    x_np = rng.standard_normal((4, 30))
    layer = Dropout(0.3, seed=2, inverted=False)
    out = layer.forward(make(xp, x_np))
    mask = to_numpy(layer.mask)
    assert_close(out, x_np * mask, rtol=0)  # the book: x * mask, unscaled
    dout_np = rng.standard_normal((4, 30))
    assert_close(layer.backward(make(xp, dout_np)), dout_np * mask, rtol=0)
    assert_close(layer.forward(make(xp, x_np), train_flg=False), x_np * 0.7, rtol=1e-15)
    assert_close(layer.backward(make(xp, dout_np)), dout_np * 0.7, rtol=1e-15)


def test_identity_at_test_time(xp, rng):
    x_np, dout_np = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer = Dropout(0.5, seed=0)
    assert_close(layer.forward(make(xp, x_np), train_flg=False), x_np, rtol=0)
    assert_close(layer.backward(make(xp, dout_np)), dout_np, rtol=0)


def test_ratio_zero_keeps_everything(xp, rng):
    x_np = rng.standard_normal((3, 4))
    layer = Dropout(0.0, seed=0)
    assert_close(layer.forward(make(xp, x_np)), x_np, rtol=0)
    assert to_numpy(layer.mask).all()


def test_agrees_with_torch_dropout(xp, rng):
    torch = pytest.importorskip("torch")
    x_np = rng.standard_normal((4, 50)).astype(np.float32)
    # Test time: both are the identity.
    ref = torch.nn.functional.dropout(torch.tensor(x_np, device="cpu"), p=0.3, training=False)
    out = Dropout(0.3, seed=0).forward(make(xp, x_np, "float32"), train_flg=False)
    np.testing.assert_array_equal(to_numpy(out), ref.numpy())
    # Training: torch's dropout is inverted too; kept values are x / (1 - p) in both.
    ref = torch.nn.functional.dropout(torch.tensor(x_np, device="cpu"), p=0.3,
                                      training=True).numpy()
    out = to_numpy(Dropout(0.3, seed=0).forward(make(xp, x_np, "float32")))
    np.testing.assert_allclose(ref[ref != 0], (x_np / 0.7)[ref != 0], rtol=1e-6)
    np.testing.assert_allclose(out[out != 0], (x_np / 0.7)[out != 0], rtol=1e-6)


@pytest.mark.parametrize("train_flg", [True, False])
def test_gradients_match_numerical(xp, rng, train_flg):
    def forward(layer, x):
        layer.__init__(0.4, seed=5)  # a fresh generator: the same mask on every call
        return layer.forward(x, train_flg)

    assert_gradients_match(Dropout(0.4, seed=5), make(xp, rng.standard_normal((4, 5))),
                           forward=forward)


def test_float32_kept_and_inputs_untouched(xp, rng):
    x = make(xp, rng.standard_normal((4, 6)), "float32")
    dout = make(xp, rng.standard_normal((4, 6)), "float32")
    x_np, dout_np = to_numpy(x).copy(), to_numpy(dout).copy()
    layer = Dropout(0.5, seed=3)
    assert_same_dtype_device(layer.forward(x), x)
    assert_same_dtype_device(layer.backward(dout), x)
    np.testing.assert_array_equal(to_numpy(x), x_np)
    np.testing.assert_array_equal(to_numpy(dout), dout_np)


def test_backward_errors(xp):
    layer = Dropout(0.5, seed=0)
    with pytest.raises(RuntimeError, match="Dropout.backward.*before"):
        layer.backward(make(xp, np.ones(3)))
    layer.forward(make(xp, np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        layer.backward(make(xp, np.ones((3, 2))))
