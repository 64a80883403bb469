"""The measuring machinery: cases, their floors, interleaved repetitions, tables and JSON.

A :class:`Case` names what it measures and how to prepare it. Preparing gives a :class:`Trial`:
two callables that each perform one repetition and return the measured value (seconds, or
bytes for memory cases), one for the case and one for its *floor*, the raw backend doing the
same work. :func:`run_case` warms both up, then alternates them (case, floor, floor, case, ...)
so that a machine that slows down or speeds up during the run affects both alike, and reports
medians, extremes and the ratio of the medians.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

MB = 2**20
"""Sizes are binary: 1 KB = 1024 bytes, 1 MB = 2**20 bytes, and MB/s means 2**20 bytes/s."""


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked against a result.

    Attributes:
        text: How the docs and the table state it (``"<= 1.1x"``).
        on: What is compared: ``"ratio"`` (median over floor median), ``"median"`` (the value
            itself) or ``"check"`` (a yes/no fact the trial establishes).
        bound: The limit (ignored for ``"check"``).
        strict: ``<`` instead of ``<=``.
        also: A second condition that must hold too (its own ``text`` is not shown), e.g. an
            absolute time and a ratio to the floor for the same case.
    """

    text: str
    on: str = "ratio"
    bound: float = 0.0
    strict: bool = False
    also: Target | None = None

    def met(self, ratio: float | None, median: float, check: bool | None) -> bool | None:
        """Return whether the target is met (``None`` when it cannot be judged)."""
        first = self._met_alone(ratio, median, check)
        if self.also is None:
            return first
        second = self.also.met(ratio, median, check)
        if first is False or second is False:
            return False
        return None if first is None or second is None else True

    def _met_alone(self, ratio: float | None, median: float, check: bool | None) -> bool | None:
        if self.on == "check":
            return check
        value = ratio if self.on == "ratio" else median
        if value is None or math.isnan(value):
            return None
        return value < self.bound if self.strict else value <= self.bound


HUGE_TMPFS_ENV = "PROXYSTORE_BENCH_HUGE_TMPFS"
"""Names a directory on a tmpfs mounted with huge pages (``huge=within_size`` or ``always``).

When set, the zero-copy cases also run the standard workload with the store there (store kind
``file-huge``). Mounting one needs root, e.g.
``mount -t tmpfs -o size=2g,huge=within_size tmpfs /mnt/huge``.
"""


def huge_tmpfs() -> str | None:
    """The directory named by :data:`HUGE_TMPFS_ENV`, or ``None`` when it is not set.

    Raises:
        RuntimeError: If it is set but is not a directory on a tmpfs mounted with huge pages.
    """
    path = os.environ.get(HUGE_TMPFS_ENV)
    if not path:
        return None
    from proxystore.store.file import mount_of

    mount = mount_of(path) if os.path.isdir(path) else None
    huge = [option for option in (mount[1] if mount else []) if option.startswith("huge=")]
    if mount is None or mount[0] != "tmpfs" or not huge or huge[-1] in ("huge=never", "huge=deny"):
        raise RuntimeError(
            f"{HUGE_TMPFS_ENV}={path!r} must be a directory on a tmpfs mounted with "
            "huge=within_size or huge=always (as root: mount -t tmpfs -o "
            "size=2g,huge=within_size tmpfs DIR)"
        )
    return path


class SkipCase(Exception):
    """Raised by a case's ``prepare`` when the case cannot run here (the message says why).

    The case is reported as skipped, with the reason, and does not fail the run.
    """


@dataclass
class Trial:
    """A prepared case: what one repetition of the case and of its floor does.

    Attributes:
        run: One repetition of the case; returns the measured value.
        floor: One repetition of the floor (``None``: the case has no floor).
        close: Releases what preparing allocated.
        check: Establishes a yes/no fact for a ``"check"`` target.
        extra: Secondary measurements a repetition appends to (median reported per name).
        floor_value: A fixed floor instead of a measured one (e.g. the object's size).
    """

    run: Callable[[], float]
    floor: Callable[[], float] | None = None
    close: Callable[[], None] | None = None
    check: Callable[[], bool] | None = None
    extra: dict[str, list[float]] = field(default_factory=dict)
    floor_value: float | None = None


@dataclass(frozen=True)
class Case:
    """One named benchmark.

    Attributes:
        name: ``group/.../variant``; ``--case`` globs match it.
        prepare: Builds the trial (allocating objects, stores, pools) when the case runs.
        floor_name: What the floor is, in words.
        size: Bytes one repetition moves (for MB/s), when that means something.
        unit: ``"s"`` (seconds) or ``"B"`` (bytes, for memory cases).
        target: The issue's goal for this case, if it has one.
        repeats: Repetitions for this case (``None``: the run's default).
        warmup: Warm-up repetitions for this case (``None``: the run's default).
        needs_redis: Whether the case needs a Redis server.
        throughput: Whether MB/s (size over median) means something for this case.
        explicit: Runs only when a ``--case`` glob selects it (not in a run of every case),
            e.g. the multi-host cases that need root and build a test bed.
    """

    name: str
    prepare: Callable[[], Trial]
    floor_name: str
    size: int | None = None
    unit: str = "s"
    target: Target | None = None
    repeats: int | None = None
    warmup: int | None = None
    needs_redis: bool = False
    throughput: bool = True
    explicit: bool = False


