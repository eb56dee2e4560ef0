"""Everything to check on a machine with an NVIDIA GPU, in one command and one table.

Runs `benchmarks/step.py --device cuda` first, alone (our eager and compiled steps on
torch, JAX and CuPy beside PyTorch eager and PyTorch's CUDA graph), then the test suite on
CuPy, on torch CUDA tensors (PORTABLELAYERS_DEVICE=cuda) and on JAX's GPU
(PORTABLELAYERS_DEVICE=gpu) side by side, each at full float32 precision
(tests/conftest.py sets the policy) with pytest-xdist's workers where installed, and
prints one summary table that names every failing test.

    python benchmarks/gpu_check.py                 # on the GPU machine
    python benchmarks/gpu_check.py --smoke         # the same code paths on CPU backends
    python benchmarks/gpu_check.py --json out.json --logs DIR --budget 420

A GPU machine is often lent for minutes only: the summary is written to the JSON file as
soon as each part is done, `--logs DIR` keeps every part's whole output (the benchmark's,
each suite's pytest log: tracebacks to read once the machine is gone), and `--budget
SECONDS` (default 480) bounds the whole run: a suite still running when it is spent is
stopped and reported with what it printed. A test that hangs fails alone after 300 s
where pytest-timeout is installed. JAX is kept from taking 75% of the GPU's memory at its
start (XLA_PYTHON_CLIENT_PREALLOCATE=false), so the suites and their workers share it.

It needs no package registry: the package is taken from this checkout, and the pure-Python
dependencies (array-api-compat, array-api-extra) from PYTHONPATH or from a `.deps/` folder
beside this checkout's pyproject.toml (e.g. `pip download --no-deps -d .deps ...` then
unzip the wheels there, on a machine that has a registry; git ignores it). `--smoke` runs
each suite on the CPU with a small selection of tests, so CI proves the script itself
works.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

from step import print_table  # benchmarks/step.py, beside this file

ROOT = pathlib.Path(__file__).resolve().parents[1]
# backend -> (PORTABLELAYERS_DEVICE on the GPU, module that must be importable)
SUITES = {"cupy": (None, "cupy"), "torch": ("cuda", "torch"), "jax": ("gpu", "jax")}
WORKERS = 4  # pytest-xdist processes per suite; the three suites run side by side
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
    # JAX takes 75% of the GPU's memory at its start by default: with several processes on
    # one GPU (the suites side by side, pytest's workers) the second one would run out.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def start_suite(backend, smoke, logs):
    """Start one backend's pytest run, its output into a log file (in a session of its own,
    so that it can be stopped with its workers); a "skipped" row where it cannot run."""
    device, module = SUITES[backend]
    if smoke and backend == "cupy":
        backend, device = "numpy", None  # CuPy's code paths are NumPy's on a CPU
    elif smoke:
        device = "cpu"
    name = backend + (f" on {device}" if device else "")
    if importlib.util.find_spec(module if not smoke or module != "cupy" else "numpy") is None:
        return {"suite": name, "status": f"skipped: {module} not installed"}
    env = environment()
    env["PORTABLELAYERS_BACKEND"] = backend
    if backend == "jax":
        env["JAX_ENABLE_X64"] = "1"
    if device:
        env["PORTABLELAYERS_DEVICE"] = device
    # -rfE lists every failure and error by name at the end; no -x: a GPU run is rare and
    # should show all of them
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
            *(SMOKE_TESTS if smoke else ["tests"])]
    if not smoke and importlib.util.find_spec("xdist"):
        args += ["-n", str(WORKERS)]
    if importlib.util.find_spec("pytest_timeout"):
        args += ["--timeout", "300"]  # a hung test fails alone, not the whole suite
    log_path = logs / f"{backend}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return {"suite": name, "proc": proc, "log": log, "log_path": log_path,
            "start": time.perf_counter()}


def wait_for_suites(runs, timeout):
    """Wait for every started suite, at most `timeout` s in all, noting when each ended;
    stop those still running then (with their workers: each runs in a session of its own)."""
    deadline = time.perf_counter() + max(timeout, 0)
    while True:
        running = [run for run in runs if "proc" in run and "end" not in run]
        for run in running:
            if run["proc"].poll() is not None:
                run["end"] = time.perf_counter()
        if not [run for run in running if "end" not in run]:
            return
        if time.perf_counter() >= deadline:
            break
        time.sleep(0.2)
    for run in runs:
        if "proc" in run and "end" not in run:
            try:
                os.killpg(run["proc"].pid, signal.SIGKILL)  # pytest and its xdist workers
            except ProcessLookupError:
                pass
            run["proc"].wait()
            run["end"], run["stopped"] = time.perf_counter(), True


def finish_suite(run, timeout=None):
    """A suite's row: its status, its counts (pytest's last summary line), the tests that
    failed and how long it ran. With `timeout`, wait for it first (at most that long)."""
    if "proc" not in run:
        return run
    if timeout is not None:
        wait_for_suites([run], timeout)
    proc = run.pop("proc")
    if run.pop("stopped", False):
        status = "timed out (--budget)"
    else:
        status = "ok" if proc.returncode in (0, 5) else "FAILED"
    run.pop("log").close()
    out = pathlib.Path(run.pop("log_path")).read_text(errors="replace")
    summaries = [line for line in out.splitlines()
                 if re.search(r"\d+ (passed|failed|errors?|skipped)\b.* in [\d.]+s", line)]
    counts = {k.rstrip("s") if k.startswith("error") else k: int(v) for v, k in re.findall(
        r"(\d+) (passed|failed|skipped|errors?)\b", summaries[-1] if summaries else "")}
    row = {"suite": run["suite"], **counts,
           "seconds": round(run.pop("end") - run.pop("start"), 1), "status": status}
    failures = [line for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    if failures:
        row["failures"] = failures[:60]
    if status != "ok":
        row["tail"] = out[-1500:]
    return row


def run_benchmark(smoke, timeout):
    args = [sys.executable, str(ROOT / "benchmarks" / "step.py"), "--json", "-"]
    if smoke:
        args += ["--device", "cpu", "--nets", "two-layer", "--steps", "2", "--repeats", "2",
                 "--backends", *[b for b in ("numpy", "torch", "jax")
                                 if importlib.util.find_spec(b)]]
    else:  # no NumPy process: its CPU step says nothing about the GPU
        args += ["--device", "cuda", "--nets", "two-layer", "simple-conv", "simple-conv-b1000",
                 "--backends", *[b for b in ("torch", "jax", "cupy")
                                 if importlib.util.find_spec(b)]]
    # A session of its own: at the budget, step.py's per-backend workers stop with it.
    proc = subprocess.Popen(args, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise subprocess.TimeoutExpired(args, timeout, stdout, stderr) from None
    if proc.returncode != 0:
        return {}, stdout + stderr
    return json.loads(stdout.strip().splitlines()[-1]), stdout + stderr


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the same code paths on CPU backends, a few tests each")
    parser.add_argument("--suites", nargs="+", choices=list(SUITES), default=list(SUITES))
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmarks")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the summary as JSON (after every part)")
    parser.add_argument("--logs", metavar="DIR",
                        help="keep the benchmark's and each suite's whole output here")
    parser.add_argument("--budget", type=float, default=480, metavar="SECONDS",
                        help="the most the whole run may take (default 480)")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def left(limit=240):  # one part at most `limit` s
        return min(limit, args.budget - (time.perf_counter() - start))

    suites, bench, bench_text = [], {}, ""

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"smoke": args.smoke, "suites": suites, "bench": bench,
                           "seconds": round(time.perf_counter() - start, 1)}, f, indent=1)

    with tempfile.TemporaryDirectory() as scratch:
        logs = pathlib.Path(args.logs or scratch)
        logs.mkdir(parents=True, exist_ok=True)
        if not args.no_bench:  # first and alone: the timings want a quiet machine
            try:
                bench, bench_text = run_benchmark(args.smoke, max(left(), 1))
            except subprocess.TimeoutExpired as exc:  # its output comes as bytes
                bench_text = "timed out (--budget)\n" + "".join(
                    part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                    for part in (exc.stdout, exc.stderr))
            (logs / "bench.log").write_text(str(bench_text))
            save()
        # the suites side by side: each has its own GPU context and WORKERS processes
        runs = [start_suite(backend, args.smoke, logs) for backend in args.suites]
        wait_for_suites(runs, left(limit=args.budget))
        for run in runs:
            suites.append(finish_suite(run))
            save()

    print(f"GPU check{' (smoke: CPU backends)' if args.smoke else ''}, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"{'suite':<16} {'passed':>7} {'failed':>7} {'errors':>7} {'skipped':>8} "
          f"{'seconds':>8}  status")
    for row in suites:
        print(f"{row['suite']:<16} {row.get('passed', 0):>7} {row.get('failed', 0):>7} "
              f"{row.get('error', 0):>7} {row.get('skipped', 0):>8} {row.get('seconds', 0):>8}"
              f"  {row['status']}")
        for line in row.get("failures", []):
            print("    " + line[:200])
        if "tail" in row:
            print(row["tail"])
    if bench.get("rows"):
        print()
        print(bench.get("machine", ""), bench.get("precision", ""))
        print_table(bench["rows"])
        for what, error in bench.get("failed", {}).items():
            print(f"not timed: {what}: {error}")
    elif not args.no_bench:
        print("\nbenchmark failed:\n" + str(bench_text)[-3000:])
    save()
    failed = any(r["status"] not in ("ok",) and not r["status"].startswith("skipped")
                 for r in suites) or (not args.no_bench and (not bench.get("rows")
                                                             or bench.get("failed")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
