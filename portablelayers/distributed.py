"""Synchronous data-parallel training on a dask.distributed cluster.

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")          # or connect("local:2")
    x, t = portablelayers.datasets.to_dask((x_np, t_np), client)  # a chunk per worker
    Trainer(network, x, t, x_test, t_test, client=client).train()

How a step runs. The training data are a Dask array chunked along the sample axis and
persisted on the workers. Each worker holds one `_Replica` (a Dask actor): a copy of the
network and the chunks placed on that worker, as arrays of the chunks' own library (NumPy;
CuPy on GPU workers). The client keeps the master network (NumPy) and the optimizer. For
each global mini-batch (the Trainer's, so the same seed gives the same batches as in one
process) the client sends every worker, in one call each and all at once, the current
parameters and state and the rows of its chunks that the batch takes. Each worker runs
the ordinary layers forward and backward on its rows and returns its gradient times its
row count (NumPy). The client sums them, divides by the global batch size and applies one
optimizer update: that is the single-process gradient, up to float32 rounding. Actor
calls go from the client straight to the workers, not through the scheduler: a step is
one round trip (to all workers in parallel) and no scheduler message.

Evaluation (accuracy, loss) maps a function over the chunks of any Dask array with Dask's
ordinary task graph, the parameters broadcast once per evaluation (`client.scatter`).

Faults. A worker that dies during a step (its actor is lost) is noticed by the failed
call; its chunks, held as futures of the persisted array, are recomputed by Dask from
their source graph, the replicas are made anew on the workers that are left (or that the
nanny restarted), and the same step is run again from the same parameters: the run goes
on and its numbers are those of an undisturbed run. With no worker left, or after
`retries` failures in one step, a RuntimeError says so.

What is per worker. BatchNormalization normalises with each worker's own batch
statistics (its running statistics are averaged over workers, weighted by rows; the
running mean then equals the single-process one, the running variance lacks the spread
between workers' means). Dropout's masks come from a counter-based stream indexed by the
position of a sample in its worker's part of the batch: they differ from the
single-process masks. Losses must be means over the batch (every loss layer here is).

Communication per step: the parameters to each worker and a gradient back, 2 x parameter
bytes x workers through the client (see README, "Training on a Dask cluster").
"""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np  # noqa: TID251 -- host-side: the client's master arrays and index maths

from ._backend import device, move_to, namespace, static_shape, takes_argument
from .checkpoint import to_host
from .compiled import check_data, check_labels, loss_and_gradient

__all__ = ["DistributedStep", "WorkerLost", "connect", "worker_pids"]


# --- connecting -----------------------------------------------------------------------------