@dataclass
class Result:
    """What :func:`run_case` measured."""

    case: Case
    values: list[float]
    floor_values: list[float]
    extra: dict[str, list[float]]
    check: bool | None
    floor_fixed: float | None = None
    error: str | None = None
    skipped: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def floor_median(self) -> float | None:
        if self.floor_fixed is not None:
            return self.floor_fixed
        return statistics.median(self.floor_values) if self.floor_values else None

    @property
    def ratio(self) -> float | None:
        floor = self.floor_median
        if floor is None or floor <= 0 or not self.values:
            return None
        return self.median / floor

    @property
    def mbps(self) -> float | None:
        case = self.case
        if case.unit != "s" or not case.throughput or not case.size or not self.values:
            return None
        if self.median <= 0:
            return None
        return case.size / MB / self.median

    @property
    def met(self) -> bool | None:
        if self.case.target is None or self.error is not None or self.skipped is not None:
            return None
        return self.case.target.met(self.ratio, self.median, self.check)

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON data."""
        case = self.case
        floor: dict[str, Any] = {"name": case.floor_name, "median": self.floor_median}
        if self.floor_values:
            floor.update(min=min(self.floor_values), max=max(self.floor_values))
            floor["values"] = self.floor_values
        return {
            "name": case.name,
            "size": case.size,
            "unit": case.unit,
            "median": self.median if self.values else None,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "mbps": self.mbps,
            "repeats": len(self.values),
            "values": self.values,
            "floor": floor,
            "ratio": self.ratio,
            "target": None if case.target is None else case.target.text,
            "met": self.met,
            "extra": {name: statistics.median(v) for name, v in self.extra.items() if v},
            "error": self.error,
            "skipped": self.skipped,
        }


def run_case(case: Case, repeats: int, warmup: int) -> Result:
    """Prepare ``case``, warm it up, then measure it and its floor, interleaved."""
    trial = case.prepare()
    values: list[float] = []
    floor_values: list[float] = []
    try:
        for _ in range(warmup):
            trial.run()
            if trial.floor is not None:
                trial.floor()
        for extra in trial.extra.values():
            extra.clear()  # the warm-up's secondary measurements do not count
        for index in range(repeats):
            order: list[tuple[Callable[[], float], list[float]]] = [(trial.run, values)]
            if trial.floor is not None:
                order.append((trial.floor, floor_values))
                if index % 2:
                    order.reverse()
            for measure, into in order:
                into.append(measure())
        check = trial.check() if trial.check is not None else None
    finally:
        if trial.close is not None:
            trial.close()
    return Result(case, values, floor_values, trial.extra, check, trial.floor_value)


def looped(operation: Callable[[], object], min_time: float) -> Callable[[], float]:
    """Time ``operation`` in a loop long enough to measure; return seconds per call.

    The first call calibrates the loop count (it happens during the warm-up).
    """
    count = 0

    def measure() -> float:
        nonlocal count
        if count == 0:
            start = time.perf_counter()
            operation()
            single = time.perf_counter() - start
            count = max(1, min(100_000, int(min_time / max(single, 1e-7))))
            return single
        start = time.perf_counter()
        for _ in range(count):
            operation()
        return (time.perf_counter() - start) / count

    return measure


# -- formatting ----------------------------------------------------------------------------------


def format_size(size: int | None) -> str:
    """``1KB``, ``1MB``, ``100MB``, ``41.2KB``, ...; empty for ``None``."""
    if size is None:
        return ""
    for unit, scale in (("GB", 2**30), ("MB", MB), ("KB", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"


def format_value(value: float | None, unit: str) -> str:
    """A duration (``812ns``, ``3.41us``, ``12.3ms``, ``1.52s``) or a size in MB."""
    if value is None or math.isnan(value):
        return "-"
    if unit == "B":
        return f"{value / MB:.1f}MB"
    for suffix, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.3g}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return f"{value / 1e-9:.0f}ns"


def table_rows(results: Iterable[Result]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table."""
    header = ["case", "size", "median", "min", "max", "MB/s", "floor", "floor median", "ratio"]
    header += ["target", "met"]
    rows = []
    for result in results:
        case = result.case
        if result.error is not None or result.skipped is not None:
            why = (
                f"error: {result.error}"
                if result.error is not None
                else f"skipped: {result.skipped}"
            )
            rows.append([case.name, format_size(case.size), why[:70]])
            rows[-1] += [""] * (len(header) - len(rows[-1]))
            continue
        ratio = result.ratio
        met = result.met
        rows.append(
            [
                case.name,
                format_size(case.size),
                format_value(result.median, case.unit),
                format_value(min(result.values), case.unit),
                format_value(max(result.values), case.unit),
                "" if result.mbps is None else f"{result.mbps:.0f}",
                case.floor_name,
                format_value(result.floor_median, case.unit),
                "" if ratio is None else f"{ratio:.2f}x",
                "" if case.target is None else case.target.text,
                {True: "yes", False: "NO", None: ""}[met],
            ]
        )
    return header, rows


