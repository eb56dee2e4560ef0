"""Time one whole training step (forward, backward, SGD update) of the book's networks:
our layers eager on each backend present, and compiled (`compile_step`) where a compiler
applies (JAX; torch on CUDA), beside PyTorch's own eager step (torch.nn + autograd +
torch.optim.SGD) and, where asked or available, PyTorch's `torch.compile` and CUDA-graph
steps.

Each backend and net is timed in a process of its own, JAX's eager and compiled steps in two
(JAX's threads slow torch down when both live in one process, and a step measured slower in
a process where another had run), PyTorch's reference in every process that imports torch,
beside the same net. Every process uses `--threads` threads for BLAS, torch and XLA (default
1): XLA's CPU runtime, which by default runs a program's operations on a pool of one thread
per core, gets a pool of `--threads` (`PJRT_NPROC`). `--pin` also keeps each process on
`--threads` cores. The processes live side by side but take turns: the driver asks each in
turn to time one block of one of its steps (2 untimed steps, then at least `--steps` steps
and `--min-block` seconds), `--repeats` times around. On a shared machine the speed drifts
by tens of percent within a minute; interleaved blocks see the same drift, so each ratio is
taken between blocks of the same turn around (against the torch process's PyTorch step, else
the numpy process's), and the table gives the median ms and the median ratio over the turns.
`--json FILE` records the rows with the machine, the load, the command and the date.

A training step frees and allocates the same large buffers each step, and glibc's malloc
may hand them back to the kernel and fault them in again every step, in some processes and
not others (`portablelayers.memory`). `compile_step` has glibc keep them; `--malloc kept`
(the default) does so in every process before anything is built, PyTorch's included, so
both sides run under the same allocator settings. `--malloc shipped` times each library as
it runs out of the box (PyTorch's own process with glibc's defaults, and our torch rows,
timed there, with them), `--malloc glibc` with glibc's defaults everywhere.

    python benchmarks/step.py                     # every backend installed, CPU
    python benchmarks/step.py --backends jax torch --nets two-layer --json out.json
    python benchmarks/step.py --torch-compile     # adds torch.compile (slow to compile)
    python benchmarks/step.py --pin               # and each process on --threads cores
    python benchmarks/step.py --device cuda       # torch/JAX/CuPy on the GPU
    XLA_FLAGS=--xla_cpu_use_xnnpack=false python benchmarks/step.py   # flags are kept
    PORTABLELAYERS_VECTORIZE_SHORT_LOOPS=0 python benchmarks/step.py  # XLA's LLVM default

Ratios are ours / PyTorch eager: below 1 is faster than PyTorch. For NumPy (and CuPy) the
TwoLayerNet rows add a hand-written step of the same math, the measure of our layers'
per-operation overhead. On a CPU, JAX adds "jax.jit, YNNPACK dots": the same step compiled
with jaxlib 0.10's own default, its matrix products in YNNPACK's kernels, where
`compile_step` keeps them in XLA's (`compiler_options`; `XLA_CPU_OPTIONS`). Every process
imports portablelayers before JAX's first array, so XLA compiles with the LLVM option that
`vectorize_short_loops` adds to XLA_FLAGS (the driver adds it; the record's "xla_flags"
shows it); PORTABLELAYERS_VECTORIZE_SHORT_LOOPS=0 times the steps without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

NETS = {
    # name: (input shape of one sample, batch size)
    "two-layer": ((784,), 100),
    "simple-conv": ((1, 28, 28), 100),
    "simple-conv-b1000": ((1, 28, 28), 1000),
}
LR = 0.01
BACKENDS = ("numpy", "torch", "jax", "cupy")
MALLOC_MODES = ("kept", "shipped", "glibc")  # --malloc
ANSWER = "step.py:"  # marks a worker's answers among whatever else a library prints
MIN_BLOCK = [0.2]  # seconds a timed block lasts at least (--min-block)


# --- one process: one backend --------------------------------------------------------

def set_threads(n):
    # PJRT_NPROC: the size of the thread pool on which XLA's CPU runtime runs a program's
    # operations (jaxlib reads it when its CPU client starts; by default one per core).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PJRT_NPROC"):
        os.environ[var] = str(n)
    # XLA_FLAGS from the environment are kept, the thread setting added. Only flags: XLA
    # stops reading at the first word that is not one (a TensorFlow-style
    # "intra_op_parallelism_threads=1" silently drops every flag after it).
    kept = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
            if not flag.startswith("--xla_cpu_multi_thread_eigen=")]
    os.environ["XLA_FLAGS"] = " ".join(
        [*kept, f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}"])


def cores_to_pin(n):
    """The first `n` cores this process may use, or None where the system cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))[:n]


