"""A training step compiled whole (`compile_step`), on every backend.

On JAX the compiled path is `jax.jit`, on torch CUDA tensors a CUDA graph (tested where a
GPU exists); elsewhere `compile="auto"` runs the same step eagerly. Each case checks the
step against the book's own loop written out here (`network.gradient`, then
`optimizer.update`), run on a twin network, so on JAX it proves compiled == eager and
everywhere it proves the step is the book's step. Also: traces are counted, no host transfer
happens inside a JAX step, dropout masks change every step and a seed reproduces a run, the
layer contract holds for every layer, and the Trainer and the CLI choose and report the kind
of step.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from array_api_compat import is_jax_namespace, is_torch_namespace
from support import make, to_numpy

from portablelayers import (
    Affine,
    AvgPooling,
    BatchNormalization,
    Convolution,
    Dropout,
    Flatten,
    Identity,
    Layer,
    LeakyReLU,
    LossLayer,
    MeanSquaredError,
    Pooling,
    ReLU,
    Sigmoid,
    SigmoidWithLoss,
    SoftmaxWithLoss,
    Tanh,
    compiled,
    optim,
)
from portablelayers._backend import reads_wait_for_a_device
from portablelayers.compiled import check_data, check_labels, compiled_kind, data_flags
from portablelayers.nets import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)
from portablelayers.train import Trainer, compile_step

IMAGE = (1, 8, 8)
SMALL_CONV = {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}
NETWORKS = {
    "TwoLayerNet": (lambda xp, s: TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=s),
                    False),
    "MultiLayerNet": (lambda xp, s: MultiLayerNet(64, [12, 8], 5, xp=xp, seed=s), False),
    "MultiLayerNetExtend": (lambda xp, s: MultiLayerNetExtend(
        64, [12, 8], 5, use_batchnorm=True, use_dropout=True, dropout_ration=0.2, xp=xp,
        seed=s), False),
    "SimpleConvNet": (lambda xp, s: SimpleConvNet(IMAGE, SMALL_CONV, hidden_size=10,
                                                  output_size=5, weight_init_std=0.3, xp=xp,
                                                  seed=s), True),
    "DeepConvNet": (lambda xp, s: DeepConvNet(IMAGE, hidden_size=10, output_size=5, xp=xp,
                                              seed=s), True),
}
OPTIMIZERS = {"SGD": lambda: optim.SGD(lr=0.1), "Momentum": lambda: optim.Momentum(lr=0.05),
              "Adam": lambda: optim.Adam(lr=0.001)}


def auto_kind(xp):
    """The step compile="auto" gives arrays of `xp` on the tests' device (conftest's
    PORTABLELAYERS_DEVICE): jax.jit on JAX, a CUDA graph for torch on a GPU, else eager."""
    if is_jax_namespace(xp):
        return "jax.jit"
    if is_torch_namespace(xp) and make(xp, [0.0], "float32").is_cuda:
        return "cuda-graph"
    return "eager"


def batch(xp, images, n=12, seed=0):
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((n, *IMAGE) if images else (n, 64))
    return make(xp, x, "float32"), make(xp, gen.integers(0, 5, n), "int64")


def rel(a, b):
    """max |a - b| / max |b|, the denominator at least 1e-3: a bias that batch norm
    cancels has a zero gradient, and its float32 rounding noise (~1e-9) is no signal."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-3))


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("net_name", list(NETWORKS))
def test_compiled_step_is_the_books_step(xp, net_name, opt_name, monkeypatch):
    if net_name == "DeepConvNet" and xp.__name__.endswith("dask.array"):
        pytest.skip("DeepConvNet's lazy graph takes minutes on Dask; its layers' laziness "
                    "is tested in their own modules")
    # The compiled step's products in the kernels eager JAX operations use (jaxlib's
    # default), so that only what the step computes can differ; the package's CPU default,
    # XLA's own kernels, is compared below (test_xla_kernels_round_like_eager_ones).
    monkeypatch.setattr(compiled, "XLA_CPU_OPTIONS", {})
    _compare_with_the_books_step(xp, net_name, opt_name, 1e-5)


@pytest.mark.parametrize(("net_name", "opt_name"), [
    ("TwoLayerNet", "SGD"), ("MultiLayerNetExtend", "Momentum"), ("DeepConvNet", "Adam")])
def test_xla_kernels_round_like_eager_ones(xp, net_name, opt_name):
    # A JAX step on a CPU keeps its products in XLA's own kernels (XLA_CPU_OPTIONS), eager
    # JAX operations in jaxlib's: float32 sums in another order, which five steps carried
    # to 1.5e-5 (Momentum, Adam) in this test's networks.
    if not is_jax_namespace(xp):
        pytest.skip("XLA's kernels are JAX's")
    _compare_with_the_books_step(xp, net_name, opt_name, 1e-4)


def _compare_with_the_books_step(xp, net_name, opt_name, tolerance):
    """Five compiled steps against five of the book's (gradient, then update), eagerly:
    the losses, parameters and state agree to `tolerance`."""
    build, images = NETWORKS[net_name]
    # Biases right before batch norm have a gradient of exactly 0: what they get is float32
    # rounding noise (about 1e-9 a step), which differs with the code XLA generates (its
    # vectorized loops: vectorize_short_loops), and which Adam scales up to full steps
    # (the running means add them). Those (only) are not compared; SGD and Momentum must
    # keep them at noise level on both sides. The losses and every other array are compared.
    cancelled = {"b1", "b2"} if net_name == "MultiLayerNetExtend" else set()
    noise_only = cancelled | ({"running_mean1", "running_mean2"}
                              if cancelled and opt_name == "Adam" else set())
    net, twin = build(xp, 3), build(xp, 3)
    optimizer, twin_optimizer = OPTIMIZERS[opt_name](), OPTIMIZERS[opt_name]()
    step = compile_step(net, optimizer)
    assert step.kind == auto_kind(xp)
    losses, twin_losses = [], []
    for i in range(5):
        x, t = batch(xp, images, seed=i)
        losses.append(step(x, t))
        grads = twin.gradient(x, t)  # one forward: dropout and batch norm advance once
        twin_losses.append(twin.last_layer.loss)  # the loss before the update, as step's
        twin_optimizer.update(twin.params, grads)
    for ours, book in zip(losses, twin_losses, strict=True):
        assert ours.ndim == 0
        assert rel(ours, book) <= tolerance
    for name in twin.params:
        assert net.params[name].dtype == twin.params[name].dtype
        if name not in noise_only:
            assert rel(net.params[name], twin.params[name]) <= tolerance, name
    for name in twin.state:  # running statistics and dropout counters moved alike
        if name not in noise_only:
            assert rel(net.state[name], twin.state[name]) <= tolerance, name
    if opt_name != "Adam":
        for name in cancelled:
            assert np.max(np.abs(to_numpy(net.params[name]))) <= 1e-6, name
            assert np.max(np.abs(to_numpy(twin.params[name]))) <= 1e-6, name
    # The steps really trained: the parameters moved.
    assert rel(net.params["W1"], build(xp, 3).params["W1"]) > 1e-4


