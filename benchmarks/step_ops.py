"""Count the torch operations one training step dispatches: our step (eager, on torch
tensors) beside PyTorch's own (torch.nn + autograd + torch.optim.SGD).

A CUDA graph replays every kernel of a step without its launch cost, so the number of
kernels is what separates our captured step from PyTorch's. This counts what can be
counted on any machine: the aten operations a step dispatches (a `TorchDispatchMode`),
views (which launch nothing) apart. On a GPU most of the others are one kernel each.

    python benchmarks/step_ops.py                  # TwoLayerNet and SimpleConvNet, batch 100
    python benchmarks/step_ops.py --json out.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np
from step import torch_model  # benchmarks/step.py, beside this file: PyTorch's networks

# aten operations that only describe memory (no kernel) or mark the profiler
NO_KERNEL = {"view", "_unsafe_view", "transpose", "t", "unsqueeze", "squeeze", "slice",
             "select", "expand", "alias", "detach", "as_strided", "permute", "reshape",
             "_record_function_enter_new", "_record_function_exit"}


def count(step):
    """{operation: calls} for one call of `step` (after one untimed call)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    step()
    with Count() as counter:
        step()
    return counter.calls


def ours(net, x, t):
    import array_api_compat.torch as xp

    from portablelayers._backend import no_value_checks
    from portablelayers.nets import SimpleConvNet, TwoLayerNet
    from portablelayers.optim import SGD
    from portablelayers.train import compile_step

    network = (TwoLayerNet(784, 50, 10, xp=xp, seed=0) if net == "two-layer"
               else SimpleConvNet((1, 28, 28), xp=xp, seed=0))
    step = compile_step(network, SGD(lr=0.01), compile=False)
    step(x, t)  # the first batch's label check, where data enter

    def as_on_a_gpu():  # an eager step on a GPU reads no values (no label check)
        with no_value_checks():
            return step(x, t)

    return as_on_a_gpu


def pytorch(net, x, t):
    import torch
    import torch.nn.functional as F

    model = torch_model(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), t).backward()
        opt.step()

    return step


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", choices=("two-layer", "simple-conv"),
                        default=["two-layer", "simple-conv"])
    parser.add_argument("--json", metavar="FILE", help="also write the counts as JSON")
    args = parser.parse_args(argv)
    rows = []
    rng = np.random.default_rng(0)
    for net in args.nets:
        shape = (100, 784) if net == "two-layer" else (100, 1, 28, 28)
        x = torch.asarray(rng.standard_normal(shape).astype(np.float32))
        t = torch.asarray(rng.integers(0, 10, 100))
        for who, make in (("ours", ours), ("PyTorch", pytorch)):
            calls = count(make(net, x, t))
            kernels = {k: v for k, v in calls.items() if k not in NO_KERNEL}
            rows.append({"net": net, "step": who, "operations": sum(kernels.values()),
                         "views": sum(calls.values()) - sum(kernels.values()),
                         "by_operation": dict(collections.Counter(kernels).most_common())})
            print(f"{net:<12} {who:<8} {rows[-1]['operations']:>4} operations "
                  f"(+{rows[-1]['views']} views): "
                  + ", ".join(f"{k} {v}" for k, v in rows[-1]["by_operation"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
