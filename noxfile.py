"""Test sessions, one per array backend, each installing only its own extra.

    nox                 # every CPU backend and lint (what .ci/run runs)
    nox -s torch        # one backend
    nox -s cupy         # needs an NVIDIA GPU; skipped elsewhere
    nox -l              # list the sessions
"""

from __future__ import annotations

import shutil

import nox

CPU_BACKENDS = ["numpy", "array_api_strict", "torch", "jax", "dask"]

nox.options.sessions = [*CPU_BACKENDS, "lint"]
nox.options.reuse_existing_virtualenvs = True


def _run_tests(session: nox.Session, backend: str, extra: str | None) -> None:
    extras = ",".join(filter(None, ["test", extra]))
    session.install("-e", f".[{extras}]")
    env = {"PORTABLELAYERS_BACKEND": backend}
    if backend == "jax":
        env["JAX_ENABLE_X64"] = "1"
    session.run("pytest", *session.posargs, env=env)


@nox.session(name="numpy")
def numpy_session(session: nox.Session) -> None:
    """Tests on NumPy (the runtime dependency itself, no extra)."""
    _run_tests(session, "numpy", None)


@nox.session(name="array_api_strict")
def array_api_strict_session(session: nox.Session) -> None:
    """Tests on array-api-strict: proof that layers use only the standard."""
    _run_tests(session, "array_api_strict", "array_api_strict")


@nox.session(name="torch")
def torch_session(session: nox.Session) -> None:
    """Tests on PyTorch (CPU build of the pinned version)."""
    _run_tests(session, "torch", "torch")


@nox.session(name="jax")
def jax_session(session: nox.Session) -> None:
    """Tests on JAX with 64-bit floats enabled (immutable arrays)."""
    _run_tests(session, "jax", "jax")


@nox.session(name="dask")
def dask_session(session: nox.Session) -> None:
    """Tests on Dask: layers must stay lazy (no compute())."""
    _run_tests(session, "dask", "dask")


@nox.session(name="cupy")
def cupy_session(session: nox.Session) -> None:
    """Tests on CuPy; skipped where no NVIDIA GPU is present."""
    if shutil.which("nvidia-smi") is None:
        session.skip("cupy: no NVIDIA GPU (nvidia-smi not found) on this machine")
    _run_tests(session, "cupy", "cupy")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