def connect(scheduler, *, timeout=10, **cluster_kwargs):
    """A `dask.distributed.Client` for `scheduler`.

    Parameters
    ----------
    scheduler : str or dask.distributed.Client
        What to connect to:

        - a Client: returned as it is;
        - "local:N": a new LocalCluster of N worker processes, one thread each (one BLAS
          thread each: the nanny sets OMP_NUM_THREADS=1), no dashboard; closing the client
          closes the cluster;
        - an address ("tcp://host:8786", "tls://...", "host:8786"): that running scheduler.
    timeout : float, default 10
        Seconds to wait for a running scheduler.
    **cluster_kwargs
        More arguments of the Client that makes a "local:N" cluster.

    Returns
    -------
    dask.distributed.Client
        The client.

    Raises
    ------
    TypeError
        For a `scheduler` that is neither a string nor a Client.
    ValueError
        For "local:N" with N not a positive int.
    OSError
        Of one line, for an address that cannot be reached within `timeout` seconds.

    Examples
    --------
    Needs the dask extra (``pip install 'portablelayers[dask]'``):

    >>> from portablelayers.distributed import connect
    >>> client = connect("local:2")  # doctest: +SKIP
    >>> len(client.scheduler_info()["workers"])  # doctest: +SKIP
    2
    """
    from dask.distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise TypeError(f"scheduler must be 'local:N', an address or a Client, got "
                        f"{scheduler!r}")
    spec = scheduler.strip()
    if spec.startswith("local"):
        count = spec.partition(":")[2] or "2"
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"scheduler {spec!r}: expected local:N with N >= 1 worker "
                             "processes")
        options = {"n_workers": int(count), "threads_per_worker": 1, "processes": True,
                   "dashboard_address": None, **cluster_kwargs}
        return Client(**options)
    try:
        return Client(spec, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OSError(f"cannot reach the Dask scheduler at {spec} within {timeout} s "
                      f"({reason})") from None


def worker_pids(client):
    """{worker address: process id}: which process to kill to test a fault.

    Parameters
    ----------
    client : dask.distributed.Client
        The client of the cluster.

    Returns
    -------
    dict of str to int
        Each worker's address and the id of its process.

    Examples
    --------
    Needs the dask extra (``pip install 'portablelayers[dask]'``):

    >>> from portablelayers.distributed import connect, worker_pids
    >>> pids = worker_pids(connect("local:2"))  # doctest: +SKIP
    >>> len(pids)  # doctest: +SKIP
    2
    """
    import os

    return client.run(os.getpid)


# --- what lives on a worker -----------------------------------------------------------------

def _aligned(a):
    """`a`, copied when it is a NumPy array at a misaligned address: a chunk that came
    from another worker may sit at an odd offset of the message it came in, and NumPy's
    `take` from such an array is hundreds of times slower (80 ms for 100 rows of 784)."""
    if isinstance(a, np.ndarray) and not a.flags.aligned:
        return np.array(a, copy=True)
    return a


class _Replica:
    """One worker's copy of the network and its chunks of the training data (a Dask actor:
    made once, called directly by the client each step)."""

    def __init__(self, network, xs, ts):
        self.network = network
        self.xs, self.ts = [_aligned(x) for x in xs], [_aligned(t) for t in ts]
        self.xp = namespace(*self.xs, *self.ts)
        self.device = device(self.xs[0])
        self.rows = sum(static_shape(x)[0] for x in self.xs)

    def _bind(self, params, state):
        for view, values in ((self.network.params, params),
                             (getattr(self.network, "state", {}), state)):
            for name, value in values.items():
                view[name] = move_to(self.xp, value, self.device)

    def _gather(self, slots, rows):
        """The samples rows[i] of chunk slots[i], grouped by chunk (one take per chunk)."""
        xp = self.xp
        xs, ts = [], []
        for slot in np.unique(slots):
            take = xp.asarray(rows[slots == slot], device=self.device)
            xs.append(xp.take(self.xs[slot], take, axis=0))
            ts.append(xp.take(self.ts[slot], take, axis=0))
        if len(xs) == 1:
            return xs[0], ts[0]
        return xp.concat(xs, axis=0), xp.concat(ts, axis=0)

    def gradient(self, params, state, slots, rows):
        """(loss x n, {name: gradient x n}, new state, n, CPU seconds) for the given rows:
        sums, so the client's total over workers divided by the global batch is the
        batch's mean."""
        x, t = self._gather(slots, rows)
        return self._sums(params, state, x, t)

    def gradient_of(self, params, state, x, t):
        """As `gradient`, for samples sent with the call (a batch the client holds)."""
        return self._sums(params, state, move_to(self.xp, x, self.device),
                          move_to(self.xp, t, self.device))

    def _sums(self, params, state, x, t):
        began = time.thread_time()
        self._bind(params, state)
        n = static_shape(x)[0]
        loss, grads = loss_and_gradient(self.network, x, t)
        host = {name: to_host(g) * np.asarray(n, dtype=to_host(g).dtype)
                for name, g in grads.items()}
        new_state = {name: to_host(v) for name, v in getattr(self.network, "state", {}).items()}
        return float(to_host(loss)) * n, host, new_state, n, time.thread_time() - began

    def info(self):
        """(process id, rows held, library, device) of this replica."""
        import os

        return os.getpid(), self.rows, self.xp.__name__, str(self.device)


def _evaluate_chunk(network, arrays, x, t, batch_size):
    """(sum of per-sample losses, correct predictions, samples) of a network copy with
    `arrays` on one chunk, in inference mode, in batches of `batch_size`."""
    from .functions import class_indices, predicted_classes

    network = copy.deepcopy(network)  # tasks of one worker may run side by side
    xp = namespace(x, t)
    dev = device(x)
    params, state = arrays
    for view, values in ((network.params, params), (getattr(network, "state", {}), state)):
        for name, value in values.items():
            view[name] = move_to(xp, value, dev)
    n = static_shape(x)[0]
    if not n:
        return 0.0, 0, 0
    flag = takes_argument(network.loss, "train_flg")
    labels = class_indices(t)
    loss_sum, correct = 0.0, 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        xb, tb = x[start:stop, ...], t[start:stop, ...]
        loss = network.loss(xb, tb, train_flg=False) if flag else network.loss(xb, tb)
        loss_sum += float(to_host(loss)) * (stop - start)
        y = predicted_classes(network.predict(xb, train_flg=False))
        correct += int(to_host(xp.count_nonzero(
            y == xp.astype(labels[start:stop], y.dtype))))
    return loss_sum, correct, n


# --- the client's side ----------------------------------------------------------------------

class _Batch:
    """The Trainer's mini-batch as global sample indices (`DistributedStep.batch`): the
    data stay on the workers."""

    def __init__(self, index, source):
        self.index, self.source = index, source
        self.shape = (index.shape[0],)

    def __repr__(self):
        return f"<batch of {self.shape[0]} samples of {self.source}>"


class WorkerLost(RuntimeError):
    """The cluster lost the workers a step needed and could not go on."""


class DistributedStep:
    """`step(x, t) -> loss`: synchronous data-parallel training on the workers of `client`.

    `network` is trained with `optimizer` (see the module's text).

    Parameters
    ----------
    network : Sequential or object
        A Sequential, or a network with live `params`/`state`, `loss_and_gradient` or
        `loss`/`gradient`, and `predict`; its arrays are brought to the client as NumPy.
    optimizer : Optimizer
        An optimizer of `portablelayers.optim`; it runs on the client.
    client : dask.distributed.Client or str
        A client, or what `connect` takes ("local:N", an address).
    x, t : dask.array.Array
        The training data, chunked along the sample axis (other axes whole; they are
        rechunked when not) and persisted on the workers here.
    retries : int, default 3
        How many times one step is retried after losing workers.
    check : bool, default False
        Check the labels of (x, t) now (`check_labels`).
    precision : str, optional
        A precision policy (see `backends.set_precision`); only recorded, as the attribute
        `precision`: nothing on the workers changes with it.

    Raises
    ------
    TypeError
        When `x` or `t` is not a Dask array.
    ValueError
        For `x` and `t` of different or unknown lengths, or a network without parameters.

    Notes
    -----
    The interface is that of `compiled.compile_step`'s steps: `train_on`, `batch`,
    `accuracy`, `check_labels`, `check_data`, `kind` ("dask.distributed"), `traces` (0:
    nothing is compiled), and `mean_loss` (the Trainer's per-epoch loss),
    `loss_and_gradient` (the global batch's loss and gradient, no update), `round_trips`
    (client-worker round trips so far: one a step), `worker_seconds` (CPU seconds of each
    worker's part of the last step), `recoveries` (how often workers were lost and the
    replicas made anew), `close`.

    Examples
    --------
    Needs the dask extra (``pip install 'portablelayers[dask]'``):

    >>> import numpy as np
    >>> from portablelayers.datasets import to_dask
    >>> from portablelayers.distributed import DistributedStep, connect
    >>> from portablelayers.nets import TwoLayerNet
    >>> from portablelayers.optim import SGD
    >>> client = connect("local:2")  # doctest: +SKIP
    >>> x, t = to_dask((np.ones((8, 4), np.float32), np.zeros(8, np.int64)),
    ...                client)  # doctest: +SKIP
    >>> step = DistributedStep(TwoLayerNet(4, 5, 3, seed=0), SGD(lr=0.1), client,
    ...                        x, t)  # doctest: +SKIP
    """

    kind = "dask.distributed"

    def __init__(self, network, optimizer, client, x, t, *, retries=3, check=False,
                 precision=None):
        from dask.array import Array

        if not isinstance(x, Array) or not isinstance(t, Array):
            raise TypeError(f"data-parallel training needs the training data as Dask arrays, "
                            f"got {type(x).__name__} and {type(t).__name__} (see "
                            "portablelayers.datasets.to_dask)")
        n = static_shape(x)[0]
        if n is None or static_shape(t)[:1] != (n,):
            raise ValueError(f"x and t must hold the same known number of samples, got "
                             f"shapes {static_shape(x)} and {static_shape(t)}")
        if not dict(network.params):
            raise ValueError("data-parallel training needs a network with parameters")
        self.client = connect(client)
        self.network, self.optimizer = network, optimizer
        self.retries = int(retries)
        self.precision = precision
        self.traces = 0
        self.round_trips = 0
        self.recoveries = 0
        self.worker_seconds = []  # CPU seconds of each worker's part of the last step
        self._version = 0  # counts updates: evaluations are cached per version
        self._cache = {}
        self._orders = {}
        self._host_network()
        if hasattr(optimizer, "init_state"):
            optimizer.init_state(network.params)
        self._source = x.name, t.name
        self.x, self.t = self._persist(x, t)
        self._layout()
        self._template = None
        self._replicas = []
        self._place()
        if check:
            self.check_labels(self.x, self.t)

    # --- data and replicas ------------------------------------------------------------

    def _host_network(self):
        """The master arrays on the client as NumPy (computed once if lazy)."""
        for view in (self.network.params, getattr(self.network, "state", {})):
            for name in list(view):
                value = view[name]
                if value is None:
                    raise ValueError(f"state {name!r} has not been made yet")
                if not isinstance(value, np.ndarray):
                    view[name] = to_host(value)

    def _persist(self, x, t):
        whole = {axis: -1 for axis in range(1, x.ndim)}
        if whole and any(len(c) > 1 for c in x.chunks[1:]):
            x = x.rechunk(whole)
        if t.chunks[0] != x.chunks[0] or any(len(c) > 1 for c in t.chunks[1:]):
            t = t.rechunk({0: x.chunks[0], **{a: -1 for a in range(1, t.ndim)}})
        return self.client.persist([x, t])

    def _layout(self):
        from dask.distributed import futures_of

        sizes = np.asarray(self.x.chunks[0], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._sizes = sizes
        xkeys = {f.key: f for f in futures_of(self.x)}
        tkeys = {f.key: f for f in futures_of(self.t)}
        # Chunk i of the sample axis: the key (name, i, 0, ...) of each array.
        self._xfut = [xkeys[(self.x.name, i, *([0] * (self.x.ndim - 1)))]
                      for i in range(len(sizes))]
        self._tfut = [tkeys[(self.t.name, i, *([0] * (self.t.ndim - 1)))]
                      for i in range(len(sizes))]

    def _assign(self, workers):
        """chunk -> worker: rows balanced, a chunk kept where it is when that fits."""
        held = self.client.who_has(self._xfut)
        target = self._sizes.sum() / len(workers)
        load = dict.fromkeys(workers, 0)
        owner = []
        for future, rows in zip(self._xfut, self._sizes, strict=True):
            here = [w for w in held.get(future.key, ()) if w in load]
            least = min(workers, key=lambda w: load[w])
            pick = min(here, key=lambda w: load[w]) if here else least
            if load[pick] + rows > target + self._sizes.max() / 2:
                pick = least
            load[pick] += int(rows)
            owner.append(pick)
        return owner

    def _place(self):
        """One replica per worker that holds rows, each with its chunks (moved there by
        Dask when they are elsewhere, recomputed from their source when lost)."""
        self._release()
        self._template = None  # scattered data are not recomputed: scatter again
        self.client.wait_for_workers(1, timeout=60)
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        self._known = set(workers)
        owner = self._assign(workers)
        used = [w for w in workers if w in owner]
        index = {w: i for i, w in enumerate(used)}
        self._owner = np.asarray([index[w] for w in owner], dtype=np.int64)
        self._slot = np.zeros(len(owner), dtype=np.int64)
        chunks = {w: [] for w in used}
        for c, w in enumerate(owner):
            self._slot[c] = len(chunks[w])
            chunks[w].append(c)
        futures = [self.client.submit(
            _Replica, self.network, [self._xfut[c] for c in chunks[w]],
            [self._tfut[c] for c in chunks[w]], actor=True, workers=[w],
            allow_other_workers=False, pure=False) for w in used]
        self._replica_futures = futures
        self._replicas = [f.result() for f in futures]
        self._workers = used

    def _release(self):
        for future in getattr(self, "_replica_futures", []):
            future.release()
        self._replica_futures, self._replicas = [], []

    def close(self):
        """Release the replicas (their workers keep running)."""
        self._release()

    @property
    def workers(self):
        """The addresses of the workers holding replicas, in replica order."""
        return list(self._workers)

    def replica_info(self):
        """[(pid, rows, library, device)] of each replica."""
        return [call.result() for call in [r.info() for r in self._replicas]]

    # --- the step ---------------------------------------------------------------------

    def _arrays(self):
        return ({k: v for k, v in self.network.params.items()},
                {k: v for k, v in getattr(self.network, "state", {}).items()})

    def _calls(self, make):
        """Run `make(replicas) -> [actor futures]` and collect the results, making the
        replicas anew and trying again when a worker was lost."""
        for attempt in range(self.retries + 1):
            calls = make()
            self.round_trips += 1
            try:
                return [self._result(call) for call in calls]
            except Exception as exc:
                lost = self._lost_workers(exc)
                if not lost:
                    raise
                if attempt == self.retries:
                    raise WorkerLost(f"lost worker(s) {', '.join(lost)} {attempt + 1} times "
                                     "in one step; the network and optimizer are those "
                                     "before it: save them and resume") from exc
                try:
                    warnings.warn(f"lost worker(s) {', '.join(lost)}; going on with the "
                                  "workers left (Dask recomputes their chunks)",
                                  RuntimeWarning, stacklevel=4)
                    self.recoveries += 1
                    self._place()
                except (OSError, TimeoutError) as again:
                    raise WorkerLost(f"lost worker(s) {', '.join(lost)} and no worker is "
                                     f"left to go on with ({again})") from exc
        raise AssertionError("unreachable")

    def _result(self, call, poll=1.0):
        """An actor call's result; OSError when a replica's worker is lost meanwhile (a
        call to a worker that dies can otherwise wait for ever)."""
        checked = time.monotonic()
        while True:
            try:
                return call.result(timeout=poll)
            except TimeoutError:
                pass
            gone = [f.key for f in self._replica_futures if f.status in (
                "error", "lost", "cancelled")]
            if not gone and time.monotonic() - checked > 5 * poll:
                checked = time.monotonic()
                alive = set(self.client.scheduler_info(n_workers=-1)["workers"])
                gone = [w for w in self._workers if w not in alive]
            if gone:
                raise OSError(f"a worker holding a replica was lost ({', '.join(gone)})")

    def _lost_workers(self, exc, wait=10.0):
        """The replicas' workers the scheduler no longer has (waiting up to `wait` s for
        it to notice), or [] when `exc` is not a lost worker."""
        if not isinstance(exc, (OSError, RuntimeError, TimeoutError)) or isinstance(
                exc, WorkerLost):
            return []
        deadline = time.monotonic() + wait
        while True:
            alive = set(self.client.scheduler_info(n_workers=-1)["workers"])
            lost = [w for w in self._workers if w not in alive]
            if lost or time.monotonic() > deadline:
                return lost
            time.sleep(0.1)

    def _split(self, index):
        """Per replica: (chunk slots, rows) of the global sample indices `index`."""
        chunk = np.searchsorted(self._starts, index, side="right") - 1
        rows = index - self._starts[chunk]
        who = self._owner[chunk]
        return [(r, self._slot[chunk[who == r]], rows[who == r])
                for r in range(len(self._replicas)) if np.any(who == r)]

    def _gradient_sums(self, x, t):
        params, state = self._arrays()
        if isinstance(x, _Batch):
            index = x.index

            def make():
                return [self._replicas[r].gradient(params, state, slots, rows)
                        for r, slots, rows in self._split(index)]
        else:
            if not isinstance(x, np.ndarray) or not isinstance(t, np.ndarray):
                x, t = self._host_batch(x, t)

            def make():
                parts = np.array_split(np.arange(x.shape[0]), len(self._replicas))
                return [self._replicas[r].gradient_of(params, state, x[p], t[p])
                        for r, p in enumerate(parts) if p.size]
        return self._calls(make)

    def _host_batch(self, x, t):
        from array_api_compat import is_dask_array

        if is_dask_array(x) or is_dask_array(t):
            x, t = self.client.compute([x, t], sync=True)
        return to_host(x), to_host(t)

    def _combine(self, results):
        """(mean loss, mean gradients, state averaged by rows, rows) of workers' sums."""
        total = sum(r[3] for r in results)
        loss = sum(r[0] for r in results) / total
        params = self.network.params
        grads = {}
        for name in results[0][1]:
            summed = results[0][1][name].copy()
            for r in results[1:]:
                summed += r[1][name]
            grads[name] = (summed / np.asarray(total, dtype=summed.dtype)).astype(
                params[name].dtype, copy=False)
        state = {}
        for name, first in results[0][2].items():
            if np.issubdtype(first.dtype, np.floating):
                mean = sum(r[2][name] * (r[3] / total) for r in results)
                state[name] = np.asarray(mean, dtype=first.dtype)
            else:  # counters (Dropout's): every worker advanced them alike
                state[name] = first
        return loss, grads, state, total

    def loss_and_gradient(self, x, t=None):
        """(loss as a float, {name: gradient as NumPy}) of the global batch `x` (a
        `batch()` result, or arrays), computed on the workers, without an update."""
        loss, grads, _, _ = self._combine(self._gradient_sums(x, t))
        return loss, grads

    def __call__(self, x, t):
        results = self._gradient_sums(x, t)
        self.worker_seconds = [r[4] for r in results]
        loss, grads, state, _ = self._combine(results)
        self.optimizer.update(self.network.params, grads)
        view = getattr(self.network, "state", {})
        for name, value in state.items():
            view[name] = value
        self._version += 1
        self._cache.clear()
        return np.asarray(loss, dtype=np.float32)

    def train_on(self, x, t, order, start, stop):
        """One step on the Trainer's mini-batch order[start:stop] of (x, t)."""
        return self(*self.batch(x, t, order, start, stop))

    def batch(self, x, t, order, start, stop):
        """The Trainer's mini-batch order[start:stop] as sample indices (a `_Batch`)."""
        if (x.name, t.name) not in (self._source, (self.x.name, self.t.name)):
            raise ValueError("a DistributedStep trains on the arrays it was made with")
        key = getattr(order, "name", None) or id(order)
        if key not in self._orders:  # a new epoch: workers that joined get a replica
            if set(self.client.scheduler_info(n_workers=-1)["workers"]) != self._known:
                self._place()
            from array_api_compat import is_dask_array

            # The Trainer's shuffle, made on the client: read without the scheduler.
            host = order.compute(scheduler="sync") if is_dask_array(order) else order
            self._orders = {key: np.asarray(to_host(host), dtype=np.int64)}
        index = self._orders[key][start:stop]
        return _Batch(index, x.name), _Batch(index, t.name)

    # --- measuring --------------------------------------------------------------------

    def check_labels(self, x, t):
        """`compiled.check_labels`: class indices in [0, outputs), outputs from one sample
        predicted on the client."""
        check_labels(self.network, x, t, classes=self.classes(x))

    def classes(self, x):
        """The width of the network's scores, from one sample predicted on the client."""
        return static_shape(self.network.predict(to_host(x[:1, ...]), train_flg=False))[-1]

    def check_data(self, sets, labels=True):
        """`compiled.check_data`: every set finite and its labels in [0, outputs), in one
        computation."""
        classes = self.classes(next(iter(sets.values()))[0]) if labels else None
        check_data(self.network, sets, classes=classes, labels=labels)

    def hold_sets(self, sets):
        """Nothing to lay out: the workers evaluate each set chunk by chunk."""

    def _evaluate(self, x, t, batch_size):
        """(mean loss, accuracy) of the network on Dask arrays (x, t), chunk by chunk on
        the workers; cached until the next update."""
        import dask

        if (x.name, t.name) == self._source:
            x, t = self.x, self.t
        n = static_shape(x)[0]
        batch_size = batch_size or n
        key = (x.name, t.name, batch_size, self._version)
        if key in self._cache:
            return self._cache[key]
        if x.ndim > 1 and any(len(c) > 1 for c in x.chunks[1:]):
            x = x.rechunk({a: -1 for a in range(1, x.ndim)})
        if t.chunks[0] != x.chunks[0] or any(len(c) > 1 for c in t.chunks[1:]):
            t = t.rechunk({0: x.chunks[0], **{a: -1 for a in range(1, t.ndim)}})
        if self._template is None:
            self._template = self.client.scatter(self.network, broadcast=True, hash=False)
        [arrays] = self.client.scatter([self._arrays()], broadcast=True, hash=False)
        parts = [dask.delayed(_evaluate_chunk)(self._template, arrays, xc, tc, batch_size)
                 for xc, tc in zip(x.to_delayed().ravel(), t.to_delayed().ravel(),
                                   strict=True)]
        results = self.client.gather(self.client.compute(parts))
        total = sum(r[2] for r in results)
        value = (sum(r[0] for r in results) / total, sum(r[1] for r in results) / total)
        self._cache[key] = value
        return value

    def mean_loss(self, x, t, batch_size=None):
        """The network's mean loss on (x, t) in inference mode, as a Python float."""
        return self._evaluate(x, t, batch_size)[0]

    def accuracy(self, x, t, batch_size=None):
        """The network's accuracy on (x, t) as a Python float."""
        return self._evaluate(x, t, batch_size)[1]

    def __repr__(self):
        return (f"<data-parallel training step of {type(self.network).__name__} on "
                f"{len(self._replicas)} worker(s)>")

    def __del__(self):
        try:
            self._release()
        except Exception:  # interpreter shutdown, client closed
            pass
