"""GlobusEndpoint and GlobusEndpoints: validation, lookup, host matching, dict and JSON forms."""

from __future__ import annotations

import json
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from proxystore.store.globus import GlobusEndpoint, GlobusEndpoints

A = "6a1e1a34-5b3e-4b2b-9a5e-0d7f6c2b1a01"
B = "0c3f2d11-8e4a-4c6f-b1d2-7e9a5b3c4d02"


def endpoint(uuid_: Any = A, path: Any = "/~/ps", local: Any = "/data/ps", regex: Any = "a") -> Any:
    return GlobusEndpoint(uuid_, path, local, regex)


def config() -> dict[str, dict[str, str]]:
    return {
        A: {"endpoint_path": "/~/ps", "local_path": "/home/u/ps", "host_regex": r"login\d+\.a"},
        B: {"endpoint_path": "/projects/ps", "local_path": "~/ps", "host_regex": r"node-.*\.b"},
    }


# -- GlobusEndpoint -------------------------------------------------------------------------


def test_endpoint_fields_and_canonical_uuid() -> None:
    e = GlobusEndpoint(A.upper(), "/~/ps", Path("/data/ps"), re.compile("host-[0-9]+"))
    assert e.uuid == A
    assert e.endpoint_path == "/~/ps"
    assert e.local_path == "/data/ps"
    assert e.host_regex == "host-[0-9]+"
    assert GlobusEndpoint(uuid.UUID(A), "/p", "/l", "h").uuid == A
    assert e.to_dict() == {
        "endpoint_path": "/~/ps",
        "local_path": "/data/ps",
        "host_regex": "host-[0-9]+",
    }


def test_endpoint_local_path_is_not_expanded_here() -> None:
    # "~" belongs to the endpoint's own site: it is expanded there, by the store.
    assert endpoint(local="~/ps").local_path == "~/ps"


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"uuid_": 42}, TypeError, ["uuid", "int"]),
        ({"uuid_": "not-a-uuid"}, ValueError, ["uuid", "not-a-uuid"]),
        ({"path": None}, TypeError, [A, "endpoint_path", "NoneType"]),
        ({"path": ""}, ValueError, [A, "endpoint_path"]),
        ({"local": 3.5}, TypeError, [A, "local_path", "float"]),
        ({"local": ""}, ValueError, [A, "local_path"]),
        ({"local": b"/bytes"}, TypeError, [A, "local_path"]),
        ({"regex": ["a"]}, TypeError, [A, "host_regex", "list"]),
        ({"regex": "(unclosed"}, ValueError, [A, "host_regex", "(unclosed"]),
        ({"regex": re.compile(b"bytes")}, TypeError, [A, "host_regex"]),
    ],
)
def test_endpoint_rejects_bad_fields(kwargs: dict[str, Any], error: type, words: list[str]) -> None:
    with pytest.raises(error) as info:
        endpoint(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_endpoint_is_immutable_hashable_and_pickles() -> None:
    e = endpoint()
    with pytest.raises(AttributeError, match="immutable"):
        e.uuid = B
    assert e == endpoint() and hash(e) == hash(endpoint())
    assert e != endpoint(local="/elsewhere")
    assert pickle.loads(pickle.dumps(e)) == e
    assert A in repr(e)


def test_endpoint_matches_whole_host_name() -> None:
    e = endpoint(regex=r"login\d+")
    assert e.matches("login1") and e.matches("login42")
    assert not e.matches("login1.cluster.edu")  # a prefix match is not enough
    assert not e.matches("xlogin1")


# -- GlobusEndpoints ------------------------------------------------------------------------


def test_endpoints_lookup_iteration_and_len() -> None:
    a, b = endpoint(A), endpoint(B, regex="b")
    endpoints = GlobusEndpoints([a, b])
    assert len(endpoints) == 2
    assert list(endpoints) == [a, b]
    assert endpoints[A] is a and endpoints[B.upper()] is b and endpoints[uuid.UUID(A)] is a
    assert A in endpoints and "junk" not in endpoints and 5 not in endpoints
    with pytest.raises(KeyError, match=str(uuid.UUID(int=1))):
        endpoints[str(uuid.UUID(int=1))]
    with pytest.raises(KeyError, match="junk"):
        endpoints["junk"]


def test_endpoints_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="at least one endpoint"):
        GlobusEndpoints([])


