"""The ``python`` code blocks of the guide pages run as written (each in a fresh namespace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_spec_examples import code_blocks

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["writing-a-backend.rst", "security.rst"]


def _blocks() -> list[tuple[str, int, str]]:
    return [
        (page, line, code)
        for page in PAGES
        for line, code in code_blocks((DOCS / page).read_text(encoding="utf-8"))
    ]


@pytest.mark.parametrize(
    ("page", "line", "code"), _blocks(), ids=[f"{p}:{n}" for p, n, _ in _blocks()]
)
def test_guide_code_block_runs(page: str, line: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.replace('-', '_')}_{line}"}
    exec(compile(code, f"{page}:{line}", "exec"), namespace)


def test_guide_has_examples() -> None:
    assert len(_blocks()) >= 2
