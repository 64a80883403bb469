"""Every package of the source tree is in the distribution (a wheel install must import all)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {path: name for name, path in config["package-dir"].items()}
    found = set()
    for init in ROOT.glob("**/__init__.py"):
        folder = init.parent.relative_to(ROOT)
        top = folder.parts[0]
        if top not in mapped:
            continue
        found.add(".".join((mapped[top], *folder.parts[1:])))
    assert found == listed, f"packages in the tree but not in pyproject: {found - listed}"
