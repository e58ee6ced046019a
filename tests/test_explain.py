"""`gateway.py explain`: what an agent may use and which rule decides it, from the config files.

Runs the command as a process, on the example configs and on a fixture server, and compares
its words with what a real gateway answers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import harness
from gateway_lib.errors import INVALID_AGENT_ID
from servers import shaped_server

EXAMPLES = harness.ROOT / "config" / "examples"


def explain(*args: str, mcp=EXAMPLES / "team.mcp.json", rules=EXAMPLES / "team.rules.json",
            env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(harness.GATEWAY), "explain", "--mcp-config", str(mcp),
                           "--rules", str(rules), *args],
                          capture_output=True, text=True, timeout=60, env=harness.gateway_env(env))
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def explained(*args: str, **kwargs) -> dict:
    return json.loads(explain("--json", *args, **kwargs).stdout)


def test_on_the_example_configs_each_server_is_allowed_or_denied_with_the_rule_that_decided(tmp_path):
    report = explained("--agent", "researcher")
    assert report["identity"]["agent"] == "researcher"
    assert [(s["server"], s["allowed"], s["rule"]) for s in report["servers"]] == [
        ("filesystem", True, "agents.researcher.allow.servers[1]"),
        ("postgres", False, "default-deny"),
        ("search", True, "agents.researcher.allow.servers[0]"),
    ]
    text = explain("--agent", "researcher").stdout
    assert "postgres: denied by default-deny: Agent 'researcher' may not use server 'postgres'" in text


def test_a_tool_is_decided_by_the_tool_rules_of_the_example_configs():
    report = explained("--agent", "backend.database", "--server", "postgres", "--tool", "drop_table")
    assert report["tools"] == [{
        "server": "postgres", "tool": "drop_table", "allowed": False,
        "rule": "agents.backend.database.deny.tools.postgres[0]", "pin": None,
        "message": "Agent 'backend.database' may not call tool 'drop_table' on server 'postgres'",
    }]


def test_the_identity_chain_is_shown_and_followed_like_the_gateway_does(tmp_path):
    fallback = explained()
    assert fallback["identity"]["agent"] == "default"
    assert "an agent named 'default': defined" in fallback["identity"]["chain"]
    assert explained(env={"GATEWAY_DEFAULT_AGENT": "admin"})["identity"]["agent"] == "admin"
    pinned = explained("--agent", "admin", env={"GATEWAY_AGENT": "researcher"})
    assert pinned["identity"]["agent"] is None and pinned["identity"]["error"]["code"] == INVALID_AGENT_ID
    strict = json.loads((EXAMPLES / "team.rules.json").read_text())
    strict["defaults"]["deny_on_missing_agent"] = True
    rules = harness.write_json(tmp_path / "strict.rules.json", strict)
    refused = explained(rules=rules)
    assert refused["identity"]["error"]["code"] == INVALID_AGENT_ID and refused["servers"] == []


def test_with_a_server_its_tools_are_listed_once_and_each_is_explained_in_the_gateways_words(config_dir, tag):
    config_dir.write({"shaped": shaped_server.entry(tag)},
                     {"agents": {"dev": {"allow": {"servers": ["shaped"]}, "deny": {"tools": {"shaped": ["big_*"]}}},
                                 "ok": {"allow": {"servers": ["shaped"]}}}})
    with config_dir.gateway() as gw:
        refused = gw.call_tool("execute_tool", {"agent_id": "dev", "server": "shaped", "tool": "big_text", "args": {}})
    report = explained("--agent", "dev", "--server", "shaped", mcp=config_dir.mcp_config, rules=config_dir.rules)
    tools = {t["tool"]: t for t in report["tools"]}
    assert sorted(tools) == ["big_error", "big_image", "big_structured", "big_text"]
    assert tools["big_text"]["message"] == refused.structured_content["error"]["message"]
    assert tools["big_text"]["rule"] == refused.structured_content["error"]["rule"] == "agents.dev.deny.tools.shaped[0]"
    assert all(t["pin"] is None for t in tools.values())  # the gateway pinned them on first use: no change