def _threads_of_this_process():
    """The ids of this process's threads (Linux), else [0]: the calling thread."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def pin(cores):
    """Every thread of this process onto `cores`; threads started later inherit it (an
    affinity is a thread's own: setting it for the process id alone leaves the threads that
    BLAS or torch started before as they were)."""
    for tid in _threads_of_this_process():
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:  # a thread that ended meanwhile
            pass


def cores_in_use():
    """The cores any thread of this process may run on, or None where the system cannot
    say."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = set()
    for tid in _threads_of_this_process():
        try:
            cores |= os.sched_getaffinity(tid)
        except OSError:
            pass
    return sorted(cores)


def xla_pool_threads():
    """The threads of XLA's CPU pool in this process, or None (see `thread_info`)."""
    from portablelayers.threads import thread_info

    return thread_info().get("xla:cpu")


def xla_flags():
    """The XLA flags given beside the thread setting ('' for none)."""
    return " ".join(flag for flag in os.environ.get("XLA_FLAGS", "").split()
                    if not flag.startswith("--xla_cpu_multi_thread_eigen="))


def host_batch(net, seed=0):
    shape, batch = NETS[net]
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, *shape)).astype(np.float32),
            rng.integers(0, 10, batch))


def build_ours(net, xp, device):
    from portablelayers.nets import SimpleConvNet, TwoLayerNet

    if net == "two-layer":
        return TwoLayerNet(784, 50, 10, xp=xp, device=device, seed=0)
    return SimpleConvNet((1, 28, 28), xp=xp, device=device, seed=0)


def block_timer(step, sync, steps, min_block=0.0):
    """Warm `step` up, then return a function that times one block and returns ms per step.

    A block is 2 untimed steps (a process that waited while others ran starts with cold
    caches) and then `steps` steps, or as many more as last `min_block` seconds; it ends
    when its work is done.
    """
    start = time.perf_counter()
    for _ in range(10):
        out = step()
    sync(out)
    per_step = (time.perf_counter() - start) / 10
    steps = max(steps, math.ceil(min_block / max(per_step, 1e-6)))

    def one_block():
        for _ in range(2):
            out = step()
        sync(out)
        start = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        return (time.perf_counter() - start) / steps * 1e3

    return one_block


def ours(backend, net, device, compile_mode, steps, compiler_options=None):
    from portablelayers._backend import resolve_namespace
    from portablelayers.optim import SGD
    from portablelayers.train import compile_step

    xp = resolve_namespace(backend)
    dev = None if device == "cpu" and backend in ("numpy", "cupy") else _device(backend, device)
    network = build_ours(net, xp, dev)
    x_np, t_np = host_batch(net)
    x, t = xp.asarray(x_np, device=dev), xp.asarray(t_np, device=dev)
    step = compile_step(network, SGD(lr=LR), compile_mode, compiler_options=compiler_options)
    return block_timer(lambda: step(x, t), _sync, steps, MIN_BLOCK[0]), step.kind