def test_optimizer_state_is_a_flat_mapping_of_arrays(xp):
    net = TwoLayerNet(4, 3, 2, xp=xp, seed=0)
    adam = optim.Adam()
    adam.init_state(net.params)
    state = adam.state
    assert sorted(state) == sorted([f"{s}/{n}" for s in ("m", "v") for n in net.params]
                                   + ["iter", "lr"])
    assert float(to_numpy(state["lr"])) == pytest.approx(0.001)
    assert int(to_numpy(state["iter"])) == 0 and state["iter"].dtype == xp.int32
    x, t = make(xp, np.ones((2, 4)), "float32"), make(xp, [0, 1], "int64")
    adam.update(net.params, net.gradient(x, t))
    assert int(to_numpy(adam.iter)) == 1
    with pytest.raises(ValueError, match="must have the keys"):
        adam.state = {"iter": state["iter"]}
    adam.lr = 0.5  # a new rate reaches the array the steps read
    assert float(to_numpy(adam.state["lr"])) == 0.5
    adam.state = state  # rebinds to the arrays given (the step count of before: 0)
    assert int(to_numpy(adam.iter)) == 0
    assert all(adam.m[n] is state[f"m/{n}"] and adam.v[n] is state[f"v/{n}"]
               for n in net.params)


def test_dropout_masks_change_every_step_and_a_seed_reproduces_the_run(xp):
    def run(seed):
        net = MultiLayerNetExtend(64, [30], 5, use_dropout=True, dropout_ration=0.5, xp=xp,
                                  seed=seed)
        step = compile_step(net, optim.SGD(lr=0.1))
        x, t = batch(xp, False)
        masks = []
        for _ in range(3):
            step(x, t)
            if not is_jax_namespace(xp):  # under jax.jit the mask is a traced value
                masks.append(to_numpy(net.layers["Dropout1"].mask))
        return net, masks

    net, masks = run(7)
    if is_jax_namespace(xp):  # a traced mask is not a value; the counter is
        assert int(to_numpy(net.state["step1"])) == 3
        masks = _jax_masks(net, xp)
    else:
        assert not np.array_equal(masks[0], masks[1])
        assert not np.array_equal(masks[1], masks[2])
    again, _ = run(7)
    other, _ = run(8)
    for name in net.params:
        np.testing.assert_array_equal(to_numpy(net.params[name]), to_numpy(again.params[name]))
    assert not np.array_equal(to_numpy(net.params["W1"]), to_numpy(other.params["W1"]))


def _jax_masks(net, xp):
    # Counters 0, 1, 2 of the same layer give three different masks.
    layer = net.layers["Dropout1"]
    masks = []
    for counter in range(3):
        layer.state["step"] = xp.asarray(counter, dtype=xp.int32)
        layer.forward(xp.ones((12, 30), dtype=xp.float32))
        masks.append(to_numpy(layer.mask))
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    return masks


def test_compiled_dropout_draws_the_eager_masks(xp):
    # The counter-based stream is the same arithmetic compiled or not: a compiled step with
    # dropout equals the book's loop exactly (checked with a 0.5 ratio, three steps).
    nets = [MultiLayerNetExtend(64, [30], 5, use_dropout=True, dropout_ration=0.5, xp=xp,
                                seed=4) for _ in range(2)]
    step, optimizer = compile_step(nets[0], optim.SGD(lr=0.1)), optim.SGD(lr=0.1)
    for i in range(3):
        x, t = batch(xp, False, seed=i)
        step(x, t)
        optimizer.update(nets[1].params, nets[1].gradient(x, t))
    for name in nets[1].params:
        assert rel(nets[0].params[name], nets[1].params[name]) <= 1e-5


def test_a_new_learning_rate_needs_no_new_compilation(xp):
    # A schedule changes optimizer.lr between steps: the step reads it from its state
    # (a 0-D array), so JAX does not trace again and the new rate takes effect at once.
    nets = [TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0) for _ in range(2)]
    step, optimizer = compile_step(nets[0], optim.SGD(lr=0.1)), optim.SGD(lr=0.1)
    for i, lr in enumerate([0.1, 0.1, 0.02, 0.3]):
        step.optimizer.lr = optimizer.lr = lr
        x, t = batch(xp, False, seed=i)
        step(x, t)
        optimizer.update(nets[1].params, nets[1].gradient(x, t))
    # JAX traces at the first step; a CUDA graph is captured after its 3 eager warm-ups
    assert step.traces == (0 if auto_kind(xp) == "eager" else 1)
    for name in nets[1].params:
        assert rel(nets[0].params[name], nets[1].params[name]) <= 1e-5


def test_a_step_traces_once_per_batch_shape(xp):
    net = TwoLayerNet(64, 10, 5, xp=xp, seed=0)
    step = compile_step(net, optim.Adam())
    x, t = batch(xp, False, n=12)
    for _ in range(4):  # JAX traces at the first; a CUDA graph is captured at the fourth
        step(x, t)
    compiled = auto_kind(xp) != "eager"
    assert step.traces == (1 if compiled else 0)
    for _ in range(4):  # a last, smaller batch
        step(*batch(xp, False, n=5))
    assert step.traces == (2 if compiled else 0)


@pytest.mark.parametrize("compile", ["auto", False])
def test_train_on_a_shuffled_data_set_equals_steps_on_its_batches(xp, compile):
    # The Trainer's call: one step on order[start:stop] of the whole set (on JAX the gather
    # is compiled into the step: still one trace per batch size).
    nets = [TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0) for _ in range(2)]
    steps = [compile_step(net, optim.Momentum(lr=0.1), compile) for net in nets]
    x, t = batch(xp, False, n=23)
    order_np = np.random.default_rng(3).permutation(23)
    order = make(xp, order_np, "int64")
    x_np, t_np = to_numpy(x), to_numpy(t)
    for _ in range(2):  # two epochs
        for start in range(0, 23, 10):
            stop = min(start + 10, 23)
            loss = steps[0].train_on(x, t, order, start, stop)
            index = order_np[start:stop]
            expected = steps[1](make(xp, x_np[index], "float32"), make(xp, t_np[index], "int64"))
            assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    for name in nets[1].params:
        assert rel(nets[0].params[name], nets[1].params[name]) <= 1e-5
    # JAX: one trace for batches of 10 and one for 3; CUDA graphs: the 4th batch of 10 is
    # captured (3 eager warm-ups first), the two of 3 stay eager
    kind = auto_kind(xp) if compile else "eager"
    assert steps[0].traces == {"jax.jit": 2, "cuda-graph": 1, "eager": 0}[kind]


def test_jax_step_makes_no_host_transfer(xp):
    if not is_jax_namespace(xp):
        pytest.skip("jax.transfer_guard is JAX's")
    import jax

    net = SimpleConvNet(IMAGE, SMALL_CONV, hidden_size=10, output_size=5, xp=xp, seed=0)
    step = compile_step(net, optim.Adam(), check=False)
    x, t = batch(xp, True)
    with jax.transfer_guard("disallow"):
        for _ in range(3):
            loss = step(x, t)
    assert np.isfinite(float(loss))


