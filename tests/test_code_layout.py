"""The package's own layout rule: no module imports another module's private names.

A name shared by modules is public in the module that owns it (a private module such as
`_backend` or `_windows` may hold it, under a public name), so each helper has one obvious
home and renaming a private helper never breaks another module.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import portablelayers

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
PACKAGE = Path(portablelayers.__file__).parent


def private_imports(source):
    """(line, module, name) of every private name imported from a relative module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append((node.lineno, node.module, alias.name))
    return found


def test_the_scan_finds_a_private_import():
    source = ("from .functions import _helper, public\n"
              "from ..x import __version__\n"
              "from ._backend import namespace\n")
    assert private_imports(source) == [(1, "functions", "_helper")]


@pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")
def test_no_module_imports_another_modules_private_names():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name} from {module}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for line, module, name in private_imports(path.read_text(encoding="utf-8"))]
    assert found == []
