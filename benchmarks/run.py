"""Run ProxyStore's benchmarks: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

Examples::

    python -m benchmarks --list                      # the cases, their floors and targets
    python -m benchmarks --quick                     # a short run (small sizes, few repeats)
    python -m benchmarks --case 'store/redis/*'      # only some cases (shell-style globs)
    python -m benchmarks --rst docs/benchmarks-full.txt   # also write the docs' table
    python -m benchmarks --case 'multihost/*'        # across hosts on the test bed (root)
    python -m benchmarks --case 'multihost-cluster/*'  # one Redis vs a 3-shard cluster (root)
    python -m benchmarks.curves                      # cost against size, tasks, workers (SVG)

Every case runs against its floor in the same run, interleaved, and the table shows the
ratio of their medians. Results go to ``benchmarks/results/latest.json`` unless ``--json``
says otherwise. A Redis server is needed for the Redis cases: REDIS_HOST/REDIS_PORT, or else
a private ``redis-server`` started on a free port for the run and shut down after it. The multi-host
cases (:mod:`benchmarks.multihost_cases`) run only when ``--case`` selects them. The Ray cases
(:mod:`benchmarks.ray_cases`) need the ``bench`` extra and are reported as skipped without it;
so are the data-library cases (:mod:`benchmarks.library_cases`) without their library.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
import traceback
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import (
    chain_cases,
    executor_cases,
    graph_cases,
    library_cases,
    memory_cases,
    multihost_cases,
    multihost_cluster_cases,
    overhead_cases,
    proxy_cases,
    ray_cases,
    store_cases,
    zero_copy_cases,
)
from benchmarks.context import Context
from benchmarks.harness import (
    Case,
    Result,
    SkipCase,
    format_rst,
    format_table,
    machine_info,
    run_case,
    status,
    write_json,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT_JSON = os.path.join(RESULTS, "latest.json")


def all_cases(ctx: Context) -> list[Case]:
    """Every case of this run, in the order they run."""
    return [
        *store_cases.cases(ctx),
        *proxy_cases.cases(ctx),
        *memory_cases.cases(ctx),
        *zero_copy_cases.pool_cases(ctx),  # forked pools before Dask starts its threads
        *overhead_cases.pool_cases(ctx),
        *executor_cases.cases(ctx),
        *graph_cases.cases(ctx),
        *zero_copy_cases.other_cases(ctx),
        *overhead_cases.other_cases(ctx),
        *ray_cases.cases(ctx),  # Ray starts last, once every pool is forked
        *chain_cases.cases(ctx),  # spawned pools, Dask and Ray (task-to-task data)
        *library_cases.cases(ctx),  # imports torch & co. (spawned pools): after every fork
        *multihost_cases.cases(ctx),  # explicit: only with --case 'multihost/*'
        *multihost_cluster_cases.cases(ctx),  # explicit: --case 'multihost-cluster/*'
    ]


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """The cases whose names match any of ``patterns``.

    Without patterns: every case except the explicit ones (``Case.explicit``).
    """
    if not patterns:
        return [case for case in cases if not case.explicit]
    return [case for case in cases if any(fnmatch.fnmatchcase(case.name, p) for p in patterns)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="ProxyStore benchmarks: every case against its raw floor, in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument(
        "--case",
        action="append",
        metavar="GLOB",
        help="run only cases matching this glob (repeatable), e.g. 'store/redis/*'",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--json", default=DEFAULT_JSON, metavar="PATH", help=f"results file ({DEFAULT_JSON})"
    )
    parser.add_argument("--rst", metavar="PATH", help="also write the table as reStructuredText")
    parser.add_argument("--repeats", type=int, help="repetitions per case (default 9; quick 3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up repetitions (default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases; print the table; write the JSON (and RST). Returns 0 or 1."""
    args = parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    if repeats < 1 or args.warmup < 1:
        raise SystemExit("--repeats and --warmup must be at least 1")
    with Context(quick=args.quick) as ctx:
        cases = select(all_cases(ctx), args.case)
        if args.list:
            for case in cases:
                target = f"  target {case.target.text}" if case.target else ""
                print(f"{case.name}  (floor: {case.floor_name}){target}")
            return 0
        if not cases:
            print(f"no case matches {args.case}", file=sys.stderr)
            return 1
        if any(case.needs_redis for case in cases):
            ctx.redis_address()  # start the server before timing anything
        mode = "quick" if args.quick else "full"
        print(f"running {len(cases)} cases ({mode}, {repeats} repeats)", file=sys.stderr)
        started = time.perf_counter()
        results = []
        for case in cases:
            with status(case.name):
                results.append(_run(case, repeats, args.warmup))
        elapsed = time.perf_counter() - started
        machine = machine_info(ctx.redis_version)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    document: dict[str, Any] = {
        "schema": 1,
        "mode": mode,
        "command": command.strip(),
        "repeats": repeats,
        "warmup": args.warmup,
        "seconds": elapsed,
        "machine": machine,
        "cases": [result.to_json() for result in results],
    }
    print(format_table(results))
    write_json(args.json, document)
    print(f"\nwrote {args.json} ({elapsed:.0f}s)", file=sys.stderr)
    if args.rst:
        with open(args.rst, "w") as out:
            out.write(format_rst(results, machine, command.strip()))
        print(f"wrote {args.rst}", file=sys.stderr)
    return 1 if any(result.error is not None for result in results) else 0


def _run(case: Case, repeats: int, warmup: int) -> Result:
    try:
        return run_case(
            case,
            case.repeats if case.repeats is not None else repeats,
            case.warmup if case.warmup is not None else warmup,
        )
    except SkipCase as exc:
        print(f"\n  skipped {case.name}: {exc}", file=sys.stderr)
        return Result(case, [], [], {}, None, skipped=str(exc))
    except Exception as exc:  # one broken case must not lose the others' results
        traceback.print_exc()
        return Result(case, [], [], {}, None, error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
