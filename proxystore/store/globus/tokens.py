"""Globus tokens of the ``GlobusStore``: the token file and the Transfer client made from it.

The ``proxystore-globus-auth login`` program (:mod:`proxystore.cli.globus_login`) saves the
refresh tokens; a :class:`~proxystore.store.globus.store.GlobusStore` made without a
``transfer_client`` loads them from here and refreshes its access token as needed.

The token file is ``~/.proxystore/globus_tokens.json``, or the path in the environment variable
``PROXYSTORE_GLOBUS_TOKENS``. It is readable only by its owner (mode ``0600``, in a directory of
mode ``0700``); the native app's client id is saved with the tokens, since refreshing them needs
the same client.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import globus_sdk

from proxystore.exceptions import ProxyStoreError, StoreAuthError, StoreConnectionError

__all__ = [
    "DEFAULT_TOKENS_PATH",
    "TOKENS_ENV",
    "TRANSFER_RESOURCE_SERVER",
    "TRANSFER_SCOPE",
    "delete_tokens",
    "get_authorizer",
    "get_transfer_client",
    "load_tokens",
    "save_tokens",
    "tokens_path",
]

TOKENS_ENV = "PROXYSTORE_GLOBUS_TOKENS"
"""Environment variable with the path of the token file."""

DEFAULT_TOKENS_PATH = "~/.proxystore/globus_tokens.json"
"""Where the tokens are saved unless ``PROXYSTORE_GLOBUS_TOKENS`` or an argument says otherwise."""

TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
"""The Globus Transfer scope the store needs."""

TRANSFER_RESOURCE_SERVER = "transfer.api.globus.org"
"""Resource server of Globus Transfer, under which its tokens are saved."""

_LOGIN = "proxystore-globus-auth login"
_FORMAT_VERSION = 1


def tokens_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the token file: ``path``, else ``$PROXYSTORE_GLOBUS_TOKENS``, else the default."""
    chosen = os.fspath(path) if path is not None else os.environ.get(TOKENS_ENV)
    return Path(chosen or DEFAULT_TOKENS_PATH).expanduser()


def _auth_error(message: str) -> StoreAuthError:
    return StoreAuthError(message, store_type="GlobusStore")


@contextlib.contextmanager
def _globus_auth(*, rejected: str, advice: str, action: str) -> Iterator[None]:
    """Translate the errors of a call to Globus Auth into ProxyStore errors."""
    try:
        yield
    except globus_sdk.GlobusAPIError as exc:
        raise _auth_error(
            f"Globus Auth rejected {rejected} (HTTP {exc.http_status} {exc.code}: "
            f"{exc.message}); {advice}"
        ) from exc
    except globus_sdk.NetworkError as exc:
        raise StoreConnectionError(
            f"cannot reach Globus Auth to {action}: {exc}",
            address="auth.globus.org",
            store_type="GlobusStore",
        ) from exc


def save_tokens(
    client_id: str,
    tokens: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
) -> Path:
    """Save tokens so that only their owner can read them; return the file's path.

    The file is written under a temporary name with mode ``0600`` and renamed into place, so it
    is never readable by others, not even for a moment; a missing directory is created with
    mode ``0700``.

    Args:
        client_id: Client id of the native app the tokens were issued to.
        tokens: Token data by resource server (``OAuthTokenResponse.by_resource_server``).
        path: Token file (see :func:`tokens_path`).
    """
    target = tokens_path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    document = {
        "format": _FORMAT_VERSION,
        "client_id": client_id,
        "tokens": {server: dict(data) for server, data in tokens.items()},
    }
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, and even if the file already existed
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return target


