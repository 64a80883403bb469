"""Sphinx configuration of the ProxyStore documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W -q -b html docs docs/_build/html
"""

from __future__ import annotations

# autodoc imports the installed package. Install the checkout first (scripts/test.sh runs
# ``pip install -e ".[dev]"``): ``proxystore.integrations`` is mapped from ``integrations/`` by
# the package metadata, so the source tree alone is not importable as one package.
from typing import Any

from sphinx.application import Sphinx

import proxystore

project = "ProxyStore"
author = "ProxyStore developers"
copyright = "ProxyStore developers"
version = release = proxystore.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
html_static_path: list[str] = []

html_theme = "alabaster"
html_title = f"ProxyStore {release}"
html_theme_options = {
    "description": "Pass-by-reference for distributed Python",
    "fixed_sidebar": True,
}

# Unresolved references to third-party types (numpy, redis, ...) are not errors: there is no
# intersphinx (the docs build offline).
nitpicky = False

# -- autodoc and napoleon (Google docstrings) ------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autoclass_content = "class"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# Literal blocks are highlighted as Python when they parse as Python and left plain otherwise
# (the error tree in proxystore.exceptions is drawn with box characters).
highlight_language = "default"


# -- hooks -----------------------------------------------------------------------------------


def _name_proxy_base(app: Sphinx, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show lazy-object-proxy's C proxy class under its public name.

    The C extension reports its class as ``builtins.Proxy``, which Sphinx would render as a
    link from :class:`proxystore.proxy.Proxy` to itself.
    """
    import lazy_object_proxy

    for index, base in enumerate(bases):
        if base is lazy_object_proxy.Proxy:
            bases[index] = "``lazy_object_proxy.Proxy``"


def setup(app: Sphinx) -> None:
    """Connect the hooks above."""
    app.connect("autodoc-process-bases", _name_proxy_base)
