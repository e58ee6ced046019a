"""Promise: over HTTP, identity is never self-declared where it must not be, and a browser
page from elsewhere cannot reach the gateway.

Host and Origin are checked on every request (403 otherwise: the DNS-rebinding defence);
CORS preflights are answered for allowed origins only; a bearer token acts as the agent
whose `token_sha256` lists its hash, and nothing else; without tokens the gateway serves
only on loopback; no token or hash reaches a log, the audit log or status.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid

import pytest

import harness
from gateway_lib import cli
from gateway_lib.errors import INVALID_AGENT_ID
from gateway_lib.http_security import OriginPolicy, TokenIndex, hash_token
from gateway_lib.http_transport import REFUSED, SESSION_NOT_FOUND
from http_harness import HttpGatewayProcess, tool_error

ALICE_TOKEN = "alice-token-0123456789abcdef"
BOB_TOKEN = "bob-token-0123456789abcdef"


def rules_with_tokens(**extra_agents) -> dict:
    return {"agents": {
        "alice": {"allow": {"servers": ["alpha"]}, "token_sha256": [hash_token(ALICE_TOKEN)]},
        "bob": {"allow": {"servers": ["beta"]}, "token_sha256": [hash_token(BOB_TOKEN)]},
        **extra_agents,
    }}


@pytest.fixture
def two_servers(config_dir, tag):
    return {"alpha": harness.fault_server(tag), "beta": harness.fault_server(tag)}


def shared_gateway(tmp_path_factory, rules: dict, *args: str, env: dict | None = None):
    """A gateway shared by a module's tests (each opens sessions of its own), in temp user dirs."""
    root = tmp_path_factory.mktemp("http-security")
    module_tag = f"shared-{uuid.uuid4().hex}"
    config_dir = harness.ConfigDir(root / "config")
    config_dir.write({"alpha": harness.fault_server(module_tag), "beta": harness.fault_server(module_tag)}, rules)
    user = {"HOME": str(root), "XDG_CACHE_HOME": str(root / "cache"), "XDG_CONFIG_HOME": str(root / "xdg")}
    with HttpGatewayProcess(config_dir, *args, env={**user, **(env or {})}) as process:
        yield process
    assert harness.wait_no_tagged(module_tag) == []


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory):
    """No tokens, on loopback: identity is self-declared, as over stdio."""
    yield from shared_gateway(tmp_path_factory, {"agents": {"dev": {"allow": {"servers": ["*"]}}}},
                              env={"GATEWAY_CORS_ORIGINS": "https://app.example.com",
                                   "GATEWAY_HTTP_ALLOWED_HOSTS": "gateway.internal"})


@pytest.fixture(scope="module")
def token_gateway(tmp_path_factory):
    yield from shared_gateway(tmp_path_factory, rules_with_tokens())


def server_names(result: dict) -> list[str]:
    return [server["name"] for server in result["structuredContent"]["servers"]]


# --- Host and Origin ------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil.example"])
def test_a_foreign_origin_is_403_on_every_path(open_gateway, origin):
    raw = open_gateway.raw()
    replies = [raw.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, headers={"Origin": origin}),
               raw.request("GET", "/health", headers={"Origin": origin}),
               raw.request("OPTIONS", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})]
    for reply in replies:
        assert reply.status == 403 and reply.json()["error"]["code"] == REFUSED
        assert reply.header("Access-Control-Allow-Origin") is None


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:8080", "https://app.example.com"])
def test_a_loopback_origin_or_a_listed_one_is_served_with_cors_headers(open_gateway, origin):
    raw = open_gateway.raw()
    reply = raw.post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": harness.LATEST_PROTOCOL_VERSION, "capabilities": {}}},
                     headers={"Origin": origin})
    assert reply.status == 200
    assert reply.header("Access-Control-Allow-Origin") == origin
    assert "Mcp-Session-Id" in reply.header("Access-Control-Expose-Headers")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "10.0.0.1"])
def test_a_host_header_not_naming_the_gateway_is_403(open_gateway, host):
    raw = open_gateway.raw()
    reply = raw.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, headers={"Host": host})
    assert reply.status == 403 and reply.json()["error"]["code"] == REFUSED


def test_a_host_listed_in_allowed_hosts_is_served(open_gateway):
    reply = open_gateway.raw().request("GET", "/health", headers={"Host": "gateway.internal:8000"})
    assert reply.status == 200


