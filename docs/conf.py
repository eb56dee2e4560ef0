"""Sphinx configuration of the portablelayers documentation.

Build: ``nox -s docs`` (or ``sphinx-build -W --keep-going -b html docs docs/_build/html``).
Narrative pages are MyST Markdown; ``{code-cell}`` blocks are executed by myst-nb at every
build (nothing is cached), so a broken example fails the build.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["COLUMNS"] = "80"  # argparse wraps --help at the terminal's width: fix it

import portablelayers  # noqa: E402

project = "portablelayers"
author = "the portablelayers authors"
copyright = "the portablelayers authors, MIT licence"
release = version = portablelayers.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_design",
    "sphinx_copybutton",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"
default_role = "literal"  # `name` in a docstring is code, as its authors meant

# --- MyST / myst-nb ------------------------------------------------------------------------
# Maths is rendered by MathJax 3 from its CDN (Sphinx's default). Offline, point mathjax_path at
# a local copy, e.g. -D mathjax_path=file:///usr/share/javascript/mathjax/MathJax.js?config=
# TeX-AMS-MML_HTMLorMML -D myst_update_mathjax=0 (Debian's libjs-mathjax, MathJax 2).
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"          # run every code cell at every build; cache nothing
nb_execution_raise_on_error = True   # a failing cell fails the build
nb_execution_timeout = 180
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (the performance tables) as MyST: tables

# --- autodoc / autosummary / numpydoc ----------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "none"           # the numpydoc sections say the types
numpydoc_show_class_members = False  # the autosummary templates list members instead
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Validation of the public names' docstrings (numpydoc's checks; see docs/api/index.md).
numpydoc_validation_checks = {
    "all",
    "GL01",  # summary may start on the line of the opening quotes
    "ES01",  # an extended summary is not required
    "SA01",  # a See Also section is not required
    "EX01",  # examples: only where they teach something (checked by doctest where present)
    "SS05",  # "Returns ..." in the third person is not required (the book's style)
    "RT02",  # a return value may be described without a name
    "PR09", "RT05",  # description sentences may end without a full stop (tables, lists)
    "SS03",
    "GL02",
    "YD01",
}
# What is not validated (yet): methods and properties (their classes' docstrings document
# them), constants, and the modules and names listed below whose docstrings are still short
# prose (none now). Everything else that the API pages list is checked, and a failing check
# fails the build (-W).
UNCHECKED_MODULES: list[str] = []
UNCHECKED_NAMES: list[str] = []
numpydoc_validation_exclude = {
    r"\.[A-Z][A-Za-z0-9]*\.[a-z_]\w*$",     # Class.method / Class.property
    r"\.[A-Z][A-Z0-9_]+$",                   # CONSTANTS
    *(rf"^portablelayers\.{m}\." for m in UNCHECKED_MODULES),
    *(rf"^portablelayers\.{n}$" for n in UNCHECKED_NAMES),
    r"^portablelayers\.LossLayer$",  # a Protocol: typing gives it (*args, **kwargs)
}


# --- HTML ---------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"portablelayers {version}"
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "tutorial": []}  # pages without subpages: no empty left column
html_show_sourcelink = False


# --- the CLI page: generated from the argparse parser, so it cannot drift ------------------
def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


class CliReference(SphinxDirective):
    """``{cli-reference}``: ``portablelayers --help``, then ``--help`` of every subcommand
    the parser has (a new subcommand appears here without an edit)."""

    def run(self):
        from portablelayers.cli import build_parser

        parser = build_parser()
        out = []
        for title, sub in [("portablelayers", parser),
                           *((f"portablelayers {name}", p)
                             for name, p in _subcommands(parser).items())]:
            section_id = nodes.make_id(title)
            section = nodes.section(ids=[section_id])
            section += nodes.title(title, "", nodes.literal(title, title))
            text = sub.format_help().rstrip()
            section += nodes.literal_block(text, text, language="text")
            out.append(section)
        return out


def setup(app):
    app.add_directive("cli-reference", CliReference)
