"""Draw issue 17's figure from a run of the data-library cases (:mod:`benchmarks.library_cases`).

::

    python -m benchmarks --case 'library/*' --json /tmp/library.json
    python -m benchmarks.library_figure /tmp/library.json docs/_static/benchmarks/libraries.svg

One group of bars per library (numpy, torch, pandas, Arrow): the standard workload's median
time with the plain pool, with Ray and through ``ProxyExecutor`` (from the ``vs-pool`` and
``vs-ray`` cases: the figure shows both of ours, each measured against its floor). Without
matplotlib (the ``bench`` extra) nothing is drawn and the reason is printed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.library_cases import LIBRARIES

SERIES = [
    ("plain pool", "vs-pool", "floor", "0.3"),
    ("Ray", "vs-ray", "floor", "C4"),
    ("ProxyExecutor (vs pool run)", "vs-pool", "case", "C1"),
    ("ProxyExecutor (vs Ray run)", "vs-ray", "case", "C3"),
]


def medians(document: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{series: {library: median seconds or None}}`` from a results document."""
    cases = {case["name"].rsplit("/", 1)[0]: case for case in document["cases"]}
    found: dict[str, dict[str, float | None]] = {}
    for label, variant, side, _ in SERIES:
        row: dict[str, float | None] = {}
        for library in LIBRARIES:
            case = cases.get(f"library/{library}/{variant}")
            value = None
            if case is not None and not case.get("skipped") and not case.get("error"):
                value = case["median"] if side == "case" else case["floor"]["median"]
            row[library] = value
        found[label] = row
    return found


def draw(document: dict[str, Any], path: str) -> bool:
    """Draw the figure into ``path`` (SVG); ``False`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (python -m pip install -e '.[bench]')", file=sys.stderr)
        return False
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "proxystore", "font.size": 9})
    values = medians(document)
    fig, axis = plt.subplots(figsize=(7.5, 3.9))
    width = 0.8 / len(SERIES)
    for index, (label, _, _, color) in enumerate(SERIES):
        xs, ys = [], []
        for position, library in enumerate(LIBRARIES):
            value = values[label][library]
            if value is not None:
                xs.append(position + (index - (len(SERIES) - 1) / 2) * width)
                ys.append(value)
        axis.bar(xs, ys, width, label=label, color=color)
    axis.set_yscale("log")
    axis.set_xticks(range(len(LIBRARIES)), ["numpy", "torch", "pandas", "Arrow"])
    axis.set_ylabel("8 tasks, one 100 MiB object (s, log)")
    machine = document.get("machine", {})
    axis.set_title(
        f"Standard workload by library ({machine.get('cores')} cores, shared machine)",
        fontsize=9,
    )
    axis.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    axis.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.library_figure RESULTS.json OUT.svg``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.library_figure RESULTS.json OUT.svg", file=sys.stderr)
        return 2
    with open(args[0]) as source:
        document = json.load(source)
    if draw(document, args[1]):
        print(f"wrote {args[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
