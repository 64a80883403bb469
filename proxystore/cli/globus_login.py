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
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import globus_sdk

from proxystore.exceptions import ProxyStoreError, StoreAuthError
from proxystore.store.globus.tokens import (
    _LOGIN,
    DEFAULT_TOKENS_PATH,
    TOKENS_ENV,
    TRANSFER_RESOURCE_SERVER,
    TRANSFER_SCOPE,
    _auth_error,
    _globus_auth,
    delete_tokens,
    get_authorizer,
    get_transfer_client,
    load_tokens,
    save_tokens,
    tokens_path,
)

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

CLIENT_ID_ENV = "PROXYSTORE_GLOBUS_CLIENT_ID"
"""Environment variable with the client id of the Globus native app used to log in."""

CLIENT_ID: str | None = None
"""Client id of ProxyStore's registered Globus native app, if it has one (else ``None``: pass
``--client-id`` or set ``PROXYSTORE_GLOBUS_CLIENT_ID``)."""


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
