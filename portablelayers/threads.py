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
array (JAX may be imported already); a count given explicitly warns where the pool runs
already with another size. `set_threads("auto")` leaves a `PJRT_NPROC` the environment
already has. `thread_info()` counts the pool's threads ("xla:cpu").

On the 2-core machine, one thread took TwoLayerNet's compiled step (batch 100) from
0.29-0.43 ms to 0.22-0.27 ms (medians of separate runs): a second thread only waits on so
small a program. SimpleConvNet, 2 epochs of MNIST's 8,000 images with
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
import warnings

__all__ = ["default_threads", "set_threads", "thread_info", "usable_cores"]

_limiter = None  # the threadpoolctl limit in force (kept alive: it is the setting)
# jaxlib names the threads of XLA's CPU pool so; Linux shows a thread's name in /proc
_XLA_POOL_THREAD_NAME = "tf_XLAEigen"
_XLA_POOL_MOST = 256  # jaxlib's cap on that pool's threads, whatever PJRT_NPROC asks


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
    if that comes after this call. Where the pool runs already with another size than an
    explicit `n`, a RuntimeWarning says so (on Linux, where its threads can be counted).

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

    Warns
    -----
    RuntimeWarning
        Where XLA's CPU pool started before this call with another number of threads
        than an explicit `n`.

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
    if not auto:  # 'auto' is a default, not a request: a pool running already stays quiet
        _warn_if_xla_pool_differs(n)
    return n


def _warn_if_xla_pool_differs(n: int):
    """Warn where XLA's CPU pool started already with another size than `n` threads would
    give it: jaxlib gives it one thread per CPU device of this process at least, and at most
    `_XLA_POOL_MOST` threads."""
    pool = _xla_cpu_pool_threads()
    if pool is None:
        return
    try:
        devices = sys.modules["jax"].local_device_count("cpu")
    except Exception:  # noqa: BLE001 - any failure: count one device, as jaxlib's default
        devices = 1
    if pool != min(max(n, devices), _XLA_POOL_MOST):
        warnings.warn(f"XLA's CPU pool runs {pool} thread{'s' * (pool != 1)} already (JAX made "
                      f"its first array before set_threads): a limit of {n} reaches JAX "
                      f"only in processes started later", RuntimeWarning, stacklevel=3)


def _xla_cpu_pool_threads() -> int | None:
    """The threads of XLA's CPU pool in this process; None before JAX's CPU client starts,
    and where they cannot be seen (no Linux /proc, or a jaxlib naming them otherwise)."""
    if "jax" not in sys.modules:  # no JAX, no pool: spare the scan
        return None
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    count = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                count += comm.read().strip() == _XLA_POOL_THREAD_NAME
        except OSError:  # a thread that ended meanwhile
            pass
    return count or None


def thread_info() -> dict[str, int]:
    """Library -> threads now: each BLAS/OpenMP pool threadpoolctl sees, torch, and XLA.

    Returns
    -------
    dict of str to int
        The threads of each pool ("user_api:internal_api", e.g. "blas:openblas"), of torch
        where it is imported, and of XLA's CPU pool ("xla:cpu") where JAX has started it
        (counted by the threads' names on Linux; absent where they cannot be seen).

    Examples
    --------
    >>> from portablelayers.threads import set_threads, thread_info
    >>> set_threads(1)
    1
    >>> all(n == 1 for name, n in thread_info().items() if name != "xla:cpu")
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
    xla = _xla_cpu_pool_threads()
    if xla is not None:
        info["xla:cpu"] = xla
    return info
