"""Sphinx configuration for batchfsm's docs."""

import batchfsm

project = "batchfsm"
author = "The batchfsm developers"
copyright = "2026, The batchfsm developers"
release = batchfsm.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"batchfsm {release}"