def test_compiler_options_reach_every_program_of_a_jax_step(xp):
    # XLA options go to each program the step compiles; an option XLA does not know is
    # XLA's error at the first call, which leaves the network as it was.
    if not is_jax_namespace(xp):
        with pytest.raises(ValueError, match="compiler_options are XLA's"):
            compile_step(TwoLayerNet(64, 10, 5, xp=xp, seed=0), optim.SGD(),
                         compiler_options={"xla_cpu_enable_fast_math": False})
        with pytest.raises(ValueError, match="compiler_options are XLA's"):
            Trainer(TwoLayerNet(64, 10, 5, xp=xp, seed=0), *batch(xp, False),
                    *batch(xp, False), verbose=False,
                    compiler_options={"xla_cpu_enable_fast_math": False})
        return
    import jax

    x, t = batch(xp, False)
    nets = [TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0) for _ in range(3)]
    plain = compile_step(nets[0], optim.Adam(lr=0.01))
    # jaxlib 0.10's own default on a CPU: products in YNNPACK's kernels, which the package
    # default (XLA_CPU_OPTIONS) keeps in XLA's.
    ynn_dots = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    knows_ynn = jaxlib_measured()  # a jaxlib with YNNPACK fusions, XLA_CPU_OPTIONS applied
    if knows_ynn and "--xla_cpu_experimental_ynn_fusion_type=" not in os.environ.get(
            "XLA_FLAGS", ""):
        assert dict(plain.compiler_options) == compiled.XLA_CPU_OPTIONS
    tuned = compile_step(nets[1], optim.Adam(lr=0.01),
                         compiler_options={"xla_cpu_enable_fast_math": False,
                                           "xla_cpu_experimental_ynn_fusion_type":
                                           ynn_dots if knows_ynn else ""})
    for _ in range(3):
        plain(x, t), tuned(x, t)
    for name in nets[0].params:
        assert rel(nets[1].params[name], nets[0].params[name]) <= 1e-5
    # The option reaches the step's program and the evaluation's: YNNPACK fusions appear.
    texts = []
    for step in (plain, tuned):
        arrays = step._arrays()
        texts.append(step._jitted.lower(*arrays, x, t).compile().as_text())
        step._bind(*arrays)
    sets = held_sets(xp, False, {"train": 30, "test": 12})
    for step in (plain, tuned):  # the evaluation program too
        step.hold_sets(sets)
        arrays = step._arrays()
        held_x, held_t, number, layout = step._held_range(*sets["train"])
        texts.append(step._evaluate_held.lower(arrays[0], arrays[1], held_x, held_t, number,
                                               layout=layout, batch_size=10)
                     .compile().as_text())
        step._bind(*arrays)
    if knows_ynn:
        assert texts[1].count("__ynn_fusion") > texts[0].count("__ynn_fusion")
        assert texts[3].count("__ynn_fusion") > texts[2].count("__ynn_fusion")
    unknown = compile_step(nets[2], optim.SGD(), compiler_options={"no_such_option": "1"})
    before = {name: to_numpy(v) for name, v in nets[2].params.items()}
    with pytest.raises(jax.errors.JaxRuntimeError, match="no_such_option"):
        unknown(x, t)
    for name, value in nets[2].params.items():
        np.testing.assert_array_equal(to_numpy(value), before[name])
    with pytest.raises(jax.errors.JaxRuntimeError, match="no_such_option"):
        Trainer(TwoLayerNet(64, 10, 5, xp=xp, seed=0), x, t, x, t, verbose=False,
                compiler_options={"no_such_option": "1"})
    with pytest.raises(TypeError, match="compiler_options must be a dict"):
        compile_step(nets[2], optim.SGD(), compiler_options=["xla_cpu_enable_fast_math"])
    with pytest.raises(TypeError, match="option names"):
        compile_step(nets[2], optim.SGD(), compiler_options={"xla_cpu_enable_fast_math": None})


def jaxlib_measured():
    """Whether the installed jaxlib is of the versions XLA_CPU_OPTIONS was measured with."""
    import jaxlib

    version = tuple(int("".join(c for c in part if c.isdigit()) or 0)
                    for part in jaxlib.__version__.split(".")[:3])
    first, end = compiled.XLA_CPU_OPTIONS_JAXLIB
    return first <= version < end


def test_a_jax_cpu_step_keeps_its_products_in_xla_kernels(xp, monkeypatch):
    # On a CPU, with the jaxlib it was measured with, the step's programs get
    # XLA_CPU_OPTIONS (YNNPACK for reductions only), less what XLA_FLAGS sets; the caller's
    # options win; another jaxlib keeps its own defaults.
    if not is_jax_namespace(xp):
        pytest.skip("XLA options are JAX's")

    def options(given=None):
        net = TwoLayerNet(64, 10, 5, xp=xp, seed=0)
        step = compile_step(net, optim.SGD(), compiler_options=given)
        step(*batch(xp, False))  # compiles with them
        return dict(step.compiler_options)

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    name, value = next(iter(compiled.XLA_CPU_OPTIONS.items()))
    default = {name: value} if jaxlib_measured() else {}
    assert options() == default
    assert options({name: ""}) == {name: ""}
    assert options({"xla_cpu_enable_fast_math": False}) == {
        **default, "xla_cpu_enable_fast_math": False}
    monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=false --{name}=")
    assert options() == {}  # the process's own choice stands
    monkeypatch.delenv("XLA_FLAGS")
    measured = compiled.XLA_CPU_OPTIONS_JAXLIB
    monkeypatch.setattr(compiled, "XLA_CPU_OPTIONS_JAXLIB", ((0, 0), (0, 1)))
    assert options() == {}  # a jaxlib it was not measured with keeps its own defaults
    monkeypatch.setattr(compiled, "XLA_CPU_OPTIONS_JAXLIB", measured)
    if default:  # and the products are XLA's own: no YNNPACK fusion, where jaxlib's
        # default has some
        x, t = batch(xp, False)
        texts = []
        for given in (None, {name: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                                   "LIBRARY_FUSION_TYPE_REDUCE"}):
            step = compile_step(TwoLayerNet(64, 10, 5, xp=xp, seed=0), optim.SGD(),
                                compiler_options=given)
            arrays = step._arrays()
            texts.append(step._jitted.lower(*arrays, x, t).compile().as_text())
            step._bind(*arrays)
        assert texts[0].count("__ynn_fusion") == 0 < texts[1].count("__ynn_fusion")
    with pytest.raises(TypeError):  # the step's options are read-only: jit has them
        compile_step(TwoLayerNet(64, 10, 5, xp=xp, seed=0),
                     optim.SGD()).compiler_options[name] = ""


