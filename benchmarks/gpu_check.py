"""Everything to check on a machine with an NVIDIA GPU, in one command and one table.

Runs the test suite on CuPy, on torch CUDA tensors (PORTABLELAYERS_DEVICE=cuda) and on JAX's
GPU (PORTABLELAYERS_DEVICE=gpu), each at full float32 precision (tests/conftest.py sets
the policy), then `benchmarks/step.py --device cuda` (our eager and compiled steps beside
PyTorch eager and PyTorch's CUDA graph), and prints one summary table.

    python benchmarks/gpu_check.py                 # on the GPU machine
    python benchmarks/gpu_check.py --smoke         # the same code paths on CPU backends
    python benchmarks/gpu_check.py --json out.json --budget 420

A GPU machine is often lent for minutes only, so the step benchmark (the figures nothing
else can give) runs first, every part is written to the JSON file as soon as it is done (a
run killed at its time limit leaves what it finished), and `--budget SECONDS` (default 480)
bounds the whole run: each suite gets at most what is left, and a suite with under 30 s left
is reported as skipped.

It needs no package registry: the package is taken from this checkout, and the pure-Python
dependencies (array-api-compat, array-api-extra) from PYTHONPATH or from a `.deps/` folder
beside this checkout's pyproject.toml (e.g. `pip download --no-deps -d .deps ...` then
unzip the wheels there, on a machine that has a registry). `--smoke` runs each suite on the
CPU with a small selection of tests, so CI proves the script itself works.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time

from step import print_table  # benchmarks/step.py, beside this file

ROOT = pathlib.Path(__file__).resolve().parents[1]
# backend -> (PORTABLELAYERS_DEVICE on the GPU, module that must be importable)
SUITES = {"cupy": (None, "cupy"), "torch": ("cuda", "torch"), "jax": ("gpu", "jax")}
SMOKE_TESTS = ["tests/test_backends.py", "tests/test_affine.py",
               "tests/test_compile.py::test_a_step_traces_once_per_batch_shape"]


def environment():
    env = dict(os.environ)
    paths = [str(ROOT)]
    deps = ROOT / ".deps"
    if deps.is_dir():
        paths.append(str(deps))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_suite(backend, smoke, timeout):
    """The pytest counts of one backend's suite, its seconds and its status."""
    device, module = SUITES[backend]
    if timeout < 30:
        return {"suite": backend, "status": "skipped: out of time (--budget)"}
    if smoke and backend == "cupy":
        backend, device = "numpy", None  # CuPy's code paths are NumPy's on a CPU
    elif smoke:
        device = "cpu"
    if importlib.util.find_spec(module if not smoke or module != "cupy" else "numpy") is None:
        return {"suite": backend, "status": f"skipped: {module} not installed"}
    env = environment()
    env["PORTABLELAYERS_BACKEND"] = backend
    if backend == "jax":
        env["JAX_ENABLE_X64"] = "1"
    if device:
        env["PORTABLELAYERS_DEVICE"] = device
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
            *(SMOKE_TESTS if smoke else ["tests"])]
    if not smoke and importlib.util.find_spec("xdist"):
        args += ["-n", "4"]
    start = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        out = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        out, done = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (
            exc.stdout or ""), None
    seconds = time.perf_counter() - start
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
    row = {"suite": f"{backend}" + (f" on {device}" if device else ""), **counts,
           "seconds": round(seconds, 1),
           "status": "timed out" if done is None else ("ok" if done.returncode == 0 else
                                                        "FAILED")}
    if done is not None and done.returncode not in (0, 5):
        row["tail"] = out[-1500:]
    return row


def run_benchmark(smoke, timeout):
    args = [sys.executable, str(ROOT / "benchmarks" / "step.py"), "--json", "-"]
    if smoke:
        args += ["--device", "cpu", "--nets", "two-layer", "--steps", "2", "--repeats", "2",
                 "--backends", *[b for b in ("numpy", "torch", "jax")
                                 if importlib.util.find_spec(b)]]
    else:
        args += ["--device", "cuda", "--nets", "two-layer", "simple-conv", "simple-conv-b1000"]
    done = subprocess.run(args, cwd=ROOT, env=environment(), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        return [], done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["rows"], done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the same code paths on CPU backends, a few tests each")
    parser.add_argument("--suites", nargs="+", choices=list(SUITES), default=list(SUITES))
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmarks")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the summary as JSON (after every part)")
    parser.add_argument("--budget", type=float, default=480, metavar="SECONDS",
                        help="the most the whole run may take (default 480)")
    args = parser.parse_args(argv)
    limit = 100 if args.smoke else 240  # one part at most
    start = time.perf_counter()

    def left():
        return min(limit, args.budget - (time.perf_counter() - start))

    suites, bench, bench_text = [], [], ""

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"smoke": args.smoke, "suites": suites, "bench": bench,
                           "seconds": round(time.perf_counter() - start, 1)}, f, indent=1)

    if not args.no_bench:
        try:
            bench, bench_text = run_benchmark(args.smoke, max(left(), 1))
        except subprocess.TimeoutExpired:
            bench_text = "timed out (--budget)"
        save()
    for backend in args.suites:
        suites.append(run_suite(backend, args.smoke, left()))
        save()

    print(f"GPU check{' (smoke: CPU backends)' if args.smoke else ''}, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"{'suite':<16} {'passed':>7} {'failed':>7} {'skipped':>8} {'seconds':>8}  status")
    for row in suites:
        print(f"{row['suite']:<16} {row.get('passed', 0):>7} {row.get('failed', 0):>7} "
              f"{row.get('skipped', 0):>8} {row.get('seconds', 0):>8}  {row['status']}")
        if "tail" in row:
            print(row["tail"])
    if bench:
        print()
        print_table(bench)
    elif not args.no_bench:
        print("\nbenchmark failed:\n" + bench_text[-1500:])
    save()
    failed = any(r["status"] not in ("ok",) and not r["status"].startswith("skipped")
                 for r in suites) or (not args.no_bench and not bench)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
