"""How many threads NumPy's BLAS (and OpenMP), PyTorch and JAX's CPU runtime use: one
setting for all.

    import portablelayers
    portablelayers.set_threads(1)          # BLAS, OpenMP, torch and XLA: one thread each
    portablelayers.set_threads("auto")     # default_threads()

OpenBLAS starts one thread per core and has them spin while they wait. The book's networks
multiply small matrices (a batch of 100 by 64 or 784 inputs), where a second thread gains
nothing even on idle cores, and where a core is busy (another process, a test run beside)
a thread waiting for it stalls every multiplication. Measured with `portablelayers train`
on the digits, 20 epochs, whole process, 3 runs each, on a 2-core machine:

| net | cores | 1 thread | 2 threads |
| --- | --- | --- | --- |
| two-layer | idle | 0.42-0.50 s | 0.45-0.97 s |
| two-layer | one busy | 0.43-0.47 s | 0.60-0.77 s |
| simple-conv | idle | 2.02-2.18 s | 2.27-2.53 s |
| simple-conv | one busy | 2.02-2.08 s | 5.70-6.16 s |

`default_threads()` is therefore 1 on machines of up to 4 usable cores and half the usable
cores (at most 8) above that; `portablelayers train` applies it unless `--threads` says
otherwise. threadpoolctl sets the native libraries' pools at run time, so this works after
NumPy is imported (OMP_NUM_THREADS must be set before).

JAX on a CPU runs a compiled program's operations on a pool of its own, one thread per core
unless `PJRT_NPROC` says otherwise when JAX makes its first array. `set_threads` sets that
variable too (processes started later inherit it), so it holds if called before JAX's first
array (JAX may be imported already); `set_threads("auto")` leaves a `PJRT_NPROC` the
environment already has. On the 2-core machine, one thread took TwoLayerNet's compiled step
(batch 100) from 0.29-0.43 ms to 0.22-0.27 ms (medians of separate runs): a second thread
only waits on so small a program. SimpleConvNet, 2 epochs of MNIST's 8,000 images with
`portablelayers train --backend jax`, trained in 4.4-5.9 s on one thread and 4.1-4.7 s on
two with both cores idle, and in 4.2-4.4 s against 5.9-6.1 s with one core busy: the same
trade as BLAS's. A run's last bits depend on the thread count (there, its test accuracy:
0.9675 on one thread, 0.9665 on two, as XLA's kernels add in another order); at one count a
seed reproduces the run.
"""

from __future__ import annotations

import numbers
import os
import sys

__all__ = ["default_threads", "set_threads", "thread_info", "usable_cores"]

_limiter = None  # the threadpoolctl limit in force (kept alive: it is the setting)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it).

    Returns
    -------
    int
        The number of usable cores, at least 1.

    Examples
    --------
    >>> from portablelayers.threads import usable_cores
    >>> usable_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cores: int | None = None) -> int:
    """The thread count `set_threads("auto")` uses: 1 up to 4 usable cores, else half, at most 8.

    The book's small matrices gain little from more threads, and threads that wait for
    busy cores lose much.

    Parameters
    ----------
    cores : int, optional
        The number of cores; by default `usable_cores()`.

    Returns
    -------
    int
        The number of threads.

    Examples
    --------
    >>> from portablelayers.threads import default_threads
    >>> default_threads(2), default_threads(12), default_threads(64)
    (1, 6, 8)
    """
    cores = usable_cores() if cores is None else cores
    return 1 if cores <= 4 else min(cores // 2, 8)


def _threads(n) -> int:
    if n == "auto" or n is None:
        return default_threads()
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"threads must be a positive int or 'auto', got {n!r}")
    return int(n)


def set_threads(n="auto") -> int:
    """Limit the BLAS, OpenMP, torch and XLA CPU thread pools to `n` threads each.

    The pools are limited through threadpoolctl, torch where it is imported. The limit
    stays in force for the process (or until the next call). XLA's pool (JAX on a CPU) is
    sized once, when JAX makes its first array: the limit reaches it (through the
    `PJRT_NPROC` environment variable, which 'auto' leaves as it is where it is set) only
    if that comes after this call.

    Parameters
    ----------
    n : int or 'auto', default 'auto'
        Threads; 'auto' is `default_threads()` (1 on machines of up to 4 cores, else half
        the cores, at most 8).

    Returns
    -------
    int
        The number of threads set.

    Raises
    ------
    ValueError
        For a number below 1 or a string other than 'auto'.

    Examples
    --------
    >>> import portablelayers
    >>> portablelayers.set_threads(1)
    1
    """
    global _limiter
    auto = n == "auto" or n is None
    n = _threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a core dependency; kept working without it
        threadpool_limits = None
    if threadpool_limits is not None:
        if _limiter is not None:
            _limiter.restore_original_limits()
        _limiter = threadpool_limits(limits=n)
    torch = sys.modules.get("torch")  # None also where an import of torch failed
    if torch is not None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    if not (auto and "PJRT_NPROC" in os.environ):  # a user's own setting stays under 'auto'
        os.environ["PJRT_NPROC"] = str(n)  # read by jaxlib when its CPU client starts
    return n


def thread_info() -> dict[str, int]:
    """Library -> threads now: each BLAS/OpenMP pool threadpoolctl sees, and torch.

    Returns
    -------
    dict of str to int
        The threads of each pool ("user_api:internal_api", e.g. "blas:openblas") and of
        torch where it is imported.

    Examples
    --------
    >>> from portablelayers.threads import set_threads, thread_info
    >>> set_threads(1)
    1
    >>> all(n == 1 for n in thread_info().values())
    True
    """
    info = {}
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            info[f"{pool['user_api']}:{pool['internal_api']}"] = pool["num_threads"]
    except ImportError:  # pragma: no cover
        pass
    if sys.modules.get("torch") is not None:
        info["torch"] = sys.modules["torch"].get_num_threads()
    return info
