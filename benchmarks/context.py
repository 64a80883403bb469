"""Resources the cases share: a private Redis server, store directories, stores, engines.

Everything is created on first use and released when the run ends (also on Ctrl-C): the
Redis server is shut down, directories are removed, pools and clusters are closed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, TypeVar

from benchmarks.harness import SkipCase, huge_tmpfs
from proxystore.store import Store, init_store, unregister_store

T = TypeVar("T")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RAY_MISSING = "Ray is not installed (python -m pip install -e '.[bench]')"
"""Why the Ray cases skip where Ray cannot be imported."""

STORE_DIRS = {"file-shm": "/dev/shm", "file-tmp": "/tmp"}
"""Where each file store keeps its files."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Context:
    """What a run shares between its cases.

    Args:
        quick: The run is a ``--quick`` one (cases pick small sizes and short loops).
    """

    def __init__(self, *, quick: bool) -> None:
        self.quick = quick
        self.exit = contextlib.ExitStack()
        self._resources: dict[str, Any] = {}
        self.redis_version: str | None = None
        self.run_id = uuid.uuid4().hex[:8]

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.exit.close()

    @property
    def min_time(self) -> float:
        """Shortest duration of one timed repetition of a fast operation (loops repeat it)."""
        return 0.005 if self.quick else 0.05

    def resource(self, name: str, make: Callable[[], T]) -> T:
        """Return the shared resource ``name``, making it on first use."""
        if name not in self._resources:
            self._resources[name] = make()
        value: T = self._resources[name]
        return value

    # -- Redis -----------------------------------------------------------------------------------

    def redis_address(self) -> tuple[str, int]:
        """``(host, port)`` of REDIS_HOST/REDIS_PORT, or of a private server started now."""
        return self.resource("redis-address", self._start_redis)

    def _start_redis(self) -> tuple[str, int]:
        host, port = os.environ.get("REDIS_HOST"), os.environ.get("REDIS_PORT")
        address = (host, int(port)) if host and port else self._private_redis()
        self.redis_version = self._redis_server_version(address)
        return address

    def _private_redis(self) -> tuple[str, int]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "the Redis cases need redis-server on PATH (Debian package redis-server), or "
                "REDIS_HOST/REDIS_PORT pointing at a server"
            )
        workdir = tempfile.mkdtemp(prefix="proxystore-bench-redis-")
        self.exit.callback(shutil.rmtree, workdir, ignore_errors=True)
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", workdir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.exit.callback(_stop, process)
        deadline = time.monotonic() + 20
        while not _answers("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}")
            time.sleep(0.05)
        return "127.0.0.1", port

    @staticmethod
    def _redis_server_version(address: tuple[str, int]) -> str | None:
        import redis

        client: redis.Redis[bytes] = redis.Redis(*address)
        try:
            return str(client.info("server").get("redis_version"))
        except redis.exceptions.RedisError:
            return None
        finally:
            client.close()

    def redis_py(self) -> Any:
        """A plain redis-py client on the benchmark server (the floor of RedisStore)."""

        def make() -> Any:
            import redis

            client = redis.Redis(*self.redis_address())
            self.exit.callback(client.close)
            return client

        return self.resource("redis-py", make)

    # -- directories and stores ------------------------------------------------------------------

    def directory(self, kind: str) -> str:
        """A private directory for ``kind``, removed at the end.

        ``file-shm`` and ``file-tmp`` are under :data:`STORE_DIRS`; ``file-huge`` is under the
        directory named by :data:`~benchmarks.harness.HUGE_TMPFS_ENV`.
        """

        def make() -> str:
            base = huge_tmpfs() if kind == "file-huge" else STORE_DIRS[kind]
            path = tempfile.mkdtemp(prefix=f"proxystore-bench-{kind}-", dir=base)
            self.exit.callback(shutil.rmtree, path, ignore_errors=True)
            return path

        return self.resource(f"dir:{kind}", make)

    def store_kwargs(self, kind: str) -> tuple[str, dict[str, Any]]:
        """Store type and constructor arguments for a store of ``kind``."""
        if kind == "local":
            return "local", {}
        if kind in STORE_DIRS or kind == "file-huge":
            return "file", {"store_dir": os.path.join(self.directory(kind), "store")}
        if kind == "redis":
            host, port = self.redis_address()
            return "redis", {"hostname": host, "port": port}
        raise ValueError(f"unknown store kind {kind!r}")

    def store(
        self, kind: str, *, cache_size: int = 0, purpose: str = "bench", **options: Any
    ) -> Store:
        """A registered store of ``kind`` (unregistered and cleaned up at the end).

        Args:
            kind: ``local``, ``file-shm``, ``file-tmp``, ``file-huge`` or ``redis``.
            cache_size: The store's cache size (remote stores only).
            purpose: Names the store; stores of different purposes are different stores.
            options: Further constructor arguments (e.g. ``readonly=True`` for a FileStore).
        """

        def make() -> Store:
            store_type, kwargs = self.store_kwargs(kind)
            if store_type != "local":
                kwargs["cache_size"] = cache_size
            kwargs.update(options)
            name = f"{purpose}-{kind}-{self.run_id}"
            store = init_store(store_type, name, **kwargs)
            self.exit.callback(unregister_store, name)
            self.exit.callback(store.cleanup)
            return store

        described = ",".join(f"{key}={value!r}" for key, value in sorted(options.items()))
        return self.resource(f"store:{purpose}:{kind}:{cache_size}:{described}", make)

    # -- engines ---------------------------------------------------------------------------------

    def process_pool(
        self, name: str, workers: int, *, method: str | None = None
    ) -> ProcessPoolExecutor:
        """A process pool, shut down at the end.

        Args:
            name: Names the pool; pools of different names are different pools.
            workers: Worker processes.
            method: The start method (default: fork where available), e.g. ``"spawn"``.
        """

        def make() -> ProcessPoolExecutor:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            chosen = method or ("fork" if "fork" in methods else None)
            context = multiprocessing.get_context(chosen)
            pool = ProcessPoolExecutor(workers, mp_context=context)
            self.exit.callback(pool.shutdown, wait=True, cancel_futures=True)
            return pool

        return self.resource(f"pool:{name}:{workers}:{method or 'default'}", make)

    def dask_client(self, workers: int) -> Any:
        """A Dask client on a LocalCluster of ``workers`` single-threaded worker processes."""

        def make() -> Any:
            import dask
            from distributed import Client, LocalCluster

            dask.config.set({"distributed.admin.large-graph-warning-threshold": "10GB"})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "port 8787 is in use" (no dashboard)
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    memory_limit=0,
                    silence_logs=50,
                )
                client = Client(cluster)
            self.exit.callback(cluster.close)
            self.exit.callback(client.close)
            return client

        return self.resource(f"dask:{workers}", make)

    def ray(self, cpus: int = 2) -> Any:
        """The ``ray`` module, started once per run (local, loopback only), shut down at the end.

        Ray runs with ``cpus`` CPUs (2: 2 worker processes for tasks of one CPU; the first call
        decides), no dashboard, no usage statistics (``RAY_USAGE_STATS_ENABLED=0``) and every
        address on ``127.0.0.1`` (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, else Ray swaps a
        loopback node address for a routable one): its servers listen on the loopback
        interface only. Its workers import the benchmark module through ``PYTHONPATH``.

        Raises:
            SkipCase: If Ray is not installed.
        """

        def make() -> Any:
            # Before Ray is imported (it reads them then), and inherited by its processes: no
            # usage statistics sent anywhere, and 127.0.0.1 kept as the node's address. Without
            # the second, Ray replaces a loopback _node_ip_address by the machine's routable
            # address and its servers listen on every interface.
            os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            try:
                import ray
            except ImportError as exc:
                raise SkipCase(RAY_MISSING) from exc
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            import logging

            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                object_store_memory=min(4 * 2**30, _shm_free() // 2),
                log_to_driver=False,
                logging_level=logging.ERROR,
                namespace=f"proxystore-bench-{self.run_id}",
            )
            self.exit.callback(ray.shutdown)
            return ray

        return self.resource("ray", make)


def _shm_free() -> int:
    stat = os.statvfs("/dev/shm")
    return stat.f_bavail * stat.f_frsize


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
