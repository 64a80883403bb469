"""Globus login for the ``GlobusStore``: the ``proxystore-globus-auth`` command and its tokens.

(This module was ``proxystore.store.globus_auth``; the program moved here, beside the other
command-line code.)

Usage::

    proxystore-globus-auth login [--client-id ID] [--collection UUID ...] [--tokens PATH]
    proxystore-globus-auth logout [--tokens PATH]

``login`` runs globus-sdk's native-app flow (:class:`globus_sdk.NativeAppAuthClient`): it prints
a Globus URL, you log in there and paste back the code it shows, and the refresh token for
Globus Transfer is saved in a JSON file that only its owner can read (mode ``0600``, in a
directory of mode ``0700``). A :class:`~proxystore.store.globus.store.GlobusStore` made without a
``transfer_client`` loads that file and refreshes its access token as needed. ``logout``
revokes the tokens with Globus Auth and deletes the file.

The token file is ``~/.proxystore/globus_tokens.json``, or the path in the environment variable
``PROXYSTORE_GLOBUS_TOKENS``, or the ``--tokens`` option.

The native app's client id comes from ``--client-id``, else the environment variable
``PROXYSTORE_GLOBUS_CLIENT_ID``, else :data:`CLIENT_ID`. Register a native app ("thick client")
at https://app.globus.org/settings/developers to get one. The id is saved with the tokens, since
refreshing them needs the same client.

Collections of Globus Connect Server v5 (mapped collections) need your consent to their
``data_access`` scope; name each with ``--collection UUID`` at login.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import stat
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import globus_sdk

from proxystore.exceptions import ProxyStoreError, StoreAuthError, StoreConnectionError

__all__ = [
    "CLIENT_ID",
    "CLIENT_ID_ENV",
    "DEFAULT_TOKENS_PATH",
    "TOKENS_ENV",
    "TRANSFER_RESOURCE_SERVER",
    "TRANSFER_SCOPE",
    "delete_tokens",
    "get_authorizer",
    "get_transfer_client",
    "load_tokens",
    "login",
    "logout",
    "main",
    "save_tokens",
    "tokens_path",
]

TOKENS_ENV = "PROXYSTORE_GLOBUS_TOKENS"
"""Environment variable with the path of the token file."""

CLIENT_ID_ENV = "PROXYSTORE_GLOBUS_CLIENT_ID"
"""Environment variable with the client id of the Globus native app used to log in."""

DEFAULT_TOKENS_PATH = "~/.proxystore/globus_tokens.json"
"""Where the tokens are saved unless ``PROXYSTORE_GLOBUS_TOKENS`` or an argument says otherwise."""

CLIENT_ID: str | None = None
"""Client id of ProxyStore's registered Globus native app, if it has one (else ``None``: pass
``--client-id`` or set ``PROXYSTORE_GLOBUS_CLIENT_ID``)."""

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


def _resolve_client_id(client_id: str | None) -> str:
    chosen = client_id or os.environ.get(CLIENT_ID_ENV) or CLIENT_ID
    if not chosen:
        raise _auth_error(
            "no Globus client id to log in with: register a native app at "
            "https://app.globus.org/settings/developers and pass its client id with "
            f"--client-id or the {CLIENT_ID_ENV} environment variable"
        )
    return chosen


def _requested_scopes(collections: Sequence[str]) -> str:
    if not collections:
        return TRANSFER_SCOPE
    data_access = " ".join(
        f"*https://auth.globus.org/scopes/{collection}/data_access" for collection in collections
    )
    return f"{TRANSFER_SCOPE}[{data_access}]"


def login(
    *,
    path: str | os.PathLike[str] | None = None,
    client_id: str | None = None,
    collections: Sequence[str] = (),
    auth_client: Any = None,
    prompt: Callable[[str], str] = input,
    echo: Callable[[str], object] = print,
) -> Path:
    """Log in to Globus with the native-app flow and save the refresh tokens.

    Args:
        path: Token file (see :func:`tokens_path`).
        client_id: Native app client id (default: ``$PROXYSTORE_GLOBUS_CLIENT_ID``, then
            :data:`CLIENT_ID`).
        collections: UUIDs of mapped collections whose ``data_access`` consent to request.
        auth_client: A :class:`globus_sdk.NativeAppAuthClient` to use (one is made from the
            client id when ``None``).
        prompt: Reads the authorization code from the user.
        echo: Shows the login URL and messages to the user.

    Returns:
        The token file's path.

    Raises:
        StoreAuthError: If there is no client id or Globus Auth rejects the code.
        StoreConnectionError: If Globus Auth cannot be reached.
    """
    chosen = _resolve_client_id(client_id)
    client = auth_client if auth_client is not None else globus_sdk.NativeAppAuthClient(chosen)
    client.oauth2_start_flow(
        requested_scopes=_requested_scopes(collections),
        refresh_tokens=True,
        prefill_named_grant="ProxyStore",
    )
    echo(f"Log in to Globus at this URL:\n\n  {client.oauth2_get_authorize_url()}\n")
    code = prompt("Then paste the authorization code here: ").strip()
    with _globus_auth(
        rejected="the authorization code",
        advice=f"run `{_LOGIN}` again and paste the whole code",
        action="finish the login",
    ):
        response = client.oauth2_exchange_code_for_tokens(code)
    tokens = response.by_resource_server
    if TRANSFER_RESOURCE_SERVER not in tokens:
        raise _auth_error(
            "Globus Auth returned no Globus Transfer token: log in again and accept all the "
            "requested permissions"
        )
    target = save_tokens(chosen, tokens, path)
    echo(f"Saved Globus tokens to {target} (readable only by you).")
    return target


def logout(
    *,
    path: str | os.PathLike[str] | None = None,
    auth_client: Any = None,
    echo: Callable[[str], object] = print,
) -> bool:
    """Revoke the saved tokens with Globus Auth and delete the token file.

    A failure to revoke (no network) is reported with ``echo``; the file is deleted anyway.

    Args:
        path: Token file (see :func:`tokens_path`).
        auth_client: A :class:`globus_sdk.NativeAppAuthClient` to revoke with (one is made
            from the client id saved with the tokens when ``None``).
        echo: Shows messages to the user.

    Returns:
        Whether there was a token file.
    """
    target = tokens_path(path)
    try:
        document = load_tokens(target)
    except StoreAuthError:
        existed = delete_tokens(target)
        echo(f"Deleted {target}." if existed else f"No Globus tokens at {target}.")
        return existed
    client = auth_client
    if client is None:
        client = globus_sdk.NativeAppAuthClient(document["client_id"])
    for server, data in document["tokens"].items():
        for kind in ("refresh_token", "access_token"):
            token = data.get(kind)
            if not token:
                continue
            try:
                client.oauth2_revoke_token(token)
            except globus_sdk.GlobusError as exc:
                echo(f"Could not revoke the {kind} for {server} ({exc}); deleting it anyway.")
    delete_tokens(target)
    echo(f"Revoked the Globus tokens and deleted {target}.")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``proxystore-globus-auth``; return the exit status."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tokens",
        metavar="PATH",
        help=f"token file (default: ${TOKENS_ENV} or {DEFAULT_TOKENS_PATH})",
    )
    parser = argparse.ArgumentParser(
        prog="proxystore-globus-auth",
        description="Log in to Globus for ProxyStore's GlobusStore, or log out.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{login,logout}")
    login_parser = commands.add_parser(
        "login", parents=[common], help="log in and save refresh tokens"
    )
    login_parser.add_argument(
        "--client-id",
        help=f"client id of your Globus native app (default: ${CLIENT_ID_ENV})",
    )
    login_parser.add_argument(
        "--collection",
        action="append",
        default=[],
        metavar="UUID",
        help="a mapped collection whose data_access consent to request (repeatable)",
    )
    commands.add_parser(
        "logout", parents=[common], help="revoke the saved tokens and delete the token file"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "login":
            login(path=args.tokens, client_id=args.client_id, collections=args.collection)
        else:
            logout(path=args.tokens)
    except (ProxyStoreError, OSError) as exc:
        print(f"proxystore-globus-auth: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\nproxystore-globus-auth: cancelled", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
