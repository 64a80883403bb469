"""Every script in ``examples/`` runs to completion (a new example joins automatically)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert any(path.name == "quickstart.py" for path in EXAMPLES)


@pytest.mark.slow  # each is a fresh interpreter; the engine examples take several seconds
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(
    script: Path, redis_address: tuple[str, int], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    host, port = redis_address
    env = dict(os.environ, REDIS_HOST=host, REDIS_PORT=str(port), TMPDIR=str(tmp_path))
    if "cluster" in script.name:  # a private loopback Redis Cluster, started only for these
        cluster_host, cluster_port = request.getfixturevalue("redis_cluster_address")
        env["REDIS_CLUSTER"] = f"{cluster_host}:{cluster_port}"
    result = subprocess.run(
        [sys.executable, str(script.relative_to(ROOT))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, (
        f"{script.name} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