def test_ctrl_c_during_a_jax_step_leaves_the_network_at_a_whole_step(xp, monkeypatch):
    # The step donates (deletes) the old arrays: a Ctrl-C that lands after the compiled
    # call returns, before the network is rebound, must not lose both old and new arrays.
    if not is_jax_namespace(xp):
        pytest.skip("donated buffers are JAX's")
    nets = [TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0) for _ in range(2)]
    optimizers = [optim.Adam(lr=0.01), optim.Adam(lr=0.01)]
    step, twin = (compile_step(n, o) for n, o in zip(nets, optimizers, strict=True))
    x, t = batch(xp, False)
    step(x, t), twin(x, t)
    compiled = step._jitted

    def interrupted_on_return(*args, **kwargs):
        out = compiled(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # as if Ctrl-C came now
        return out

    monkeypatch.setattr(step, "_jitted", interrupted_on_return)
    with pytest.raises(KeyboardInterrupt):
        step(x, t)
    twin(x, t)
    arrays = {**nets[0].params, **optimizers[0].state}
    assert not [name for name, value in arrays.items() if value.is_deleted()]
    for name in nets[1].params:  # the interrupted step is whole
        assert rel(nets[0].params[name], nets[1].params[name]) <= 1e-6
    assert int(optimizers[0].state["iter"]) == 2


def test_a_jax_steps_measures_are_of_the_arrays_given_not_a_gone_arrays_result(
        xp, monkeypatch):
    # The step remembers its last (loss, accuracy) for the Trainer's two questions about
    # one set. Once arrays are freed, new ones may take their ids (CPython reuses them):
    # simulated here by an id() that is the same for every object.
    if not is_jax_namespace(xp):
        pytest.skip("the eager steps remember nothing")
    from portablelayers import compiled

    monkeypatch.setattr(compiled, "id", lambda obj: 0, raising=False)
    net = TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0)
    step = compile_step(net, optim.SGD())
    for seed in [0, 1, 0]:
        x, t = batch(xp, False, seed=seed)
        expected = float(net.loss(x, t, train_flg=False))
        assert step.mean_loss(x, t) == pytest.approx(expected, rel=1e-5)
        assert step.accuracy(x, t) == net.accuracy(x, t)


def held_sets(xp, images, sizes, one_hot=False, label_dtypes=None):
    gen = np.random.default_rng(5)
    sets = {}
    for name, n in sizes.items():
        x = gen.standard_normal((n, *IMAGE) if images else (n, 64))
        t = gen.integers(0, 5, n)
        if one_hot:
            t = np.eye(5)[t]
        dtype = (label_dtypes or {}).get(name, "float64" if one_hot else "int64")
        sets[name] = (make(xp, x, "float64"), make(xp, t, dtype))
    return sets


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("net_name", ["MultiLayerNetExtend", "SimpleConvNet"])
def test_held_sets_share_one_evaluation_program_and_keep_their_own_measures(
        xp, net_name, one_hot):
    # The Trainer names its sets once (`hold_sets`); on JAX one program then evaluates
    # each of them, whatever its size, as a range of the same arrays. Each set's loss and
    # accuracy are still its own, as the network computes them on the whole set eagerly
    # (inference mode: batch norm's running statistics, no dropout), for batch sizes that
    # divide a set, do not, exceed it, or are not given.
    if not is_jax_namespace(xp):
        pytest.skip("evaluation programs are JAX's; other steps evaluate as the network does")
    make_net, images = NETWORKS[net_name]
    net = make_net(xp, 0)
    step = compile_step(net, optim.SGD(lr=0.1))
    sets = held_sets(xp, images, {"train": 45, "val": 7, "test": 12}, one_hot)
    for _ in range(2):  # running statistics that are not the initial ones
        step(*sets["train"])
    step.hold_sets(sets)
    traces = 0
    for batch_size in (15, 7, 100, None):
        for name, (x, t) in sets.items():
            expected = float(net.loss(x, t, train_flg=False))
            assert step.mean_loss(x, t, batch_size) == pytest.approx(expected, rel=1e-9), name
            assert step.accuracy(x, t, batch_size) == net.accuracy(x, t), name
        # one more program for a new batch size, not one per set
        assert step.evaluation_traces - traces <= 1
        traces = step.evaluation_traces
    assert step.evaluation_traces == 3  # 100 and None: the 64 held rows as one batch


@pytest.mark.parametrize("why", ["too large", "label dtypes differ"])
def test_sets_not_held_are_evaluated_each_by_its_own_program(xp, why, monkeypatch):
    # Sets over HELD_BYTES together (held sets are a copy), or that cannot be one array,
    # are evaluated as they are: the same measures, one program per set shape on JAX.
    if not is_jax_namespace(xp):
        pytest.skip("evaluation programs are JAX's; other steps evaluate as the network does")
    from portablelayers import compiled

    dtypes = {}
    if why == "too large":
        monkeypatch.setattr(compiled, "HELD_BYTES", 1000)
    else:
        dtypes = {"val": "int32"}
    net = TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0)
    step = compile_step(net, optim.SGD())
    sets = held_sets(xp, False, {"train": 45, "val": 7, "test": 12}, label_dtypes=dtypes)
    step.hold_sets(sets)
    for name, (x, t) in sets.items():
        expected = float(net.loss(x, t, train_flg=False))
        assert step.mean_loss(x, t, 20) == pytest.approx(expected, rel=1e-9), name
        assert step.accuracy(x, t, 20) == net.accuracy(x, t), name
    assert step.evaluation_traces == 3


class _Wrapped:
    """A user's network around the package's, with a loss of its own kind."""

    def __init__(self, inner, kind):
        self.inner, self.kind = inner, kind
        self.params, self.state = inner.params, inner.state

    def predict(self, x, train_flg=False):
        return self.inner.predict(x, train_flg)

    def loss(self, x, t):  # no train_flg, as the book's DeepConvNet
        if self.kind == "train-mode":  # the book's: predict(x, train_flg=True), always
            return self.inner.last_layer.forward(self.predict(x, train_flg=True), t)
        value = self.inner.loss(x, t, train_flg=False)
        if self.kind == "sum":  # a sum over the batch, not a mean
            return value * x.shape[0]
        return value[None]  # "shape (1,)": an array of one element, not 0-D

    def gradient(self, x, t):
        return self.inner.gradient(x, t)


@pytest.mark.parametrize("kind", ["train-mode", "sum", "shape (1,)"])
def test_held_sets_give_what_each_set_alone_gives_for_any_loss(xp, kind, monkeypatch):
    # A held set is batched as a set alone is (full batches, then the smaller rest), with
    # each batch's loss weighted by its size, whatever the loss computes: one that writes
    # batch norm's statistics (nothing of it outlives the evaluation), a sum over the
    # batch, a loss of shape (1,).
    if not is_jax_namespace(xp):
        pytest.skip("evaluation programs are JAX's; other steps evaluate as the network does")
    from portablelayers import compiled

    def network():
        return _Wrapped(MultiLayerNetExtend(64, [12], 5, use_batchnorm=True, xp=xp, seed=0),
                        kind)

    sets = held_sets(xp, False, {"train": 45, "val": 7, "test": 12})
    held, alone = compile_step(network(), optim.SGD()), compile_step(network(), optim.SGD())
    held.hold_sets(sets)
    monkeypatch.setattr(compiled, "HELD_BYTES", 0)
    alone.hold_sets(sets)  # too large now: each set evaluated as it is
    state_before = {name: to_numpy(v) for name, v in held.network.state.items()}
    for batch_size in (20, 5):
        for name, (x, t) in sets.items():
            expected = alone.mean_loss(x, t, batch_size), alone.accuracy(x, t, batch_size)
            got = held.mean_loss(x, t, batch_size), held.accuracy(x, t, batch_size)
            assert got == pytest.approx(expected, rel=1e-12), (name, batch_size)
    for name, value in held.network.state.items():
        np.testing.assert_array_equal(to_numpy(value), state_before[name])