def load_tokens(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load the saved tokens: ``{"client_id": ..., "tokens": {resource_server: {...}}}``.

    Warns if the file can be read by others than its owner.

    Raises:
        StoreAuthError: If there is no token file, it cannot be read or parsed, or it holds
            no Globus Transfer refresh token; the message says to run
            ``proxystore-globus-auth login``.
    """
    source = tokens_path(path)
    try:
        text = source.read_text(encoding="utf-8")
        mode = source.stat().st_mode
    except FileNotFoundError:
        raise _auth_error(
            f"no Globus tokens found at {str(source)!r}: run `{_LOGIN}` to log in to Globus "
            f"(or set {TOKENS_ENV} to the token file, or pass a transfer_client)"
        ) from None
    except OSError as exc:
        raise _auth_error(
            f"cannot read the Globus token file {str(source)!r}: {exc.strerror or exc}. "
            f"Fix its permissions or run `{_LOGIN}` again."
        ) from exc
    if stat.S_IMODE(mode) & 0o077:
        warnings.warn(
            f"the Globus token file {str(source)!r} can be read by other users: "
            f"chmod 600 {str(source)!r}",
            UserWarning,
            stacklevel=2,
        )
    try:
        document = json.loads(text)
        client_id = document["client_id"]
        transfer = document["tokens"][TRANSFER_RESOURCE_SERVER]
        refresh_token = transfer["refresh_token"]
    except (ValueError, KeyError, TypeError):
        raise _auth_error(
            f"the Globus token file {str(source)!r} holds no Globus Transfer refresh token "
            f"(it is damaged or from another program): run `{_LOGIN}` again"
        ) from None
    if not isinstance(client_id, str) or not isinstance(refresh_token, str) or not refresh_token:
        raise _auth_error(f"the Globus token file {str(source)!r} is damaged: run `{_LOGIN}` again")
    result: dict[str, Any] = document
    return result


def delete_tokens(path: str | os.PathLike[str] | None = None) -> bool:
    """Delete the token file; return whether there was one."""
    try:
        tokens_path(path).unlink()
    except FileNotFoundError:
        return False
    return True


def _update_saved(path: Path, client_id: str, response: Any) -> None:
    try:
        document = load_tokens(path)
        tokens = document["tokens"]
        for server, data in response.by_resource_server.items():
            tokens[server] = {**tokens.get(server, {}), **data}
        save_tokens(client_id, tokens, path)
    except (OSError, ProxyStoreError) as exc:
        warnings.warn(
            f"could not save the refreshed Globus access token to {str(path)!r}: {exc}",
            UserWarning,
            stacklevel=2,
        )


def get_authorizer(
    path: str | os.PathLike[str] | None = None,
) -> globus_sdk.RefreshTokenAuthorizer:
    """Return a refresh-token authorizer for Globus Transfer from the saved tokens.

    Refreshed access tokens are written back to the token file. Nothing is sent over the
    network here; a revoked refresh token shows up at the first request (the store then
    raises :class:`~proxystore.exceptions.StoreAuthError`).

    Raises:
        StoreAuthError: If there are no usable saved tokens.
    """
    target = tokens_path(path)
    document = load_tokens(target)
    client_id = document["client_id"]
    transfer = document["tokens"][TRANSFER_RESOURCE_SERVER]
    access_token = transfer.get("access_token")
    expires_at = transfer.get("expires_at_seconds")
    usable = isinstance(access_token, str) and isinstance(expires_at, int)
    if not usable or expires_at <= time.time():
        access_token = expires_at = None
    if access_token is None:
        # With no valid access token the authorizer refreshes at once: translate its errors.
        with _globus_auth(
            rejected="the saved refresh token",
            advice=f"it may be revoked or expired: run `{_LOGIN}`",
            action="refresh the access token",
        ):
            return _make_authorizer(target, client_id, transfer["refresh_token"], None, None)
    return _make_authorizer(target, client_id, transfer["refresh_token"], access_token, expires_at)


def _make_authorizer(
    path: Path,
    client_id: str,
    refresh_token: str,
    access_token: str | None,
    expires_at: int | None,
) -> globus_sdk.RefreshTokenAuthorizer:
    return globus_sdk.RefreshTokenAuthorizer(
        refresh_token,
        globus_sdk.NativeAppAuthClient(client_id),
        access_token=access_token,
        expires_at=expires_at,
        on_refresh=lambda response: _update_saved(path, client_id, response),
    )


def get_transfer_client(path: str | os.PathLike[str] | None = None) -> globus_sdk.TransferClient:
    """Return a :class:`globus_sdk.TransferClient` authorized by the saved tokens.

    Raises:
        StoreAuthError: If there are no usable saved tokens.
    """
    return globus_sdk.TransferClient(authorizer=get_authorizer(path), app_name="proxystore")
