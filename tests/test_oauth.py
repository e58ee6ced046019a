"""Signing in to OAuth-protected downstream servers, end to end.

A real gateway process, a real OAuth-protected MCP server process (tests/servers/oauth_server.py)
and a headless browser run through $BROWSER that follows the authorization redirect to the
gateway's callback listener.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

import harness
from gateway_lib.errors import AUTH_REQUIRED, SERVER_UNAVAILABLE
from oauth_harness import ALLOW_ALL, OAuthServer, SERVER_NAME, browser_env, error_of, oauth_server, run_gateway_command, visits

CALL_S = 60


M2M_SECRET = "client-secret-marker-7f3a"  # also a marker the leak test looks for


@pytest.fixture(scope="module")
def signer_key(tmp_path_factory) -> Path:
    """A private key (PEM) whose public half the shared server trusts for client 'signer'."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    folder = tmp_path_factory.mktemp("signer")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "client-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (folder / "client-key.pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return folder / "client-key.pem"


@pytest.fixture(scope="module")
def shared_server(signer_key) -> Iterator[OAuthServer]:
    """One OAuth server for the module (it takes seconds to start), with three pre-registered
    clients: 'preset-client' (public), 'machine' (client secret), 'signer' (private_key_jwt)."""
    with oauth_server("shared", "--client", "preset-client", "--cc-client", f"machine:{M2M_SECRET}",
                      "--jwt-client", "signer", "--jwt-public-key", str(signer_key.with_suffix(".pub.pem"))) as server:
        yield server


@pytest.fixture
def server(shared_server: OAuthServer) -> OAuthServer:
    """The shared OAuth server, forgetting every client, token and count of earlier tests."""
    shared_server.control("reset")
    return shared_server


def whoami(gateway: harness.Gateway, timeout_ms: int | None = None):
    args = {"server": SERVER_NAME, "tool": "whoami", "args": {}}
    if timeout_ms is not None:
        args["timeout_ms"] = timeout_ms
    return gateway.call_tool("execute_tool", args, timeout=CALL_S)


def oauth_dir() -> Path:
    return harness.USER_DIRS.config / "agent-mcp-gateway" / "oauth"


def stored_records() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(oauth_dir().glob("*.json"))]


def expire_stored_tokens() -> None:
    """As if the access token's lifetime had passed: the record's expiry moves into the past."""
    for path in oauth_dir().glob("*.json"):
        record = json.loads(path.read_text())
        record["expires_at"] = time.time() - 60
        path.write_text(json.dumps(record))


