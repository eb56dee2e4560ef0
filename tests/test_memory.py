"""glibc keeps freed memory (portablelayers.memory): what the pad changes, who sets it."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys

import pytest

from portablelayers import memory

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
ONCE = pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")
GLIBC = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc only")
# environment variables that would change what the processes under test do
SETTINGS = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", memory.OPT_OUT)

# A thread fills its heap with 40 MB of small blocks (malloc serves them from the heap),
# then allocates, touches and frees a 31 MiB buffer eight times, as a training step does its
# scratch buffer; it prints the page faults of each round. Where the buffer no longer fits
# the thread's heap, glibc puts it in a heap of its own, which it deletes at the free unless
# the pad says to keep it: then every round faults all its pages in again.
ROUNDS = """
import ctypes, ctypes.util, resource, sys, threading
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
if sys.argv[1] == "keep":
    from portablelayers.memory import keep_freed_memory
    print("kept", keep_freed_memory())
BIG, faults = 31 * 2**20, []

def rounds():
    small = [libc.malloc(100_000) for _ in range(400)]
    for block in small:
        libc.memset(block, 1, 100_000)
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(BIG)
        libc.memset(block, 1, BIG)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    for block in small:
        libc.free(block)

thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print("faults", faults)
"""


def _faults_per_round(how, **env):
    environ = {k: v for k, v in os.environ.items() if k not in SETTINGS} | env
    done = subprocess.run([sys.executable, "-c", ROUNDS, how], capture_output=True, text=True,
                          timeout=120, env=environ)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    return ast.literal_eval(lines["faults"]), lines.get("kept")


@ONCE
@GLIBC
def test_the_pad_keeps_a_freed_buffer_mapped_from_one_round_to_the_next():
    pages = 31 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    default, _ = _faults_per_round("default")
    if min(default[2:]) < pages // 2:
        pytest.skip(f"this glibc keeps the heap anyway (faults per round: {default})")
    kept, pad = _faults_per_round("keep")
    assert pad == str(memory.FREED_MEMORY_KEPT)
    # the first rounds fault the buffer in (mapped on its own, then in a heap); then none
    assert max(kept[3:]) < pages // 100, (kept, default)
    # opted out (the environment's word), glibc's default stays: it faults again
    users, pad = _faults_per_round("keep", **{memory.OPT_OUT: "0"})
    assert pad == "None"
    assert min(users[2:]) >= pages // 2, users


@ONCE
@GLIBC
def test_compile_step_keeps_freed_memory_once_per_process():
    code = ("import numpy as np\n"
            "from portablelayers.memory import freed_memory_kept\n"
            "from portablelayers.nets import TwoLayerNet\n"
            "from portablelayers.optim import SGD\n"
            "from portablelayers.train import compile_step\n"
            "print(freed_memory_kept())\n"
            "compile_step(TwoLayerNet(4, 5, 3, seed=0), SGD(lr=0.1))\n"
            "print(freed_memory_kept())\n")
    environ = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=environ)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", str(memory.FREED_MEMORY_KEPT)]


@ONCE
@pytest.mark.parametrize("name, value", [
    ("MALLOC_TOP_PAD_", "131072"), ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ("GLIBC_TUNABLES", "glibc.malloc.top_pad=131072"),
    ("GLIBC_TUNABLES", "glibc.malloc.check=0:glibc.malloc.mmap_threshold=131072"),
    (memory.OPT_OUT, "0")])
def test_an_environment_setting_is_the_users(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert memory.keep_freed_memory() is None


@ONCE
def test_elsewhere_than_glibc_nothing_changes(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(platform, "libc_ver", lambda *args, **kwargs: ("musl", "1.2"))
    assert memory.keep_freed_memory() is None


@ONCE
@pytest.mark.parametrize("bad", [-1, 2**31, True, 1.5, "64M", None])
def test_bad_pads(bad):
    with pytest.raises(ValueError, match="nbytes must be an int from 0 to 2\\*\\*31 - 1"):
        memory.keep_freed_memory(bad)
