"""Test sessions, one per array backend, each installing only its own extra.

    nox                 # every CPU backend and lint (what .ci/run runs)
    nox -s torch        # one backend
    nox -s cupy         # needs an NVIDIA GPU; skipped elsewhere
    nox -l              # list the sessions

The backends, their extras and their sessions' environments come from the package's one
registry, `portablelayers/backends.py` (loaded by path: nox's own environment does not
have the package's dependencies).
"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import nox

_spec = importlib.util.spec_from_file_location(
    "_portablelayers_backends", pathlib.Path(__file__).parent / "portablelayers" / "backends.py")
backends = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = backends  # dataclasses look their module up while building
_spec.loader.exec_module(backends)

nox.options.sessions = [*backends.CPU_BACKENDS, "lint"]
nox.options.reuse_existing_virtualenvs = True


def _cupy_extra(session: nox.Session) -> str:
    """The CuPy extra matching the driver, or a skip naming what to install."""
    if shutil.which("nvidia-smi") is None:
        session.skip("cupy: no NVIDIA GPU (nvidia-smi not found) on this machine")
    printed = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
    try:
        return backends.cupy_extra_for_driver(printed)
    except ValueError as exc:
        session.skip(f"cupy: {exc}")


def _make_backend_session(backend) -> None:
    def run_tests(session: nox.Session) -> None:
        extra = _cupy_extra(session) if backend.name == "cupy" else backend.extra
        session.install("-e", f".[{','.join(filter(None, ['test', extra]))}]")
        env = {"PORTABLELAYERS_BACKEND": backend.name, **backend.env}
        session.run("pytest", *session.posargs, env=env)

    run_tests.__doc__ = backend.doc
    nox.session(name=backend.name)(run_tests)


for _backend in backends.BACKENDS.values():
    _make_backend_session(_backend)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: every page's cells executed, warnings as errors (numpydoc's
    validation included), then every docstring example run as a doctest. HTML in
    docs/_build/html."""
    session.install("-e", ".[docs]")
    env = {"OMP_NUM_THREADS": "1"}
    shutil.rmtree("docs/_build", ignore_errors=True)
    shutil.rmtree("docs/api/generated", ignore_errors=True)
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html",
                *session.posargs, env=env)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--doctest-modules",
                "-o", "doctest_optionflags=NORMALIZE_WHITESPACE", "portablelayers", env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
