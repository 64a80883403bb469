"""Token storage and the ``proxystore-globus-auth`` command, without the network.

The login flow itself talks to Globus Auth; here a stand-in auth client plays that part (the
same methods as ``globus_sdk.NativeAppAuthClient`` that the command uses), so what is tested is
ours: the file, its permissions, the messages and the command line.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import globus_sdk
import pytest
import requests

from proxystore.cli import globus_login
from proxystore.cli.globus_login import (
    CLIENT_ID_ENV,
    TOKENS_ENV,
    TRANSFER_RESOURCE_SERVER,
    delete_tokens,
    get_authorizer,
    get_transfer_client,
    load_tokens,
    login,
    logout,
    main,
    save_tokens,
    tokens_path,
)
from proxystore.exceptions import StoreAuthError
from proxystore.store.globus import tokens

TOKENS = {
    TRANSFER_RESOURCE_SERVER: {
        "access_token": "AT-transfer",
        "refresh_token": "RT-transfer",
        "expires_at_seconds": 2**40,
        "resource_server": TRANSFER_RESOURCE_SERVER,
        "scope": globus_login.TRANSFER_SCOPE,
        "token_type": "Bearer",
    }
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv(TOKENS_ENV, raising=False)
    monkeypatch.delenv(CLIENT_ID_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield


class FakeAuthClient:
    """Plays Globus Auth for login/logout: same methods as NativeAppAuthClient."""

    def __init__(self, tokens: dict[str, Any] | None = None, fail_revoke: bool = False) -> None:
        self.tokens = TOKENS if tokens is None else tokens
        self.fail_revoke = fail_revoke
        self.scopes: Any = None
        self.code: str | None = None
        self.revoked: list[str] = []

    def oauth2_start_flow(self, requested_scopes: Any, **kwargs: Any) -> None:
        assert kwargs["refresh_tokens"] is True
        self.scopes = requested_scopes

    def oauth2_get_authorize_url(self) -> str:
        return "https://auth.globus.org/v2/oauth2/authorize?client_id=test"

    def oauth2_exchange_code_for_tokens(self, code: str) -> Any:
        self.code = code
        tokens = self.tokens

        class Response:
            by_resource_server = tokens

        return Response()

    def oauth2_revoke_token(self, token: str) -> None:
        if self.fail_revoke:
            raise globus_sdk.GlobusConnectionError("no network", requests.ConnectionError("down"))
        self.revoked.append(token)


# -- where the tokens live --------------------------------------------------------------------


def test_tokens_path_argument_then_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tokens_path() == tmp_path / "home" / ".proxystore" / "globus_tokens.json"
    monkeypatch.setenv(TOKENS_ENV, str(tmp_path / "env.json"))
    assert tokens_path() == tmp_path / "env.json"
    assert tokens_path(tmp_path / "arg.json") == tmp_path / "arg.json"


def test_saved_tokens_are_readable_only_by_their_owner(tmp_path: Path) -> None:
    target = tmp_path / "new-dir" / "tokens.json"
    old_umask = os.umask(0)  # the most permissive umask must not matter
    try:
        assert save_tokens("client", TOKENS, target) == target
    finally:
        os.umask(old_umask)
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["tokens.json"]  # no temporary left


def test_saving_over_an_open_file_makes_it_private(tmp_path: Path) -> None:
    target = tmp_path / "tokens.json"
    target.write_text("{}")
    target.chmod(0o644)
    save_tokens("client", TOKENS, target)
    assert mode(target) == 0o600


def test_load_round_trip_from_the_environment_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKENS_ENV, str(tmp_path / "t.json"))
    save_tokens("client-123", TOKENS)
    document = load_tokens()
    assert document["client_id"] == "client-123"
    assert document["tokens"] == TOKENS
    assert delete_tokens() and not delete_tokens()


def test_missing_tokens_say_to_log_in(tmp_path: Path) -> None:
    with pytest.raises(StoreAuthError) as info:
        load_tokens(tmp_path / "absent.json")
    assert "proxystore-globus-auth login" in str(info.value)
    assert "absent.json" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"client_id": "c", "tokens": {}}),
        json.dumps({"tokens": TOKENS}),
    ],
    ids=["broken", "list", "no-transfer-token", "no-client-id"],
)
def test_damaged_tokens_say_to_log_in_again(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(StoreAuthError, match="proxystore-globus-auth login"):
        load_tokens(path)


def test_tokens_readable_by_others_warn(tmp_path: Path) -> None:
    path = save_tokens("client", TOKENS, tmp_path / "tokens.json")
    path.chmod(0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        load_tokens(path)


# -- using the tokens -------------------------------------------------------------------------


def test_authorizer_and_client_from_saved_tokens_without_network(tmp_path: Path) -> None:
    path = save_tokens("client", TOKENS, tmp_path / "tokens.json")
    authorizer = get_authorizer(path)
    assert isinstance(authorizer, globus_sdk.RefreshTokenAuthorizer)
    assert authorizer.refresh_token == "RT-transfer"
    assert authorizer.access_token == "AT-transfer"
    client = get_transfer_client(path)
    assert isinstance(client, globus_sdk.TransferClient)
    client.close()


def test_no_tokens_no_client(tmp_path: Path) -> None:
    with pytest.raises(StoreAuthError, match="proxystore-globus-auth login"):
        get_transfer_client(tmp_path / "none.json")


def test_refreshed_tokens_are_saved_back(tmp_path: Path) -> None:
    path = save_tokens("client", TOKENS, tmp_path / "tokens.json")
    fresh = {TRANSFER_RESOURCE_SERVER: {"access_token": "AT-2", "expires_at_seconds": 2**41}}

    class Refreshed:
        by_resource_server = fresh

    tokens._update_saved(path, "client", Refreshed())
    saved = load_tokens(path)["tokens"][TRANSFER_RESOURCE_SERVER]
    assert saved["access_token"] == "AT-2" and saved["refresh_token"] == "RT-transfer"
    assert mode(path) == 0o600


# -- login and logout -------------------------------------------------------------------------


def test_login_saves_private_tokens(tmp_path: Path) -> None:
    auth = FakeAuthClient()
    shown: list[str] = []
    path = login(
        path=tmp_path / "t.json",
        client_id="my-app",
        auth_client=auth,
        prompt=lambda _: "  the-code\n",
        echo=shown.append,
    )
    assert auth.code == "the-code"
    assert auth.scopes == globus_login.TRANSFER_SCOPE
    assert "https://auth.globus.org" in shown[0]
    assert mode(path) == 0o600
    assert load_tokens(path)["client_id"] == "my-app"


def test_login_asks_consent_for_mapped_collections(tmp_path: Path) -> None:
    auth = FakeAuthClient()
    login(
        path=tmp_path / "t.json",
        client_id="app",
        collections=["c1", "c2"],
        auth_client=auth,
        prompt=lambda _: "code",
        echo=lambda _: None,
    )
    assert auth.scopes == (
        f"{globus_login.TRANSFER_SCOPE}[*https://auth.globus.org/scopes/c1/data_access "
        "*https://auth.globus.org/scopes/c2/data_access]"
    )
    globus_sdk.Scope.parse(auth.scopes)  # a valid scope string


def test_login_client_id_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CLIENT_ID_ENV, "env-app")
    path = login(
        path=tmp_path / "t.json",
        auth_client=FakeAuthClient(),
        prompt=lambda _: "c",
        echo=lambda _: None,
    )
    assert load_tokens(path)["client_id"] == "env-app"


def test_login_without_client_id_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(globus_login, "CLIENT_ID", None)
    with pytest.raises(StoreAuthError, match=r"--client-id.*PROXYSTORE_GLOBUS_CLIENT_ID"):
        login(path=tmp_path / "t.json", auth_client=FakeAuthClient(), prompt=lambda _: "c")


def test_login_without_transfer_token_saves_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreAuthError, match="no Globus Transfer token"):
        login(
            path=tmp_path / "t.json",
            client_id="app",
            auth_client=FakeAuthClient(tokens={}),
            prompt=lambda _: "c",
            echo=lambda _: None,
        )
    assert not (tmp_path / "t.json").exists()


def test_logout_revokes_and_deletes(tmp_path: Path) -> None:
    path = save_tokens("app", TOKENS, tmp_path / "t.json")
    auth = FakeAuthClient()
    assert logout(path=path, auth_client=auth, echo=lambda _: None)
    assert sorted(auth.revoked) == ["AT-transfer", "RT-transfer"]
    assert not path.exists()


def test_logout_deletes_even_when_revoking_fails(tmp_path: Path) -> None:
    path = save_tokens("app", TOKENS, tmp_path / "t.json")
    shown: list[str] = []
    assert logout(path=path, auth_client=FakeAuthClient(fail_revoke=True), echo=shown.append)
    assert not path.exists()
    assert any("Could not revoke" in line for line in shown)


def test_logout_without_tokens(tmp_path: Path) -> None:
    shown: list[str] = []
    assert not logout(path=tmp_path / "absent.json", echo=shown.append)
    assert "No Globus tokens" in shown[0]


# -- the command ------------------------------------------------------------------------------


def test_command_logout_without_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logout", "--tokens", str(tmp_path / "absent.json")]) == 0
    assert "No Globus tokens" in capsys.readouterr().out


def test_command_login_without_client_id_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(globus_login, "CLIENT_ID", None)
    assert main(["login"]) == 1
    assert "--client-id" in capsys.readouterr().err


def test_command_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "login" in capsys.readouterr().err


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    [script] = [
        e for e in entry_points(group="console_scripts") if e.name == "proxystore-globus-auth"
    ]
    assert script.value == "proxystore.cli.globus_login:main"


def test_the_program_runs_as_a_module_of_the_cli_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxystore.cli.globus_login", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: proxystore-globus-auth") and "login" in result.stdout