def test_a_low_precision_networks_measures_are_summed_wide(xp):
    # bfloat16 has 8 bits of mantissa: a batch's loss x its size rounded in it is off in
    # the third digit (1.640625 x 7 = 11.484375 is 11.5 in bfloat16). Each batch's loss is
    # widened before it is weighted and summed, so a loss of 1.640625 on every batch
    # averages to 1.640625 whatever the batch sizes.
    if not is_jax_namespace(xp):
        pytest.skip("evaluation programs are JAX's; other steps evaluate as the network does")

    class Constant:  # a network whose loss is 1.640625, in bfloat16, on any batch
        def __init__(self):
            self.params = {"W": xp.ones((64, 5), dtype=xp.bfloat16)}

        def predict(self, x, train_flg=False):
            return xp.astype(x, xp.bfloat16) @ self.params["W"]

        def loss(self, x, t, train_flg=False):
            return xp.sum(self.params["W"]) * 0 + xp.asarray(1.640625, dtype=xp.bfloat16)

        def gradient(self, x, t):
            return {"W": xp.zeros_like(self.params["W"])}

    step = compile_step(Constant(), optim.SGD())
    sets = held_sets(xp, False, {"train": 45, "val": 7, "test": 12})
    for hold in (False, True):
        if hold:
            step.hold_sets(sets)
        for batch_size in (None, 5, 20):
            for name, (x, t) in sets.items():
                assert step.mean_loss(x, t, batch_size) == 1.640625, (hold, name, batch_size)


def test_step_checks_the_first_batchs_labels_before_anything_changes(xp):
    net = TwoLayerNet(64, 10, 5, xp=xp, seed=0)
    step = compile_step(net, optim.SGD())
    x, _ = batch(xp, False)
    before = to_numpy(net.params["W1"]).copy()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\).*from 0 to 5"):
        step(x, make(xp, [0, 5] * 6, "int64"))
    np.testing.assert_array_equal(to_numpy(net.params["W1"]), before)
    with pytest.raises(ValueError, match=r"from -1 to 1"):
        check_labels(net, x, make(xp, [1, -1] * 6, "int64"))


def test_compile_modes(xp):
    x = make(xp, np.ones(3), "float32")
    assert compiled_kind(x, False) == "eager"
    if auto_kind(xp) != "eager":
        assert compiled_kind(x, True) == compiled_kind(x, "auto") == auto_kind(xp)
    else:
        assert compiled_kind(x, "auto") == "eager"
        with pytest.raises(ValueError, match="compile=True: no compiled step"):
            compiled_kind(x, True)
    for mode in ("yes", 0, 1, np.True_):  # 0 == False and 1 == True, but no answer
        with pytest.raises(ValueError, match="'auto', True or False"):
            compiled_kind(x, mode)


class BookMomentum:
    """The book's Momentum (common/optimizer.py): its state in a Python dict."""

    def __init__(self, lr=0.1, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {key: 0 * value for key, value in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] = params[key] + self.v[key]


class BookAdamCount(BookMomentum):
    """A step count in a Python int, as the book's Adam keeps it."""

    def update(self, params, grads):
        self.iter = getattr(self, "iter", 0) + 1
        for key in params:
            params[key] = params[key] - self.lr / self.iter * grads[key]


class PlainSGD:
    def __init__(self, lr=0.1):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] = params[key] - self.lr * grads[key]


def test_an_optimizer_with_python_side_state_is_not_compiled(xp):
    # A compiled step would freeze such state at its first trace (momentum restarting
    # from zero every step): 'auto' runs it eagerly with a warning, True refuses it.
    net, twin = (TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0) for _ in range(2))
    optimizer = BookMomentum()
    if is_jax_namespace(xp):
        with pytest.raises(ValueError, match="compile=True: BookMomentum keeps v in Python"):
            compile_step(net, optimizer, True)
        with pytest.raises(ValueError, match="BookAdamCount keeps iter"):
            compile_step(net, BookAdamCount(), True)
        with pytest.raises(ValueError, match="compiler_options given: BookMomentum keeps v"):
            compile_step(net, optimizer, compiler_options={"xla_cpu_enable_fast_math": False})
        with pytest.warns(RuntimeWarning, match="keeps v in Python attributes.*run eagerly"):
            step = compile_step(net, optimizer)
        assert compile_step(net, PlainSGD()).kind == "jax.jit"
    else:
        step = compile_step(net, optimizer)
    assert step.kind == "eager" and optimizer.v is None  # the trial left nothing behind
    reference = compile_step(twin, BookMomentum(), False)
    for i in range(4):
        x, t = batch(xp, False, seed=i)
        assert float(step(x, t)) == pytest.approx(float(reference(x, t)), rel=1e-6)


def test_trainer_compiled_and_eager_runs_agree(xp):
    gen = np.random.default_rng(1)
    x_np = gen.standard_normal((45, 64))
    t_np = np.argmax(x_np[:, :5], axis=1)
    x, t = make(xp, x_np, "float32"), make(xp, t_np, "int64")
    runs = []
    for mode in ("auto", False):
        net = TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0)
        trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=20, optimizer="adam",
                          optimizer_param={"lr": 0.01}, verbose=False, seed=0, compile=mode)
        trainer.train()
        runs.append((trainer, net))
    (compiled, net_c), (eager, net_e) = runs
    assert compiled.step.kind == auto_kind(xp)
    assert eager.step.kind == "eager"
    np.testing.assert_allclose(compiled.train_loss_list, eager.train_loss_list, rtol=1e-5)
    assert compiled.test_acc_list == eager.test_acc_list
    assert compiled.train_acc_list == eager.train_acc_list
    # The losses of each evaluation (compiled on JAX: one pass computes loss and accuracy).
    history_c, history_e = compiled.history, eager.history
    for key in ("epoch_train_loss", "test_loss", "final_test_loss"):
        np.testing.assert_allclose(history_c[key], history_e[key], rtol=1e-5)
    assert history_c["final_test_acc"] == history_e["final_test_acc"]
    assert len(compiled.train_loss_list) == 6  # 45 samples, batches of 20: 3 a epoch
    for name in net_e.params:
        assert rel(net_c.params[name], net_e.params[name]) <= 1e-5


def test_trainer_evaluates_its_three_sets_with_one_program(xp):
    # Training, validation and test sets of three sizes, evaluated every epoch and at the
    # end: on JAX all by one compiled program (each other set shape would cost a trace and
    # a compilation), with the measures of an eager run.
    sets = held_sets(xp, False, {"train": 45, "val": 7, "test": 12})
    runs = []
    for mode in ("auto", False):
        net = TwoLayerNet(64, 10, 5, weight_init_std=0.3, xp=xp, seed=0)
        trainer = Trainer(net, *sets["train"], *sets["test"], x_val=sets["val"][0],
                          t_val=sets["val"][1], epochs=3, mini_batch_size=20,
                          evaluate_batch_size=10, optimizer="adam", verbose=False, seed=0,
                          compile=mode)
        trainer.train()
        runs.append(trainer)
    compiled, eager = runs
    if is_jax_namespace(xp):
        assert compiled.step.evaluation_traces == 1
    for key in ("train_acc", "val_acc", "final_test_acc"):
        assert compiled.history[key] == eager.history[key], key
    for key in ("val_loss", "final_test_loss"):
        np.testing.assert_allclose(compiled.history[key], eager.history[key], rtol=1e-5)


