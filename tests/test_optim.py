"""Optimizers: the book's formulas by hand, torch.optim, rebinding, in place, clipping."""

from __future__ import annotations

import math
import warnings
from collections.abc import MutableMapping

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function
from support import assert_close, make, to_numpy

from portablelayers._backend import device
from portablelayers.layers import Affine
from portablelayers.optim import (
    SGD,
    AdaGrad,
    Adam,
    AdamW,
    Momentum,
    Nesterov,
    RMSprop,
    clip_grad_norm,
    global_norm,
)

OPTIMIZERS = (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW)
for _cls in OPTIMIZERS:
    lazy_xp_function((_cls, "update"), jax_jit=False)
lazy_xp_function((Affine, "forward"), jax_jit=False)
lazy_xp_function((Affine, "backward"), jax_jit=False)
lazy_xp_function(global_norm, jax_jit=False)
lazy_xp_function(clip_grad_norm, jax_jit=False)

STEPS = 4


def fresh(xp, value, dtype="float64"):
    """A new array of `xp` holding `value`: the optimizers update it in place, so it must not
    share memory with the NumPy reference (torch.asarray and np.asarray would)."""
    return make(xp, np.array(value, copy=True), dtype)


def snapshot(x):
    return np.array(to_numpy(x), copy=True)


# --- The book's formulas, written out in NumPy (float64) as independent references -----

def book_reference(kind, p0, grads, **hp):
    """Parameters after each step of `grads` (a list), one formula per optimizer."""
    p = {k: v.copy() for k, v in p0.items()}
    s1 = {k: np.zeros_like(v) for k, v in p0.items()}  # v (Momentum), h, m (Adam)
    s2 = {k: np.zeros_like(v) for k, v in p0.items()}  # v (Adam)
    lr, eps = hp.get("lr"), hp.get("eps", 1e-7)
    history = []
    for t, g in enumerate(grads, start=1):
        for k in p:
            if kind == "SGD":
                p[k] = p[k] - lr * g[k]
            elif kind == "Momentum":
                s1[k] = hp["momentum"] * s1[k] - lr * g[k]
                p[k] = p[k] + s1[k]
            elif kind == "Nesterov":
                mu = hp["momentum"]
                s1[k] = mu * s1[k] - lr * g[k]
                p[k] = p[k] + mu * mu * s1[k] - (1 + mu) * lr * g[k]
            elif kind == "AdaGrad":
                s1[k] = s1[k] + g[k] ** 2
                p[k] = p[k] - lr * g[k] / (np.sqrt(s1[k]) + eps)
            elif kind == "RMSprop":
                rho = hp["decay_rate"]
                s1[k] = rho * s1[k] + (1 - rho) * g[k] ** 2
                p[k] = p[k] - lr * g[k] / (np.sqrt(s1[k]) + eps)
            else:  # Adam, AdamW
                b1, b2 = hp["beta1"], hp["beta2"]
                if kind == "AdamW":
                    p[k] = p[k] * (1 - lr * hp["weight_decay"])
                s1[k] = b1 * s1[k] + (1 - b1) * g[k]
                s2[k] = b2 * s2[k] + (1 - b2) * g[k] ** 2
                lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                p[k] = p[k] - lr_t * s1[k] / (np.sqrt(s2[k]) + eps)
        history.append({k: v.copy() for k, v in p.items()})
    return history


HYPER = {
    "SGD": {"lr": 0.1},
    "Momentum": {"lr": 0.1, "momentum": 0.8},
    "Nesterov": {"lr": 0.1, "momentum": 0.8},
    "AdaGrad": {"lr": 0.5},
    "RMSprop": {"lr": 0.05, "decay_rate": 0.9},
    "Adam": {"lr": 0.01, "beta1": 0.8, "beta2": 0.95},
    "AdamW": {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "weight_decay": 0.5},
}


def problem(rng, steps=STEPS):
    p0 = {"W": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(steps)]
    return p0, grads


