"""Time one whole training step (forward, backward, SGD update) of the book's networks:
our layers eager and compiled (`compile_step`) on each backend present, beside PyTorch's
own eager step (torch.nn + autograd + torch.optim.SGD) and, where asked or available,
PyTorch's `torch.compile` and CUDA-graph steps.

Each backend is timed in a process of its own, one after the other (JAX's threads slow
torch down when both live in one process), PyTorch's reference in every process that
imports torch. Every process uses `--threads` threads for BLAS, torch and XLA (default 1),
and reports the median ms per step over `--repeats` blocks of `--steps` steps, each block
ending when its work is done. On a shared machine the speed drifts by tens of percent
within a minute, so the processes run in `--rounds` interleaved rounds (default 3): each
round's ratios are taken against that round's PyTorch step, and the table gives the
median over rounds of the times and of the ratios.

    python benchmarks/step.py                     # every backend installed, CPU
    python benchmarks/step.py --backends jax torch --nets two-layer --json out.json
    python benchmarks/step.py --torch-compile     # adds torch.compile (slow to compile)
    python benchmarks/step.py --device cuda       # torch/JAX/CuPy on the GPU

Ratios are ours / PyTorch eager: below 1 is faster than PyTorch. For NumPy (and CuPy) the
TwoLayerNet rows add a hand-written step of the same math, the measure of our layers'
per-operation overhead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

NETS = {
    # name: (input shape of one sample, batch size)
    "two-layer": ((784,), 100),
    "simple-conv": ((1, 28, 28), 100),
    "simple-conv-b1000": ((1, 28, 28), 1000),
}
LR = 0.01
BACKENDS = ("numpy", "torch", "jax", "cupy")


# --- one process: one backend --------------------------------------------------------

def set_threads(n):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} "
                               f"intra_op_parallelism_threads={n}")


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


def time_steps(step, sync, steps, repeats):
    """Median ms per step over `repeats` blocks of `steps` steps (after a warm-up)."""
    for _ in range(10):
        out = step()
    sync(out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        times.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(times)


def ours(backend, net, device, compile_mode, steps, repeats):
    from portablelayers._backend import resolve_namespace
    from portablelayers.optim import SGD
    from portablelayers.train import compile_step

    xp = resolve_namespace(backend)
    dev = None if device == "cpu" and backend in ("numpy", "cupy") else _device(backend, device)
    network = build_ours(net, xp, dev)
    x_np, t_np = host_batch(net)
    x, t = xp.asarray(x_np, device=dev), xp.asarray(t_np, device=dev)
    step = compile_step(network, SGD(lr=LR), compile_mode)
    ms = time_steps(lambda: step(x, t), _sync, steps, repeats)
    return ms, step.kind


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


def hand_written(backend, steps, repeats):
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

    return time_steps(step, _sync, steps, repeats)


def torch_reference(net, device, kind, steps, repeats):
    """PyTorch's own step: 'eager', 'compile' (torch.compile) or 'cuda-graph'."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if net == "two-layer":
        model = torch.nn.Sequential(torch.nn.Linear(784, 50), torch.nn.ReLU(),
                                    torch.nn.Linear(50, 10))
    else:
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(),
                                    torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(),
                                    torch.nn.Linear(30 * 12 * 12, 100), torch.nn.ReLU(),
                                    torch.nn.Linear(100, 10))
    model = model.to(device)
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
        return time_steps(compiled, _sync, steps, repeats)
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

        return time_steps(replay, _sync, steps, repeats)
    return time_steps(step, _sync, steps, repeats)


def worker(args):
    set_threads(args.threads)
    if args.worker != "jax" and importlib.util.find_spec("torch"):  # JAX's process: no torch
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    for net in args.nets:
        row = {"backend": args.worker, "net": net, "device": args.device}
        ms, kind = ours(args.worker, net, args.device, False, args.steps, args.repeats)
        row["ours eager"] = ms
        if args.worker in ("numpy", "cupy") and net == "two-layer":
            row["hand-written"] = hand_written(args.worker, args.steps, args.repeats)
        if args.worker in ("jax", "torch"):
            ms, kind = ours(args.worker, net, args.device, "auto", args.steps, args.repeats)
            if kind != "eager":
                row[f"ours {kind}"] = ms
        if args.worker != "jax" and importlib.util.find_spec("torch"):
            dev = "cuda" if args.device == "cuda" else "cpu"
            row["torch eager"] = torch_reference(net, dev, "eager", args.steps, args.repeats)
            if args.torch_compile:
                row["torch.compile"] = torch_reference(net, dev, "compile", args.steps,
                                                       args.repeats)
            if dev == "cuda":
                row["torch cuda-graph"] = torch_reference(net, dev, "cuda-graph", args.steps,
                                                          args.repeats)
        rows.append(row)
    print(json.dumps(rows))