# jaxlib 0.10's default on a CPU: matrix products and reductions in YNNPACK's kernels.
# compile_step keeps the products in XLA's own (portablelayers.compiled.XLA_CPU_OPTIONS);
# this row shows what that choice is worth.
YNNPACK_DOTS = {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def _device(backend, name):
    if backend == "torch":
        import torch

        return torch.device(name)
    if backend == "jax":
        import jax

        return jax.devices("gpu" if name == "cuda" else "cpu")[0]
    if backend == "cupy":
        import cupy

        return cupy.cuda.Device(0)
    return None


def _sync(out):
    if hasattr(out, "block_until_ready"):
        out.block_until_ready()
    elif type(out).__module__.startswith("torch"):
        import torch

        if out.is_cuda:
            torch.cuda.synchronize()
    elif type(out).__module__.startswith("cupy"):
        import cupy

        cupy.cuda.Device().synchronize()
    else:
        float(out)


def hand_written(backend, steps):
    """The same math as our layers, written out in NumPy (or CuPy) in the seed's style:
    `h @ W + b`, `maximum`, a fancy-indexed softmax gradient, the first layer's input
    gradient included (the book's Affine.backward computes it), SGD in place."""
    xp = __import__(backend)
    x_np, t_np = host_batch("two-layer")
    x, t = xp.asarray(x_np), xp.asarray(t_np)
    rng = np.random.default_rng(0)
    p = {"W1": xp.asarray(0.01 * rng.standard_normal((784, 50)), dtype=xp.float32),
         "b1": xp.zeros(50, dtype=xp.float32),
         "W2": xp.asarray(0.01 * rng.standard_normal((50, 10)), dtype=xp.float32),
         "b2": xp.zeros(10, dtype=xp.float32)}
    rows = xp.arange(len(t_np))

    def step():
        h = x @ p["W1"] + p["b1"]
        a = xp.maximum(h, 0)
        s = a @ p["W2"] + p["b2"]
        s = s - s.max(axis=1, keepdims=True)
        e = xp.exp(s)
        y = e / e.sum(axis=1, keepdims=True)
        loss = -xp.log(y[rows, t] + 1e-7).sum() / len(t_np)
        ds = y.copy()
        ds[rows, t] -= 1
        ds /= len(t_np)
        grads = {"W2": a.T @ ds, "b2": ds.sum(axis=0)}
        da = ds @ p["W2"].T
        da[h <= 0] = 0
        grads["W1"], grads["b1"] = x.T @ da, da.sum(axis=0)
        da @ p["W1"].T  # the first layer's input gradient, as the book's layers compute
        for k, g in grads.items():
            p[k] -= LR * g
        return loss

    return block_timer(step, _sync, steps, MIN_BLOCK[0])


def torch_model(net):
    """The network as torch.nn modules (seeded): TwoLayerNet or SimpleConvNet."""
    import torch

    torch.manual_seed(0)
    if net == "two-layer":
        return torch.nn.Sequential(torch.nn.Linear(784, 50), torch.nn.ReLU(),
                                   torch.nn.Linear(50, 10))
    return torch.nn.Sequential(torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(),
                               torch.nn.Linear(30 * 12 * 12, 100), torch.nn.ReLU(),
                               torch.nn.Linear(100, 10))


def torch_reference(net, device, kind, steps):
    """PyTorch's own step: 'eager', 'compile' (torch.compile) or 'cuda-graph'."""
    import torch
    import torch.nn.functional as F

    model = torch_model(net).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x_np, t_np = host_batch(net)
    x = torch.as_tensor(x_np, device=device)
    t = torch.as_tensor(t_np, device=device)

    def step(x=x, t=t):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        return loss.detach()

    if kind == "compile":
        compiled = torch.compile(step)
        return block_timer(compiled, _sync, steps, MIN_BLOCK[0])
    if kind == "cuda-graph":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = step()

        def replay():
            graph.replay()
            return static_loss

        # The graph reads and writes these at fixed addresses: freed, their memory would go
        # to other tensors, and each replay would read and write those instead.
        replay.captured = (model, opt, x, t)

        return block_timer(replay, _sync, steps, MIN_BLOCK[0])
    return block_timer(step, _sync, steps, MIN_BLOCK[0])


def worker(args):
    """Build and warm up every step this backend times, print their keys (and the steps
    that failed to build, with their errors), then time one block for each request on
    stdin ('[net, step]' -> ms per step) until stdin closes."""
    set_threads(args.threads)
    if args.pin and (cores := cores_to_pin(args.threads)):
        pin(cores)  # XLA's pool, started later, inherits it
    if args.malloc == "kept":  # before anything is built: PyTorch's steps keep it too
        from portablelayers.memory import keep_freed_memory

        keep_freed_memory()
    MIN_BLOCK[0] = args.min_block
    if args.worker != "jax" and importlib.util.find_spec("torch"):  # JAX's process: no torch
        import torch

        torch.set_num_threads(args.threads)
    timers, failed = {}, {}

    def add(net, key, build, *build_args):
        """One step's timer; a step that fails to build or warm up is reported, not fatal
        (a GPU may be lent for minutes: one failing row must not lose the others)."""
        try:
            made = build(*build_args)
        except Exception as exc:  # noqa: BLE001 - any failure is this row's result
            what = f"{net}: {key.format(kind='compiled')}"
            failed[what] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()
            return
        if isinstance(made, tuple):  # ours(): (timer, the step's kind)
            timer, kind = made
            if kind == "eager" and key != "ours eager":
                return  # no compiler for this backend and device: no second eager row
            key = key.format(kind=kind)
            made = timer
        timers[net, key] = made

    # Our compiled steps last, after every net's eager and reference steps: should a
    # capture of ours fail, it cannot spoil what this process built before it.
    torch_here = args.worker != "jax" and bool(importlib.util.find_spec("torch")) and (
        args.device == "cpu" or args.worker == "torch")  # on a GPU: torch's process only
    dev = "cuda" if args.device == "cuda" else "cpu"
    eager_here, compiled_here = args.part in ("all", "eager"), args.part in ("all", "compiled")
    for net in args.nets if eager_here else ():
        if torch_here:
            add(net, "torch eager", torch_reference, net, dev, "eager", args.steps)
            if args.torch_compile:
                add(net, "torch.compile", torch_reference, net, dev, "compile", args.steps)
            if dev == "cuda":
                add(net, "torch cuda-graph", torch_reference, net, dev, "cuda-graph",
                    args.steps)
        add(net, "ours eager", ours, args.worker, net, args.device, False, args.steps)
        if args.worker in ("numpy", "cupy") and net == "two-layer":
            add(net, "hand-written", hand_written, args.worker, args.steps)
    for net in args.nets if compiled_here else ():
        if args.worker in ("jax", "torch"):
            add(net, "ours {kind}", ours, args.worker, net, args.device, "auto", args.steps)
        if args.worker == "jax" and args.device == "cpu":
            add(net, "ours {kind}, YNNPACK dots", ours, "jax", net, "cpu", "auto", args.steps,
                YNNPACK_DOTS)
    from portablelayers.memory import freed_memory_kept

    print(ANSWER, json.dumps({"steps": list(timers), "failed": failed,
                              "cores": cores_in_use(), "xla_threads": xla_pool_threads(),
                              "freed_memory_kept": freed_memory_kept()}),
          flush=True)
    for line in sys.stdin:
        net, key = json.loads(line)
        try:
            print(ANSWER, json.dumps(timers[net, key]()), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported; the driver drops this step
            traceback.print_exc()
            print(ANSWER, json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}),
                  flush=True)


