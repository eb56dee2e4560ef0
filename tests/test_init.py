"""Initializer: book-style stds, seeding equal on every backend, dtype and device."""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import to_numpy

from portablelayers._backend import device
from portablelayers.init import Initializer, weight_std

lazy_xp_function((Initializer, "weight"), jax_jit=False)
lazy_xp_function((Initializer, "zeros"), jax_jit=False)
lazy_xp_function((Initializer, "ones"), jax_jit=False)


def default_device(xp):
    return device(xp.asarray(0.0))


@pytest.mark.parametrize(
    ("spec", "fan_in", "expected"),
    [("relu", 50, math.sqrt(2 / 50)), ("he", 8, 0.5), ("He", 8, 0.5),
     ("sigmoid", 25, 0.2), ("xavier", 100, 0.1), ("XAVIER", 4, 0.5), ("glorot", 4, 0.5),
     (0.01, 999, 0.01), (1, None, 1.0), (0.0, None, 0.0)],
)
def test_weight_std_values(spec, fan_in, expected):
    assert weight_std(spec, fan_in) == pytest.approx(expected, rel=1e-15)
    assert type(weight_std(spec, fan_in)) is float


def test_weight_std_rejects_bad_specs():
    with pytest.raises(ValueError, match="'relu'.*'xavier'.*got 'gelu'"):
        weight_std("gelu", 10)
    with pytest.raises(ValueError, match="fan_in"):
        weight_std("he", 0)
    with pytest.raises(ValueError, match=">= 0"):
        weight_std(-0.1, 10)
    with pytest.raises(ValueError, match="finite"):
        weight_std(float("nan"), 10)
    with pytest.raises(TypeError, match="bool"):
        weight_std(True, 10)
    with pytest.raises(TypeError, match="NoneType"):
        weight_std(None, 10)


def test_float32_default_on_default_device(xp):
    init = Initializer(xp, seed=0)
    for arr, shape in [(init.weight((3, 4)), (3, 4)), (init.zeros((4,)), (4,)),
                       (init.ones((2, 1, 3, 3)), (2, 1, 3, 3))]:
        assert arr.dtype == xp.float32
        assert tuple(arr.shape) == shape
        assert device(arr) == default_device(xp)
    assert init.dtype == xp.float32


@pytest.mark.parametrize("dtype", ["float64", "name"])
def test_float64_on_request(xp, dtype):
    init = Initializer(xp, dtype=xp.float64 if dtype == "float64" else "float64", seed=0)
    for arr in (init.weight((3, 4), "he"), init.zeros((4,)), init.ones((4,))):
        assert arr.dtype == xp.float64


def test_zeros_and_ones_values(xp):
    init = Initializer(xp)
    np.testing.assert_array_equal(to_numpy(init.zeros((2, 3))), np.zeros((2, 3)))
    np.testing.assert_array_equal(to_numpy(init.ones(5)), np.ones(5))


def test_explicit_device(xp):
    dev = default_device(xp)
    init = Initializer(xp, device=dev, seed=1)
    assert device(init.weight((2, 2))) == dev
    assert device(init.zeros((2,))) == dev


def test_second_device_on_array_api_strict(xp):
    if xp.__name__ != "array_api_strict":
        pytest.skip("array-api-strict simulates a second device")
    dev = xp.Device("device1")
    init = Initializer(xp, device=dev, seed=1)
    for arr in (init.weight((2, 2), "he"), init.zeros((2,)), init.ones((2,))):
        assert device(arr) == dev


def test_same_seed_same_weights_as_numpy(xp):
    mine, numpy_init = Initializer(xp, seed=42), Initializer(None, seed=42)
    for shape, spec in [((6, 5), "he"), ((4, 2, 3, 3), "xavier"), ((5,), 0.01)]:
        ours, ref = to_numpy(mine.weight(shape, spec)), numpy_init.weight(shape, spec)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, ref)


def test_sequence_is_reproducible_and_draws_differ(xp):
    a, b, c = Initializer(xp, seed=5), Initializer(xp, seed=5), Initializer(xp, seed=6)
    a1, a2 = to_numpy(a.weight((4, 4), 1.0)), to_numpy(a.weight((4, 4), 1.0))
    np.testing.assert_array_equal(a1, to_numpy(b.weight((4, 4), 1.0)))
    np.testing.assert_array_equal(a2, to_numpy(b.weight((4, 4), 1.0)))
    assert not np.array_equal(a1, a2)  # W1 and W2 are different draws
    assert not np.array_equal(a1, to_numpy(c.weight((4, 4), 1.0)))


