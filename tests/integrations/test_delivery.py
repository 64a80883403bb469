"""What a task body receives for a proxied argument: ``ProxyPolicy.deliver_as`` and ProxyTask."""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import threading
import time
import types
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from proxystore.factory import LambdaFactory, SimpleFactory
from proxystore.integrations.policy import (
    EXACT_TYPES,
    PROXY_SAFE,
    ProxyPolicy,
    delivery_for,
    register_delivery,
    registered_deliveries,
    unregister_delivery,
)
from proxystore.integrations.proxier import (
    ArgumentProxier,
    PickledArgument,
    ProxyRef,
    ProxyTask,
)
from proxystore.proxy import Proxy
from proxystore.store import Store


class Table:
    """A user class: arrives as the object under the default rule (nobody proved it proxy-safe)."""


class SubTable(Table):
    pass


@pytest.mark.parametrize(
    "obj",
    [
        {"a": 1},
        [1, 2],
        (1,),
        {1},
        frozenset({1}),
        "s",
        b"b",
        bytearray(b"b"),
        range(3),
        7,
        2.5,
        collections.OrderedDict(a=1),
        collections.deque([1]),
        collections.namedtuple("Point", "x y")(1, 2),
        slice(1, 2),
    ],
    ids=lambda obj: type(obj).__name__,
)
def test_default_rule_delivers_builtin_kinds_as_objects(obj: Any) -> None:
    assert ProxyPolicy().delivers_object(obj)


@pytest.mark.parametrize("obj", [np.arange(3), np.array(5.0), np.arange(4.0).reshape(2, 2).T])
def test_default_rule_delivers_proxy_safe_kinds_as_proxies(obj: Any) -> None:
    assert not ProxyPolicy().delivers_object(obj)
    assert delivery_for(obj) == "proxy"


@pytest.mark.parametrize("obj", [Table(), SubTable(), object(), np.float64(2.0)])
def test_default_rule_delivers_everything_not_proven_as_objects(obj: Any) -> None:
    assert ProxyPolicy().delivers_object(obj)
    assert delivery_for(obj) == "object"


def test_the_proxy_safe_list_is_registered_by_name() -> None:
    registered = registered_deliveries()
    assert set(PROXY_SAFE) <= set(registered)
    assert all(registered[name] == "proxy" for name in PROXY_SAFE)
    with pytest.raises(TypeError):
        registered["x.Y"] = "proxy"  # type: ignore[index]  # a read-only view


def to_list(obj: Any) -> list[Any]:
    return list(obj.items)


class Frame:
    def __init__(self, n: int) -> None:
        self.items = list(range(n))


class SubFrame(Frame):
    pass


@pytest.fixture
def registry_entries() -> Any:
    """Registrations a test makes, removed afterwards."""
    made: list[Any] = []

    def register(kind: Any, how: Any) -> None:
        register_delivery(kind, how)
        made.append(kind)

    yield register
    for kind in made:
        with contextlib.suppress(KeyError):  # the test removed it itself
            unregister_delivery(kind)


def test_register_delivery_by_type_by_name_and_with_a_resolver(registry_entries: Any) -> None:
    registry_entries(Table, "proxy")
    assert delivery_for(Table()) == "proxy" and delivery_for(SubTable()) == "proxy"
    registry_entries(SubTable, "object")  # the most specific registered class wins
    assert delivery_for(SubTable()) == "object" and delivery_for(Table()) == "proxy"
    registry_entries(f"{__name__}.Frame", to_list)  # by dotted name, resolved lazily
    assert delivery_for(SubFrame(2)) is to_list
    # A per-call deliver_as entry wins over the registry; "auto" there defers to it.
    policy = ProxyPolicy(deliver_as={Table: "object", Frame: "auto"})
    assert policy.delivery(Table()) == "object" and policy.delivery(Frame(1)) is to_list
    assert ProxyPolicy(deliver_as="proxy").delivery(SubTable()) == "proxy"
    unregister_delivery(SubTable)
    assert delivery_for(SubTable()) == "proxy"


