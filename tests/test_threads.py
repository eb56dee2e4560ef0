"""Thread settings: the default rule, BLAS pools and torch set together, --threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

import portablelayers
from portablelayers import cli, threads

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
ONCE = pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")
IN_JAX_SESSION = pytest.mark.skipif(BACKEND != "jax", reason="needs JAX; in the jax session")
# In the jax session JAX's pool runs already: set_threads rightly warns that it stays as it is
pytestmark = pytest.mark.filterwarnings("ignore:XLA's CPU pool runs:RuntimeWarning")


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = threads.thread_info()
    monkeypatch.setenv("PJRT_NPROC", "0")  # restored after the test, as it was
    monkeypatch.delenv("PJRT_NPROC")
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
    assert os.environ["PJRT_NPROC"] == str(threads.default_threads())  # XLA's CPU pool


def test_xla_pool_setting_auto_keeps_the_users_an_explicit_count_replaces(monkeypatch):
    monkeypatch.setenv("PJRT_NPROC", "5")
    threads.set_threads("auto")
    assert os.environ["PJRT_NPROC"] == "5"
    threads.set_threads(2)
    assert os.environ["PJRT_NPROC"] == "2"


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


# jaxlib names the threads of its CPU pool so (Linux shows a thread's name in /proc)
XLA_POOL_THREADS = """
import collections, os
names = collections.Counter()
for tid in os.listdir("/proc/self/task"):
    try:
        with open(f"/proc/self/task/{tid}/comm") as comm:
            names[comm.read().strip()] += 1
    except OSError:  # a thread that ended meanwhile
        pass
print("XLA pool threads:", names["tf_XLAEigen"])
"""


def _run_counting_xla_pool(code):
    """(the XLA CPU pool threads a fresh Python running `code` ends with, what it printed)."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux's /proc to count threads")
    # jaxlib's pool has at least a thread per CPU device: one device, whatever this process has
    env = {k: v for k, v in os.environ.items()
           if k not in ("PJRT_NPROC", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([sys.executable, "-c", code + XLA_POOL_THREADS], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    count = int(done.stdout.rsplit("XLA pool threads:", 1)[1])
    if count == 0:
        pytest.skip("this jaxlib names its CPU pool's threads otherwise")
    return count, done.stdout


def _xla_pool_threads(code):
    """The number of XLA CPU pool threads a fresh Python running `code` ends with."""
    return _run_counting_xla_pool(code)[0]


# More threads than cores (a count jaxlib would never choose by itself), set after JAX's
# import and before its first array: by set_threads, and by the command's --threads.
SIZING_XLA_POOL = {
    "set_threads": "import jax.numpy as jnp, portablelayers\n"
                   "portablelayers.set_threads({n})\n"
                   "(jnp.ones((64, 64)) @ jnp.ones((64, 64))).block_until_ready()\n",
    "cli": "from portablelayers import cli\n"
           "assert cli.main(['train', '--backend', 'jax', '--epochs', '1', '--hidden-size', '4',"
           " '--threads', '{n}', '--quiet', '--compile-cache', 'none']) == 0\n",
}


@IN_JAX_SESSION
@pytest.mark.parametrize("how", list(SIZING_XLA_POOL))
def test_threads_size_xla_cpu_pool(how):
    pytest.importorskip("jax")
    n = threads.usable_cores() + 1
    assert _xla_pool_threads(SIZING_XLA_POOL[how].format(n=n)) == n


# thread_info's count of XLA's pool, and set_threads after JAX's first array: silent for the
# pool's own size and for 'auto', a warning for another count (it cannot reach a running pool)
LATE_SET_THREADS = """
import json, os, warnings
import jax.numpy as jnp, portablelayers
from portablelayers.threads import thread_info
with warnings.catch_warnings(record=True) as before_first_array:
    warnings.simplefilter("always")
    portablelayers.set_threads({n})
(jnp.ones((8, 8)) @ jnp.ones((8, 8))).block_until_ready()
counted = thread_info().get("xla:cpu")
with warnings.catch_warnings(record=True) as same_size:
    warnings.simplefilter("always")
    portablelayers.set_threads({n})
with warnings.catch_warnings(record=True) as other_size:
    warnings.simplefilter("always")
    portablelayers.set_threads({n} + 1)
del os.environ["PJRT_NPROC"]
with warnings.catch_warnings(record=True) as auto:  # a default, not a request: quiet
    warnings.simplefilter("always")
    portablelayers.set_threads("auto")
assert os.environ["PJRT_NPROC"] != str({n})
def ours(caught):  # set_threads's warnings only, not another library's
    return [(w.category.__name__, str(w.message)) for w in caught
            if str(w.message).startswith("XLA's CPU pool")]
print("RESULT", json.dumps([counted, ours(before_first_array), ours(same_size), ours(auto),
                            ours(other_size)]))
"""


@IN_JAX_SESSION
def test_thread_info_counts_xla_pool_and_a_late_set_threads_warns():
    pytest.importorskip("jax")
    n = threads.usable_cores() + 1
    count, out = _run_counting_xla_pool(LATE_SET_THREADS.format(n=n))
    counted, before, same, auto, other = json.loads(
        out.split("RESULT", 1)[1].splitlines()[0])
    assert counted == count == n
    assert before == same == auto == []
    assert other == [["RuntimeWarning",
                      f"XLA's CPU pool runs {n} threads already (JAX made its first array "
                      f"before set_threads): a limit of {n + 1} reaches JAX only in processes "
                      f"started later"]]


def test_thread_info_has_no_xla_entry_without_jax(monkeypatch):
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    assert "xla:cpu" not in threads.thread_info()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        threads.set_threads(1)  # no pool to differ from
