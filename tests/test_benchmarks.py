"""The benchmark suite runs (``--quick``) and writes the results it promises; no timing checks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASE_KEYS = {
    "name",
    "size",
    "unit",
    "median",
    "min",
    "max",
    "mbps",
    "repeats",
    "values",
    "floor",
    "ratio",
    "target",
    "met",
    "extra",
    "error",
}
OVERHEAD_QUICK_CASES = [
    "overhead/futures/tiny-200",
    "overhead/futures/dict-100KB-20",
    "overhead/dask/tiny-50",
    "overhead/parsl/tiny-50",
]
RAY_QUICK_CASES = [
    "ray/standard/proxy-executor-cow/array-8MB",
    "ray/standard/proxy-executor-readonly/array-8MB",
    "ray/standard/ray-vs-pool/array-8MB",
    "ray/standard/proxy-client/array-8MB",
    "ray/put/file-shm/array-8MB",
]
NEW_QUICK_CASES = [*OVERHEAD_QUICK_CASES, *RAY_QUICK_CASES, "put-floor/file-shm/array-8MB"]
LIBRARY_OBJECTS = {"numpy": "array", "torch": "tensor", "pandas": "frame", "arrow": "table"}
LIBRARY_QUICK_CASES = [
    *(
        f"library/{library}/{against}/{kind}-8MB"
        for library, kind in LIBRARY_OBJECTS.items()
        for against in ("vs-pool", "vs-ray")
    ),
    "library/numpy/get-private/array-8MB",
    "library/torch/get-private/tensor-8MB",
    "library/torch/put/tensor-8MB",
]
CHAIN_VARIANTS = [
    "plain-pool",
    "plain-dask",
    "ray",
    "proxy-executor",
    "proxy-executor-results",
    "proxy-executor-futures",
    "proxy-client-futures",
]
CHAIN_QUICK_CASES = [
    *(
        f"{workload}/{variant}/array-8MB"
        for workload in ("chain", "fanout")
        for variant in CHAIN_VARIANTS
    ),
    "pipeline/proxy-future/array-8MB",
]
STORE_VARIANTS = [variant for variant in CHAIN_VARIANTS if variant.startswith("proxy-")]
_RAY_MISSING = importlib.util.find_spec("ray") is None
EXPECTED_CASES = [
    *(
        f"store/{store}/{operation}/{obj}"
        for store in ("local", "file-shm", "file-tmp", "redis")
        for operation in ("put", "get", "put+get")
        for obj in ("array-1KB", "array-1MB", "dict")
    ),
    "serialize/roundtrip/dict",
    "proxy/create",
    "proxy/first-resolve",
    "proxy/attribute",
    "proxy/len",
    "proxy/add",
    *(f"memory/{store}/array-8MB" for store in ("local", "file-shm", "file-tmp", "redis")),
    "executor/process-pool/file-shm/array-8MB",
    "executor/process-pool/redis/array-8MB",
    "executor/dask/file-shm/array-8MB",
    "executor/dask/redis/array-8MB",
    "prefetch/file-shm/2x-array-8MB",
    "prefetch/redis/2x-array-8MB",
    "zero-copy/process-pool/cow/array-8MB",
    "zero-copy/process-pool/readonly/array-8MB",
    "zero-copy/memory/cow/array-8MB",
    "zero-copy/memory/readonly/array-8MB",
    "zero-copy/dask/vs-scatter/array-8MB",
    "zero-copy/dask/vs-scatter-unhashed/array-8MB",
    "zero-copy/resolve/fresh-process/array-8MB",
    *NEW_QUICK_CASES,
    *LIBRARY_QUICK_CASES,
    *CHAIN_QUICK_CASES,
]


def run_benchmarks(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


def test_list_and_case_filter_as_a_script() -> None:
    done = run_benchmarks("benchmarks/run.py", "--quick", "--list", "--case", "store/redis/*")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names and all(name.startswith("store/redis/") for name in names)
    assert "store/redis/put+get/array-1KB" in names
    assert not any("100MB" in name for name in names)  # quick: small sizes only
    full = run_benchmarks("-m", "benchmarks", "--list")
    assert full.returncode == 0, full.stderr
    assert "store/redis/put+get/array-100MB" in full.stdout
    assert "executor/dask/redis/array-100MB" in full.stdout
    zero_copy = run_benchmarks("-m", "benchmarks", "--list", "--case", "zero-copy/*")
    assert zero_copy.returncode == 0, zero_copy.stderr
    listed = {line.split()[0]: line for line in zero_copy.stdout.splitlines()}
    assert set(listed) == {
        name.replace("array-8MB", "array-100MB") for name in EXPECTED_CASES if "zero-copy" in name
    }
    assert "<= 0.1s and >= 15x faster" in listed["zero-copy/process-pool/cow/array-100MB"]
    assert "< 1ms" in listed["zero-copy/resolve/fresh-process/array-100MB"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_writes_every_case(tmp_path: Path, redis_address: tuple[str, int]) -> None:
    out = tmp_path / "quick.json"
    rst = tmp_path / "table.txt"
    host, port = redis_address
    done = run_benchmarks(
        "-m",
        "benchmarks",
        "--quick",
        "--json",
        str(out),
        "--rst",
        str(rst),
        env={"REDIS_HOST": host, "REDIS_PORT": str(port)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["mode"] == "quick"
    assert {"cpu", "cores", "memory", "python", "packages", "redis_server"} <= set(
        document["machine"]
    )
    cases = {case["name"]: case for case in document["cases"]}
    assert set(EXPECTED_CASES) <= set(cases)
    for case in cases.values():
        assert set(case) >= CASE_KEYS, case["name"]
        assert case["error"] is None, (case["name"], case["error"])
        if case["skipped"] is not None:  # the cases run against Ray, where Ray is not installed
            assert _RAY_MISSING, (case["name"], case["skipped"])
            ray_case = case["name"].startswith("ray/") or "/vs-ray/" in case["name"]
            assert ray_case or case["name"] in CHAIN_QUICK_CASES, case["name"]
            assert "Ray is not installed" in case["skipped"]
            continue
        assert case["repeats"] >= 1 and case["median"] is not None
        assert case["floor"]["name"] and case["floor"]["median"] is not None
        assert case["ratio"] is not None
    assert "submit_s" in cases["executor/dask/redis/array-8MB"]["extra"]
    assert "transfer_s" in cases["prefetch/redis/2x-array-8MB"]["extra"]
    pool = cases["zero-copy/process-pool/cow/array-8MB"]
    assert {"submit_s", "first_submit_s", "tasks_s", "floor_submit_s"} <= set(pool["extra"])
    assert pool["floor"]["name"] == "plain ProcessPoolExecutor"
    assert {"import_s", "unpickle_s"} <= set(
        cases["zero-copy/resolve/fresh-process/array-8MB"]["extra"]
    )
    memory = cases["zero-copy/memory/cow/array-8MB"]
    assert memory["unit"] == "B" and memory["floor"]["median"] == 8 * 2**20
    assert {"worker_anon_peak_bytes", "worker_shmem_peak_bytes", "after_bytes"} <= set(
        memory["extra"]
    )
    assert "floor_scatter_s" in cases["zero-copy/dask/vs-scatter/array-8MB"]["extra"]
    # The printed table and the RST copy carry the same cases.
    assert "store/redis/put+get/array-1KB" in done.stdout
    assert "list-table" in rst.read_text()
    assert "store/redis/put+get/array-1KB" in rst.read_text()


def _hide(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment in which importing ``modules`` fails, as if they were not installed."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for module in modules:
        (hidden / f"{module}.py").write_text(f"raise ImportError('{module} hidden by the test')\n")
    return {"PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}


def test_issue_12_cases_are_listed_with_their_targets() -> None:
    done = run_benchmarks(
        "-m",
        "benchmarks",
        "--list",
        "--case",
        "overhead/*",
        "--case",
        "ray/*",
        "--case",
        "put-floor/*",
    )
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(listed) == {
        "overhead/futures/tiny-2000",
        "overhead/futures/dict-100KB-200",
        "overhead/dask/tiny-500",
        "overhead/parsl/tiny-500",
        *(name.replace("array-8MB", "array-100MB") for name in RAY_QUICK_CASES),
        "put-floor/file-shm/array-100MB",
    }
    assert "<= 1.03x" in listed["overhead/futures/tiny-2000"]
    assert "<= 1.05x" in listed["overhead/futures/dict-100KB-200"]
    assert "<= 1.03x" in listed["overhead/dask/tiny-500"]
    assert "<= 1.03x" in listed["overhead/parsl/tiny-500"]
    assert "<= 1.0x" in listed["ray/standard/proxy-executor-cow/array-100MB"]
    assert "<= 0.8x" in listed["ray/standard/proxy-executor-readonly/array-100MB"]
    assert "<= 2x" in listed["put-floor/file-shm/array-100MB"]
    assert "Ray put + 8 tasks" in listed["ray/standard/proxy-executor-cow/array-100MB"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_issue_12_cases_run_quick_and_ray_cases_skip_without_ray(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = run_benchmarks(
        "-m", "benchmarks", "--quick", "--json", str(out),
        "--case", "overhead/*", "--case", "ray/*", "--case", "put-floor/*",
        env=_hide(tmp_path, "ray"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cases = {case["name"]: case for case in json.loads(out.read_text())["cases"]}
    assert set(cases) == set(NEW_QUICK_CASES)
    for name in RAY_QUICK_CASES:
        assert cases[name]["skipped"] and "Ray is not installed" in cases[name]["skipped"]
        assert cases[name]["error"] is None and cases[name]["met"] is None
    for name in [*OVERHEAD_QUICK_CASES, "put-floor/file-shm/array-8MB"]:
        case = cases[name]
        assert case["error"] is None and case["skipped"] is None, (name, case)
        assert case["median"] is not None and case["floor"]["median"] is not None
        assert case["ratio"] is not None
    assert cases["overhead/futures/tiny-200"]["target"] == "<= 1.03x"
    assert "skipped: Ray is not installed" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_curves_quick_writes_data_and_figures(
    tmp_path: Path, redis_address: tuple[str, int]
) -> None:
    host, port = redis_address
    out = tmp_path / "curves"
    env = {"REDIS_HOST": host, "REDIS_PORT": str(port), **_hide(tmp_path, "ray")}
    done = run_benchmarks("-m", "benchmarks.curves", "--quick", "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out / "curves.json").read_text())
    assert data["ray"] is None and "Ray is not installed" in data["ray_missing"]
    stores = {point["store"] for point in data["size"]["points"]}
    assert stores == {"local", "file-shm", "file-tmp", "redis"}
    assert {p["tasks"] for p in data["tasks"]["points"]} == {1, 10, 50}
    assert {p["argument"] for p in data["tasks"]["points"]} == {"tiny", "array"}
    assert {p["workers"] for p in data["workers"]["points"]} == {1, 2, 4}
    assert data["size_cap"]["top"] <= data["size_cap"]["available_bytes"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no figures" in done.stderr
    else:
        for figure in ("size-time.svg", "size-memory.svg", "tasks.svg", "workers.svg"):
            assert (out / figure).read_text().lstrip().startswith("<?xml"), figure


def test_issue_17_cases_are_listed_with_their_targets() -> None:
    done = run_benchmarks("-m", "benchmarks", "--list", "--case", "library/*")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(listed) == {name.replace("-8MB", "-100MB") for name in LIBRARY_QUICK_CASES}
    assert "<= 1.0x" in listed["library/torch/vs-pool/tensor-100MB"]
    assert "plain ProcessPoolExecutor (spawn)" in listed["library/torch/vs-pool/tensor-100MB"]
    assert "<= 0.5x" in listed["library/torch/vs-ray/tensor-100MB"]
    assert "< 10 MB" in listed["library/torch/get-private/tensor-100MB"]
    assert "<= 2x" in listed["library/torch/put/tensor-100MB"]
    assert "target" not in listed["library/pandas/vs-pool/frame-100MB"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_issue_17_cases_run_quick_and_vs_ray_skips_without_ray(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = run_benchmarks(
        "-m", "benchmarks", "--quick", "--json", str(out), "--case", "library/*",
        env=_hide(tmp_path, "ray"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cases = {case["name"]: case for case in json.loads(out.read_text())["cases"]}
    assert set(cases) == set(LIBRARY_QUICK_CASES)
    for name, case in cases.items():
        assert case["error"] is None, (name, case["error"])
        if "/vs-ray/" in name:
            assert case["skipped"] and "Ray is not installed" in case["skipped"]
            continue
        assert case["skipped"] is None and case["median"] is not None, (name, case)
        assert case["floor"]["median"] is not None and case["ratio"] is not None
    pool = cases["library/torch/vs-pool/tensor-8MB"]
    assert {"submit_s", "first_submit_s", "tasks_s", "floor_submit_s"} <= set(pool["extra"])
    private = cases["library/torch/get-private/tensor-8MB"]
    assert private["unit"] == "B" and private["floor"]["median"] == 8 * 2**20
    assert private["median"] < 2**20  # no copy of the 8 MB (quick runs check no target)
    figure = tmp_path / "libraries.svg"
    drawn = run_benchmarks("-m", "benchmarks.library_figure", str(out), str(figure))
    assert drawn.returncode == 0, drawn.stderr
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in drawn.stderr
    else:
        assert figure.read_text().lstrip().startswith("<?xml")


def test_task_to_task_cases_are_listed_with_their_targets() -> None:
    done = run_benchmarks(
        "-m", "benchmarks", "--list",
        "--case", "chain/*", "--case", "fanout/*", "--case", "pipeline/*",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(listed) == {name.replace("-8MB", "-100MB") for name in CHAIN_QUICK_CASES}
    for workload in ("chain", "fanout"):
        for variant in STORE_VARIANTS:
            line = listed[f"{workload}/{variant}/array-100MB"]
            assert "<= 1.0x, 0 left" in line and "(floor: Ray " in line, line
        assert "target" not in listed[f"{workload}/plain-pool/array-100MB"]
        assert "plain ProcessPoolExecutor" in listed[f"{workload}/ray/array-100MB"]
    assert "<= 0.75x" in listed["pipeline/proxy-future/array-100MB"]
    assert "sequential" in listed["pipeline/proxy-future/array-100MB"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_task_to_task_cases_run_quick_and_count_what_is_left(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = run_benchmarks(
        "-m", "benchmarks", "--quick", "--json", str(out),
        "--case", "chain/*", "--case", "fanout/*", "--case", "pipeline/*",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cases = {case["name"]: case for case in json.loads(out.read_text())["cases"]}
    assert set(cases) == set(CHAIN_QUICK_CASES)
    for name, case in cases.items():
        assert case["error"] is None, (name, case["error"])
        if case["skipped"] is not None:  # chains and fan-outs are measured against Ray
            assert _RAY_MISSING and not name.startswith("pipeline/"), (name, case["skipped"])
            assert "Ray is not installed" in case["skipped"], (name, case["skipped"])
            continue
        assert case["median"] is not None and case["floor"]["median"] is not None, name
        variant = name.split("/")[1]
        if variant in STORE_VARIANTS or name.startswith("pipeline/"):
            assert {"left_objects", "left_bytes", "pool_bytes"} <= set(case["extra"]), name
            # Nothing leaks: every proxying variant leaves the store empty.
            left = case["extra"]["left_objects"], case["extra"]["left_bytes"]
            assert left == (0, 0), (name, case["extra"])
    assert "left_objects" in done.stdout
