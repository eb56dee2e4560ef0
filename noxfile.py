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


# session name -> (extra to install, what the session proves)
BACKEND_SESSIONS = {
    "numpy": (None, "Tests on NumPy (the runtime dependency itself, no extra)."),
    "array_api_strict": ("array_api_strict",
                         "Tests on array-api-strict: proof that layers use only the standard."),
    "torch": ("torch", "Tests on PyTorch (CPU build of the pinned version)."),
    "jax": ("jax", "Tests on JAX with 64-bit floats enabled (immutable arrays)."),
    "dask": ("dask", "Tests on Dask: layers must stay lazy (no compute())."),
    "cupy": ("cupy", "Tests on CuPy; skipped where no NVIDIA GPU is present."),
}


def _make_backend_session(backend: str, extra: str | None, doc: str) -> None:
    def run_tests(session: nox.Session) -> None:
        if backend == "cupy" and shutil.which("nvidia-smi") is None:
            session.skip("cupy: no NVIDIA GPU (nvidia-smi not found) on this machine")
        session.install("-e", f".[{','.join(filter(None, ['test', extra]))}]")
        env = {"PORTABLELAYERS_BACKEND": backend}
        if backend == "jax":
            env["JAX_ENABLE_X64"] = "1"
        session.run("pytest", *session.posargs, env=env)

    run_tests.__doc__ = doc
    nox.session(name=backend)(run_tests)


for _backend, (_extra, _doc) in BACKEND_SESSIONS.items():
    _make_backend_session(_backend, _extra, _doc)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
