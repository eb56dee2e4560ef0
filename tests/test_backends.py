"""The backend registry: names, namespaces and extras in one place; device names parsed
(on the CPU: the parsing, and the devices this machine has; on a GPU: placement too);
the precision policy; the CuPy extra chosen from the driver."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import tomllib

import numpy as np
import pytest
from conftest import BACKEND
from support import make, to_numpy

from portablelayers import backends
from portablelayers._backend import device
from portablelayers.backends import (
    BACKENDS,
    CPU_BACKENDS,
    cupy_extra_for_driver,
    parse_device,
    set_precision,
    split_device,
)

ROOT = pathlib.Path(__file__).parents[1]


def test_registry_names_every_backend_once_with_its_extra():
    assert list(BACKENDS) == ["numpy", "array_api_strict", "torch", "jax", "dask", "cupy"]
    assert CPU_BACKENDS == ("numpy", "array_api_strict", "torch", "jax", "dask")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for backend in BACKENDS.values():
        assert backend.extra is None or backend.extra in extras, backend.name
    assert {"cupy-cuda12x", "cupy-cuda13x"} <= set(extras)


def test_noxfile_sessions_come_from_the_registry():
    nox = pytest.importorskip("nox")  # present where the suite runs under nox's runner
    del nox
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.nox.options.sessions == [*CPU_BACKENDS, "lint"]


@pytest.mark.parametrize("text, expected", [
    ("cpu", ("cpu", None)), ("CUDA", ("cuda", None)), ("cuda:1", ("cuda", 1)),
    ("gpu:0", ("gpu", 0)), ("0", ("", 0)), (" cuda : 2 ", ("cuda", 2))])
def test_device_names_split(text, expected):
    assert split_device(text) == expected


@pytest.mark.parametrize("text", ["", "cuda1", "cuda:-1", "cuda:x", ":", "gpu:0:1"])
def test_malformed_device_names_are_refused(text):
    with pytest.raises(ValueError, match="device"):
        split_device(text)


def test_numpy_and_dask_have_the_cpu_only():
    assert parse_device("numpy", "cpu") == "cpu" and parse_device("dask", "0") == "cpu"
    assert parse_device("numpy", None) is None
    with pytest.raises(ValueError, match="unknown device 'cuda' for numpy; available: cpu"):
        parse_device("numpy", "cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        parse_device("tensorflow", "cpu")


def test_torch_device_names():
    torch = pytest.importorskip("torch")
    assert parse_device("torch", "cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert parse_device("torch", "cuda:0") == torch.device("cuda:0")
        assert parse_device("torch", "gpu") == torch.device("cuda")
    else:
        with pytest.raises(ValueError, match="sees no CUDA device"):
            parse_device("torch", "cuda:1")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        parse_device("torch", "tpu")


def test_jax_device_names():
    jax = pytest.importorskip("jax")
    assert parse_device("jax", "cpu") == jax.devices("cpu")[0]
    assert parse_device("jax", "0") == jax.devices()[0]  # the default platform's first
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if gpus:
        assert parse_device("jax", "cuda:0") == parse_device("jax", "gpu:0") == gpus[0]
    else:
        with pytest.raises(ValueError, match="no gpu platform"):
            parse_device("jax", "gpu:0")
    with pytest.raises(ValueError, match="there are 1 cpu device"):
        parse_device("jax", "cpu:5")


def test_array_api_strict_device_names():
    strict = pytest.importorskip("array_api_strict")
    devices = strict.__array_namespace_info__().devices()
    assert parse_device("array_api_strict", "device1") in devices
    with pytest.raises(ValueError, match="available: CPU_DEVICE"):
        parse_device("array_api_strict", "cuda")


def test_placement_on_the_named_device(xp):
    # Whatever PORTABLELAYERS_DEVICE says (the CPU here, a GPU in a GPU session), arrays
    # made by the tests land on the library's default device, which conftest set from it.
    wanted = os.environ.get("PORTABLELAYERS_DEVICE")
    x = make(xp, np.ones(3), "float32")
    if wanted and BACKEND in ("torch", "jax", "cupy"):
        assert device(x) == parse_device(BACKEND, wanted) or str(parse_device(
            BACKEND, wanted)) in str(device(x))
    np.testing.assert_array_equal(to_numpy(x), np.ones(3))


@pytest.mark.parametrize("printed, extra", [
    ("| NVIDIA-SMI 580.65   Driver Version: 580.65   CUDA Version: 13.0 |", "cupy-cuda13x"),
    ("| Driver Version: 550.54   CUDA Version: 12.4 |", "cupy-cuda12x")])
def test_cupy_extra_follows_the_driver(printed, extra):
    assert cupy_extra_for_driver(printed) == extra


def test_cupy_extra_for_an_old_or_silent_driver():
    with pytest.raises(ValueError, match="update the NVIDIA driver"):
        cupy_extra_for_driver("CUDA Version: 11.8")
    with pytest.raises(ValueError, match=r"portablelayers\[cupy-cuda12x\]"):
        cupy_extra_for_driver("no GPU here")


def test_precision_policy_sets_the_libraries_switches():
    if BACKEND == "torch":
        torch = pytest.importorskip("torch")
        try:
            set_precision("torch", "default")
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
            set_precision("torch", "highest")
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        finally:
            set_precision("torch", "highest")
    elif BACKEND == "jax":
        jax = pytest.importorskip("jax")
        try:
            set_precision("jax", "default")
            assert jax.config.jax_default_matmul_precision is None
            set_precision("jax", "highest")
            assert jax.config.jax_default_matmul_precision == "highest"
        finally:
            set_precision("jax", "highest")
    with pytest.raises(ValueError, match="precision must be one of highest, default"):
        set_precision(BACKEND, "fast")
    assert backends.PRECISIONS == ("highest", "default")