def test_endpoints_reject_duplicate_uuids_in_any_spelling() -> None:
    with pytest.raises(ValueError, match=f"{A} twice"):
        GlobusEndpoints([endpoint(A), endpoint(A.upper(), regex="other")])


def test_endpoints_reject_other_items() -> None:
    with pytest.raises(TypeError, match=r"GlobusEndpoint objects.*dict"):
        GlobusEndpoints([endpoint(), {"uuid": B}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="from_dict"):
        GlobusEndpoints(config())  # type: ignore[arg-type]


def test_get_by_host_full_match_first_wins() -> None:
    endpoints = GlobusEndpoints.from_dict(config())
    assert endpoints.get_by_host("login3.a").uuid == A
    assert endpoints.get_by_host("node-17.b").uuid == B
    catch_all = GlobusEndpoints([endpoint(A, regex="special"), endpoint(B, regex=".*")])
    assert catch_all.get_by_host("special").uuid == A
    assert catch_all.get_by_host("anything").uuid == B


def test_get_by_host_without_match_names_host_and_regexes() -> None:
    endpoints = GlobusEndpoints.from_dict(config())
    with pytest.raises(ValueError) as info:
        endpoints.get_by_host("login3.a.example.org")
    message = str(info.value)
    assert "'login3.a.example.org'" in message
    assert A in message and B in message and "PROXYSTORE_GLOBUS_HOSTNAME" in message


def test_from_dict_round_trip() -> None:
    endpoints = GlobusEndpoints.from_dict(config())
    assert [e.uuid for e in endpoints] == [A, B]
    assert endpoints[B].local_path == "~/ps"
    assert endpoints.to_dict() == config()
    assert GlobusEndpoints.from_dict(endpoints.to_dict()) == endpoints


@pytest.mark.parametrize(
    ("mapping", "error", "words"),
    [
        ([("a", 1)], TypeError, ["mapping", "list"]),
        ({A: "not a mapping"}, TypeError, [A, "str"]),
        (
            {A: {"endpoint_path": "/p", "local_path": "/l"}},
            ValueError,
            [A, "missing", "host_regex"],
        ),
        (
            {A: {"endpoint_path": "/p", "local_path": "/l", "host_regex": "h", "port": 1}},
            ValueError,
            [A, "unknown", "port"],
        ),
        (
            {"bad-uuid": {"endpoint_path": "/p", "local_path": "/l", "host_regex": "h"}},
            ValueError,
            ["bad-uuid"],
        ),
        (
            {A: {"endpoint_path": 7, "local_path": "/l", "host_regex": "h"}},
            TypeError,
            [A, "endpoint_path"],
        ),
        ({}, ValueError, ["at least one"]),
    ],
)
def test_from_dict_errors_name_the_endpoint_and_field(
    mapping: Any, error: type, words: list[str]
) -> None:
    with pytest.raises(error) as info:
        GlobusEndpoints.from_dict(mapping)
    for word in words:
        assert word in str(info.value)


def test_from_json(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(config()), encoding="utf-8")
    assert GlobusEndpoints.from_json(path) == GlobusEndpoints.from_dict(config())
    assert GlobusEndpoints.from_json(str(path)).to_dict() == config()


def test_from_json_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        GlobusEndpoints.from_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.json.*not valid JSON"):
        GlobusEndpoints.from_json(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list.json.*JSON object"):
        GlobusEndpoints.from_json(listed)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({A: {"endpoint_path": "/p"}}), encoding="utf-8")
    with pytest.raises(ValueError, match=f"{A}.*missing.*local_path, host_regex"):
        GlobusEndpoints.from_json(incomplete)


def test_endpoints_equality_and_pickle() -> None:
    endpoints = GlobusEndpoints.from_dict(config())
    assert pickle.loads(pickle.dumps(endpoints)) == endpoints
    assert endpoints != GlobusEndpoints([endpoint()])
    assert "GlobusEndpoints" in repr(endpoints)