def test_a_name_whose_module_is_not_imported_imports_nothing(registry_entries: Any) -> None:
    registry_entries("not_imported_library_xyz.Thing", "proxy")
    assert delivery_for(Frame(1)) == "object"
    assert "not_imported_library_xyz" not in sys.modules
    # ... and an alias resolves once its module is there (pyarrow.Table is pyarrow.lib.Table).
    module = types.ModuleType("not_imported_library_xyz")
    module.Thing = type("Thing", (), {"__module__": "not_imported_library_xyz._impl"})  # type: ignore[attr-defined]
    sys.modules["not_imported_library_xyz"] = module
    try:
        assert delivery_for(module.Thing()) == "proxy"  # type: ignore[attr-defined]
    finally:
        del sys.modules["not_imported_library_xyz"]


def test_a_type_and_its_alias_are_one_registration(registry_entries: Any) -> None:
    module = types.ModuleType("alias_library_xyz")
    impl = type("Frame", (), {"__module__": "alias_library_xyz._impl"})
    module.Frame = impl  # type: ignore[attr-defined]
    sys.modules["alias_library_xyz"] = module
    try:
        registry_entries("alias_library_xyz.Frame", "object")  # the public alias, by name
        registry_entries(impl, "proxy")  # then the class itself: replaces the alias's entry
        assert delivery_for(impl()) == "proxy"
        assert "alias_library_xyz.Frame" not in registered_deliveries()
        unregister_delivery("alias_library_xyz.Frame")  # by the alias: the class's entry goes
        assert delivery_for(impl()) == "object" and not any(
            "alias_library_xyz" in name for name in registered_deliveries()
        )
    finally:
        del sys.modules["alias_library_xyz"]


def test_builtin_kinds_stay_objects_unless_registered_themselves(registry_entries: Any) -> None:
    registry_entries(object, "proxy")  # the rule before issue 17: proxies of everything else
    assert delivery_for(Table()) == "proxy"
    assert (
        delivery_for({"a": 1}) == "object" and delivery_for(collections.OrderedDict()) == "object"
    )
    assert delivery_for(collections.deque()) == "object" and delivery_for(7) == "object"
    registry_entries(dict, "proxy")
    assert delivery_for({"a": 1}) == "proxy"


@pytest.mark.parametrize(
    ("kind", "how", "error"),
    [
        ("Tensor", "proxy", TypeError),  # not a dotted name
        (3, "proxy", TypeError),
        (Table, "lazy", ValueError),
        (Table, None, ValueError),
    ],
)
def test_bad_registrations_are_refused_naming_the_choices(kind: Any, how: Any, error: type) -> None:
    with pytest.raises(error, match="register_delivery"):
        register_delivery(kind, how)


def test_unregistering_what_is_not_registered_names_what_is() -> None:
    with pytest.raises(KeyError, match=r"numpy\.ndarray"):
        unregister_delivery("no.Such")


def test_exact_types_are_types() -> None:
    assert all(isinstance(kind, type) for kind in EXACT_TYPES)


def test_deliver_as_for_every_type_or_per_type() -> None:
    assert ProxyPolicy(deliver_as="proxy").delivers_object({}) is False
    assert ProxyPolicy(deliver_as="object").delivers_object(np.arange(2)) is True
    per_type = ProxyPolicy(deliver_as={dict: "proxy", Table: "proxy", SubTable: "auto"})
    assert not per_type.delivers_object({})
    assert not per_type.delivers_object(collections.OrderedDict())  # subclasses follow
    assert not per_type.delivers_object(Table())
    # "auto" for the most specific type falls back to the next entry up the MRO.
    assert not per_type.delivers_object(SubTable())
    assert per_type.delivers_object([1])  # not named: the default rule
    assert not per_type.delivers_object(np.arange(2))


@pytest.mark.parametrize(
    ("deliver_as", "error"),
    [
        ("resolved", ValueError),
        ({dict: "eager"}, ValueError),
        ({"dict": "proxy"}, TypeError),
        (["proxy"], TypeError),
    ],
)
def test_bad_deliver_as_is_refused_naming_the_choices(deliver_as: Any, error: type) -> None:
    with pytest.raises(error, match="deliver_as"):
        ProxyPolicy(deliver_as=deliver_as)


