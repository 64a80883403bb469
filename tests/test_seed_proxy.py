"""The seed version's proxy behaviour (ProxyStore 0.3.3's unit tests), checked against ours.

The project started from ProxyStore 0.3.3; its proxy tests describe behaviour users of that
version rely on: proxies of arrays, of lists of arrays and of strings, with ``SimpleFactory``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from proxystore.factory import SimpleFactory
from proxystore.proxy import Proxy, extract, get_key, is_resolved, resolve, resolve_async


def test_a_proxy_needs_a_factory() -> None:
    with pytest.raises(TypeError):
        Proxy("not a factory")  # type: ignore[arg-type]


def test_proxy_of_an_array_pickles_resolves_and_acts_as_the_array() -> None:
    x = np.array([1, 2, 3])
    factory = SimpleFactory(x)
    p = Proxy(factory)
    assert not is_resolved(p)
    assert get_key(p) is None  # a SimpleFactory has no store key

    p = pickle.loads(pickle.dumps(p))
    assert not is_resolved(p)
    resolve_async(p)
    assert p[0] == 1
    resolve_async(p)  # a no-op once resolved
    assert p[1] == 2
    assert isinstance(p, Proxy)
    assert isinstance(p, np.ndarray)
    assert is_resolved(p)

    plain = extract(p)
    assert isinstance(plain, np.ndarray) and not isinstance(plain, Proxy)
    assert np.array_equal(x, plain)

    q = p + 1
    assert not isinstance(q, Proxy)
    assert np.array_equal(q, [2, 3, 4])
    assert len(q) == 3
    assert np.sum(q) == 9

    doubled = Proxy(factory) + Proxy(factory)
    assert np.sum(doubled) == 12
    assert isinstance(doubled, np.ndarray) and not isinstance(doubled, Proxy)

    def double(y: np.ndarray) -> np.ndarray:
        return 2 * y

    result = double(Proxy(factory))
    assert not isinstance(result, Proxy)
    assert np.array_equal(result, [2, 4, 6])
    assert isinstance(Proxy(factory), np.ndarray)


def test_numpy_sums_a_proxied_list_of_arrays_element_wise() -> None:
    p = Proxy(SimpleFactory([np.array([1, 2, 3]), np.array([2, 3, 4])]))
    result = np.sum(p, axis=0)
    assert not isinstance(result, Proxy)
    assert np.array_equal(result, [3, 5, 7])


def test_proxy_of_a_string_resolves_on_demand() -> None:
    p = Proxy(SimpleFactory("hello"))
    assert not is_resolved(p)
    resolve(p)
    assert is_resolved(p)
    assert p == "hello"
