"""benchmarks/gpu_check.py --smoke: the GPU check's code paths (test suites per backend,
the step benchmark, the summary table) run on the CPU backends, so CI proves the script
a GPU machine will run. Once, in the numpy session: it starts its own pytest runs."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import platform
import subprocess
import sys

import pytest
from conftest import BACKEND

ROOT = pathlib.Path(__file__).parents[1]


def benchmark(name):
    """The module benchmarks/<name>.py (they import each other by name)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.mark.skipif(BACKEND != "numpy", reason="runs its own suites; once, in the numpy "
                    "session")
def test_gpu_check_smoke_runs_and_reports(tmp_path):
    out, logs = tmp_path / "summary.json", tmp_path / "logs"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--smoke", "--json", str(out), "--logs", str(logs)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(out.read_text())
    assert summary["smoke"] is True
    numpy_suite = summary["suites"][0]
    assert numpy_suite["suite"] == "numpy" and numpy_suite["status"] == "ok"
    assert numpy_suite["passed"] > 10 and numpy_suite.get("failed", 0) == 0
    for row in summary["suites"][1:]:  # torch, jax: run where installed, else said so
        assert row["status"] == "ok" or row["status"].startswith("skipped"), row
    steps = {(r["backend"], key) for r in summary["bench"]["rows"] for key in r}
    assert ("numpy", "ours eager") in steps and ("numpy", "hand-written") in steps
    assert summary["bench"]["failed"] == {}
    assert "suite" in done.stdout and "vs torch" in done.stdout
    # every part's whole output is kept: the suites' pytest logs, the benchmark's table
    assert "passed" in (logs / "numpy.log").read_text()
    assert "vs torch" in (logs / "bench.log").read_text()


@pytest.mark.skipif(BACKEND != "numpy", reason="runs its own suites; once, in the numpy "
                    "session")
def test_gpu_check_keeps_within_its_budget_and_says_what_it_stopped(tmp_path):
    # A lent GPU machine may have minutes left: the suites run side by side, and those
    # still running when the budget is spent are stopped, reported as such, with what
    # they printed kept; the JSON holds what was done.
    out, logs = tmp_path / "summary.json", tmp_path / "logs"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--smoke", "--no-bench", "--budget", "2", "--json", str(out),
                           "--logs", str(logs)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # not every suite finished
    summary = json.loads(out.read_text())
    statuses = [row["status"] for row in summary["suites"]]
    assert "timed out (--budget)" in statuses
    assert all(s in ("timed out (--budget)", "ok") or s.startswith("skipped") for s in statuses)
    assert summary["seconds"] < 15
    assert (logs / "numpy.log").exists()


@pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")
def test_gpu_check_names_every_failing_test(tmp_path):
    # A GPU run is rare: every failure is listed by name (no stop at the first), from
    # pytest's -rfE summary in the suite's log.
    gpu_check = benchmark("gpu_check")
    log_path = tmp_path / "torch.log"
    fake_pytest = ("print('FAILED tests/test_a.py::test_one - AssertionError: x');"
                   "print('ERROR tests/test_b.py::test_two - RuntimeError: y');"
                   "print('1 failed, 40 passed, 3 skipped, 1 error in 2.00s');"
                   "raise SystemExit(1)")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", fake_pytest], stdout=log)
    row = gpu_check.finish_suite({"suite": "torch on cuda", "proc": proc,
                                  "log": open(log_path, "a"), "log_path": log_path,
                                  "start": 0.0}, timeout=60)
    assert row["status"] == "FAILED"
    assert (row["passed"], row["failed"], row["skipped"], row["error"]) == (40, 1, 3, 1)
    assert row["failures"] == ["FAILED tests/test_a.py::test_one - AssertionError: x",
                               "ERROR tests/test_b.py::test_two - RuntimeError: y"]


@pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")
def test_gpu_check_times_each_suite_on_its_own(tmp_path):
    # The suites run side by side: each one's seconds are its own, not the time until it
    # was waited on.
    gpu_check = benchmark("gpu_check")
    runs = []
    for name, seconds in (("slow", 2.0), ("fast", 0.0)):
        log_path = tmp_path / f"{name}.log"
        code = f"import time; time.sleep({seconds}); print('1 passed in {seconds}s')"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=log)
        runs.append({"suite": name, "proc": proc, "log": open(log_path, "a"),
                     "log_path": log_path, "start": gpu_check.time.perf_counter()})
    gpu_check.wait_for_suites(runs, timeout=60)
    slow, fast = (gpu_check.finish_suite(run) for run in runs)
    assert slow["status"] == fast["status"] == "ok" and slow["passed"] == fast["passed"] == 1
    assert slow["seconds"] >= 1.9 and fast["seconds"] < 1.5


@pytest.mark.skipif(BACKEND != "torch", reason="counts torch's operations; in the torch session")
def test_step_ops_counts_each_steps_operations():
    # benchmarks/step_ops.py: the operations one step dispatches, ours (eager, as on a GPU:
    # no label check) and PyTorch's. Its figures explain the CUDA-graph gap in the docs.
    step_ops = benchmark("step_ops")
    rows = {row["step"]: row for row in step_ops.main(["--nets", "two-layer"])}
    ours, theirs = rows["ours"]["by_operation"], rows["PyTorch"]["by_operation"]
    # 2 forward products (with their bias: addmm, as torch's Linear) and 3 backward each: no
    # input gradient for the first layer (the book's Affine computes it; Sequential asks the
    # first layer for its gradients only)
    assert ours["addmm"] == theirs["addmm"] == 2 and ours["mm"] == theirs["mm"] == 3
    # one kernel per parameter update (SGD's lr * grad fused), one log_softmax
    assert ours["addcmul_"] == theirs["add_"] == 4 and ours["_log_softmax"] == 1
    assert "_local_scalar_dense" not in ours  # no value read back: the check is off
    # ReLU's backward multiplies by its boolean mask as it is (multiply_by_mask): the one
    # cast left is the labels' one-hot; the loss is divided by -N, not negated then divided
    assert ours["_to_copy"] == 1 and "neg" not in ours
    # Class-index labels: the loss selects each row's log-probability (one where, no
    # comparison of the one-hot with 0) and the gradient is y - one-hot (no row sums): the
    # sums are the two biases' gradients and the loss
    assert ours["where"] == 1 and "ne" not in ours and ours["sum"] == 3
    assert rows["ours"]["operations"] == sum(ours.values())
    # SimpleConvNet: the convolution and the pooling in torch's own kernels, forward and
    # backward, as PyTorch's step calls them (no windows, products or scatter-add)
    conv = next(row for row in step_ops.main(["--nets", "simple-conv"]) if row["step"] == "ours")
    calls = conv["by_operation"]
    for name in ("convolution", "convolution_backward", "max_pool2d_with_indices",
                 "max_pool2d_with_indices_backward"):
        assert calls[name] == 1, name
    assert not {"bmm", "stack", "scatter_add_", "zeros"} & set(calls)


@pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; once, in the numpy session")
@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"),
                    reason="the system cannot pin processes")
def test_step_benchmark_pins_its_processes_when_asked():
    # step.py --pin: every worker on --threads cores (XLA's thread pool included), and the
    # record says which; without it, none.
    import os

    def record(*flags):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step.py"),
                               "--backends", "numpy", "--nets", "two-layer", "--repeats", "1",
                               "--steps", "1", "--min-block", "0", "--json", "-", *flags],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    allowed = sorted(os.sched_getaffinity(0))
    pinned, free = record("--pin"), record()
    assert pinned["pinned_to_cores"] == allowed[:1]
    # as the worker saw it
    assert pinned["cores_of_each_process"] == {"numpy, two-layer": allowed[:1]}
    assert free["pinned_to_cores"] is None
    assert free["cores_of_each_process"] == {"numpy, two-layer": allowed}


@pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; once, in the numpy session")
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc only")
@pytest.mark.parametrize("mode", ["kept", "shipped", "glibc"])
def test_step_benchmark_sets_glibcs_malloc_as_asked(mode):
    # --malloc kept: every process keeps freed memory (PyTorch's too); shipped: ours through
    # compile_step, PyTorch's own process glibc's default; glibc: none. The record says which.
    import importlib.util

    from portablelayers.memory import OPT_OUT

    backends = ["numpy"] + ["torch"] * bool(importlib.util.find_spec("torch"))
    if mode == "shipped" and "torch" not in backends:
        pytest.skip("--malloc shipped needs torch")
    env = {k: v for k, v in os.environ.items()
           if k != OPT_OUT and not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step.py"),
                           "--backends", *backends, "--nets", "two-layer", "--repeats", "1",
                           "--steps", "1", "--min-block", "0", "--malloc", mode, "--json", "-"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["malloc"] == mode
    kept = {"kept": {"numpy": True, "torch": True}, "shipped": {"numpy": True, "torch": False},
            "glibc": {"numpy": False, "torch": False}}[mode]
    assert record["freed_memory_kept_by_each_process"] == {
        f"{backend}, two-layer": kept[backend] for backend in backends}


@pytest.mark.skipif(BACKEND != "jax", reason="needs JAX; in the jax session")
def test_step_benchmark_times_each_net_and_jax_compiled_steps_apart():
    # A step measured slower in a process where another had run: a process per backend and
    # net, JAX's compiled steps apart from its eager one; each net's rows land in one row.
    pytest.importorskip("jax")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step.py"),
                           "--backends", "jax", "numpy", "--nets", "two-layer", "simple-conv",
                           "--repeats", "1", "--steps", "1", "--min-block", "0", "--json",
                           "-"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(record["cores_of_each_process"]) == {
        f"{backend}, {net}{part}" for net in ("two-layer", "simple-conv")
        for backend, part in (("numpy", ""), ("jax", ""), ("jax", ", compiled"))}
    assert record["backends"] == ["jax", "numpy"]
    # --threads 1 (the default) reaches XLA's CPU pool in every JAX process
    pool = record["xla_cpu_pool_threads_of_each_process"]
    assert set(pool) <= {name for name in record["cores_of_each_process"] if "jax" in name}
    assert all(n == 1 for n in pool.values())
    # only the YNNPACK row may fail to build (its compiler option is jaxlib 0.10's)
    assert all("YNNPACK" in what for what in record["failed"]), record["failed"]
    rows = {(row["backend"], row["net"]): row for row in record["rows"]}
    assert set(rows) == {(b, n) for b in ("jax", "numpy") for n in ("two-layer", "simple-conv")}
    for net in ("two-layer", "simple-conv"):
        assert {"ours eager", "ours jax.jit"} <= set(rows["jax", net])
        assert "ours eager" in rows["numpy", net]


@pytest.mark.skipif(BACKEND != "jax", reason="needs JAX; in the jax session")
def test_xla_pool_benchmark_checks_its_forms_and_prints_a_row_each():
    # Every pool form is compared with ours before timing (the script asserts it), so a form
    # that computed something else would stop it here.
    pytest.importorskip("jax")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "xla_pool.py"),
                           "--repeats", "1", "--calls", "1", "--widths", "8", "48"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    if os.path.isdir("/proc/self/task"):  # the pool's threads, counted: --threads 1 reached it
        assert ", 1 XLA thread(s)," in lines[0]
    rows = {line[:40].strip(): line[40:].split() for line in lines[2:]}
    assert len(rows) == 10 and "pool forward + backward: ours" in rows
    assert {"bias + ReLU, rows of 8", "bias + ReLU, rows of 48"} <= set(rows)
    assert rows["bias + ReLU, rows of 576"][1] == "1.00x"
    assert all(float(ms) > 0 for ms, _ in rows.values())
