"""Data-parallel training on a dask.distributed LocalCluster: samples per second against
the number of workers, beside one NumPy process, and the cost of a step on the cluster.

    python benchmarks/distributed.py                 # workers 1 and 2, SimpleConvNet
    python benchmarks/distributed.py --workers 1 2 4 --steps 8 --json out.json

Rows:
- compute-bound: SimpleConvNet (30 5x5 filters, hidden 100) on MNIST-sized images
  (1x28x28, random values: speed does not depend on them), global batch 1000, SGD; one
  NumPy process with one BLAS thread, and DistributedStep on LocalClusters of N worker
  processes with one thread (and one BLAS thread) each. The data are persisted on the
  workers before timing; each figure is the median step time of --steps steps after one
  warm-up step.
- per-step overhead: TwoLayerNet 64-50-10 on the bundled digits, batch 100 (almost no
  compute): the cluster's step time minus one process's, and an empty actor round trip
  to every worker.
- the CLI: `portablelayers train --scheduler local:2 --epochs 3` on the digits, wall time
  of the whole command (Python start, cluster start, training, shutdown).

Figures taken while other processes use the CPUs are noisy: the machine's load average
is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
# This file's folder is first on sys.path when it runs as a script, and its name would
# shadow the `distributed` package: take the folder off.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402


def _median_step(step, batches, steps, cpu=None):
    """Median wall seconds of a step; `cpu` collects the slowest worker's CPU seconds."""
    step(*batches[0])  # warm-up
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(*batches[(i + 1) % len(batches)])
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(max(step.worker_seconds))
    return statistics.median(times)


def _conv_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, n).astype(np.uint8)
    return x, t


def _conv_net():
    from portablelayers.nets import SimpleConvNet

    return SimpleConvNet((1, 28, 28), {"filter_num": 30, "filter_size": 5, "pad": 0,
                                       "stride": 1}, hidden_size=100, seed=0)


def single_process(batch, steps, n):
    from threadpoolctl import threadpool_limits

    from portablelayers.compiled import compile_step
    from portablelayers.optim import SGD

    x, t = _conv_data(n)
    order = np.random.default_rng(1).permutation(n)
    batches = [(x[order[s:s + batch]], t[order[s:s + batch]]) for s in range(0, n, batch)]
    with threadpool_limits(1):
        step = compile_step(_conv_net(), SGD(0.01), compile=False)
        seconds = _median_step(step, batches, steps)
    return batch / seconds


def cluster(workers, batch, steps, n):
    from threadpoolctl import threadpool_info

    from portablelayers import datasets
    from portablelayers.distributed import DistributedStep, connect
    from portablelayers.optim import SGD

    client = connect(f"local:{workers}")
    try:
        client.wait_for_workers(workers, timeout=60)
        blas = sorted({max((p["num_threads"] for p in info), default=0)
                       for info in client.run(threadpool_info).values()})
        x, t = _conv_data(n)
        xd, td = datasets.to_dask((x, t), client)
        step = DistributedStep(_conv_net(), SGD(0.01), client, xd, td)
        order = np.random.default_rng(1).permutation(n)
        batches = [step.batch(xd, td, order, s, s + batch) for s in range(0, n, batch)]
        before = step.round_trips
        cpu = []
        seconds = _median_step(step, batches, steps, cpu)
        trips = (step.round_trips - before) / (steps + 1)
        step.close()
        return batch / seconds, trips, blas, statistics.median(cpu)
    finally:
        client.close()


def overhead(steps):
    from portablelayers import datasets
    from portablelayers.compiled import compile_step
    from portablelayers.distributed import DistributedStep, connect
    from portablelayers.nets import TwoLayerNet
    from portablelayers.optim import SGD

    (x, t), _ = datasets.load_digits()
    order = np.random.default_rng(0).permutation(x.shape[0])
    local = compile_step(TwoLayerNet(64, 50, 10, seed=0), SGD(0.1), compile=False)
    batches = [(x[order[s:s + 100]], t[order[s:s + 100]]) for s in range(0, 1400, 100)]
    one = _median_step(local, batches, steps)
    client = connect("local:2")
    try:
        client.wait_for_workers(2, timeout=60)
        xd, td = datasets.to_dask((x, t), client)
        step = DistributedStep(TwoLayerNet(64, 50, 10, seed=0), SGD(0.1), client, xd, td)
        batches = [step.batch(xd, td, order, s, s + 100) for s in range(0, 1400, 100)]
        many = _median_step(step, batches, steps)
        calls = []
        for _ in range(steps):
            start = time.perf_counter()
            for call in [r.info() for r in step._replicas]:
                call.result()
            calls.append(time.perf_counter() - start)
        step.close()
        return one, many, statistics.median(calls)
    finally:
        client.close()


def cli_seconds():
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "portablelayers", "train", "--scheduler",
                          "local:2", "--epochs", "3", "--quiet"], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    if run.returncode:
        raise RuntimeError(run.stderr)
    return seconds, run.stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} before starting; SimpleConvNet, "
          f"1x28x28 images, global batch {args.batch}, median of {args.steps} steps")
    result = {"cpus": os.cpu_count(), "load_before": load, "batch": args.batch}
    numpy_rate = single_process(args.batch, args.steps, args.samples)
    result["numpy_samples_per_s"] = numpy_rate
    print(f"  one NumPy process, 1 BLAS thread: {numpy_rate:8.0f} samples/s")
    rates, cpus = {}, {}
    for workers in args.workers:
        rate, trips, blas, cpu = cluster(workers, args.batch, args.steps, args.samples)
        rates[workers], cpus[workers] = rate, cpu
        print(f"  {workers} worker(s) (BLAS threads per worker {blas}): {rate:8.0f} samples/s"
              f" = {rate / numpy_rate:.2f}x NumPy, {trips:.0f} round trip(s) a step; slowest "
              f"worker's CPU time {cpu:.3f} s a step")
        result[f"workers_{workers}"] = {"samples_per_s": rate, "round_trips_per_step": trips,
                                        "blas_threads": blas, "worker_cpu_s_per_step": cpu}
    if 1 in rates:
        for workers, rate in rates.items():
            if workers > 1:
                print(f"  speed-up {workers} workers / 1 worker: {rate / rates[1]:.2f}x wall; "
                      f"{cpus[1] / cpus[workers]:.2f}x in the slowest worker's CPU time (what "
                      "the speed-up would be on idle cores, communication aside)")
                result[f"speedup_{workers}"] = rate / rates[1]
                result[f"cpu_speedup_{workers}"] = cpus[1] / cpus[workers]
    one, many, call = overhead(max(args.steps * 4, 20))
    print(f"  per-step overhead (TwoLayerNet, batch 100, 2 workers): {many * 1e3:.1f} ms a "
          f"step against {one * 1e3:.2f} ms in one process: +{(many - one) * 1e3:.1f} ms; "
          f"an empty actor round trip to both workers {call * 1e3:.1f} ms")
    result.update(overhead_step_ms=many * 1e3, single_step_ms=one * 1e3,
                  empty_round_trip_ms=call * 1e3)
    seconds, line = cli_seconds()
    print(f"  portablelayers train --scheduler local:2 --epochs 3: {seconds:.1f} s in all "
          f"({line})")
    result["cli_seconds"] = seconds
    result["load_after"] = os.getloadavg()[0]
    print(f"load average {result['load_after']:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
