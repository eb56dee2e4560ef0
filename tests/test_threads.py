"""Thread settings: the default rule, BLAS pools and torch set together, --threads."""

from __future__ import annotations

import os
import sys

import pytest

import portablelayers
from portablelayers import cli, threads

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
ONCE = pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")


@pytest.fixture(autouse=True)
def restore_threads():
    before = threads.thread_info()
    yield
    if threads._limiter is not None:
        threads._limiter.restore_original_limits()
        threads._limiter = None
    if "torch" in before:
        sys.modules["torch"].set_num_threads(before["torch"])


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (4, 1), (6, 3), (16, 8),
                                             (128, 8)])
def test_default_rule(cores, expected):
    assert threads.default_threads(cores) == expected


def test_usable_cores_is_the_affinity():
    if hasattr(os, "sched_getaffinity"):
        assert threads.usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("n", [1, 2])
def test_set_threads_sets_blas_and_torch(n):
    import numpy as np

    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS loaded
    assert portablelayers.set_threads(n) == n
    info = threads.thread_info()
    blas = {k: v for k, v in info.items() if k.startswith("blas:")}
    assert blas and all(v == n for v in blas.values()), info
    if "torch" in sys.modules:
        assert sys.modules["torch"].get_num_threads() == n


def test_auto_is_the_default_rule():
    assert threads.set_threads("auto") == threads.default_threads()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "many"])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="threads must be a positive int or 'auto'"):
        threads.set_threads(bad)


@ONCE
def test_cli_threads_option_applies_and_is_reported(capsys):
    assert cli.main(["train", "--epochs", "1", "--hidden-size", "4", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(", 2 threads")
    blas = [v for k, v in threads.thread_info().items() if k.startswith("blas:")]
    assert blas and set(blas) == {2}


@ONCE
def test_cli_threads_rejects_zero(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--threads", "0"])
    assert info.value.code == 2
    assert "argument --threads: expected a positive integer, got 0" in capsys.readouterr().err