def test_cors_preflight_is_answered_for_allowed_origins_only_and_exposes_the_session_header(open_gateway):
    raw = open_gateway.raw()
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, mcp-session-id, authorization"}
    allowed = raw.request("OPTIONS", headers={"Origin": "https://app.example.com", **asked})
    refused = raw.request("OPTIONS", headers={"Origin": "https://other.example.com", **asked})
    assert allowed.status == 204
    assert allowed.header("Access-Control-Allow-Origin") == "https://app.example.com"
    assert "POST" in allowed.header("Access-Control-Allow-Methods")
    allowed_headers = allowed.header("Access-Control-Allow-Headers").lower()
    assert all(name in allowed_headers for name in ("content-type", "mcp-session-id", "authorization"))
    assert "Mcp-Session-Id" in allowed.header("Access-Control-Expose-Headers")
    assert refused.status == 403 and refused.header("Access-Control-Allow-Origin") is None


def test_the_origin_policy_table():
    loopback = OriginPolicy.build("127.0.0.1", ["https://app.example.com"], [])
    public = OriginPolicy.build("0.0.0.0", ["https://app.example.com"], ["gw.example.com"])
    assert loopback.origin_allowed(None) and loopback.origin_allowed("http://[::1]:9")
    assert loopback.origin_allowed("https://APP.example.com/")
    assert not loopback.origin_allowed("file://localhost") and not loopback.origin_allowed("null")
    assert not public.origin_allowed("http://localhost:3000")  # loopback origins only when bound to loopback
    assert loopback.host_allowed("localhost:8000") and loopback.host_allowed("[::1]:8000")
    assert not loopback.host_allowed(None) and not loopback.host_allowed("gw.example.com")
    assert public.host_allowed("gw.example.com") and not public.host_allowed("127.0.0.1:8000")


# --- bearer tokens ------------------------------------------------------------------------------------


def test_a_bearer_token_acts_as_its_agent(token_gateway):
    gateway = token_gateway
    alice, bob = gateway.raw().with_token(ALICE_TOKEN), gateway.raw().with_token(BOB_TOKEN)
    assert server_names(alice.call_result(alice.initialize(), "list_servers", {})) == ["alpha"]
    assert server_names(bob.call_result(bob.initialize(), "list_servers", {"agent_id": "bob"})) == ["beta"]


def test_a_token_with_another_agents_agent_id_is_invalid_agent_id(token_gateway):
    gateway = token_gateway
    alice = gateway.raw().with_token(ALICE_TOKEN)
    session = alice.initialize()
    for tool, arguments in (("list_servers", {"agent_id": "bob"}),
                            ("execute_tool", {"agent_id": "bob", "server": "beta", "tool": "echo", "args": {}})):
        assert tool_error(alice.call_result(session, tool, arguments))["code"] == INVALID_AGENT_ID


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic YWxpY2U6eA==", "Bearer "],
                         ids=["no token", "wrong token", "another scheme", "empty token"])
def test_a_request_without_a_valid_token_is_401_with_a_bearer_challenge(token_gateway, authorization):
    gateway = token_gateway
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = gateway.raw().post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, headers=headers)
    assert reply.status == 401 and reply.json()["error"]["code"] == REFUSED
    assert reply.header("WWW-Authenticate").startswith("Bearer")


def test_a_session_answers_only_the_identity_that_opened_it(token_gateway):
    gateway = token_gateway
    alice, bob = gateway.raw().with_token(ALICE_TOKEN), gateway.raw().with_token(BOB_TOKEN)
    session = alice.initialize()
    stolen = bob.call(session, "list_servers", {})
    assert stolen.status == 404 and stolen.json()["error"]["code"] == SESSION_NOT_FOUND
    assert bob.request("DELETE", headers={"Mcp-Session-Id": session}).status == 404
    assert alice.call(session, "list_servers", {}).status == 200


def test_a_wrong_token_is_refused_even_where_no_token_is_required(open_gateway):
    reply = open_gateway.raw().with_token("made-up").post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                                           "params": {}})
    assert reply.status == 401