def run(xp, cls, p0, grads, dtype="float64", **hp):
    params = {k: fresh(xp, v, dtype) for k, v in p0.items()}
    optimizer = cls(**hp)
    history = []
    for g in grads:
        optimizer.update(params, {k: make(xp, v, dtype) for k, v in g.items()})
        history.append({k: snapshot(v) for k, v in params.items()})
    return optimizer, params, history


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_matches_book_formula(xp, rng, cls):
    p0, grads = problem(rng)
    hp = HYPER[cls.__name__]
    _, _, history = run(xp, cls, p0, grads, **hp)
    for ours, ref in zip(history, book_reference(cls.__name__, p0, grads, **hp), strict=True):
        for k in ref:
            assert_close(ours[k], ref[k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_float32_params_and_state_keep_dtype_and_device(xp, rng, cls):
    p0, grads = problem(rng)
    hp = HYPER[cls.__name__]
    optimizer, params, history = run(xp, cls, p0, grads, dtype="float32", **hp)
    like = make(xp, p0["W"], "float32")
    for k in params:
        assert params[k].dtype == xp.float32
        assert device(params[k]) == device(like)
        assert_close(params[k], book_reference(cls.__name__, p0, grads, **hp)[-1][k],
                     rtol=1e-4, atol=1e-5)
    for state in optimizer.state_names:
        for k, value in getattr(optimizer, state).items():
            assert value.dtype == xp.float32, (state, k)
            assert device(value) == device(like)


def test_float64_grads_do_not_promote_float32_params(xp, rng):
    params = {"W": make(xp, rng.standard_normal((2, 2)), "float32")}
    Adam().update(params, {"W": make(xp, rng.standard_normal((2, 2)), "float64")})
    assert params["W"].dtype == xp.float32


def test_hand_computed_first_steps(xp):
    # SGD: 1 - 0.1 * 0.5 = 0.95. Momentum: v = -0.05, W = 0.95; then v = 0.9 * -0.05 - 0.05.
    params = {"W": make(xp, [1.0, -2.0])}
    SGD(lr=0.1).update(params, {"W": make(xp, [0.5, -1.0])})
    assert_close(params["W"], [0.95, -1.9], rtol=1e-15)

    params, opt = {"W": make(xp, [1.0])}, Momentum(lr=0.1, momentum=0.9)
    opt.update(params, {"W": make(xp, [0.5])})
    opt.update(params, {"W": make(xp, [0.5])})
    assert_close(params["W"], [1.0 - 0.05 - 0.095], rtol=1e-15)

    # Nesterov's first step moves (1 + m + m^2) * lr * g: 1 - 2.71 * 0.1 * 1.
    params = {"W": make(xp, [1.0])}
    Nesterov(lr=0.1, momentum=0.9).update(params, {"W": make(xp, [1.0])})
    assert_close(params["W"], [1.0 - 0.271], rtol=1e-14)

    # AdaGrad's first step is lr * g / (|g| + 1e-7): about lr * sign(g).
    params = {"W": make(xp, [0.0, 0.0])}
    AdaGrad(lr=0.01).update(params, {"W": make(xp, [3.0, -0.5])})
    assert_close(params["W"], [-0.01 * 3 / (3 + 1e-7), 0.01 * 0.5 / (0.5 + 1e-7)], rtol=1e-14)

    # Adam's first step is lr * sign(g) up to eps: m = 0.1 g, v = 0.001 g^2, so
    # lr_t * m / (sqrt(v) + eps) = lr * g / (|g| + eps / sqrt(0.001)).
    params = {"W": make(xp, [1.0, 1.0])}
    Adam(lr=0.001).update(params, {"W": make(xp, [4.0, -0.25])})
    e = 1e-7 / math.sqrt(0.001)
    assert_close(params["W"], [1.0 - 0.001 * 4 / (4 + e), 1.0 + 0.001 * 0.25 / (0.25 + e)],
                 rtol=1e-14)


def test_adam_counts_updates_not_parameters(xp, rng):
    p0, grads = problem(rng, steps=3)
    optimizer, _, _ = run(xp, Adam, p0, grads)
    assert optimizer.iter == 3


def test_adamw_without_decay_is_adam_and_decays_with_zero_grads(xp, rng):
    p0, grads = problem(rng)
    hp = HYPER["Adam"]
    _, adam, _ = run(xp, Adam, p0, grads, **hp)
    _, adamw, _ = run(xp, AdamW, p0, grads, weight_decay=0.0, **hp)
    for k in p0:
        np.testing.assert_array_equal(to_numpy(adam[k]), to_numpy(adamw[k]))
    params = {"W": make(xp, [2.0, -4.0])}
    AdamW(lr=0.1, weight_decay=0.5).update(params, {"W": make(xp, [0.0, 0.0])})
    assert_close(params["W"], [2.0 * 0.95, -4.0 * 0.95], rtol=1e-15)


# --- torch.optim as a second, independent reference ------------------------------------

def torch_run(torch_cls, p0, grads, **kwargs):
    torch = pytest.importorskip("torch")
    # On the CPU whatever torch's default device, with the state the optimizer makes itself
    # (AdaGrad's step count goes to the default device).
    with torch.device("cpu"):
        tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
                   for k, v in p0.items()}
        optimizer = torch_cls(list(tensors.values()), **kwargs)
        history = []
        for g in grads:
            for k, t in tensors.items():
                t.grad = torch.tensor(g[k], dtype=torch.float64)
            optimizer.step()
            history.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    return history


def torch_cases():
    torch = pytest.importorskip("torch")
    o = torch.optim
    return {
        "SGD": (SGD(lr=0.1), o.SGD, {"lr": 0.1}, 1e-12),
        # torch: buf = m * buf + g, p -= lr * buf; the book's v is -lr * buf (constant lr).
        "Momentum": (Momentum(lr=0.1, momentum=0.8), o.SGD, {"lr": 0.1, "momentum": 0.8}, 1e-12),
        "AdaGrad": (AdaGrad(lr=0.5), o.Adagrad, {"lr": 0.5, "eps": 1e-7}, 1e-12),
        "RMSprop": (RMSprop(lr=0.05, decay_rate=0.9), o.RMSprop,
                    {"lr": 0.05, "alpha": 0.9, "eps": 1e-7}, 1e-12),
        # eps enters at a different place (see Adam's docstring): equal for eps = 0 ...
        "Adam eps=0": (Adam(lr=0.01, beta1=0.8, beta2=0.95, eps=0.0), o.Adam,
                       {"lr": 0.01, "betas": (0.8, 0.95), "eps": 0.0}, 1e-12),
        # ... and within eps / sqrt(v) ~ 1e-6 relative for the default eps.
        "Adam": (Adam(lr=0.01, beta1=0.8, beta2=0.95), o.Adam,
                 {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-7}, 1e-5),
        "AdamW eps=0": (AdamW(lr=0.01, beta1=0.8, beta2=0.95, weight_decay=0.5, eps=0.0),
                        o.AdamW, {"lr": 0.01, "betas": (0.8, 0.95), "eps": 0.0,
                                  "weight_decay": 0.5}, 1e-12),
        "AdamW": (AdamW(), o.AdamW, {"lr": 0.001, "eps": 1e-7}, 1e-5),
    }


@pytest.mark.parametrize("case", ["SGD", "Momentum", "AdaGrad", "RMSprop", "Adam eps=0", "Adam",
                                  "AdamW eps=0", "AdamW"])
def test_matches_torch_optim(xp, rng, case):
    ours, torch_cls, kwargs, rtol = torch_cases()[case]
    p0, grads = problem(rng)
    expected = torch_run(torch_cls, p0, grads, **kwargs)
    params = {k: fresh(xp, v) for k, v in p0.items()}
    for g, ref in zip(grads, expected, strict=True):
        ours.update(params, {k: make(xp, v) for k, v in g.items()})
        for k in ref:
            assert_close(params[k], ref[k], rtol=rtol, atol=1e-14)


def test_book_nesterov_differs_from_torch_nesterov(rng):
    # Documented, not a bug of ours: the book's update uses the new velocity (see Nesterov).
    p0, grads = problem(rng, steps=1)
    torch_first = torch_run(pytest.importorskip("torch").optim.SGD, p0, grads, lr=0.1,
                            momentum=0.8, nesterov=True)[0]["W"]
    np.testing.assert_allclose(torch_first, p0["W"] - 1.8 * 0.1 * grads[0]["W"], rtol=1e-12)
    book_first = book_reference("Nesterov", p0, grads, lr=0.1, momentum=0.8)[0]["W"]
    np.testing.assert_allclose(book_first, p0["W"] - 2.44 * 0.1 * grads[0]["W"], rtol=1e-12)


# --- Updates reach the network: rebinding, in place, custom mappings --------------------

@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_update_reaches_affine_layer(xp, rng, cls):
    W0, b0 = rng.standard_normal((3, 2)), rng.standard_normal(2)
    x = make(xp, rng.standard_normal((4, 3)))
    layer = Affine(fresh(xp, W0), fresh(xp, b0))
    layer.forward(x)
    layer.backward(make(xp, np.ones((4, 2))))
    grads = {k: to_numpy(v) for k, v in layer.grads.items()}
    hp = HYPER[cls.__name__]
    cls(**hp).update(layer.params, layer.grads)
    ref = book_reference(cls.__name__, {"W": W0, "b": b0}, [grads], **hp)[0]
    assert_close(layer.W, ref["W"], rtol=1e-12)
    assert_close(layer.forward(x), to_numpy(x) @ ref["W"] + ref["b"], rtol=1e-12)


def test_in_place_where_writeable_rebound_where_not(xp, rng):
    W = make(xp, rng.standard_normal((2, 2)))
    W_before = snapshot(W)
    params, optimizer = {"W": W}, Momentum()
    grad = make(xp, np.ones((2, 2)))
    optimizer.update(params, {"W": grad})
    v = optimizer.v["W"]
    optimizer.update(params, {"W": grad})
    name = xp.__name__
    if "jax" in name:  # immutable: new arrays, and the caller's W is untouched
        assert params["W"] is not W
        np.testing.assert_array_equal(to_numpy(W), W_before)
    elif "numpy" in name or "torch" in name or "array_api_strict" in name:
        assert params["W"] is W  # the same array object, updated in place
        assert optimizer.v["W"] is v  # state too
    assert_close(params["W"], W_before - 0.01 - (0.9 * 0.01 + 0.01), rtol=1e-12)


def test_read_only_numpy_param_is_rebound_not_written(xp):
    if xp.__name__ != "array_api_compat.numpy":
        pytest.skip("NumPy read-only views")
    W = np.ones(3)
    W.flags.writeable = False
    params = {"W": W}
    SGD(lr=0.5).update(params, {"W": np.ones(3)})
    np.testing.assert_array_equal(W, np.ones(3))
    np.testing.assert_array_equal(params["W"], np.full(3, 0.5))


class ForwardingParams(MutableMapping):
    """A network's params view: setitem writes through to the layers' own dicts."""

    def __init__(self, layers):
        self.layers = layers

    def _split(self, key):
        layer, name = key.split(".")
        return self.layers[layer].params, name

    def __getitem__(self, key):
        store, name = self._split(key)
        return store[name]

    def __setitem__(self, key, value):
        store, name = self._split(key)
        store[name] = value

    def __delitem__(self, key):
        raise TypeError("fixed keys")

    def __iter__(self):
        return (f"{k}.{n}" for k, lyr in self.layers.items() for n in lyr.params)

    def __len__(self):
        return sum(len(lyr.params) for lyr in self.layers.values())


def test_custom_mapping_forwards_updates(xp, rng):
    layer = Affine(make(xp, rng.standard_normal((2, 2))), make(xp, np.zeros(2)))
    W0 = snapshot(layer.W)
    params = ForwardingParams({"Affine1": layer})
    grads = {"Affine1.W": make(xp, np.ones((2, 2))), "Affine1.b": make(xp, [1.0, -1.0])}
    Adam(lr=0.1).update(params, grads)
    step = 0.1 / (1 + 1e-7 / math.sqrt(0.001))  # Adam's first step for |g| = 1
    assert_close(layer.W, W0 - step, rtol=1e-14)
    assert_close(layer.b, [-step, step], rtol=1e-14)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_missing_or_none_grads_are_skipped_and_grads_untouched(xp, cls):
    params = {"W": make(xp, [1.0, 2.0]), "b": make(xp, [3.0]), "gamma": make(xp, [4.0])}
    grads = {"W": make(xp, [0.5, -0.5]), "b": None}
    optimizer = cls(clip_norm=0.1)
    for _ in range(2):
        optimizer.update(params, grads)
    assert_close(params["b"], [3.0])
    assert_close(params["gamma"], [4.0])
    assert_close(grads["W"], [0.5, -0.5])  # clipping and state never write into grads
    for state in optimizer.state_names:
        assert set(getattr(optimizer, state)) == {"W"}


# --- Gradient clipping -------------------------------------------------------------------

def test_global_norm(xp, rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(5)
    expected = np.linalg.norm(np.concatenate([a.ravel(), b]))
    norm = global_norm({"a": make(xp, a), "b": make(xp, b), "c": None})
    assert norm.ndim == 0
    assert_close(norm, expected, rtol=1e-14)


def test_global_norm_extreme_float32_values(xp):
    big = make(xp, np.full(4, 1e30), "float32")  # squares overflow float32
    tiny = make(xp, np.full(4, 1e-30), "float32")  # squares underflow to 0
    zero = make(xp, np.zeros(4), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norms = [global_norm([big]), global_norm([tiny]), global_norm([zero])]
    assert all(n.dtype == xp.float32 for n in norms)
    assert_close(norms[0], 2e30, rtol=1e-6)
    assert_close(norms[1], 2e-30, rtol=1e-6)
    assert_close(norms[2], 0.0)


def test_clip_grad_norm_matches_torch(xp, rng):
    torch = pytest.importorskip("torch")
    values = {"W": 3.0 * rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    tensors = [torch.tensor(v, requires_grad=True, device="cpu") for v in values.values()]
    for t, v in zip(tensors, values.values(), strict=True):
        t.grad = torch.tensor(v, device="cpu")
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm=1.5)
    grads = {k: make(xp, v) for k, v in values.items()}
    clipped, norm = clip_grad_norm(grads, 1.5)
    assert_close(norm, torch_norm.item(), rtol=1e-12)
    for t, k in zip(tensors, values, strict=True):
        assert_close(clipped[k], t.grad.numpy(), rtol=1e-12)
        assert_close(grads[k], values[k])  # the input is not modified


def test_clipping_is_a_no_op_below_the_threshold(xp):
    grads = {"W": make(xp, [0.3, 0.4])}  # norm 0.5
    clipped, norm = clip_grad_norm(grads, 1.0)
    assert_close(clipped["W"], [0.3, 0.4], rtol=1e-15)
    assert_close(norm, 0.5, rtol=1e-15)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_optimizer_clips_before_its_step(xp, rng, cls):
    p0, grads = problem(rng, steps=2)
    scaled = []
    for g in grads:
        norm = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        scaled.append({k: v * 0.5 / (norm + 1e-6) for k, v in g.items()})
    hp = HYPER[cls.__name__]
    _, params, _ = run(xp, cls, p0, grads, clip_norm=0.5, **hp)
    ref = book_reference(cls.__name__, p0, scaled, **hp)[-1]
    for k in ref:
        assert_close(params[k], ref[k], rtol=1e-10, atol=1e-14)


# --- Bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("make_optimizer", "error", "match"),
    [(lambda: SGD(lr=-0.1), ValueError, "lr must be >= 0"),
     (lambda: SGD(lr="0.1"), TypeError, "lr must be a real number"),
     (lambda: SGD(lr=float("nan")), ValueError, "lr"),
     (lambda: Momentum(momentum=1.0), ValueError, r"momentum must be in \[0, 1\)"),
     (lambda: RMSprop(decay_rate=-0.5), ValueError, "decay_rate"),
     (lambda: Adam(beta2=1.0), ValueError, "beta2"),
     (lambda: AdamW(weight_decay=-1.0), ValueError, "weight_decay"),
     (lambda: AdaGrad(clip_norm=0.0), ValueError, "clip_norm must be > 0"),
     (lambda: Adam(eps=True), TypeError, "eps")],
)
def test_bad_hyperparameters(make_optimizer, error, match):
    with pytest.raises(error, match=match):
        make_optimizer()


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_bad_grads_raise_before_anything_changes(xp, cls):
    params = {"W": make(xp, [1.0, 2.0]), "b": make(xp, [3.0])}
    optimizer = cls()
    optimizer.update(params, {"W": make(xp, [0.1, 0.1]), "b": make(xp, [0.1])})
    before = {k: snapshot(v) for k, v in params.items()}
    state_before = {s: {k: snapshot(v) for k, v in getattr(optimizer, s).items()}
                    for s in optimizer.state_names}
    bad = [({"W": make(xp, [0.1, 0.1]), "b": make(xp, [0.1, 0.2])}, ValueError,
            r"grads\['b'\] has shape \(2,\), but params\['b'\] has shape \(1,\)"),
           ({"W": make(xp, [0.1, 0.1]), "b": [0.1]}, TypeError, r"grads\['b'\] must be an array"),
           ({"W": make(xp, [1, 2], "int64")}, TypeError, "real floating")]
    for grads, error, match in bad:
        with pytest.raises(error, match=match):
            optimizer.update(params, grads)
    for k, v in before.items():
        np.testing.assert_array_equal(to_numpy(params[k]), v)
    for s, values in state_before.items():
        for k, v in values.items():
            np.testing.assert_array_equal(to_numpy(getattr(optimizer, s)[k]), v)
    if cls in (Adam, AdamW):
        assert optimizer.iter == 1


def test_state_of_another_network_is_refused(xp):
    optimizer = Momentum()
    optimizer.update({"W": make(xp, [1.0, 2.0])}, {"W": make(xp, [1.0, 1.0])})
    with pytest.raises(ValueError, match="new optimizer"):
        optimizer.update({"W": make(xp, [1.0])}, {"W": make(xp, [1.0])})


def test_mixed_libraries_are_refused(xp):
    if xp.__name__ == "array_api_compat.numpy":
        pytest.skip("needs a second library")
    with pytest.raises(TypeError, match="same array library"):
        SGD().update({"W": make(xp, [1.0])}, {"W": np.ones(1)})


def test_repr_shows_hyperparameters():
    assert repr(Momentum(lr=0.5)) == "Momentum(lr=0.5, momentum=0.9)"


def test_the_rate_of_a_float64_parameter_after_a_float32_one_is_not_rounded(xp):
    if xp.__name__ == "jax.numpy":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("float64 on JAX needs jax_enable_x64")
    params = {"a": make(xp, np.zeros(1), "float32"), "b": make(xp, np.zeros(1), "float64")}
    grads = {"a": make(xp, np.ones(1), "float32"), "b": make(xp, np.ones(1), "float64")}
    sgd = SGD(lr=0.1)
    sgd.init_state(params)  # as compile_step and the Trainer do: the rate becomes an array
    sgd.update(params, grads)
    assert to_numpy(params["b"])[0] == -0.1  # not -0.10000000149 (0.1 held in float32)
    assert to_numpy(params["a"]).dtype == np.float32


def test_the_norm_of_empty_gradients_is_zero_and_of_none_an_error(xp):
    empty = {"W": make(xp, np.zeros((0, 3)), "float32")}
    assert float(global_norm(empty)) == 0.0
    clipped, norm = clip_grad_norm(empty, 1.0)
    assert float(norm) == 0.0 and tuple(clipped["W"].shape) == (0, 3)
    with pytest.raises(ValueError, match="at least one gradient array"):
        global_norm({"W": None})
