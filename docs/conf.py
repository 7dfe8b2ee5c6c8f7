"""Sphinx configuration of the hubjax API reference (built in the tests with warnings as errors)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import hubjax

project = "hubjax"
author = "The hubjax developers"
copyright = "2026, The hubjax developers"
release = hubjax.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Signatures without type hints and one Args list per function: the docstrings give every
# shape ("[n, d]"); jaxtyping's hints render as ``Float[jaxlib._jax.Array, 'n d']`` and, with
# "description", as a second Parameters list.
autodoc_typehints = "none"
napoleon_attr_annotations = False  # the same for attributes (``jax.jaxlib._jax.Array``)
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"hubjax {release}"