def test_a_binary_classifiers_accuracy_is_its_logits_sign_on_every_step(xp):
    # One output and SigmoidWithLoss, float 0.0 / 1.0 targets in a column: the class is 1
    # where the logit is above 0, held or not, in batches or whole (an argmax of one
    # column would call every sample 0).
    rng = np.random.default_rng(3)
    W, b = rng.standard_normal((4, 1)), np.array([0.1])
    net = Sequential(Affine(make(xp, W, "float32"), make(xp, b, "float32")),
                     SigmoidWithLoss())
    step = compile_step(net, optim.SGD(lr=0.0))
    sets, expected = {}, {}
    for name, n in (("train", 23), ("val", 9)):
        x_np = rng.standard_normal((n, 4)).astype(np.float32)
        t_np = (rng.random((n, 1)) < 0.5).astype(np.float32)
        sets[name] = make(xp, x_np, "float32"), make(xp, t_np, "float32")
        expected[name] = float(np.mean(((x_np @ W + b) > 0) == (t_np == 1.0)))
    assert all(0.0 < value < 1.0 for value in expected.values())
    for hold in (False, True):
        if hold:
            step.hold_sets(sets)
        for name, (x, t) in sets.items():
            for batch_size in (None, 5):
                assert step.accuracy(x, t, batch_size) == expected[name], (name, hold)


def test_a_binary_classifiers_integer_labels_are_0_and_1(xp):
    # One output is a binary classifier's logit: integer labels 0 and 1 are in range (the
    # width, 1, would refuse the 1s); a 2 is not, and the message says why.
    rng = np.random.default_rng(6)
    x = make(xp, rng.standard_normal((20, 4)), "float32")
    t = make(xp, (np.arange(20) % 2)[:, None], "int64")

    def trainer(labels):
        net = Sequential(Affine(make(xp, rng.standard_normal((4, 1)), "float32"),
                                make(xp, np.zeros(1), "float32")), SigmoidWithLoss())
        return Trainer(net, x, labels, x, labels, epochs=2, mini_batch_size=8,
                       verbose=False, seed=0)

    run = trainer(t)
    run.train()
    assert run.test_acc_list and 0.0 <= run.final_test_acc <= 1.0
    bad = make(xp, np.minimum(np.arange(20) % 3, 2)[:, None], "int64")
    with pytest.raises(ValueError, match=r"lie in \[0, 2\) for a network with 1 output "
                                         r"\(a binary classifier\), got values from 0 to 2"):
        trainer(bad)


def test_targets_outside_the_loss_layers_range_are_refused_where_data_enter(xp):
    # SigmoidWithLoss's targets are probabilities. Its own check cannot read values in a
    # compiled step or on Dask, so the Trainer's data check reads the loss layer's
    # target_range: 7.0 or NaN is refused before training, on every backend.
    rng = np.random.default_rng(8)
    x = make(xp, rng.standard_normal((12, 4)), "float32")

    def binary():
        return Sequential(Affine(make(xp, rng.standard_normal((4, 1)), "float32"),
                                 make(xp, np.zeros(1), "float32")), SigmoidWithLoss())

    good = (np.arange(12) % 2).astype(np.float32)[:, None]
    for value, shown in ((7.0, "from 0 to 7"), (np.nan, "from nan to nan")):
        bad = good.copy()
        bad[3, 0] = value
        with pytest.raises(ValueError, match=r"t_test holds 1 targets outside \[0, 1\] "
                                             r"\(the loss layer's target_range\) or NaN"
                                             rf".*{shown}"):
            Trainer(binary(), x, make(xp, good, "float32"), x, make(xp, bad, "float32"),
                    epochs=1, mini_batch_size=4, verbose=False)
    soft = make(xp, np.full((12, 1), 0.3), "float32")  # probabilities: in range
    Trainer(binary(), x, soft, x, soft, epochs=1, mini_batch_size=4, verbose=False).train()
    # A loss without a range (mean squared error): any real target.
    regression = Sequential(Affine(make(xp, rng.standard_normal((4, 1)), "float32"),
                                   make(xp, np.zeros(1), "float32")), MeanSquaredError())
    far = make(xp, np.full((12, 1), 7.0), "float32")
    Trainer(regression, x, far, x, far, epochs=1, mini_batch_size=4, verbose=False)
    # A step made alone checks its first batch the same way.
    step = compile_step(binary(), optim.SGD())
    with pytest.raises(ValueError, match="t_batch holds 1 targets outside"):
        bad = good.copy()
        bad[0, 0] = 7.0
        step(x, make(xp, bad, "float32"))


def test_trainer_refuses_labels_out_of_range_before_training(xp):
    x = make(xp, np.ones((4, 64)), "float32")
    good, bad = make(xp, [0, 1, 2, 3], "int64"), make(xp, [0, 1, 2, 9], "int64")
    net = TwoLayerNet(64, 10, 5, xp=xp, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 5\).*from 0 to 9"):
        Trainer(net, x, good, x, bad, epochs=1, verbose=False)


@pytest.mark.parametrize("compile", ["auto", False])
@pytest.mark.parametrize("bad_set", ["train", "test", "val"])
def test_trainer_checks_every_set_where_data_enter(xp, bad_set, compile):
    # Every set's labels and inputs are checked where data enter; a bad value in any one
    # set is found, and the error names it.
    net = TwoLayerNet(64, 10, 5, xp=xp, seed=0)
    x, t = np.ones((4, 64)), [0, 1, 2, 3]
    sets = {name: (make(xp, x, "float32"), make(xp, t, "int64"))
            for name in ("train", "test", "val")}
    kwargs = {"epochs": 1, "verbose": False, "compile": compile}

    def trainer(sets):
        return Trainer(net, *sets["train"], *sets["test"], x_val=sets["val"][0],
                       t_val=sets["val"][1], **kwargs)

    trainer(sets)  # all good
    labels = dict(sets)
    labels[bad_set] = (sets[bad_set][0], make(xp, [0, 1, 2, 5], "int64"))
    with pytest.raises(ValueError, match=r"\[0, 5\).*from 0 to 5"):
        trainer(labels)
    values = dict(sets)
    x_bad = x.copy()
    x_bad[1, 3] = np.nan
    values[bad_set] = (make(xp, x_bad, "float32"), sets[bad_set][1])
    with pytest.raises(ValueError, match=f"x_{bad_set} holds 1 NaN and 0 infinite"):
        trainer(values)


def test_one_hot_labels_need_no_predict_for_their_check(xp):
    # Only class indices have a range to check: one-hot rows neither ask the network for
    # its output width nor are read, so a network without predict() trains on them.
    class NoPredict:
        def __init__(self):
            self.inner = TwoLayerNet(64, 10, 5, xp=xp, seed=0)
            self.params = self.inner.params

        def loss(self, x, t):
            return self.inner.loss(x, t)

        def gradient(self, x, t):
            return self.inner.gradient(x, t)

    x, t = batch(xp, False)
    one_hot = make(xp, np.eye(5)[to_numpy(t)], "float32")
    step = compile_step(NoPredict(), optim.SGD(), False)
    assert np.isfinite(float(step(x, one_hot)))
    step.check_data({"train": (x, one_hot)})
    check_data(NoPredict(), {"train": (x, one_hot)})