def test_seed_none_is_recorded_and_replayable(xp):
    init = Initializer(xp)
    w = to_numpy(init.weight((3, 3)))
    np.testing.assert_array_equal(w, to_numpy(Initializer(xp, seed=init.seed).weight((3, 3))))


@pytest.mark.parametrize(
    ("shape", "spec", "std"),
    [((10, 7), "relu", math.sqrt(2 / 10)), ((10, 7), "sigmoid", math.sqrt(1 / 10)),
     ((6, 3, 5, 5), "he", math.sqrt(2 / 75)), ((6, 3, 5, 5), "xavier", math.sqrt(1 / 75))],
)
def test_fan_in_from_shape(xp, shape, spec, std):
    # A named std must equal the same draws scaled by the hand-computed number.
    named = to_numpy(Initializer(xp, dtype="float64", seed=3).weight(shape, spec))
    number = to_numpy(Initializer(xp, dtype="float64", seed=3).weight(shape, std))
    np.testing.assert_allclose(named, number, rtol=1e-15)


def test_explicit_fan_in_overrides_shape(xp):
    a = to_numpy(Initializer(xp, dtype="float64", seed=3).weight((4, 4), "he", fan_in=32))
    b = to_numpy(Initializer(xp, dtype="float64", seed=3).weight((4, 4), 0.25))
    np.testing.assert_allclose(a, b, rtol=1e-15)


@pytest.mark.parametrize(("spec", "fan_in", "std"), [("he", 400, math.sqrt(2 / 400)),
                                                     ("xavier", 400, math.sqrt(1 / 400)),
                                                     (0.01, 400, 0.01)])
def test_weight_statistics(xp, spec, fan_in, std):
    w = to_numpy(Initializer(xp, seed=11).weight((fan_in, 50), spec)).astype(np.float64)
    # 20000 normal draws: the sample std is within ~1.5% and the mean within ~0.02 std.
    assert w.std() == pytest.approx(std, rel=0.03)
    assert abs(w.mean()) < 0.03 * std


def test_bad_arguments(xp):
    with pytest.raises(ValueError, match="real floating"):
        Initializer(xp, dtype=xp.int32)
    with pytest.raises(ValueError, match="seed"):
        Initializer(xp, seed=-1)
    with pytest.raises(ValueError, match="unknown backend"):
        Initializer("numpyy")
    init = Initializer(xp, seed=0)
    with pytest.raises(ValueError, match="shape"):
        init.weight((3, -1))
    with pytest.raises(TypeError, match="shape"):
        init.zeros(None)
    with pytest.raises(ValueError, match="one of"):
        init.weight((3, 3), "relu6")
    # A refused call leaves the stream where it was: the next draw is the first one.
    np.testing.assert_array_equal(to_numpy(init.weight((2, 2), 1.0)),
                                  to_numpy(Initializer(xp, seed=0).weight((2, 2), 1.0)))


def test_uniform_draws_stay_below_one_in_every_dtype(xp):
    # Drawn in float64 on the host and rounded: values just below 1 became 1 in float16
    # (about 500 in 2 million) and, rarely, in float32.
    from portablelayers.random import Generator

    for name in ("float16", "float32"):
        dtype = getattr(xp, name, None)
        if dtype is None:
            continue
        draws = to_numpy(Generator(xp, 0).uniform((200_000,), dtype))
        assert draws.dtype == np.dtype(name) and draws.max() < 1.0 and draws.min() >= 0.0


def test_counter_bits_of_a_0d_shape_are_0d(xp):
    from portablelayers.random import counter_bits, seed_key

    bits = counter_bits(xp, (), seed_key(0), xp.asarray(3, dtype=xp.int32))
    assert tuple(bits.shape) == ()
    assert int(bits) == int(counter_bits(xp, (1,), seed_key(0),
                                         xp.asarray(3, dtype=xp.int32))[0])


def test_float64_without_jaxs_64_bit_mode_is_an_error_not_float32(xp):
    if xp.__name__ != "jax.numpy":
        pytest.skip("JAX's 64-bit switch")
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="float32 arrays when asked for float64.*x64"):
            Initializer(xp, dtype="float64")
    finally:
        jax.config.update("jax_enable_x64", before)
