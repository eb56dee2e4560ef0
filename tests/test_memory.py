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
SETTINGS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
            "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", memory.OPT_OUT)

# A thread (or the main one) fills its heap with 40 MB of small blocks (malloc serves them
# from the heap), then allocates, touches and frees a large buffer eight times, as a training
# step does its scratch buffer; it prints the page faults of each round. With glibc's default
# a buffer above the mmap threshold (it rises to 32 MiB at most) is mapped and unmapped each
# time, and a smaller one that no longer fits a thread's heap gets a heap of its own, which
# glibc deletes at the free: every round faults all its pages in again.
ROUNDS = """
import ctypes, ctypes.util, resource, sys, threading
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
how, big, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if how == "keep":
    from portablelayers.memory import keep_freed_memory
    print("kept", keep_freed_memory())
faults = []

def rounds():
    small = [libc.malloc(100_000) for _ in range(400)]
    for block in small:
        libc.memset(block, 1, 100_000)
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(big)
        libc.memset(block, 1, big)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    for block in small:
        libc.free(block)

if where == "thread":
    thread = threading.Thread(target=rounds)
    thread.start()
    thread.join()
else:
    rounds()
print("faults", faults)
"""


def _faults_per_round(how, big, where, **env):
    environ = {k: v for k, v in os.environ.items() if k not in SETTINGS} | env
    done = subprocess.run([sys.executable, "-c", ROUNDS, how, str(big), where],
                          capture_output=True, text=True, timeout=120, env=environ)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    return ast.literal_eval(lines["faults"]), lines.get("kept")


@ONCE
@GLIBC
@pytest.mark.parametrize("mib, where", [(31, "thread"), (100, "main")])
def test_freed_buffers_stay_mapped_from_one_round_to_the_next(mib, where):
    big = mib * 2**20
    pages = big // os.sysconf("SC_PAGE_SIZE")
    default, _ = _faults_per_round("default", big, where)
    if min(default[2:]) < pages // 2:
        pytest.skip(f"this glibc keeps the buffer anyway (faults per round: {default})")
    kept, answer = _faults_per_round("keep", big, where)
    assert answer == "True"
    # the first rounds fault the buffer in; then none
    assert max(kept[2:]) < pages // 100, (kept, default)
    # opted out (the environment's word), glibc's default stays: it faults again
    users, answer = _faults_per_round("keep", big, where, **{memory.OPT_OUT: "0"})
    assert answer == "False"
    assert min(users[2:]) >= pages // 2, users


@ONCE
@GLIBC
def test_a_thread_heap_cannot_keep_a_buffer_above_64_mib():
    # what the module's text says it cannot do: a thread's heap holds 64 MiB at most, so a
    # larger buffer is mapped and unmapped each time whatever the settings
    big = 100 * 2**20
    pages = big // os.sysconf("SC_PAGE_SIZE")
    default, _ = _faults_per_round("default", big, "thread")
    if min(default[2:]) < pages // 2:  # e.g. huge pages: a fault brings in 2 MiB
        pytest.skip(f"this system faults the buffer in otherwise (per round: {default})")
    kept, answer = _faults_per_round("keep", big, "thread")
    assert answer == "True"
    assert min(kept[2:]) >= pages // 2, kept


@ONCE
@GLIBC
def test_compile_step_keeps_freed_memory():
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
    assert done.stdout.split() == ["False", "True"]


@ONCE
@pytest.mark.parametrize("name, value", [
    ("MALLOC_ARENA_MAX", "4"), ("MALLOC_MMAP_MAX_", "65536"), ("MALLOC_TRIM_THRESHOLD_", "0"),
    ("MALLOC_TOP_PAD_", "131072"), ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ("GLIBC_TUNABLES", "glibc.malloc.top_pad=131072"),
    ("GLIBC_TUNABLES", "glibc.rtld.nns=2:glibc.malloc.mmap_threshold=131072"),
    (memory.OPT_OUT, "0")])
def test_an_environment_setting_is_the_users(monkeypatch, name, value):
    # (a process that kept freed memory already stays so: the question is a fresh one's)
    monkeypatch.setattr(memory, "_kept", None)
    monkeypatch.setenv(name, value)
    assert memory.keep_freed_memory() is False
    assert memory.freed_memory_kept() is False


@ONCE
def test_a_refused_setting_is_reported_and_not_tried_again(monkeypatch):
    # the settings before it stay in force (glibc applies each on its own)
    calls = []

    def mallopt(number, value):
        calls.append(number)
        return int(len(calls) != 2)  # the second setting refused

    monkeypatch.setattr(memory, "_kept", None)
    monkeypatch.setattr(memory, "_mallopt", lambda: mallopt)
    for name in (*SETTINGS, "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    assert memory.keep_freed_memory() is False
    assert memory.keep_freed_memory() is False
    assert calls == [number for number, _ in list(memory.MALLOC_SETTINGS.values())[:2]]
    assert memory.freed_memory_kept() is False


@ONCE
@pytest.mark.parametrize("preload", ["/usr/lib/libjemalloc.so.2", "libtcmalloc_minimal.so.4",
                                     "/opt/mimalloc/libmimalloc.so"])
def test_a_preloaded_allocator_is_the_users(monkeypatch, preload):
    monkeypatch.setattr(memory, "_kept", None)
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_PRELOAD", preload)
    assert memory.keep_freed_memory() is False


@ONCE
def test_elsewhere_than_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(memory, "_kept", None)
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(platform, "libc_ver", lambda *args, **kwargs: ("musl", "1.2"))
    assert memory.keep_freed_memory() is False


@ONCE
def test_the_cli_keeps_freed_memory_before_its_backend_makes_an_array(monkeypatch, capsys):
    # before the data and the network are made: their buffers are kept too
    from portablelayers import cli

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append("keep") or True)
    resolve = cli._resolve_backend
    monkeypatch.setattr(cli, "_resolve_backend",
                        lambda name: calls.append("backend") or resolve(name))
    assert cli.main(["train", "--epochs", "1", "--hidden-size", "4", "--quiet"]) == 0
    assert calls[:2] == ["keep", "backend"]
    capsys.readouterr()