# --- the driver: one process per backend, one table -------------------------------------

def print_table(rows):
    """One line per (net, backend, step): ms per step and the ratio to PyTorch eager (with
    rounds: the median of the rounds' ratios, and how many rounds gave one)."""
    reference = {r["net"]: r["torch eager"] for r in rows if "torch eager" in r}
    print(f"{'net':<18} {'backend':<8} {'step':<18} {'ms':>8} {'vs torch':>9}")
    for row in rows:
        for key, ms in row.items():
            if key in ("backend", "net", "device", "ratios", "rounds"):
                continue
            if "ratios" in row:  # a rounds run: only same-round ratios count
                ratio = row["ratios"].get(key, float("nan"))
            else:
                ratio = ms / reference[row["net"]] if row["net"] in reference else float("nan")
            counted = row.get("rounds", {}).get(key)
            note = f"  ({counted} rounds)" if counted is not None else ""
            print(f"{row['net']:<18} {row['backend']:<8} {key:<18} {ms:>8.3f} {ratio:>9.2f}"
                  f"{note}")


def round_reference(rows):
    """net -> PyTorch's eager ms in one round: the torch process's timing, else the one
    measured in the numpy process (when torch ran in no process of its own)."""
    reference = {}
    for backend in ("numpy", "torch"):  # torch's own process wins
        reference.update({r["net"]: r["torch eager"] for r in rows
                          if r["backend"] == backend and "torch eager" in r})
    return reference


def combine_rounds(rounds):
    """Rows of several rounds -> one row per (backend, net): the median ms of each step,
    the median over rounds of its ratio to that round's PyTorch eager step (rounds without
    that reference give no ratio), and per step the number of rounds it was timed in."""
    combined = {}
    for rows in rounds:
        reference = round_reference(rows)
        for row in rows:
            into = combined.setdefault((row["backend"], row["net"]), {
                "backend": row["backend"], "net": row["net"], "device": row["device"],
                "ratios": {}, "rounds": {}})
            for key, ms in row.items():
                if key in ("backend", "net", "device"):
                    continue
                into.setdefault(key, []).append(ms)
                into["rounds"][key] = into["rounds"].get(key, 0) + 1
                if row["net"] in reference:
                    into["ratios"].setdefault(key, []).append(ms / reference[row["net"]])
    for row in combined.values():
        for key, values in list(row.items()):
            if isinstance(values, list):
                row[key] = statistics.median(values)
        row["ratios"] = {key: statistics.median(v) for key, v in row["ratios"].items()}
    return list(combined.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                        help="default: every one installed (cupy only with --device cuda)")
    parser.add_argument("--nets", nargs="+", choices=list(NETS),
                        default=["two-layer", "simple-conv"])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for BLAS, torch and XLA in every process (default 1)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks (median)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of every backend's process (median)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time torch.compile of PyTorch's step (minutes to compile "
                             "on a CPU)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the rows as JSON to FILE ('-': as the last line printed)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.worker:
        return worker(args)

    backends = args.backends or [b for b in BACKENDS if importlib.util.find_spec(b) and (
        b != "cupy" or args.device == "cuda")]
    rounds = []
    for _ in range(args.rounds):
        rows = []
        for backend in backends:
            cmd = [sys.executable, __file__, "--worker", backend, "--device", args.device,
                   "--threads", str(args.threads), "--steps", str(args.steps),
                   "--repeats", str(args.repeats), "--nets", *args.nets]
            if args.torch_compile:
                cmd.append("--torch-compile")
            env = dict(os.environ)
            set_threads(args.threads)
            env.update({k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "XLA_FLAGS")})
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"{backend}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows += json.loads(done.stdout.strip().splitlines()[-1])
        rounds.append(rows)
    rows = combine_rounds(rounds)

    machine = platform.processor() or platform.machine()
    print(f"ms per training step (median of {args.repeats} blocks of {args.steps}, median "
          f"over {args.rounds} interleaved rounds); "
          f"{args.threads} thread(s) for BLAS/torch/XLA; {machine}, {os.cpu_count()} cores; "
          "ratio = median over rounds of ms / PyTorch eager ms of the same net in the same "
          "round")
    print_table(rows)
    if args.json == "-":  # for benchmarks/gpu_check.py: the rows as the last line
        print(json.dumps({"threads": args.threads, "device": args.device, "rows": rows}))
    elif args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "device": args.device, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