def test_results_delivered_as_objects_come_back_by_value() -> None:
    policy = ProxyPolicy(threshold=10, proxy_results=True)
    assert not policy.measure_result({"k": "v" * 100}).proxy
    assert policy.measure_result(np.arange(100)).proxy
    forced = ProxyPolicy(threshold=10, proxy_results=True, deliver_as={dict: "proxy"})
    assert forced.measure_result({"k": "v" * 100}).proxy


def test_policy_stays_hashable_and_comparable() -> None:
    a = ProxyPolicy(deliver_as={dict: "proxy"})
    assert a == ProxyPolicy(deliver_as={dict: "proxy"}) and a != ProxyPolicy()
    assert hash(a) == hash(ProxyPolicy(deliver_as={dict: "proxy"}))


# -- the worker side ----------------------------------------------------------------------------


def seen(*args: Any, **kwargs: Any) -> Any:
    return [type(a) for a in args], {k: type(v) for k, v in kwargs.items()}, args, kwargs


def test_task_hands_objects_and_proxies_as_their_refs_say() -> None:
    data = {"a": 1}
    arr = np.arange(3)
    task = ProxyTask(seen).looking_into(frozenset({2}))
    types, kwtypes, args, _ = task(
        ProxyRef(SimpleFactory(data), deliver_object=True),
        ProxyRef(SimpleFactory(arr)),
        [ProxyRef(SimpleFactory(data), deliver_object=True), 5],
        obj=ProxyRef(SimpleFactory(b"xy"), deliver_object=True),
    )
    assert types[0] is dict and args[0] is data
    assert types[1] is Proxy
    assert type(args[2][0]) is dict and args[2][1] == 5
    assert kwtypes == {"obj": bytes}
    # Containers the client did not mark are handed over untouched (no walk on the worker).
    untouched = [ProxyRef(SimpleFactory(data), deliver_object=True)]
    _, _, plain_args, _ = ProxyTask(seen)(untouched)
    assert plain_args[0] is untouched


def test_a_resolver_turns_the_object_into_what_the_body_receives() -> None:
    frame = Frame(3)
    ref = ProxyRef(SimpleFactory(frame), deliver_object=to_list)
    assert "resolver" in repr(ref) and pickle.loads(pickle.dumps(ref)).deliver_object is to_list
    types_, _, args, _ = ProxyTask(seen)(ref, ProxyRef(SimpleFactory(frame), deliver_object=True))
    assert args[0] == [0, 1, 2] and types_[0] is list
    assert args[1] is frame


def test_proxier_sends_the_policy_delivery_with_the_reference(
    store_factory: Any, registry_entries: Any
) -> None:
    registry_entries(Frame, to_list)
    store: Store = store_factory("file")
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="test")
    args, _, lease = proxier.carry_out((Frame(1_000), Table(), np.arange(1_000.0)), {})
    try:
        assert type(args[0]) is ProxyRef and args[0].deliver_object is to_list
        assert type(args[1]) is not ProxyRef  # small: by value
        assert issubclass(type(args[2]), Proxy)
        _, _, got, _ = ProxyTask(seen)(*args)
        assert got[0] == list(range(1_000))
    finally:
        proxier.release(lease)


