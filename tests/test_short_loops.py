"""`vectorize_short_loops`: the LLVM option that `import portablelayers` adds to XLA_FLAGS.

The decisions are checked in this process, with JAX's start and the installed packages
stood in for; what the option does is checked in fresh processes (XLA reads XLA_FLAGS
once, at JAX's first array): XLA's code for a small SimpleConvNet's compiled step holds
more vector instructions with it, and the step computes the same numbers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from portablelayers import compiled

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
JAX_ONLY = pytest.mark.skipif(BACKEND != "jax", reason="XLA's flags: run in the jax session")
HAS_JAXLIB = importlib.util.find_spec("jaxlib") is not None


@pytest.fixture
def fresh(monkeypatch):
    """vectorize_short_loops as at its first call, in a process whose JAX has not started,
    with a measured jaxlib and no JAX plugin; the environment is restored afterwards."""
    monkeypatch.setattr(compiled, "_short_loops", None)
    monkeypatch.setattr(compiled, "_jax_started", lambda: False)
    monkeypatch.setattr(compiled, "_measured_jaxlib", lambda: True)
    real_find_spec = importlib.util.find_spec
    installed = {"jaxlib"}

    def find_spec(name, *args):
        if name in ("jaxlib", "jax_plugins", "libtpu"):
            return real_find_spec("os") if name in installed else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delenv(compiled.SHORT_LOOPS_OPT_OUT, raising=False)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    return installed


def test_the_option_is_added_to_xla_flags_once(fresh):
    assert compiled.vectorize_short_loops() is True
    expected = f"--xla_cpu_multi_thread_eigen=false {compiled.XLA_CPU_FLAGS}"
    assert os.environ["XLA_FLAGS"] == expected
    assert compiled.vectorize_short_loops() is True  # a second call adds nothing
    assert os.environ["XLA_FLAGS"] == expected


def test_empty_xla_flags_get_the_option_alone(fresh, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS")
    assert compiled.vectorize_short_loops() is True
    assert os.environ["XLA_FLAGS"] == compiled.XLA_CPU_FLAGS


def test_an_inherited_option_is_reported_and_not_added_twice(fresh, monkeypatch):
    # a process started by one that added it: in force, even where this one would not add it
    flags = f"{compiled.XLA_CPU_FLAGS} --xla_cpu_multi_thread_eigen=false"
    monkeypatch.setenv("XLA_FLAGS", flags)
    monkeypatch.setattr(compiled, "_jax_started", lambda: True)
    assert compiled.vectorize_short_loops() is True
    assert os.environ["XLA_FLAGS"] == flags


@pytest.mark.parametrize("case", ["opted out", "user's extra options", "JAX started",
                                  "other jaxlib", "no jaxlib", "JAX plugin", "TPU runtime"])
def test_xla_flags_are_left_as_they_are(fresh, monkeypatch, case):
    flags = "--xla_cpu_multi_thread_eigen=false"
    if case == "opted out":
        monkeypatch.setenv(compiled.SHORT_LOOPS_OPT_OUT, "0")
    elif case == "user's extra options":
        flags += " --xla_backend_extra_options=xla_cpu_disable_loop_unrolling"
        monkeypatch.setenv("XLA_FLAGS", flags)
    elif case == "JAX started":  # XLA read XLA_FLAGS already: the option would not hold
        monkeypatch.setattr(compiled, "_jax_started", lambda: True)
    elif case == "other jaxlib":  # its LLVM may not know the option (an unknown one kills)
        monkeypatch.setattr(compiled, "_measured_jaxlib", lambda: False)
    elif case == "no jaxlib":
        fresh.clear()
    elif case == "JAX plugin":  # a GPU's compiler would get the option too: not measured
        fresh.add("jax_plugins")
    else:
        fresh.add("libtpu")
    assert compiled.vectorize_short_loops() is False
    assert os.environ["XLA_FLAGS"] == flags
    assert compiled.vectorize_short_loops() is False  # the first answer stands


def test_a_jax_plugin_is_no_bar_where_jax_runs_on_the_cpu_only(fresh, monkeypatch):
    fresh.add("jax_plugins")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert compiled.vectorize_short_loops() is True


@pytest.mark.skipif(not HAS_JAXLIB, reason="needs JAX")
def test_jax_started_is_told_by_its_first_array():
    code = ("import sys; from portablelayers.compiled import _jax_started as s; a = s(); "
            "import jax; b = s(); import jax.numpy as jnp; jnp.ones(1); print(a, b, s())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_environment(), check=True).stdout.split()
    assert out == ["False", "False", "True"]


# A small SimpleConvNet on 8x8 images: its pool's output rows are 4 wide, loops that LLVM's
# default threshold (16) leaves scalar. Three compiled steps, then the parameters and the
# count of vector types in the optimized LLVM IR that XLA dumped.
STEPS = """
import glob, json, os, sys
import numpy as np
import portablelayers
import jax.numpy as jnp
from portablelayers import nets, optim
from portablelayers.compiled import compile_step

net = nets.SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 6, "filter_size": 3,
                         "pad": 1, "stride": 1}, hidden_size=20, output_size=5, xp=jnp, seed=0)
step = compile_step(net, optim.SGD(lr=0.1))
rng = np.random.default_rng(0)
for _ in range(3):
    step(jnp.asarray(rng.random((20, 1, 8, 8), dtype=np.float32)),
         jnp.asarray(rng.integers(0, 5, 20)))
params = {name: np.asarray(value).tolist() for name, value in net.params.items()}
vectors = 0
for path in glob.glob(os.path.join(sys.argv[1], "*ir-with-opt.ll")):
    with open(path) as ir:
        vectors += ir.read().count(" x float>")
print(json.dumps({"added": portablelayers.vectorize_short_loops(), "params": params,
                  "vectors": vectors}))
"""


def _environment(**settings):
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", compiled.SHORT_LOOPS_OPT_OUT)}
    env.update(JAX_PLATFORMS="cpu", PJRT_NPROC="1", **settings)
    return env


def _steps(tmp_path, name, **settings):
    dump = tmp_path / name
    env = _environment(XLA_FLAGS=f"--xla_dump_to={dump}", **settings)
    result = subprocess.run([sys.executable, "-c", STEPS, str(dump)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


@JAX_ONLY
def test_the_option_vectorizes_short_loops_and_keeps_the_numbers(tmp_path):
    measured = _steps(tmp_path, "with")
    if not measured["added"]:
        pytest.skip("a jaxlib the option was not measured with, or a JAX plugin installed")
    plain = _steps(tmp_path, "without", **{compiled.SHORT_LOOPS_OPT_OUT: "0"})
    assert plain["added"] is False
    assert measured["vectors"] > plain["vectors"] > 0
    assert measured["params"].keys() == plain["params"].keys()
    for name, value in measured["params"].items():  # the same to float32 rounding
        np.testing.assert_allclose(value, plain["params"][name], rtol=1e-6, atol=1e-9)
