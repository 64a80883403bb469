"""One object to every worker host at once: the fan-out of the cluster benchmark and tests.

On each worker host a resolver process (``python -m tests.multihost.fanout``) reads a
pickled ``(warm_up, proxy)`` pair on stdin, resolves the small warm-up proxy (which re-creates
the store and opens its connections), says ``ready``, waits for ``go``, then resolves the
large proxy (through the host tier, if the store has one) and prints what it got and how long
it took. :func:`fan_out` starts one resolver per host, waits until all are ready, sends
``go`` to all at once and measures until the last one is done. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FanOut", "fan_out"]


@dataclass
class FanOut:
    """The outcome of one fan-out.

    Attributes:
        seconds: From ``go`` to the last host's answer.
        per_host: Each host's own resolve time (seconds), by host name.
        sums: The sum of the array each host resolved, by host name.
        traffic: Bytes into and out of every host of the bed from ``go`` to the end.
    """

    seconds: float
    per_host: dict[str, float]
    sums: dict[str, float]
    traffic: Any


def _readline(process: subprocess.Popen[bytes], deadline: float, what: str) -> str:
    assert process.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what}: no answer in time")
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            line = process.stdout.readline()
            if not line:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"{what}: exited with {process.wait()}: {err[-3000:]}")
            return line.decode().strip()


def fan_out(bed: Any, hosts: Sequence[str], warm: Any, proxy: Any, timeout: float = 300) -> FanOut:
    """Resolve ``proxy`` on every host of ``hosts`` at the same moment (see the module)."""
    payload = pickle.dumps((warm, proxy))
    deadline = time.monotonic() + timeout
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in hosts:
            host = bed[name]
            processes[name] = subprocess.Popen(
                host.wrap([sys.executable, "-m", "tests.multihost.fanout"]),
                env=host.env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        for process in processes.values():
            assert process.stdin is not None
            process.stdin.write(len(payload).to_bytes(8, "little") + payload)
            process.stdin.flush()
        for name, process in processes.items():
            line = _readline(process, deadline, f"host {name}: resolver")
            if line != "ready":
                raise RuntimeError(f"host {name}: resolver said {line!r}")
        with bed.traffic() as seen:
            start = time.perf_counter()
            for process in processes.values():
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                process.stdin.flush()
            answers = {
                name: json.loads(_readline(process, deadline, f"host {name}: resolver"))
                for name, process in processes.items()
            }
            seconds = time.perf_counter() - start
        return FanOut(
            seconds,
            {name: answer["seconds"] for name, answer in answers.items()},
            {name: answer["sum"] for name, answer in answers.items()},
            seen,
        )
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def _main() -> None:
    import numpy as np

    from proxystore.proxy import extract

    size = int.from_bytes(sys.stdin.buffer.read(8), "little")
    warm, proxy = pickle.loads(sys.stdin.buffer.read(size))
    float(np.sum(extract(warm)))
    print("ready", flush=True)
    if sys.stdin.buffer.readline().strip() != b"go":
        raise SystemExit("expected go")
    start = time.perf_counter()
    value = extract(proxy)
    total = float(np.sum(value))
    print(json.dumps({"seconds": time.perf_counter() - start, "sum": total}), flush=True)


if __name__ == "__main__":
    _main()