class SlowResolves:
    """Records when each factory's fetch starts and ends (a fetch takes ``seconds``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.events: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()

    def fetch(self, name: str) -> dict[str, str]:
        with self.lock:
            self.events.append(("start", name, time.monotonic()))
        time.sleep(self.seconds)
        with self.lock:
            self.events.append(("end", name, time.monotonic()))
        return {"name": name}


def test_every_fetch_starts_before_the_first_object_is_waited_for() -> None:
    slow = SlowResolves(0.2)
    refs = [ProxyRef(LambdaFactory(slow.fetch, name), deliver_object=True) for name in "abc"]
    _, _, args, _ = ProxyTask(seen)(*refs)
    assert [a["name"] for a in args] == ["a", "b", "c"]
    starts = [t for what, _, t in slow.events if what == "start"]
    first_end = min(t for what, _, t in slow.events if what == "end")
    assert len(starts) == 3 and max(starts) < first_end, slow.events


def test_without_prefetch_objects_are_still_delivered() -> None:
    slow = SlowResolves(0.0)
    ref = ProxyRef(LambdaFactory(slow.fetch, "x"), deliver_object=True)
    types, _, _, _ = ProxyTask(seen, prefetch=False)(ref)
    assert types == [dict]


def test_proxier_marks_object_kinds_and_stores_big_containers_whole(
    store_factory: Any,
) -> None:
    store: Store = store_factory("file")
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="test")
    big_dict = {f"k{i}": i for i in range(500)}
    small_items_big_list = [np.arange(i, i + 20.0) for i in range(50)]
    big_array = np.arange(1_000.0)
    args, _, lease = proxier.carry_out((big_dict, small_items_big_list, big_array), {})
    try:
        assert type(args[0]) is ProxyRef and args[0].deliver_object
        assert type(args[1]) is ProxyRef and args[1].deliver_object
        assert issubclass(type(args[2]), Proxy)  # arrays stay proxies
        # A container with large items *and* large remainder is stored whole: the worker gets
        # the very structure back, never proxies nested two levels down.
        mixed = [big_array, *small_items_big_list]
        margs, _, mlease = proxier.carry_out((mixed,), {})
        assert type(margs[0]) is ProxyRef and margs[0].deliver_object
        _, _, got, _ = ProxyTask(seen)(*margs)
        assert type(got[0]) is list and all(type(a) is np.ndarray for a in got[0])
        assert np.array_equal(got[0][0], big_array)
        proxier.release(mlease)
        # ... while a list whose remainder is small travels by value with proxied items.
        plan = proxier.plan(([big_array, 1],), {})
        largs, _, llease = proxier.carry_out(([big_array, 1],), {}, plan)
        assert type(largs[0]) is list and issubclass(type(largs[0][0]), Proxy)
        assert plan.nested == {0}  # the worker is told to look into it
        proxier.release(llease)
    finally:
        proxier.release(lease)
    assert proxier.in_use() == {}


# -- below the threshold: pickled once, shipped as those bytes ------------------------------------


def test_small_arguments_travel_as_the_bytes_pickled_to_measure_them(store_factory: Any) -> None:
    store: Store = store_factory("file")
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=100_000), owner="test")
    small = {f"k{i}": float(i) for i in range(100)}
    plan = proxier.plan((small, [1.0, "x"]), {"n": 5, "s": "text"})
    args, kwargs, lease = proxier.carry_out((small, [1.0, "x"]), {"n": 5, "s": "text"}, plan)
    assert type(args[0]) is PickledArgument and type(args[1]) is PickledArgument
    assert kwargs == {"n": 5, "s": "text"}  # known-size and scalar arguments as they are
    assert lease.keys == [] and plan.nested == frozenset()
    assert pickle.loads(pickle.dumps(args[0])) == small  # the engine's pickling unwraps it
    _, _, received, _ = ProxyTask(seen)(*args)  # an engine that did not pickle
    assert received == (small, [1.0, "x"]) and type(received[0]) is dict


def test_in_process_engines_get_the_objects_themselves(store_factory: Any) -> None:
    store: Store = store_factory("file")
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=100_000), owner="t", pickling="never")
    small = {"a": [1, 2]}
    args, _, _ = proxier.carry_out((small,), {})
    assert args[0] is small


def test_containers_holding_futures_are_left_for_the_engine(store_factory: Any) -> None:
    store: Store = store_factory("file")
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="test")
    future: Future[int] = Future()
    deep = [[future, 2], 3]
    args, _, lease = proxier.carry_out((deep, {"f": future}), {})
    assert args[0] == deep and args[0][0] is deep[0]  # the inner list, futures and all
    assert args[1]["f"] is future
    assert lease.keys == []
    # ... even when large: the large items go by proxy, the futures stay where they were.
    big_with_future = [np.arange(1_000.0), [future]]
    plan = proxier.plan((big_with_future,), {})
    args, _, lease = proxier.carry_out((big_with_future,), {}, plan)
    assert issubclass(type(args[0][0]), Proxy) and args[0][1][0] is future
    assert plan.nested == {0}
    proxier.release(lease)
