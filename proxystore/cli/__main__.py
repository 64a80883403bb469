"""``python -m proxystore.cli``: the ``proxystore`` command (:func:`proxystore.cli.main`)."""

from __future__ import annotations

import sys

from proxystore.cli import main

if __name__ == "__main__":
    sys.exit(main())