def test_tokens_hot_reload_with_the_rules(config_dir, two_servers):
    config_dir.write(two_servers, rules_with_tokens())
    carol_token = "carol-token-0123456789abcdef"
    with HttpGatewayProcess(config_dir, "--log-level", "DEBUG", env={"GATEWAY_RELOAD_DEBOUNCE_MS": "50"}) as gateway:
        assert harness.wait_until(lambda: "Watching" in gateway.stderr_text(), timeout=15)  # the watcher is up
        carol, alice = gateway.raw().with_token(carol_token), gateway.raw().with_token(ALICE_TOKEN)
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        assert carol.post(ping).status == 401
        rules = rules_with_tokens(carol={"allow": {"servers": ["beta"]}, "token_sha256": [hash_token(carol_token)]})
        del rules["agents"]["alice"]["token_sha256"]
        config_dir.write_rules(rules)
        # 400 (no session yet) instead of 401: the token was accepted.
        assert harness.wait_until(lambda: carol.post(ping).status == 400, timeout=15)
        assert alice.post(ping).status == 401


def test_without_tokens_the_gateway_refuses_a_non_loopback_host_with_exit_2(config_dir, two_servers):
    config_dir.write(two_servers, {"agents": {"dev": {"allow": {"servers": ["*"]}}}})
    process = subprocess.run(
        [sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules,
                                               "--transport", "http", "--host", "0.0.0.0", "--port", "0")],
        stdin=subprocess.DEVNULL, capture_output=True, env=harness.gateway_env(), timeout=60)
    assert process.returncode == 2
    assert "token" in process.stderr.decode() and "serving" not in process.stderr.decode()


def test_the_token_command_prints_a_token_whose_hash_is_the_rules_line():
    out = io.StringIO()
    assert cli.main(["token", "backend"], environ={}, out=out) == 0
    text = out.getvalue()
    token = re.search(r"^    (\S{40,})$", text, re.MULTILINE).group(1)
    line = re.search(r'"token_sha256": \["([0-9a-f]{64})"\]', text).group(1)
    assert line == hash_token(token)
    again = io.StringIO()
    cli.main(["token", "backend"], environ={}, out=again)
    assert token not in again.getvalue()  # a new random token every time


def test_a_token_index_finds_the_agent_of_a_token_and_nobody_for_others(config_dir, two_servers):
    config_dir.write(two_servers, rules_with_tokens())
    from gateway_lib.config import load_rules

    rules = load_rules(str(config_dir.rules))
    index = TokenIndex()
    assert index.agent_for(rules, ALICE_TOKEN) == "alice" and index.agent_for(rules, BOB_TOKEN) == "bob"
    assert index.agent_for(rules, ALICE_TOKEN + "x") is None and index.agent_for(rules, "") is None


def test_check_refuses_a_bad_token_hash_without_quoting_it_and_a_hash_shared_by_two_agents(config_dir, two_servers):
    rules = rules_with_tokens()
    rules["agents"]["alice"]["token_sha256"] = ["pasted-the-raw-token-here"]
    rules["agents"]["carol"] = {"token_sha256": [hash_token(BOB_TOKEN)]}
    config_dir.write(two_servers, rules)
    out = io.StringIO()
    code = cli.main(["check", "--mcp-config", str(config_dir.mcp_config), "--rules", str(config_dir.rules)],
                    environ={}, out=out)
    report = out.getvalue()
    assert code == 1
    assert "$.agents.alice.token_sha256[0]" in report and "pasted-the-raw-token-here" not in report
    assert "$.agents.carol.token_sha256[0]" in report and "'bob'" in report
    assert hash_token(BOB_TOKEN) not in report


def test_no_token_or_hash_reaches_stderr_the_audit_log_or_status(config_dir, two_servers):
    config_dir.write(two_servers, rules_with_tokens())
    audit = config_dir.path("audit.jsonl")
    gateway = HttpGatewayProcess(config_dir, "--audit-log", str(audit), "--debug", "--log-level", "DEBUG")
    try:
        gateway.wait_serving()
        alice = gateway.raw().with_token(ALICE_TOKEN)
        session = alice.initialize()
        alice.call_result(session, "list_servers", {})
        status = alice.call_result(session, "get_gateway_status", {})
        gateway.raw().with_token("a-wrong-token-9876").post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert gateway.stop() == 0
    finally:
        gateway.close()
    secrets = [ALICE_TOKEN, BOB_TOKEN, hash_token(ALICE_TOKEN), hash_token(BOB_TOKEN), "a-wrong-token-9876"]
    places = {"stderr": gateway.stderr_text(), "audit": audit.read_text(encoding="utf-8"),
              "status": json.dumps(status)}
    assert "alice" in places["audit"]  # the audit names the agent, never how it proved itself
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a token or hash reached {where}"