def test_data_flags_compare_labels_only_with_values_their_dtype_holds(xp):
    x = make(xp, np.ones((3, 2)), "float32")
    flags = data_flags({"a": (x, make(xp, [0, 200, 255], "uint8"))}, classes=300)
    assert not np.any(to_numpy(flags))  # 300 classes: every uint8 label is valid
    flags = data_flags({"a": (x, make(xp, [0, 200, 255], "uint8"))}, classes=255)
    assert np.any(to_numpy(flags))
    flags = data_flags({"a": (x, make(xp, [0, -1, 1], "int8"))}, classes=2)
    assert np.any(to_numpy(flags))
    one_hot = make(xp, np.eye(3)[[0, 2, 1]], "float32")  # rows, not indices: not read
    assert not np.any(to_numpy(data_flags({"a": (x, one_hot)}, classes=2)))
    assert data_flags({"a": (make(xp, [0, 1, 1], "int64"), one_hot)}) is None


@pytest.mark.parametrize("column", [False, True])
def test_check_data_reads_class_indices_given_as_a_column_too(xp, column):
    # The loss reads integer labels (N, 1) as class indices: the entry check must as well.
    net = TwoLayerNet(64, 10, 5, xp=xp, seed=0)
    x, _ = batch(xp, False, n=4)
    bad, good = np.array([0, 1, 7, 4]), np.array([0, 1, 2, 4])
    if column:
        bad, good = bad[:, None], good[:, None]
    check_data(net, {"train": (x, make(xp, good, "int64"))})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\).*from 0 to 7"):
        check_data(net, {"train": (x, make(xp, bad, "int64"))})
    assert np.any(to_numpy(data_flags({"train": (x, make(xp, bad, "int64"))}, classes=5)))


def test_compile_true_where_no_compiler_applies_is_refused(xp):
    if auto_kind(xp) != "eager":
        pytest.skip(f"{auto_kind(xp)} applies")
    x = make(xp, np.ones((4, 64)), "float32")
    t = make(xp, [0, 1, 2, 3], "int64")
    with pytest.raises(ValueError, match="compile=True"):
        Trainer(TwoLayerNet(64, 10, 5, xp=xp, seed=0), x, t, x, t, verbose=False, compile=True)


@pytest.mark.skipif(not (sys.modules.get("torch") or __import__("importlib").util.find_spec(
    "torch")), reason="needs torch")
def test_torch_cuda_graph_step_matches_eager(xp):
    if not is_torch_namespace(xp):
        pytest.skip("the CUDA-graph step is torch's")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA-graph step needs one")
    cuda = torch.device("cuda")
    nets = [MultiLayerNetExtend(64, [30], 5, use_batchnorm=True, use_dropout=True, xp=xp,
                                device=cuda, seed=2) for _ in range(2)]
    graph_step = compile_step(nets[0], optim.Adam(lr=0.01))
    eager_step = compile_step(nets[1], optim.Adam(lr=0.01), compile=False)
    assert graph_step.kind == "cuda-graph"
    _steps_agree_over_two_batch_shapes(xp, nets, graph_step, eager_step, cuda)


@pytest.mark.skipif(not (sys.modules.get("torch") or __import__("importlib").util.find_spec(
    "torch")), reason="needs torch")
@pytest.mark.parametrize("net_name", list(NETWORKS))
def test_torch_cuda_step_never_waits_for_the_gpu(xp, net_name):
    # The contract: no host synchronisation inside a step. torch's sync debug mode makes
    # every operation that waits for the GPU (a value read, a nonzero, a blocking copy)
    # an error. After the first steps (the first checks the labels where data enter; the
    # CUDA-graph step warms up and captures), eager steps and graph replays with every
    # optimizer must run without one.
    if not is_torch_namespace(xp):
        pytest.skip("torch's sync debug mode")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    build, images = NETWORKS[net_name]
    x, t = (a.to("cuda") for a in batch(xp, images))
    for (opt_name, make_optimizer), compile in itertools.product(OPTIMIZERS.items(),
                                                                 [False, "auto"]):
        step = compile_step(build(xp, 0), make_optimizer(), compile=compile)
        for _ in range(1 if compile is False else step.warmup + 2):
            step(x, t)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            losses = [step(x, t) for _ in range(2)]
        except RuntimeError as exc:
            pytest.fail(f"{net_name} with {opt_name}, {step.kind}: a step waited for the "
                        f"GPU: {exc}")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(loss.is_cuda and loss.shape == () for loss in losses)


def _other_layers(xp, loss_layer, outputs):
    """A network of the layers NETWORKS lack: Tanh, Sigmoid, LeakyReLU, Identity and
    `loss_layer` (outputs scores per sample)."""
    rng = np.random.default_rng(4)

    def affine(n_in, n_out):
        return Affine(make(xp, 0.3 * rng.standard_normal((n_in, n_out)), "float32"),
                      make(xp, np.zeros(n_out), "float32"))

    return Sequential(affine(64, 8), Tanh(), affine(8, 8), Sigmoid(), affine(8, 8),
                      LeakyReLU(), Identity(), affine(8, outputs), loss_layer)


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_a_torch_step_makes_no_tensor_from_host_data_and_reads_no_value(xp, opt_name,
                                                                        monkeypatch):
    # What fails a CUDA graph capture ("Cannot copy between CPU and CUDA tensors") or syncs
    # an eager GPU step, caught on any device: a tensor made from Python or NumPy data (a
    # host-to-device copy on a GPU; array-api-compat's torch `maximum(x, 0)` made one) or a
    # value read on the host. The torch functions a step calls from Python are watched
    # (copies and reads inside torch's C++, e.g. a boolean-mask index, are not seen); the
    # eager step runs as it does on a GPU, without the layers' own value checks.
    if not is_torch_namespace(xp):
        pytest.skip("watches torch's functions")
    import torch
    from torch.overrides import TorchFunctionMode

    from portablelayers import compiled

    monkeypatch.setattr(compiled, "reads_wait_for_a_device", lambda x: True)

    from_host = {torch.asarray, torch.as_tensor, torch.tensor, torch.Tensor.new_tensor}
    reads = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.tolist,
             torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.nonzero, torch.nonzero}

    class Watch(TorchFunctionMode):
        seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if (func in from_host and args and not isinstance(args[0], torch.Tensor)
                    or func in reads):
                self.seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    t5 = make(xp, np.arange(12) % 5, "int64")
    cases = {name: (build(xp, 0), batch(xp, images)) for name, (build, images)
             in NETWORKS.items()}
    cases["Tanh, Sigmoid, LeakyReLU, Identity"] = (_other_layers(xp, SoftmaxWithLoss(), 5),
                                                    (batch(xp, False)[0], t5))
    binary = make(xp, (np.arange(12) % 2)[:, None], "float32")
    cases["SigmoidWithLoss"] = (_other_layers(xp, SigmoidWithLoss(), 1),
                                (batch(xp, False)[0], binary))
    cases["MeanSquaredError"] = (_other_layers(xp, MeanSquaredError(), 1),
                                 (batch(xp, False)[0], binary))
    for name, (net, (x, t)) in cases.items():
        step = compile_step(net, OPTIMIZERS[opt_name]())
        step(x, t)  # the first batch's labels are checked: a read, where data enter
        with Watch() as watch:
            watch.seen.clear()
            step(x, t)
            step(x, t)
        assert watch.seen == [], f"{name}: {watch.seen}"


