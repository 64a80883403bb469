"""``SigningLayer``: every object is stored with an HMAC-SHA256 and verified before use.

Resolving a proxy unpickles the bytes its backend returns, so anyone who can write the backend
(the Redis database, the store directory) could otherwise run code in every process that
resolves. A store created with ``signing_key=`` composes this layer over its backend:

* ``put`` appends a trailer to the object's parts: a 4-byte magic, the time of the write, a
  flag saying whether the key is bound, and the HMAC-SHA256, under the signing key, of the
  object's *key*, that time and the object's bytes. The parts are hashed where they are,
  without being joined. A store-made key is chosen here (not by the backend) so that it is
  known when the object is signed.
* ``get`` recomputes the HMAC over the key asked for, the trailer's time and the fetched bytes
  and compares it with the trailer (:func:`hmac.compare_digest`) *before* returning anything
  to the deserializer. It also compares the write time the backend reports with the signed
  one. A mismatch of any of them, or an object without a trailer, raises
  :class:`~proxystore.exceptions.IntegrityError`: nothing of the object is unpickled. The
  bytes handed up are a view of the fetched buffer (no copy), so memory-mapped reads stay
  zero-copy; the check costs one pass of HMAC-SHA256 over the bytes (see the benchmarks page).
* The write time handed up (by ``get`` and by ``timestamp``, which ``strict`` and
  ``Store.get_timestamp`` use) is the *signed* one. ``timestamp`` returns a time only for a
  version this layer has verified: the backend's own time is a cheap change detector, and a
  version not seen yet is fetched and verified once.

So bytes moved under another key, or given another write time, are refused. What the signature
does not cover: someone who can write the backend can still delete objects, or put back an
older signed version of the same key (a replay); see ``docs/security.rst``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timezone

from proxystore.exceptions import ForeignValueError, IntegrityError
from proxystore.serialize import Buffer
from proxystore.store.backends.base import Backend, Fetched, Parts, new_key
from proxystore.store.layers.base import Layer, innermost

__all__ = [
    "EARLY_SLACK",
    "LATE_SLACK",
    "MIN_KEY_BYTES",
    "SIGNATURE_SIZE",
    "SigningLayer",
    "check_signing_key",
]

_MAGIC = b"PSS2"
_OLD_MAGIC = b"PSS1"  # the first format: an HMAC of the bytes only (key and time not covered)
_OLD_SIZE = len(_OLD_MAGIC) + 32
_DOMAIN = b"proxystore-signed-object-v2\x00"
_DIGEST = hashlib.sha256
_HEAD = struct.Struct("<4sdB3x")  # magic, signed write time, key bound (1) or backend-named (0)
SIGNATURE_SIZE = _HEAD.size + _DIGEST().digest_size
"""Bytes added to every stored object: magic, write time, flags and a 32-byte HMAC-SHA256."""
MIN_KEY_BYTES = 16
"""Shortest ``signing_key`` accepted (use ``secrets.token_bytes(32)``)."""
EARLY_SLACK = 2.0
"""Seconds the backend's write time may lie before the signed one (timestamps kept to the
second by a transfer, clock steps)."""
LATE_SLACK = 86_400.0
"""Seconds the backend's write time may lie after the signed one (the time a large write or a
transfer takes): a time outside the window is an :class:`~proxystore.exceptions.IntegrityError`."""
_VERIFIED = 4096  # versions whose verified write time ``timestamp`` remembers
_SAME_TIME = 1e-6  # the host tier keeps write times in nanoseconds of a float


def check_signing_key(signing_key: object, where: str) -> bytes:
    """Return ``signing_key`` as ``bytes`` if it is a usable key.

    Args:
        signing_key: The key a store was given.
        where: The store, for messages (``"FileStore 'data'"``).

    Raises:
        TypeError: If it is not bytes.
        ValueError: If it is shorter than :data:`MIN_KEY_BYTES`.
    """
    if not isinstance(signing_key, (bytes, bytearray)):
        raise TypeError(
            f"{where}: signing_key must be bytes (e.g. secrets.token_bytes(32)), "
            f"got {type(signing_key).__name__}"
        )
    if len(signing_key) < MIN_KEY_BYTES:
        raise ValueError(
            f"{where}: signing_key must be at least {MIN_KEY_BYTES} bytes, got "
            f"{len(signing_key)}; use secrets.token_bytes(32)"
        )
    return bytes(signing_key)


class SigningLayer(Layer):
    """Signs what ``inner`` stores and verifies what it returns (HMAC-SHA256).

    The signature covers the key, the write time and the bytes (see the module docstring).

    Args:
        inner: The wrapped backend.
        signing_key: The secret key (at least :data:`MIN_KEY_BYTES` bytes). Every process
            that reads or writes the store needs the same key.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.

    Raises:
        TypeError: If ``signing_key`` is not bytes.
        ValueError: If ``signing_key`` is too short.
    """

    def __init__(
        self,
        inner: Backend,
        signing_key: bytes,
        *,
        store_name: str = "",
        store_type: str = "",
    ) -> None:
        super().__init__(inner)
        self.store_name = store_name
        self.store_type = store_type or "Store"
        self._key = check_signing_key(signing_key, f"{self.store_type} {store_name!r}")
        # Backends whose store-made keys are only known after the write (Globus: the key
        # carries the transfer's task ids) name them; every other backend gets a key from here.
        self._backend_names_keys = bool(getattr(innermost(inner), "names_new_keys", False))
        self._verified: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _start(self, key: str | None) -> hmac.HMAC:
        """An HMAC over the domain and the key (length-prefixed; none: backend-named)."""
        mac = hmac.new(self._key, _DOMAIN, _DIGEST)
        name = b"" if key is None else key.encode("utf-8", "surrogatepass")
        mac.update(struct.pack("<Q", len(name)))
        mac.update(name)
        return mac

    def _sign(self, key: str | None, parts: Parts) -> tuple[str | None, list[Buffer]]:
        if key is None and not self._backend_names_keys:
            key = new_key()  # known now, so that the signature binds it
        mac = self._start(key)
        for part in parts:
            mac.update(part)
        # Taken after hashing (the backend stamps its own time just after): the window
        # between the two is the time of the write itself.
        head = _HEAD.pack(_MAGIC, time.time(), 0 if key is None else 1)
        mac.update(head)
        return key, [*parts, head + mac.digest()]

    def put(self, key: str | None, parts: Parts) -> str:
        """Put the parts and their signature trailer."""
        key, signed = self._sign(key, parts)
        return self.inner.put(key, signed)

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """Put each object with its signature trailer."""
        return self.inner.put_batch([self._sign(key, parts) for key, parts in items])

    def get(self, key: str) -> Fetched:
        """Fetch, verify the signature, and return a view of the bytes without the trailer.

        The write time returned is the signed one.

        Raises:
            IntegrityError: If the object has no valid signature for this key under this
                store's signing key, or the backend reports another write time than the
                signed one, or the backend holds a value it did not write under ``key``
                (a :class:`~proxystore.exceptions.ForeignValueError` below).
        """
        try:
            fetched = self.inner.get(key)
        except ForeignValueError as exc:
            raise self._failed(
                key, f"the backend holds no value of this store there ({exc})"
            ) from exc
        if fetched is None:
            self._verified.pop(key, None)
            return None
        data, reported = fetched
        view = memoryview(data).cast("B")
        size = view.nbytes - SIGNATURE_SIZE
        if size < 0 or view[size : size + len(_MAGIC)] != _MAGIC:
            old = view.nbytes - _OLD_SIZE
            if old >= 0 and view[old : old + len(_OLD_MAGIC)] == _OLD_MAGIC:
                raise self._failed(
                    key,
                    "it was signed in the first signature format (PSS1), which covers neither "
                    "the key nor the write time, so it is no longer accepted; write the object "
                    "again with this version of ProxyStore",
                )
            raise self._failed(key, "it carries no signature (written without a signing_key?)")
        body = view[:size]
        head = view[size : size + _HEAD.size]
        _, signed, bound = _HEAD.unpack(head)
        named_by_backend = bound == 0
        if named_by_backend and not (self._backend_names_keys and self.inner.is_immutable(key)):
            raise self._failed(
                key,
                "its signature binds no key, which only store-made keys of a backend that "
                "names its keys may have (an object moved from another key?)",
            )
        mac = self._start(None if named_by_backend else key)
        mac.update(body)
        mac.update(head)
        expected = mac.digest()
        if not hmac.compare_digest(expected, view[size + _HEAD.size :]):
            raise self._failed(
                key,
                "its HMAC-SHA256 does not match: the bytes, the write time in its trailer or the "
                "key it is stored under were changed (an object moved from another key?), or "
                "it was signed with another key",
            )
        if not (
            math.isfinite(reported) and signed - EARLY_SLACK <= reported <= signed + LATE_SLACK
        ):
            raise self._failed(
                key,
                f"the backend reports it written at {_when(reported)}, but it was signed at "
                f"{_when(signed)}: its write time was changed",
            )
        self._remember(key, reported, signed)
        return body, signed

    def timestamp(self, key: str) -> float | None:
        """Return the signed write time of the current version of ``key``, or ``None``.

        Only verified times: the backend's time tells whether the version changed since this
        layer verified it; a version not verified yet is fetched and verified first.

        Raises:
            IntegrityError: If the current version fails its check (see :meth:`get`).
        """
        try:
            reported = self.inner.timestamp(key)
        except ForeignValueError as exc:
            raise self._failed(
                key, f"the backend holds no value of this store there ({exc})"
            ) from exc
        if reported is None:
            self._verified.pop(key, None)
            return None
        seen = self._verified.get(key)
        if seen is not None and abs(seen[0] - reported) < _SAME_TIME:
            return seen[1]
        fetched = self.get(key)
        return None if fetched is None else fetched[1]

    def evict(self, key: str) -> None:
        """Evict ``key`` and forget its verified write time."""
        self._verified.pop(key, None)
        self.inner.evict(key)

    def _remember(self, key: str, reported: float, signed: float) -> None:
        verified = self._verified
        verified[key] = (reported, signed)
        try:
            verified.move_to_end(key)
            while len(verified) > _VERIFIED:
                verified.popitem(last=False)
        except KeyError:  # another thread removed it meanwhile
            pass

    def _failed(self, key: str, reason: str) -> IntegrityError:
        return IntegrityError(
            f"{self.store_type} {self.store_name!r}: the object under key {key!r} failed its "
            f"signature check: {reason}. It was not deserialized. Someone or something other "
            "than a holder of the store's signing_key wrote it: check who can write the "
            "store's backend, and evict the key.",
            key=key,
            store_name=self.store_name,
            store_type=self.store_type,
        )

    def __repr__(self) -> str:
        return f"SigningLayer({self.inner!r})"  # never the key


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):
        return repr(seconds)