def precision_settings():
    """The float32 precision each library uses here (TF32 on NVIDIA GPUs or not)."""
    settings = {}
    if importlib.util.find_spec("torch"):
        import torch

        settings["torch matmul allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        settings["torch cudnn allow_tf32"] = torch.backends.cudnn.allow_tf32
    if importlib.util.find_spec("jax"):
        import jax

        settings["jax default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
    return settings


# --- the driver: one process per backend, one table -------------------------------------

def print_table(rows):
    """One line per (net, backend, step): ms per step and its ratio to PyTorch eager (the
    row's median same-turn ratio where it has one, else against the rows' torch eager)."""
    reference = {r["net"]: r["torch eager"] for r in rows if "torch eager" in r}
    print(f"{'net':<18} {'backend':<8} {'step':<24} {'ms':>8} {'vs torch':>9}")
    for row in rows:
        for key, ms in row.items():
            if key in ("backend", "net", "device", "ratios"):
                continue
            if "ratios" in row:
                ratio = row["ratios"].get(key, float("nan"))
            else:
                ratio = ms / reference[row["net"]] if row["net"] in reference else float("nan")
            print(f"{row['net']:<18} {row['backend']:<8} {key:<24} {ms:>8.3f} {ratio:>9.2f}")


def turn_reference(times, turn):
    """net -> PyTorch's eager ms in one turn around: the torch process's block, else the
    numpy process's (when torch has no process of its own)."""
    reference = {}
    for backend in ("numpy", "torch"):  # torch's own process wins
        for (b, net, key), blocks in times.items():
            if b == backend and key == "torch eager":
                reference[net] = blocks[turn]
    return reference


def combine(times, device, repeats):
    """{(backend, net, step): [ms of each turn]} -> rows: the median ms of each step, and
    the median over turns of its ratio to the same turn's PyTorch eager step."""
    references = [turn_reference(times, turn) for turn in range(repeats)]
    rows = {}
    for (backend, net, key), blocks in times.items():
        row = rows.setdefault((backend, net), {"backend": backend, "net": net,
                                               "device": device, "ratios": {}})
        row[key] = statistics.median(blocks)
        ratios = [blocks[turn] / ref[net] for turn, ref in enumerate(references)
                  if net in ref]
        if ratios:
            row["ratios"][key] = statistics.median(ratios)
    return list(rows.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                        help="default: every one installed (cupy only with --device cuda)")
    parser.add_argument("--nets", nargs="+", choices=list(NETS),
                        default=["two-layer", "simple-conv"])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for BLAS, torch and XLA in every process (default 1)")
    parser.add_argument("--pin", action="store_true",
                        help="also pin every process to --threads cores")
    parser.add_argument("--steps", type=int, default=20,
                        help="steps per timed block, at least (default 20)")
    parser.add_argument("--min-block", type=float, default=0.2, metavar="SECONDS",
                        help="more steps in a block until it lasts this long (default 0.2): "
                             "short blocks measure the wake-up after another process's turn")
    parser.add_argument("--repeats", type=int, default=7,
                        help="turns around every process, one block of each step each turn "
                             "(median)")
    parser.add_argument("--malloc", choices=MALLOC_MODES, default="kept",
                        help="glibc's malloc in the processes: 'kept' (default): every "
                             "process keeps freed memory (portablelayers.memory), PyTorch's "
                             "too; 'shipped': as each library runs out of the box: "
                             "compile_step keeps it in our backends' processes, torch's "
                             "process (PyTorch's reference, and our torch rows with it) runs "
                             "glibc's default (needs torch among the backends); 'glibc': "
                             "glibc's default everywhere")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time torch.compile of PyTorch's step (minutes to compile "
                             "on a CPU)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the rows as JSON to FILE ('-': as the last line printed)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("all", "eager", "compiled"), default="all",
                        help=argparse.SUPPRESS)  # which of a worker's steps it times
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        parser.error("--steps and --repeats must be at least 1")
    if args.worker:
        return worker(args)

    from portablelayers.memory import OPT_OUT

    load_at_start = os.getloadavg()[0]
    backends = args.backends or [b for b in BACKENDS if importlib.util.find_spec(b) and (
        b != "cupy" or args.device == "cuda")]
    if args.malloc == "shipped" and "torch" not in backends:
        # another process's PyTorch step runs beside our compile_step, which keeps memory
        parser.error("--malloc shipped times PyTorch in torch's own process: add torch to "
                     "--backends")
    env = dict(os.environ)
    if args.device == "cuda":  # several JAX processes share the GPU: none takes 75% at start
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    set_threads(args.threads)
    env.update({k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS", "PJRT_NPROC", "XLA_FLAGS")})
    workers, logs, failed = {}, {}, {}
    # A process per backend and net, and JAX's eager and compiled steps apart: a step ran
    # slower in a process where another had run (1 thread, the 2-core CPU: JAX's compiled
    # SimpleConvNet step 21-22 ms beside the eager one, 16-17 ms alone; its TwoLayerNet step
    # 0.36-0.39 ms beside SimpleConvNet's, 0.24 ms alone; before the filters' broadcast).
    jobs = {}  # process name -> (backend, part, net)
    for backend in backends:
        for net in args.nets:
            if backend == "jax":
                jobs[f"jax, {net}"] = ("jax", "eager", net)
                jobs[f"jax, {net}, compiled"] = ("jax", "compiled", net)
            else:
                jobs[f"{backend}, {net}"] = (backend, "all", net)
    for name, (backend, part, net) in jobs.items():  # started together; each builds its steps
        cmd = [sys.executable, __file__, "--worker", backend, "--part", part,
               "--device", args.device, "--threads", str(args.threads),
               "--steps", str(args.steps), "--min-block", str(args.min_block), "--nets", net,
               *(["--pin"] if args.pin else [])]
        if args.torch_compile:
            cmd.append("--torch-compile")
        cmd += ["--malloc", args.malloc]
        worker_env = dict(env)
        if args.malloc == "glibc" or (args.malloc == "shipped" and backend == "torch"):
            worker_env[OPT_OUT] = "0"  # compile_step leaves glibc's settings too
        logs[name] = tempfile.TemporaryFile(mode="w+")  # stderr: a pipe could fill up
        workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=logs[name], text=True, env=worker_env)

    def answer(name):
        """The process's next answer, or None (and it is dropped) when it has died."""
        for line in workers[name].stdout:
            if line.startswith(ANSWER):
                return json.loads(line[len(ANSWER):])
        logs[name].seek(0)
        print(f"{name}: failed\n{logs[name].read()[-2000:]}", file=sys.stderr)
        del workers[name]
        failed[name] = "the process ended (its rows are left out)"
        return None

    steps_of, cores_of, xla_threads_of, kept_of = {}, {}, {}, {}
    for name in list(workers):
        if (built := answer(name)) is not None:
            steps_of[name] = [tuple(key) for key in built["steps"]]
            cores_of[name] = built["cores"]
            kept_of[name] = built["freed_memory_kept"]
            if built.get("xla_threads"):
                xla_threads_of[name] = built["xla_threads"]
            failed.update({f"{name}: {k.split(': ', 1)[-1]}": v
                           for k, v in built["failed"].items()})
    times, timed_by = {}, {}  # (backend, net, step) -> ms of each turn; -> its process
    for _ in range(args.repeats):  # one turn: one block of every step of every process
        for name in list(workers):
            backend = jobs[name][0]
            for net, key in list(steps_of[name]):
                workers[name].stdin.write(json.dumps([net, key]) + "\n")
                workers[name].stdin.flush()
                ms = answer(name)
                if ms is None:
                    break
                if isinstance(ms, dict):  # the step failed while timed: not timed again
                    failed[f"{name}: {key}"] = ms["error"]
                    steps_of[name].remove((net, key))
                    times.pop((backend, net, key), None)
                    continue
                # one process per step: two would mix their blocks in one list of turns
                assert timed_by.setdefault((backend, net, key), name) == name
                times.setdefault((backend, net, key), []).append(ms)
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    times = {k: v for k, v in times.items() if timed_by[k] in workers}  # whole turns only
    rows = combine(times, args.device, args.repeats)

    machine = describe_machine(args.device)
    pinned = cores_to_pin(args.threads) if args.pin else None  # the workers' cores
    print(f"ms per training step: median of {args.repeats} blocks of >= {args.steps} steps "
          f"and >= {args.min_block} s, the processes taking turns; {args.threads} thread(s) "
          f"for BLAS/torch/XLA"
          + (f", every process pinned to core(s) {pinned}" if pinned else
             ", processes not pinned")
          + f"; malloc {args.malloc}; {machine}; ratio = median over turns "
          "of ms / PyTorch eager ms of the same net in the same turn"
          + (f"; XLA_FLAGS {xla_flags()}" if xla_flags() else ""))
    print_table(rows)
    if args.malloc == "kept" and (left := sorted(n for n, kept in kept_of.items() if not kept)):
        print(f"glibc's malloc as it was (not glibc, or the environment sets it) in: "
              f"{', '.join(left)}")
    for what, error in failed.items():
        print(f"not timed: {what}: {error}")
    record = {"machine": machine, "load": f"load average {load_at_start:.1f} at the start and "
                                          f"{os.getloadavg()[0]:.1f} at the end",
              "command": " ".join(["python benchmarks/step.py", *(argv or sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "backends": sorted({jobs[name][0] for name in workers}),
              "threads": args.threads, "device": args.device,
              "pinned_to_cores": pinned, "cores_of_each_process": cores_of,
              "xla_cpu_pool_threads_of_each_process": xla_threads_of,
              "malloc": args.malloc, "freed_memory_kept_by_each_process": kept_of,
              "xla_flags": xla_flags(), "precision": precision_settings(), "rows": rows,
              "failed": failed}
    if args.json == "-":  # for benchmarks/gpu_check.py: the record as the last line
        print(json.dumps(record))
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


def describe_machine(device):
    """'x86_64, 2 cores (<CPU model>)', and the GPU's name when timing on CUDA."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in info
                      if line.startswith("model name")), "")
        flags = next((line.split(":", 1)[1].split() for line in info
                      if line.startswith("flags")), [])
        model += ", AVX-512" if "avx512f" in flags else ", AVX2" if "avx2" in flags else ""
    except OSError:
        pass
    text = f"{platform.machine()}, {os.cpu_count()} cores" + (f" ({model})" if model else "")
    if device == "cuda":
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            gpu = ""
        text += f"; GPU: {gpu or 'unknown'}"
    return text


if __name__ == "__main__":
    main()
