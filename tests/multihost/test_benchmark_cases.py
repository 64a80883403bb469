"""The multi-host benchmark cases: listed only when selected, and a quick run on the bed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.multihost.testbed import REPO_ROOT, unavailable_reason

CASES = [
    f"multihost/{mode}/array-8MB"
    for mode in ("plain-dask", "scatter-broadcast", "proxy-client", "proxy-client-host-tier")
]


def run_benchmarks(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_HOST", "REDIS_PORT")}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_multihost_cases_run_only_when_selected() -> None:
    everything = run_benchmarks("--quick", "--list")
    assert everything.returncode == 0, everything.stderr
    assert "multihost/" not in everything.stdout
    selected = run_benchmarks("--quick", "--list", "--case", "multihost/*")
    assert selected.returncode == 0, selected.stderr
    assert [line.split()[0] for line in selected.stdout.splitlines()] == CASES
    full = run_benchmarks("--list", "--case", "multihost/*host-tier*")
    assert "target 1 copy/host, < 1x" in full.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_on_the_bed_records_bytes_into_each_host(tmp_path: Path) -> None:
    out = tmp_path / "multihost.json"
    done = run_benchmarks("--quick", "--case", "multihost/*", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    cases = {case["name"]: case for case in json.loads(out.read_text())["cases"]}
    assert set(cases) == set(CASES)
    reason = unavailable_reason()
    if reason is not None:  # every case skipped, with the reason, and the run still succeeds
        assert all(case["skipped"] == reason for case in cases.values())
        return
    size = 8 * 2**20
    for name in CASES[:3]:
        case = cases[name]
        assert case["error"] is None and case["skipped"] is None, case
        assert case["median"] > 0
        for host in ("b", "c"):
            assert case["extra"][f"into_{host}_bytes"] >= 0.9 * size
    plain, proxied = cases[CASES[0]]["extra"], cases[CASES[2]]["extra"]
    for host in ("b", "c"):  # 4 copies (one per task) against at most one per worker process
        assert plain[f"into_{host}_bytes"] >= 0.95 * 4 * size
        assert proxied[f"into_{host}_bytes"] <= 2.2 * size
    assert "floor_into_b_bytes" in proxied
    tier = cases[CASES[3]]
    assert tier["error"] is None and tier["skipped"] is None, tier
    for host in ("b", "c"):  # the host tier: one copy into each host
        assert 0.9 * size <= tier["extra"][f"into_{host}_bytes"] <= 1.2 * size


CLUSTER_CASES = [f"multihost-cluster/fanout-{n}-hosts/array-100MB" for n in (1, 2, 3, 4)]


def test_cluster_fanout_cases_are_listed_only_when_selected() -> None:
    everything = run_benchmarks("--list")
    assert everything.returncode == 0, everything.stderr
    assert "multihost-cluster/" not in everything.stdout
    selected = run_benchmarks("--list", "--case", "multihost-cluster/*")
    assert selected.returncode == 0, selected.stderr
    lines = selected.stdout.splitlines()
    assert [line.split()[0] for line in lines] == CLUSTER_CASES
    targeted = [line.split()[0] for line in lines if "target <= 0.5x, 1 copy/host" in line]
    assert targeted == [CLUSTER_CASES[1], CLUSTER_CASES[3]]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_cluster_fanout_records_one_copy_per_host(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    done = run_benchmarks("--quick", "--case", "multihost-cluster/*", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    cases = {case["name"]: case for case in json.loads(out.read_text())["cases"]}
    names = [f"multihost-cluster/fanout-{n}-hosts/array-8MB" for n in (1, 2)]
    assert set(cases) == set(names)
    reason = unavailable_reason()
    if reason is not None:
        assert all(case["skipped"] == reason for case in cases.values())
        return
    size = 8 * 2**20
    for count, name in enumerate(names, start=1):
        case = cases[name]
        assert case["error"] is None and case["skipped"] is None, case
        extra = case["extra"]
        for host in "defg"[:count]:  # one copy into each worker host, either way
            assert 0.95 * size <= extra[f"into_{host}_bytes"] <= 1.2 * size
            assert 0.95 * size <= extra[f"floor_into_{host}_bytes"] <= 1.2 * size
        for shard in "abc":  # every shard sends its third of every copy
            assert extra[f"out_of_{shard}_bytes"] >= 0.3 * count * size
        assert extra["floor_out_of_a_bytes"] >= 0.95 * count * size  # the single server
