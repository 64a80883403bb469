"""``SigningLayer``: every object is stored with an HMAC-SHA256 and verified before use.

Resolving a proxy unpickles the bytes its backend returns, so anyone who can write the backend
(the Redis database, the store directory) could otherwise run code in every process that
resolves. A store created with ``signing_key=`` composes this layer over its backend:

* ``put`` appends a trailer to the object's parts: a 4-byte magic and the HMAC-SHA256 of the
  object's bytes under the key. The parts are hashed where they are, without being joined.
* ``get`` recomputes the HMAC over the fetched bytes and compares it with the trailer
  (:func:`hmac.compare_digest`) *before* returning anything to the deserializer. A mismatch,
  or an object without a trailer, raises :class:`~proxystore.exceptions.IntegrityError`:
  nothing of the object is unpickled. The bytes handed up are a view of the fetched buffer
  (no copy), so memory-mapped reads stay zero-copy; the check costs one pass of HMAC-SHA256
  over the bytes (see the benchmarks page).

The signature covers the bytes, not the key: someone who can write the backend can still
delete objects, or put one signed object of the store under another of its keys, but cannot
make a process run anything the key holder did not store.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from proxystore.exceptions import IntegrityError
from proxystore.serialize import Buffer
from proxystore.store.backends.base import Backend, Fetched, Parts
from proxystore.store.layers.base import Layer

__all__ = ["MIN_KEY_BYTES", "SIGNATURE_SIZE", "SigningLayer", "check_signing_key"]

_MAGIC = b"PSS1"
_DIGEST = hashlib.sha256
SIGNATURE_SIZE = len(_MAGIC) + _DIGEST().digest_size
"""Bytes added to every stored object: a 4-byte magic and a 32-byte HMAC-SHA256."""
MIN_KEY_BYTES = 16
"""Shortest ``signing_key`` accepted (use ``secrets.token_bytes(32)``)."""


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

    def _sign(self, parts: Parts) -> list[Buffer]:
        mac = hmac.new(self._key, digestmod=_DIGEST)
        for part in parts:
            mac.update(part)
        return [*parts, _MAGIC + mac.digest()]

    def put(self, key: str | None, parts: Parts) -> str:
        """Put the parts and their signature trailer."""
        return self.inner.put(key, self._sign(parts))

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """Put each object with its signature trailer."""
        signed: list[tuple[str | None, Parts]] = [(key, self._sign(parts)) for key, parts in items]
        return self.inner.put_batch(signed)

    def get(self, key: str) -> Fetched:
        """Fetch, verify the signature, and return a view of the bytes without the trailer.

        Raises:
            IntegrityError: If the object has no valid signature under this store's key.
        """
        fetched = self.inner.get(key)
        if fetched is None:
            return None
        data, written = fetched
        view = memoryview(data).cast("B")
        size = view.nbytes - SIGNATURE_SIZE
        if size < 0 or view[size : size + len(_MAGIC)] != _MAGIC:
            raise self._failed(key, "it carries no signature (written without a signing_key?)")
        body = view[:size]
        expected = hmac.new(self._key, body, _DIGEST).digest()
        if not hmac.compare_digest(expected, view[size + len(_MAGIC) :]):
            raise self._failed(
                key,
                "its HMAC-SHA256 does not match (the bytes were changed, or signed with "
                "another key)",
            )
        return body, written

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