def extra_lines(results: Iterable[Result]) -> list[str]:
    """One line per case with secondary measurements (medians), e.g. time spent in submit."""
    lines = []
    for result in results:
        medians = {name: statistics.median(v) for name, v in result.extra.items() if v}
        if medians:
            shown = ", ".join(
                f"{name} {_format_extra(name, value)}" for name, value in medians.items()
            )
            lines.append(f"{result.case.name}: {shown}")
    return lines


def _format_extra(name: str, value: float) -> str:
    """A secondary measurement: a count (``*_objects``), a size (``*_bytes``) or a duration."""
    if name.endswith("_objects"):
        return f"{value:g}"
    return format_value(value, "B" if name.endswith("_bytes") else "s")


def format_table(results: Iterable[Result]) -> str:
    """The results as a plain-text table, then the secondary measurements."""
    results = list(results)
    header, rows = table_rows(results)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 6, 9}
    lines = []
    for row in [header, ["-" * width for width in widths], *rows]:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    extras = extra_lines(results)
    if extras:
        lines += ["", "secondary measurements (medians):", *(f"  {line}" for line in extras)]
    return "\n".join(lines)


def format_rst(results: list[Result], machine: dict[str, Any], command: str) -> str:
    """The results and the machine as reStructuredText (for the docs page)."""
    header, rows = table_rows(results)
    lines = [
        ".. This file is written by the benchmark suite (--rst); do not edit it by hand.",
        "",
        f"Run on {machine.get('date', '?')} with ``{command}``.",
        "",
    ]
    lines += [f"- **{name}**: {value}" for name, value in machine_lines(machine)]
    lines += ["", ".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append("   * - " + (_rst_cell(row[0]) or "\\ "))
        lines += ["     - " + (_rst_cell(cell) or "\\ ") for cell in row[1:]]
    extras = extra_lines(results)
    if extras:
        lines += ["", "Secondary measurements (medians):", ""]
        lines += [f"- ``{line.split(': ', 1)[0]}``: {line.split(': ', 1)[1]}" for line in extras]
    return "\n".join(lines) + "\n"


def _rst_cell(text: str) -> str:
    return f"``{text}``" if text and ("*" in text or "+" in text or "_" in text) else text


def machine_lines(machine: dict[str, Any]) -> list[tuple[str, str]]:
    """The machine description as (label, value) pairs."""
    labels = [
        ("cpu", "CPU"),
        ("cores", "cores"),
        ("memory", "memory"),
        ("kernel", "kernel"),
        ("python", "Python"),
        ("packages", "packages"),
        ("redis_server", "redis-server"),
        ("file_systems", "file systems"),
        ("commit", "commit"),
    ]
    out = []
    for key, label in labels:
        value = machine.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        if value not in (None, ""):
            out.append((label, str(value)))
    return out


# -- the machine ---------------------------------------------------------------------------------


def machine_info(redis_version: str | None) -> dict[str, Any]:
    """Describe this machine and the software versions the results depend on."""
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory": _mem_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": _versions(
            [
                *("numpy", "redis", "lazy-object-proxy", "dask", "distributed", "cloudpickle"),
                *("torch", "pandas", "pyarrow", "ray"),
            ]
        ),
        "redis_server": redis_version,
        "file_systems": _file_systems(),
        "commit": _commit(),
    }
    return info


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _mem_total() -> str | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return None


def _versions(names: list[str]) -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _file_systems() -> dict[str, str | None]:
    from proxystore.store.file import mount_of

    found = {path: _fs_type(path) for path in ("/dev/shm", "/tmp")}
    huge = huge_tmpfs()
    if huge is not None:
        mount = mount_of(huge)
        options = [o for o in mount[1] if o.startswith("huge=")] if mount else []
        found[huge] = f"tmpfs ({', '.join(options)})"
    return found


def _fs_type(path: str) -> str | None:
    try:
        from proxystore.store.file import file_system_type
    except ImportError:  # pragma: no cover - an older checkout
        return None
    return file_system_type(path)


def _commit() -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [git, "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode == 0:
            dirty = subprocess.run(
                [git, "-C", root, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            return done.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")
    return None


def write_json(path: str, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` (creating its directory)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as out:
        json.dump(document, out, indent=1, default=str)
        out.write("\n")


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """Print ``message`` on stderr while a case runs (progress for long runs)."""
    sys.stderr.write(f"  {message} ...")
    sys.stderr.flush()
    start = time.perf_counter()
    try:
        yield
    finally:
        sys.stderr.write(f" {time.perf_counter() - start:.1f}s\n")
        sys.stderr.flush()
