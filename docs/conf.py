"""Sphinx configuration of the rmsprop_jax documentation (``make docs``)."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rmsprop_jax  # noqa: E402

project = "rmsprop_jax"
author = "rmsprop_jax authors"
copyright = "2026, rmsprop_jax authors"
release = rmsprop_jax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax 3 copied into the site: math renders offline too
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build"]

# MyST: $...$ and $$...$$ math, ::: fences, and anchors for the write-ups' in-page links.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 4
# Harmless for the site, so not errors (every other warning is): the experiments' write-ups are
# plain Markdown read on GitHub too, and some start at a level-2 heading; a shortened JSON
# excerpt ("...") in docs/sweeps.md is highlighted in Pygments' relaxed mode.
suppress_warnings = ["myst.header", "misc.highlighting_failure"]

# API reference from the docstrings (Google style), one page per public name.
autosummary_generate = True
autosummary_imported_members = True
# Signatures show names and defaults; each docstring's Args say what a hyperparameter may be
# (a Python number, an array or a tracer; a learning rate also an optax schedule), which reads
# better than the unions the type aliases expand to.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False

# No network, at build time or reading time: no intersphinx inventories, MathJax served from
# the site itself (sphinx-mathjax-offline).
html_theme = "furo"
html_title = f"rmsprop_jax {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
