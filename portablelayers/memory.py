"""glibc's malloc set to keep freed memory, for training steps that free and allocate the
same large buffers every step.

    import portablelayers
    portablelayers.keep_freed_memory()

`compile_step` (and so the Trainer and `portablelayers train`) calls it once per process.

Why: every training step allocates its large temporaries (the scratch buffer of a compiled
JAX step: 32 MiB for SimpleConvNet at batch 100; NumPy's and torch's intermediate arrays of
an eager step) and frees them at its end. glibc's malloc hands much of that memory back to
the kernel: it maps buffers above its mmap threshold on their own and unmaps them at the
free, trims the top of the main heap, and deletes a thread's heap that has become empty.
The next step then faults every page in again. Which buffers suffer depends on the heap's
layout, so it varies from process to process: about one JAX process in ten or twenty took
SimpleConvNet's compiled step at 17-31 ms instead of 14-15 ms, faulting its scratch buffer
in at every step (1,300-6,200 page faults a step; one of the 45 below).

What `keep_freed_memory` sets (`mallopt`), so that freed memory stays for the next step:

- `M_MMAP_MAX` 0: no buffer is mapped on its own where a heap can hold it (this also stops
  glibc's moving mmap threshold, which a buffer above it needs).
- `M_TOP_PAD` 64 MiB: a thread's heap that has become empty is deleted only where the heap
  before it has more room than the pad, which a thread's heap (64 MiB at most) never has;
  the main heap keeps 64 MiB free at its top when it is trimmed.
- `M_TRIM_THRESHOLD` 2**31 - 1: the main heap is trimmed only once 2 GiB at its top are
  free (then down to the pad), and a thread's heap, smaller than that, never.

Measured on a 2-core machine (a virtual machine, where a page fault is dear), one thread,
batch 100, medians of separate processes, glibc's default against kept:

| step | glibc's default | kept | page faults a step |
| --- | --- | --- | --- |
| JAX SimpleConvNet, compiled (45 processes each) | 13.4-19.6 ms | 13.7-15.4 ms | <= 1,370 -> <= 8 |
| NumPy SimpleConvNet, eager (3 each) | 25.2-25.9 ms | 21.2-21.8 ms | 1,550-1,940 -> 1-5 |
| PyTorch's own SimpleConvNet step (3 each) | 20.1-26.0 ms | 19.2-20.8 ms | 19-3,700 -> 6-39 |

(The JAX processes kept freed memory with earlier versions of these settings, which also
set `M_MMAP_THRESHOLD`; four more with these: 14.2-14.9 ms, no page faults.)

What it cannot keep: a thread's heap holds at most 64 MiB, and a larger buffer allocated
by a thread other than the main one (XLA's) is mapped on its own whatever the settings.
SimpleConvNet's compiled step at batch 1000 (317 MiB of scratch) and DeepConvNet's at batch
100 fault in 230-280 MB a step. Setting ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=4294967296`` in the environment puts every thread on the main heap,
which grows as far as needed: those steps then took 165-170 ms instead of 265-275 ms and
171-174 ms instead of 236-243 ms. One heap for all threads costs small steps, though:
SimpleConvNet's at batch 100 took 15.6 ms instead of 14.4, TwoLayerNet's 0.241 ms instead of
0.204 (medians of eight processes each), which is why `keep_freed_memory` leaves the
threads their heaps.

The cost: memory a step freed stays with the process, up to its peak use, and the pad is
committed address space: each new thread heap is made 64 MiB (readable and writable, its
pages untouched) and each growth of the main heap asks for 64 MiB more. Under strict
overcommit accounting (`vm.overcommit_memory=2`) that can fail allocations sooner.

Only glibc (Linux) has these settings; elsewhere this does nothing. Where the environment
sets any of them (`MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`,
`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`, or ``glibc.malloc.*`` in `GLIBC_TUNABLES`),
or preloads another allocator (jemalloc, tcmalloc, mimalloc in `LD_PRELOAD`), malloc is the
user's and stays as it is; so it does with ``PORTABLELAYERS_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MALLOC_SETTINGS", "OPT_OUT", "freed_memory_kept", "keep_freed_memory"]

#: mallopt's parameters (their numbers in malloc.h) and the values `keep_freed_memory` sets,
#: in this order.
MALLOC_SETTINGS = {
    "M_MMAP_MAX": (-4, 0),
    "M_TOP_PAD": (-2, 64 * 2**20),
    "M_TRIM_THRESHOLD": (-1, 2**31 - 1),
}
#: The environment variable that leaves glibc's malloc as it is ("0").
OPT_OUT = "PORTABLELAYERS_KEEP_FREED_MEMORY"
# the environment variables by which glibc takes these settings at process start
_ENVIRONMENT = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
                "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_")
# allocators that replace glibc's malloc when preloaded (their mallopt, if any, is theirs)
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
# whether mallopt took every setting: None before this module called it (a refused setting
# is not tried again)
_kept = None


def _users_malloc() -> bool:
    """Whether the environment sets glibc's malloc itself, preloads another allocator, or
    opts out (`OPT_OUT`)."""
    preloaded = os.environ.get("LD_PRELOAD", "")
    return (os.environ.get(OPT_OUT) == "0" or any(name in os.environ for name in _ENVIRONMENT)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
            or any(name in preloaded for name in _OTHER_ALLOCATORS))


def _mallopt():
    """glibc's mallopt, or None (another C library, another system)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:  # the process's own symbols: libc is loaded already (no ldconfig subprocess)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory in the process (`MALLOC_SETTINGS`).

    Calls after the first that reached mallopt change nothing.

    Returns
    -------
    bool
        Whether the settings are in force through this module. False where malloc is not
        glibc's, where the environment sets it (see the module's text), and where glibc
        refused a setting: the settings before it in `MALLOC_SETTINGS` then stay in force.

    Examples
    --------
    >>> import portablelayers
    >>> portablelayers.keep_freed_memory()  # doctest: +SKIP
    True
    """
    global _kept
    if _kept is not None:
        return _kept
    if _users_malloc() or (mallopt := _mallopt()) is None:
        return False
    # mallopt returns 1 on success; all() stops at the first refusal
    _kept = all(mallopt(number, value) == 1 for number, value in MALLOC_SETTINGS.values())
    return _kept


def freed_memory_kept() -> bool:
    """Whether `keep_freed_memory` set glibc's malloc in this process.

    Returns
    -------
    bool
        True once the settings are in force.

    Examples
    --------
    >>> from portablelayers.memory import freed_memory_kept
    >>> freed_memory_kept() in (True, False)
    True
    """
    return bool(_kept)