def _steps_agree_over_two_batch_shapes(xp, nets, graph_step, eager_step, dev):
    # Epochs of batches 12, 12 and a last 5: per shape, warm-up steps, the capture, then
    # replays, the two shapes' graphs and eager steps interleaved on the same state.
    for epoch in range(6):
        for i, n in enumerate([12, 12, 5]):
            x, t = (a.to(dev) for a in batch(xp, False, n=n, seed=3 * epoch + i))
            assert rel(graph_step(x, t), eager_step(x, t)) <= 1e-5
    for name in nets[1].params:
        assert rel(nets[0].params[name], nets[1].params[name]) <= 1e-5
    for name in nets[1].state:
        assert rel(nets[0].state[name], nets[1].state[name]) <= 1e-5
    assert int(graph_step.optimizer.state["iter"]) == 18
    assert graph_step.traces == 2


def test_cuda_graph_steps_bookkeeping_on_an_emulated_graph(xp, monkeypatch):
    # No GPU in CI: torch.cuda's graph API replaced by an emulation on the CPU. Capture runs
    # nothing (the values it changed are restored) and remembers the buffers bound then;
    # a replay runs the step on exactly those buffers and static inputs and leaves its
    # results in them, as a captured graph does. What this checks is the step's
    # bookkeeping: which buffers each graph and each eager step read and write.
    if not is_torch_namespace(xp):
        pytest.skip("the CUDA-graph step is torch's")
    import contextlib

    import torch

    from portablelayers import compiled

    class EmulatedGraph:
        def replay(self):
            step = self.step
            _, static_x, static_t, static_loss = next(
                entry for entry in step._graphs.values() if entry[0] is self)
            bound = step._arrays()
            step._bind(*self.buffers)
            with compiled.no_value_checks():
                loss = compiled.training_step(step.network, step.optimizer, static_x,
                                              static_t)
            for kept, now in zip(self.buffers, step._arrays(), strict=True):
                for name, value in now.items():
                    if value is not kept[name]:
                        kept[name].copy_(value)
            static_loss.copy_(loss)
            step._bind(*bound)  # a replay rebinds nothing

    @contextlib.contextmanager
    def capture(graph):
        graph.step = graph_step
        graph.buffers = graph_step._arrays()
        values = [{k: v.clone() for k, v in d.items()} for d in graph.buffers]
        yield
        for buffers, saved in zip(graph.buffers, values, strict=True):
            for name, value in saved.items():
                buffers[name].copy_(value)

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", EmulatedGraph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    nets = [MultiLayerNetExtend(64, [30], 5, use_batchnorm=True, use_dropout=True, xp=xp,
                                device=torch.device("cpu"), seed=2) for _ in range(2)]
    optimizers = [optim.Adam(lr=0.01), optim.Adam(lr=0.01)]
    graph_step = compiled._CudaGraphStep(nets[0], optimizers[0])  # what CUDA tensors get
    optimizers[0].init_state(nets[0].params)
    eager_step = compile_step(nets[1], optimizers[1], compile=False)
    _steps_agree_over_two_batch_shapes(xp, nets, graph_step, eager_step, "cpu")


LAYERS = [ReLU(), Sigmoid(), Tanh(), LeakyReLU(), Identity(), Flatten(), Dropout(0.5),
          Pooling(2, 2), AvgPooling(2, 2)]


def test_every_layer_keeps_the_contract(xp):
    f = make(xp, np.ones((2, 3)), "float32")
    layers = [*LAYERS, Affine(f, make(xp, np.zeros(3), "float32")),
              Convolution(make(xp, np.ones((2, 1, 3, 3)), "float32"),
                          make(xp, np.zeros(2), "float32")),
              BatchNormalization(make(xp, np.ones(3), "float32"),
                                 make(xp, np.zeros(3), "float32"))]
    for layer in layers:
        assert isinstance(layer, Layer), type(layer).__name__
        assert isinstance(layer.state, dict)
    for loss in (SoftmaxWithLoss(), SigmoidWithLoss(), MeanSquaredError()):
        assert isinstance(loss, LossLayer)
        assert loss.params == {} and loss.state == {}
    assert not isinstance(object(), Layer)

    class Books:  # a layer of the book's kind, with no state: not the contract
        params, grads = {}, {}

        def forward(self, x):
            return x

        def backward(self, dout):
            return dout

    assert not isinstance(Books(), Layer)


def test_cli_compile_flag(tmp_path):
    args = [sys.executable, "-m", "portablelayers", "train", "--epochs", "1",
            "--compile-cache", "none"]
    done = subprocess.run([*args, "--compile", "off"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "steps eager" in done.stdout
    refused = subprocess.run([*args, "--compile", "on"], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2
    assert "--compile on: no compiled step for numpy arrays" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_eager_step_refuses_a_non_finite_loss_before_its_update(xp):
    if is_jax_namespace(xp) or xp.__name__.endswith("dask.array"):
        pytest.skip("compiled and lazy steps read no values")
    # Batch norm and dropout: the forward pass moves state (a NaN batch would make the
    # running statistics NaN); a refused step leaves it as it was, with the parameters.
    net = MultiLayerNetExtend(64, [12], 5, use_batchnorm=True, use_dropout=True, xp=xp,
                              seed=0)
    step = compile_step(net, optim.Adam(), compile=False, check_finite=True)
    x, t = batch(xp, False)
    step(x, t)
    before = {k: to_numpy(v).copy() for k, v in {**net.params, **net.state}.items()}
    bad = xp.where(xp.arange(12)[:, None] == 3, xp.asarray(float("nan"), dtype=x.dtype), x)
    with pytest.raises(FloatingPointError, match="loss of this batch is nan; the update was "
                                                 "not applied"):
        step(bad, t)
    for name, value in before.items():
        np.testing.assert_array_equal(to_numpy({**net.params, **net.state}[name]), value,
                                      err_msg=name)
    assert int(to_numpy(step.optimizer.iter)) == 1
    assert np.isfinite(float(step(x, t)))  # a good batch then trains as usual


def test_an_eager_step_on_a_cpu_keeps_checking_every_batch(xp):
    # A read costs microseconds on a CPU: a later batch's labels out of range are refused
    # by the layers, as before the step existed (on a GPU the step skips them: each read
    # would wait for the device, and the data were checked where they entered).
    if is_jax_namespace(xp) or xp.__name__.endswith("dask.array"):
        pytest.skip("compiled (JAX) and lazy (Dask) steps read no values")
    x = make(xp, np.random.default_rng(0).standard_normal((6, 64)), "float32")
    if reads_wait_for_a_device(x):
        pytest.skip("on a GPU the eager step reads no values")
    step = compile_step(TwoLayerNet(64, 10, 3, xp=xp, seed=0), optim.SGD(), compile=False)
    step(x, make(xp, [0, 1, 2, 0, 1, 2], "int64"))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\), got values from -1 to 7"):
        step(x, make(xp, [0, 1, 7, 0, -1, 2], "int64"))