def login(config, env) -> subprocess.CompletedProcess:
    done = run_gateway_command(config, "login", SERVER_NAME, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@contextlib.contextmanager
def signed_in_with_an_expired_token(tag, config_dir, server: OAuthServer) -> Iterator[Path]:
    """`server` signed in to by `login` (one browser visit, in the browser log yielded), with
    the stored access token past its expiry."""
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    login(config_dir, browser_env(log, tag=tag))
    expire_stored_tokens()
    yield log


def test_a_call_without_tokens_signs_in_through_the_browser_and_then_proceeds(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    with config_dir.gateway(env=browser_env(log, tag=tag)) as gateway:
        first = whoami(gateway)
        second = whoami(gateway)
    stats = server.stats()
    assert not first.is_error and harness.result_text(first).startswith("dcr-")
    assert harness.result_text(second) == harness.result_text(first)
    assert len(visits(log)) == 1 and stats["authorizations"] == 1 and stats["registrations"] == 1
    # The authorization request carried PKCE, state and the RFC 8707 resource.
    query = parse_qs(urlsplit(visits(log)[0]["url"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"] and query["resource"] == [server.url]
    assert query["redirect_uri"][0].startswith("http://127.0.0.1:") and query["redirect_uri"][0].endswith("/callback")


def test_tokens_live_in_a_0600_file_in_a_0700_folder_under_the_user_config_dir(tag, config_dir, server):
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    login(config_dir, browser_env(config_dir.path("browser.jsonl"), tag=tag))
    files = list(oauth_dir().glob("*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(oauth_dir().stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stored_records()[0]["tokens"]["access_token"]


def test_gateway_oauth_dir_moves_the_token_store(tag, config_dir, tmp_path, server):
    elsewhere = tmp_path / "tokens-elsewhere"
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    env = {**browser_env(config_dir.path("browser.jsonl"), tag=tag), "GATEWAY_OAUTH_DIR": str(elsewhere)}
    login(config_dir, env)
    assert len(list(elsewhere.glob("*.json"))) == 1 and not oauth_dir().exists()


def test_after_login_calls_need_no_browser_and_logout_forgets_the_tokens(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    done = login(config_dir, browser_env(log, tag=tag))
    assert f"Signed in to {SERVER_NAME!r}" in done.stdout
    # From now on a browser visit would be recorded, and never come back.
    with config_dir.gateway(env=browser_env(log, mode="ignore", tag=tag)) as gateway:
        result = whoami(gateway)
    assert not result.is_error and len(visits(log)) == 1
    logout = run_gateway_command(config_dir, "logout", SERVER_NAME)
    assert logout.returncode == 0 and f"Forgot the tokens of {SERVER_NAME!r}" in logout.stdout
    assert stored_records() == []
    # A call needs a sign-in again: with no browser to open, it says so at once (rather
    # than waiting out a deadline for a browser that never comes back).
    with config_dir.gateway(env={"BROWSER": "false %s"}) as gateway:
        after = whoami(gateway, timeout_ms=60000)
    assert error_of(after)["code"] == AUTH_REQUIRED


def test_a_kept_alive_session_signs_in_with_the_stored_tokens(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry(session="keep-alive")}, ALLOW_ALL)
    login(config_dir, browser_env(log, tag=tag))
    with config_dir.gateway(env=browser_env(log, mode="ignore", tag=tag)) as gateway:
        results = [whoami(gateway) for _ in range(3)]
    stats = server.stats()
    assert not any(result.is_error for result in results) and len(visits(log)) == 1
    assert stats["authorizations"] == 1 and stats["refresh_token"] == 0


def test_pins_diff_lists_a_signed_in_server_with_the_stored_tokens_and_no_browser(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    login(config_dir, browser_env(log, tag=tag))
    diff = run_gateway_command(config_dir, "pins", "diff", SERVER_NAME, env=browser_env(log, mode="ignore", tag=tag))
    # 1, not 2 (trouble): the server was listed; never pinned, so it differs from its pins.
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert f"{SERVER_NAME}: not pinned yet" in diff.stdout
    assert len(visits(log)) == 1  # the login's; the listing needed no browser


def test_an_expired_access_token_is_refreshed_from_stored_metadata_without_a_browser(tag, config_dir, server):
    with signed_in_with_an_expired_token(tag, config_dir, server) as log:
        with config_dir.gateway(env=browser_env(log, mode="ignore", tag=tag)) as gateway:
            first, second = whoami(gateway), whoami(gateway)
        stats = server.stats()
    assert not first.is_error and not second.is_error
    assert stats["refresh_token"] == 1 and stats["authorizations"] == 1 and len(visits(log)) == 1
    assert stats["metadata"] == 1  # discovered once, at login; the gateway's sessions reuse it


def test_two_gateways_refresh_one_expired_token_once_between_them(tag, config_dir, server):
    with signed_in_with_an_expired_token(tag, config_dir, server) as log:
        # A slow token endpoint keeps the first refresh in flight while the other gateway
        # finds the token expired too; refresh tokens rotate, so a second refresh with the
        # same one would be refused.
        server.control("refresh-delay?seconds=1")
        env = browser_env(log, mode="ignore", tag=tag)
        with config_dir.gateway(env=env) as one, config_dir.gateway(env=env) as two:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = list(pool.map(whoami, [one, two]))
        stats = server.stats()
    assert not any(result.is_error for result in results)
    assert stats["refresh_token"] == 1 and stats["refresh_refused"] == 0 and stats["authorizations"] == 1


def test_a_refused_refresh_token_falls_back_to_signing_in_again(tag, config_dir, server):
    with signed_in_with_an_expired_token(tag, config_dir, server) as log:
        server.control("revoke-refresh")
        with config_dir.gateway(env=browser_env(log, tag=tag)) as gateway:
            result = whoami(gateway)
        stats = server.stats()
    assert not result.is_error
    assert stats["refresh_refused"] == 1 and stats["authorizations"] == 2 and len(visits(log)) == 2


def test_concurrent_calls_to_a_server_without_tokens_share_one_sign_in(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    with config_dir.gateway(env=browser_env(log, tag=tag)) as gateway:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: whoami(gateway), range(3)))
    stats = server.stats()
    assert not any(result.is_error for result in results)
    assert len(visits(log)) == 1 and stats["authorizations"] == 1


def test_the_callback_refuses_a_wrong_state_and_accepts_only_the_right_one(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    with config_dir.gateway(env=browser_env(log, mode="wrong-state", tag=tag)) as gateway:
        result = whoami(gateway)
    assert not result.is_error
    assert visits(log)[0]["callbacks"] == [[False, 400], [True, 200]]


def test_a_sign_in_that_never_comes_back_is_auth_required_by_the_deadline_and_closes_its_listener(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    with config_dir.gateway(env=browser_env(log, mode="ignore", tag=tag)) as gateway:
        error = error_of(whoami(gateway, timeout_ms=5000))
        url = visits(log)[0]["url"]
        redirect = urlsplit(parse_qs(urlsplit(url).query)["redirect_uri"][0])

        def listener_closed() -> bool:
            try:
                socket.create_connection((redirect.hostname, redirect.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        closed = harness.wait_until(listener_closed, 5)
    assert error["code"] == AUTH_REQUIRED
    assert url in error["message"] and f"gateway.py login {SERVER_NAME}" in error["message"]
    assert closed


def test_client_credentials_with_a_secret_get_a_token_without_a_browser(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    oauth = {"grant": "client_credentials", "clientId": "machine", "clientSecret": "${M2M_SECRET}"}
    config_dir.write({SERVER_NAME: server.entry(oauth=oauth)}, ALLOW_ALL)
    with config_dir.gateway(env={**browser_env(log, tag=tag), "M2M_SECRET": M2M_SECRET}) as gateway:
        first, second = whoami(gateway), whoami(gateway)
    stats = server.stats()
    assert harness.result_text(first) == "machine" and harness.result_text(second) == "machine"
    assert stats["client_credentials"] == 1 and not visits(log)


def test_client_credentials_with_a_private_key_jwt_get_a_token(tag, config_dir, server, signer_key):
    config_dir.path("client-key.pem").write_bytes(signer_key.read_bytes())  # relative to the .mcp.json
    oauth = {"grant": "client_credentials", "clientId": "signer", "privateKeyFile": "client-key.pem",
             "signingAlgorithm": "RS256"}
    config_dir.write({SERVER_NAME: server.entry(oauth=oauth)}, ALLOW_ALL)
    with config_dir.gateway() as gateway:
        result = whoami(gateway)
    stats = server.stats()
    assert harness.result_text(result) == "signer" and stats["client_credentials"] == 1


def test_a_pre_registered_client_id_signs_in_without_registering(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry(oauth={"clientId": "preset-client"})}, ALLOW_ALL)
    with config_dir.gateway(env=browser_env(log, tag=tag)) as gateway:
        result = whoami(gateway)
    stats = server.stats()
    assert harness.result_text(result) == "preset-client"
    assert stats["registrations"] == 0 and stats["authorizations"] == 1
    assert parse_qs(urlsplit(visits(log)[0]["url"]).query)["client_id"] == ["preset-client"]


def test_a_configured_callback_port_is_where_the_browser_comes_back(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    port = harness.free_port()
    config_dir.write({SERVER_NAME: server.entry(oauth={"callbackPort": port})}, ALLOW_ALL)
    with config_dir.gateway(env=browser_env(log, tag=tag)) as gateway:
        result = whoami(gateway)
    assert not result.is_error
    redirect = parse_qs(urlsplit(visits(log)[0]["url"]).query)["redirect_uri"][0]
    assert redirect == f"http://127.0.0.1:{port}/callback"


def test_oauth_false_makes_a_401_server_unavailable_saying_so(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    config_dir.write({SERVER_NAME: server.entry(oauth=False)}, ALLOW_ALL)
    with config_dir.gateway(env=browser_env(log, tag=tag)) as gateway:
        error = error_of(whoami(gateway))
    stats = server.stats()
    assert error["code"] == SERVER_UNAVAILABLE
    assert "HTTP 401" in error["message"] and '"oauth": false' in error["message"]
    assert not visits(log) and stats["registrations"] == 0


def test_status_and_check_show_token_presence_and_expiry(tag, config_dir, server):
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    before = run_gateway_command(config_dir, "check")
    login(config_dir, browser_env(config_dir.path("browser.jsonl"), tag=tag))
    after = run_gateway_command(config_dir, "check")
    with config_dir.gateway("--debug") as gateway:
        status = gateway.call_json("get_gateway_status", {})
    assert f"oauth: server {SERVER_NAME!r}: not signed in (sign in with 'gateway.py login {SERVER_NAME}'" in before.stdout
    assert f"oauth: server {SERVER_NAME!r}: signed in, the access token expires " in after.stdout
    summary = status["oauth"][SERVER_NAME]
    assert summary["signed_in"] is True and summary["expires_at"].endswith("Z") and summary["refreshable"] is True
    record = stored_records()[0]
    for secret in (record["tokens"]["access_token"], record["tokens"]["refresh_token"]):
        assert secret not in after.stdout and secret not in json.dumps(status)


def test_no_token_code_or_secret_reaches_responses_logs_audit_or_status(tag, config_dir, server):
    log = config_dir.path("browser.jsonl")
    audit = config_dir.path("audit.jsonl")
    secret = M2M_SECRET
    config_dir.write({
        SERVER_NAME: server.entry(),
        "m2m": server.entry(oauth={"grant": "client_credentials", "clientId": "machine", "clientSecret": secret}),
    }, ALLOW_ALL)
    gateway = config_dir.gateway("--debug", "--log-level", "DEBUG", "--audit-log", str(audit),
                                 env=browser_env(log, tag=tag))
    with gateway:
        answers = [whoami(gateway), gateway.call_tool("execute_tool", {"server": "m2m", "tool": "echo",
                                                                       "args": {"text": "hi"}}),
                   gateway.call_tool("get_gateway_status", {})]
    stderr = gateway.stderr_text()
    records = stored_records()
    code = parse_qs(urlsplit(visits(log)[0]["callback"]).query)["code"][0]
    secrets = [secret, code] + [value for record in records for value in
                                (record["tokens"]["access_token"], record["tokens"].get("refresh_token")) if value]
    assert len(secrets) >= 4
    seen = stderr + audit.read_text() + "".join(answer.model_dump_json() for answer in answers)
    for value in secrets:
        assert value not in seen
    assert not any(answer.is_error for answer in answers)
    assert os.path.getsize(audit) > 0 and "needs a sign-in" in stderr


def test_an_sse_server_signs_in_the_same_way(tag, config_dir):
    log = config_dir.path("browser.jsonl")
    with oauth_server(tag, transport="sse") as server:
        config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
        with config_dir.gateway(env=browser_env(log, tag=tag)) as gateway:
            first, second = whoami(gateway), whoami(gateway)
    assert not first.is_error and not second.is_error and len(visits(log)) == 1


def test_without_a_browser_the_call_is_auth_required_at_once_saying_so(tag, config_dir, server):
    config_dir.write({SERVER_NAME: server.entry()}, ALLOW_ALL)
    with config_dir.gateway(env={"BROWSER": "false %s"}) as gateway:
        error = error_of(whoami(gateway, timeout_ms=60000))
    assert error["code"] == AUTH_REQUIRED and "no browser could be opened" in error["message"]
    assert f"gateway.py login {SERVER_NAME}" in error["message"]
