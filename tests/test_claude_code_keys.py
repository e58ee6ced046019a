"""A `.mcp.json` Claude Code writes loads unchanged and means the same: `timeout`, `oauth`,
`headersHelper` are understood, `type: "ws"` is refused with a reason, and every other key
is accepted with a warning that it is ignored."""

from __future__ import annotations

import io
import json

import pytest

import harness
from gateway_lib import cli
from gateway_lib.errors import SERVER_UNAVAILABLE, TIMEOUT
from oauth_harness import ALLOW_ALL, error_of


SHORT_MS = 700  # a timeout the test waits out: short, and far from the other key's 60000


def check(tmp_path, servers: dict) -> tuple[int, str]:
    mcp_path = harness.write_json(tmp_path / ".mcp.json", {"mcpServers": servers})
    rules_path = harness.write_json(tmp_path / "rules.json", ALLOW_ALL)
    out = io.StringIO()
    code = cli.main(["check", "--mcp-config", str(mcp_path), "--rules", str(rules_path)],
                    environ={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}, out=out)
    return code, out.getvalue()


def test_an_entry_with_every_claude_code_key_loads_without_errors(tmp_path):
    code, output = check(tmp_path, {
        "notion": {"type": "http", "url": "https://mcp.notion.example/mcp", "headers": {"X-A": "b"},
                   "oauth": {"clientId": "abc", "callbackPort": 8765, "scopes": "read write",
                             "authServerMetadataUrl": "https://auth.example/.well-known/oauth-authorization-server"},
                   "timeout": 30000},
        "helper": {"type": "sse", "url": "https://sse.example/sse", "headersHelper": "get-token --json"},
        "local": {"command": "npx", "args": ["-y", "server"], "env": {"A": "b"}, "timeout": 5000},
    })
    assert code == 0, output
    assert "0 error(s), 0 warning(s)" in output


@pytest.mark.parametrize("transport", ["ws", "websocket"])
def test_a_websocket_entry_is_refused_with_its_reason(tmp_path, transport):
    code, output = check(tmp_path, {"live": {"type": transport, "url": "wss://live.example/mcp"}})
    assert code == 1
    assert f"$.mcpServers.live.type: '{transport}' (WebSocket) servers are not supported" in output


def test_both_timeout_keys_warn_and_timeout_ms_wins(tag, config_dir):
    code, output = check(config_dir.root, {"slow": {"command": "x", "timeout": 60000, "timeout_ms": 3000}})
    assert code == 0
    assert "warning:" in output and "both 'timeout' (Claude Code's name) and 'timeout_ms' are given" in output
    config_dir.write({"slow": harness.fault_server(tag, timeout=60000, timeout_ms=SHORT_MS)}, ALLOW_ALL)
    with config_dir.gateway() as gateway:
        error = error_of(gateway.call_tool("execute_tool", {"server": "slow", "tool": "sleep", "args": {"seconds": 30}}))
    # Either bound proves which key was read: a loaded machine may still be starting the server.
    assert error["code"] in (TIMEOUT, SERVER_UNAVAILABLE) and f"within {SHORT_MS} ms" in error["message"]


def test_claude_codes_timeout_key_is_the_servers_call_timeout_in_milliseconds(tag, config_dir):
    config_dir.write({"slow": harness.fault_server(tag, timeout=SHORT_MS)}, ALLOW_ALL)
    with config_dir.gateway() as gateway:
        error = error_of(gateway.call_tool("execute_tool", {"server": "slow", "tool": "sleep", "args": {"seconds": 30}}))
    # Either bound proves which key was read: a loaded machine may still be starting the server.
    assert error["code"] in (TIMEOUT, SERVER_UNAVAILABLE) and f"within {SHORT_MS} ms" in error["message"]


def test_keys_the_gateway_does_not_use_are_accepted_with_a_warning(tmp_path):
    code, output = check(tmp_path, {
        "a": {"command": "x", "alwaysAllow": ["t"], "oauth": {"clientId": "c"}, "headersHelper": "h"},
        "b": {"url": "https://b.example/mcp", "oauth": {"clientId": "c", "futureKey": 1}},
    })
    assert code == 0, output
    assert "$.mcpServers.a.alwaysAllow: unknown key 'alwaysAllow' is ignored" in output
    assert "$.mcpServers.a.oauth: 'oauth' is for http/sse servers: ignored" in output
    assert "$.mcpServers.a.headersHelper: 'headersHelper' is for http/sse servers: ignored" in output
    assert "$.mcpServers.b.oauth.futureKey: oauth key 'futureKey' is not used by the gateway: ignored" in output


@pytest.mark.parametrize("oauth, fragment", [
    ({"grant": "client_credentials"}, "$.mcpServers.m.oauth.grant: grant 'client_credentials' needs 'clientId'"),
    ({"grant": "client_credentials", "clientId": "c"}, "needs exactly one of 'clientSecret' and 'privateKeyFile'"),
    ({"grant": "client_credentials", "clientId": "c", "clientSecret": "s", "privateKeyFile": "k.pem"},
     "needs exactly one of 'clientSecret' and 'privateKeyFile'"),
    ({"clientId": "c", "privateKeyFile": "k.pem"}, "$.mcpServers.m.oauth.privateKeyFile: 'privateKeyFile' is for grant"),
    ({"clientId": "c", "signingAlgorithm": "RS256"}, "'signingAlgorithm' needs 'privateKeyFile'"),
    ({"clientSecret": "s"}, "'clientSecret' needs the 'clientId' it belongs to"),
    ({"clientId": "https://client.example"}, "a clientId that is a URL (a client ID metadata document) needs a path"),
    ({"callbackPort": 0}, "$.mcpServers.m.oauth.callbackPort: must be at least 1"),
    ({"signingAlgorithm": "none", "clientId": "c"}, "$.mcpServers.m.oauth.signingAlgorithm: 'none' is not allowed"),
    ({"authServerMetadataUrl": "ftp://x"}, "$.mcpServers.m.oauth.authServerMetadataUrl"),
])
def test_oauth_keys_that_do_not_fit_together_are_errors_at_their_place(tmp_path, oauth, fragment):
    code, output = check(tmp_path, {"m": {"url": "https://m.example/mcp", "oauth": oauth}})
    assert code == 1 and fragment in output, output


def test_oauth_false_and_a_cimd_client_id_are_valid(tmp_path):
    code, output = check(tmp_path, {"off": {"url": "https://a.example/mcp", "oauth": False},
                                    "cimd": {"url": "https://b.example/mcp",
                                             "oauth": {"clientId": "https://me.example/client.json"}}})
    assert code == 0, output


def test_the_schema_documents_every_oauth_key():
    schema = json.loads((harness.ROOT / "schemas" / "mcp-config.schema.json").read_text())
    oauth = schema["$defs"]["oauth"]["properties"]
    assert sorted(oauth) == sorted(["clientId", "clientSecret", "callbackPort", "authServerMetadataUrl", "scopes",
                                    "grant", "privateKeyFile", "signingAlgorithm"])
    assert all(value.get("description") for value in oauth.values())
