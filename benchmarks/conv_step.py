"""Time one SimpleConvNet training step (forward + backward) with our layers beside PyTorch.

The network is the book's SimpleConvNet: input 100x1x28x28, Convolution 30 filters 5x5,
ReLU, 2x2 max pooling stride 2, Affine 4320->100, ReLU, Affine 100->10, SoftmaxWithLoss,
all float32. Both steps are measured in the same run, alternately, after a warm-up; the
median of the repeats is printed as ms/step, with the ratio ours / torch.

torch is timed twice: as usually written (the input needs no gradient, so autograd skips
the first convolution's input gradient) and with x.requires_grad=True, which does the
same work as our layers (whose Convolution.backward always returns dx, as in the book).

    python benchmarks/conv_step.py                  # our layers on NumPy
    python benchmarks/conv_step.py --backend torch  # our layers on torch tensors
    python benchmarks/conv_step.py --threads 1      # one thread for NumPy's BLAS and torch
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from portablelayers import Affine, Convolution, Pooling, ReLU, SoftmaxWithLoss
from portablelayers._backend import resolve_namespace

BATCH, CHANNELS, SIZE, FILTERS, KERNEL, HIDDEN, CLASSES = 100, 1, 28, 30, 5, 100, 10
POOLED = FILTERS * ((SIZE - KERNEL + 1) // 2) ** 2  # 30 * 12 * 12 = 4320


def host_data(seed=0):
    """Inputs, labels and weights (0.01 * normal, as the book's weight_init_std) in NumPy."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {
        "x": rng.standard_normal((BATCH, CHANNELS, SIZE, SIZE)).astype(f32),
        "t": rng.integers(0, CLASSES, BATCH),
        "W1": (0.01 * rng.standard_normal((FILTERS, CHANNELS, KERNEL, KERNEL))).astype(f32),
        "b1": np.zeros(FILTERS, f32),
        "W2": (0.01 * rng.standard_normal((POOLED, HIDDEN))).astype(f32),
        "b2": np.zeros(HIDDEN, f32),
        "W3": (0.01 * rng.standard_normal((HIDDEN, CLASSES))).astype(f32),
        "b3": np.zeros(CLASSES, f32),
    }


def materialize(arrays):
    """Wait for lazy or asynchronous backends (Dask, JAX) to really compute `arrays`."""
    first = arrays[0]
    if hasattr(first, "dask"):
        import dask

        dask.compute(*arrays)
    elif hasattr(first, "block_until_ready"):
        for a in arrays:
            a.block_until_ready()


def our_step(backend):
    """A function running one forward + backward of our layers on `backend`."""
    xp = resolve_namespace(backend)
    data = {k: xp.asarray(v) for k, v in host_data().items()}
    conv = Convolution(data["W1"], data["b1"], stride=1, pad=0)
    layers = [conv, ReLU(), Pooling(2, 2, stride=2), Affine(data["W2"], data["b2"]), ReLU(),
              Affine(data["W3"], data["b3"])]
    last = SoftmaxWithLoss()

    def step():
        out = data["x"]
        for layer in layers:
            out = layer.forward(out)
        loss = last.forward(out, data["t"])
        dout = last.backward()
        for layer in reversed(layers):
            dout = layer.backward(dout)
        grads = [g for layer in layers for g in layer.grads.values()]
        materialize([loss, dout, *grads])
        return loss

    return step


def torch_step(input_grad):
    """One forward + backward of the same network in PyTorch with autograd."""
    import torch
    import torch.nn.functional as F

    data = {k: torch.from_numpy(np.asarray(v)) for k, v in host_data().items()}
    params = [data[k].requires_grad_() for k in ("W1", "b1", "W2", "b2", "W3", "b3")]
    x = data["x"].requires_grad_(input_grad)
    W1, b1, W2, b2, W3, b3 = params

    def step():
        for p in params:
            p.grad = None
        if x.grad is not None:
            x.grad = None
        h = F.max_pool2d(F.relu(F.conv2d(x, W1, b1)), 2, 2)
        h = F.relu(h.reshape(BATCH, -1) @ W2 + b2)
        loss = F.cross_entropy(h @ W3 + b3, data["t"])
        loss.backward()
        return loss

    return step


def numpy_threads():
    """Threads NumPy's BLAS uses (threadpoolctl when installed, else the CPU count)."""
    try:
        import threadpoolctl

        counts = [i["num_threads"] for i in threadpoolctl.threadpool_info()
                  if i["user_api"] == "blas"]
        return max(counts) if counts else os.cpu_count()
    except ImportError:
        return os.cpu_count()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy",
                        help="namespace for our layers: numpy, torch, jax, dask, "
                             "array_api_strict, cupy (default numpy)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for NumPy's BLAS (needs threadpoolctl) and torch "
                             "(default: as many as NumPy's BLAS uses)")
    args = parser.parse_args(argv)

    import torch

    if args.threads is not None:
        import threadpoolctl  # limits NumPy's BLAS; kept for the whole run

        limiter = threadpoolctl.threadpool_limits(args.threads, user_api="blas")  # noqa: F841
    threads = numpy_threads()
    torch.set_num_threads(threads)
    steps = {
        f"ours ({args.backend})": our_step(args.backend),
        "torch": torch_step(input_grad=False),
        "torch, with dx": torch_step(input_grad=True),
    }
    times = {name: [] for name in steps}
    for i in range(args.warmup + args.repeats):
        for name, step in steps.items():  # alternate, so drift affects all alike
            start = time.perf_counter()
            step()
            elapsed = time.perf_counter() - start
            if i >= args.warmup:
                times[name].append(elapsed * 1e3)

    print(f"SimpleConvNet step, batch {BATCH}, float32, {threads} threads for NumPy BLAS and "
          f"torch, median of {args.repeats}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    ours = next(iter(medians))
    for name, ms in medians.items():
        print(f"  {name:<28} {ms:8.2f} ms/step")
    for name in list(medians)[1:]:
        print(f"  ratio ours / {name:<16} {medians[ours] / medians[name]:6.2f}x")


if __name__ == "__main__":
    main()
