"""The benchmark suite runs (``--quick``) and writes the results it promises; no timing checks."""

from __future__ import annotations

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
