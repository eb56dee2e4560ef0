"""How much freed memory glibc's malloc keeps, for training steps that free and allocate the
same large buffers every step.

    import portablelayers
    portablelayers.keep_freed_memory()     # glibc keeps up to 64 MiB of freed memory mapped

`compile_step` (and so the Trainer and `portablelayers train`) calls it once per process.

Why: every training step allocates its large temporaries (XLA's scratch buffer of a
compiled JAX step, 32 MiB for SimpleConvNet at batch 100; NumPy's and torch's intermediate
arrays of an eager step) and frees them at its end. glibc's malloc may hand such memory back
to the kernel at the free (it trims the main heap, and deletes a thread's heap that has
become empty), and the next step then faults in every page of it again. Where it does is
an accident of the process's heap layout, so it varies from process to process. Measured
on a 2-core machine (a virtual machine, where a page fault is dear), one thread, batch 100:

| step | glibc's default | keeping 64 MiB | page faults per step |
| --- | --- | --- | --- |
| JAX, SimpleConvNet, compiled | 14.1-15.2 ms, or 17-31 ms | 14.2-16.5 ms | 150-12,000 -> ~0 |
| NumPy, SimpleConvNet, eager | 25.4 ms | 20.5-21.7 ms | 1,700-1,900 -> 1 |
| PyTorch's own eager step | 23.2-23.7 ms | 19.4-19.8 ms | 2,700-2,800 -> 2-39 |

(JAX: 40 processes of each; glibc's default gave about one slow process in ten, in bursts.
The others: three processes of each.) Pages once faulted in stay with the process, up to
the pad per heap.

`M_TOP_PAD` is what keeps them: glibc frees memory at the top of a heap only beyond that
pad, and deletes an empty thread heap only where the heap before it has that much room.
A buffer larger than `M_MMAP_THRESHOLD` (at most 32 MiB) is mapped and unmapped on each
allocation whatever the pad: SimpleConvNet's compiled step at batch 1000 (317 MiB of
scratch) still faults in 400 MB a step. There, setting the environment before Python starts
(``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296``) serves every
allocation from the main heap, which keeps it.

Only glibc (Linux) has these settings; elsewhere this does nothing. A `MALLOC_TOP_PAD_`
environment variable, or ``glibc.malloc.top_pad`` in `GLIBC_TUNABLES`, is the user's
setting and stays (set either to keep glibc's default, 128 KiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["FREED_MEMORY_KEPT", "MMAP_THRESHOLD", "OPT_OUT", "freed_memory_kept",
           "keep_freed_memory"]

#: Bytes of freed memory glibc keeps at the top of each heap after `keep_freed_memory()`:
#: a thread heap's most (64 MiB on 64-bit Linux), so an empty one is never deleted.
FREED_MEMORY_KEPT = 64 * 2**20
#: The mmap threshold `keep_freed_memory` sets with the pad: glibc's most on 64-bit Linux.
#: Smaller buffers come from a heap, where the pad keeps them; larger ones are mapped and
#: unmapped each time.
MMAP_THRESHOLD = 32 * 2**20
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # mallopt's parameter numbers (malloc.h)
#: The environment variable that leaves glibc's settings as they are ("0").
OPT_OUT = "PORTABLELAYERS_KEEP_FREED_MEMORY"
_kept = None  # the pad this module set, once set


def _users_setting() -> bool:
    """Whether the environment sets malloc's pad or mmap threshold itself (glibc reads them
    at process start), or opts out (`OPT_OUT`)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return (os.environ.get(OPT_OUT) == "0"
            or any(f"MALLOC_{name.upper()}_" in os.environ or f"glibc.malloc.{name}" in tunables
                   for name in ("top_pad", "mmap_threshold")))


def _mallopt():
    """glibc's mallopt, or None (another C library, another system)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory(nbytes: int = FREED_MEMORY_KEPT) -> int | None:
    """Have glibc's malloc keep `nbytes` of freed memory at the top of each heap (M_TOP_PAD).

    Parameters
    ----------
    nbytes : int, default FREED_MEMORY_KEPT
        The pad, in bytes (0 up to 2**31 - 1).

    Returns
    -------
    int or None
        The pad now in force through this call, or None where it changed nothing: not
        glibc, or the environment sets the pad (`MALLOC_TOP_PAD_`, `GLIBC_TUNABLES`).

    Raises
    ------
    ValueError
        For a pad that is not an int from 0 to 2**31 - 1.

    Examples
    --------
    >>> from portablelayers.memory import keep_freed_memory, freed_memory_kept
    >>> kept = keep_freed_memory()
    >>> kept is None or kept == freed_memory_kept() == 64 * 2**20
    True
    """
    global _kept
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes < 2**31:
        raise ValueError(f"nbytes must be an int from 0 to 2**31 - 1, got {nbytes!r}")
    if _users_setting() or (mallopt := _mallopt()) is None:
        return None
    # Setting the pad also stops glibc raising the mmap threshold as it goes (from 128 KiB
    # up to the largest buffer freed), so the threshold is set too: a step's scratch buffer
    # would otherwise be mapped and unmapped every step. mallopt returns 1 on success.
    if (_kept != nbytes and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(_M_TOP_PAD, nbytes) == 1):
        _kept = nbytes
    return _kept if _kept == nbytes else None


def freed_memory_kept() -> int | None:
    """The pad `keep_freed_memory` set in this process, or None before (or where it could not).

    Returns
    -------
    int or None
        Bytes of freed memory glibc keeps at the top of each heap, as set here.

    Examples
    --------
    >>> from portablelayers.memory import freed_memory_kept
    >>> freed_memory_kept() in (None, 64 * 2**20)
    True
    """
    return _kept
