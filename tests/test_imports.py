"""``import proxystore`` stays light: no optional or heavy dependency is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["redis", "globus_sdk", "dask", "distributed", "parsl", "numpy"]


def imported_in_fresh_interpreter(statement: str) -> list[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


@pytest.mark.parametrize(
    "statement",
    [
        "import proxystore",
        "import proxystore as ps; ps.store.STORES.REDIS; ps.store.get_store('x')",
        "import proxystore.store, proxystore.proxy, proxystore.factory, proxystore.serialize",
        "import proxystore.store.registry, proxystore.store.base, proxystore.store.remote",
        "import proxystore.store.local, proxystore.store.file, proxystore.store.settings",
        "import proxystore.exceptions, proxystore.store.exceptions",
        "import proxystore.store.backends.memory, proxystore.store.file.backend",
        "import proxystore.store.layers, proxystore.store.description, proxystore.store.codec",
    ],
)
def test_core_imports_no_optional_dependency(statement: str) -> None:
    assert imported_in_fresh_interpreter(statement) == []


def test_local_and_file_stores_work_without_optional_dependencies() -> None:
    statement = (
        "import tempfile, proxystore as ps\n"
        "d = tempfile.mkdtemp()\n"
        "s = ps.store.init_store('file', 'f', store_dir=d)\n"
        "assert ps.proxy.extract(s.proxy({'a': [1]})) == {'a': [1]}\n"
        "s.cleanup()\n"
        "l = ps.store.init_store('local', 'l')\n"
        "assert l.get(l.set('x')) == 'x'"
    )
    assert imported_in_fresh_interpreter(statement) == []


def test_redis_is_imported_only_when_a_redis_store_is_made() -> None:
    statement = (
        "import proxystore as ps\n"
        "assert 'redis' not in sys.modules\n"
        "ps.store.registry.resolve_store_class(ps.store.STORES.REDIS)"
    )
    assert imported_in_fresh_interpreter(statement) == ["redis"]


def test_public_names() -> None:
    import proxystore

    assert isinstance(proxystore.__version__, str)
    for name in proxystore.__all__:
        assert hasattr(proxystore, name)
    from proxystore import proxy, serialize, store

    for module in (proxy, serialize, store):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
