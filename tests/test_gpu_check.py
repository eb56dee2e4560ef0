"""benchmarks/gpu_check.py --smoke: the GPU check's code paths (test suites per backend,
the step benchmark, the summary table) run on the CPU backends, so CI proves the script
a GPU machine will run. Once, in the numpy session: it starts its own pytest runs."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from conftest import BACKEND

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.skipif(BACKEND != "numpy", reason="runs its own suites; once, in the numpy "
                    "session")
def test_gpu_check_smoke_runs_and_reports(tmp_path):
    out = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--smoke", "--json", str(out)], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(out.read_text())
    assert summary["smoke"] is True
    numpy_suite = summary["suites"][0]
    assert numpy_suite["suite"] == "numpy" and numpy_suite["status"] == "ok"
    assert numpy_suite["passed"] > 10 and numpy_suite.get("failed", 0) == 0
    for row in summary["suites"][1:]:  # torch, jax: run where installed, else said so
        assert row["status"] == "ok" or row["status"].startswith("skipped"), row
    steps = {(r["backend"], key) for r in summary["bench"] for key in r}
    assert ("numpy", "ours eager") in steps and ("numpy", "hand-written") in steps
    assert "suite" in done.stdout and "vs torch" in done.stdout


@pytest.mark.skipif(BACKEND != "numpy", reason="runs its own suites; once, in the numpy "
                    "session")
def test_gpu_check_keeps_within_its_budget_and_says_what_it_skipped(tmp_path):
    # A lent GPU machine may have minutes left: a suite that would start with under 30 s
    # of the budget is reported skipped, and the JSON holds what was done.
    out = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--smoke", "--no-bench", "--budget", "20", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(out.read_text())
    assert [row["status"] for row in summary["suites"]] == [
        "skipped: out of time (--budget)"] * 3
    assert summary["seconds"] < 20
