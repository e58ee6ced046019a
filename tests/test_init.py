"""`gateway.py init`: a Claude Code style .mcp.json moved behind the gateway, run as a command.

The result is then used as it is meant to be: the printed client entry starts a real gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import harness
from gateway_lib import init_config
from servers import shaped_server


def init(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(harness.GATEWAY), "init", *args], cwd=folder,
                          capture_output=True, text=True, timeout=60, env=harness.gateway_env())


def client_config(tag: str) -> dict:
    return {
        "mcpServers": {
            "notes": shaped_server.entry(tag, description="Notes"),
            "db": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-postgres", "${DATABASE_URL}"],
                   "env": {"PGPASSWORD": "${PGPASSWORD:-}"}},
        },
        "globalShortcut": "Ctrl+Space",
    }


def printed_entry(stdout: str) -> dict:
    return json.loads(stdout[stdout.index('{\n  "mcpServers"'):stdout.rindex("}") + 1])


def test_init_writes_the_entries_unchanged_and_a_starter_rules_file_and_prints_the_gateway_entry(tmp_path, tag):
    harness.write_json(tmp_path / ".mcp.json", client_config(tag))
    done = init(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    servers = json.loads((tmp_path / init_config.SERVERS_NAME).read_text())
    assert servers == {"mcpServers": client_config(tag)["mcpServers"]}  # ${VAR} kept verbatim
    rules = json.loads((tmp_path / ".mcp-gateway-rules.json").read_text())
    assert rules["defaults"]["deny_on_missing_agent"] is True and set(rules["agents"]) == {"main", "reader"}
    entry = printed_entry(done.stdout)["mcpServers"]["gateway"]
    assert entry["command"] == sys.executable
    assert entry["args"] == [str(harness.GATEWAY), "--mcp-config", str(tmp_path / "servers.mcp.json"),
                             "--rules", str(tmp_path / ".mcp-gateway-rules.json")]
    assert "check: 0 error(s)" in done.stdout
    assert json.loads((tmp_path / ".mcp.json").read_text()) == client_config(tag)  # untouched without --write


def test_the_printed_entry_starts_a_gateway_that_serves_the_moved_servers_by_the_rules(tmp_path, tag):
    harness.write_json(tmp_path / ".mcp.json", client_config(tag))
    entry = printed_entry(init(tmp_path).stdout)["mcpServers"]["gateway"]
    with harness.McpClient(entry["command"], entry["args"], env=harness.gateway_env()) as gw:
        servers = gw.call_json("list_servers", {"agent_id": "reader"})["servers"]
        listing = gw.call_json("get_server_tools", {"agent_id": "reader", "server": "notes"})
        refused = gw.call_tool("list_servers", {})
    assert [s["name"] for s in servers] == ["db", "notes"]
    assert listing["tools"] == []  # the read-only example: no read*/get*/list*/search* tool here
    assert refused.is_error  # deny_on_missing_agent


def test_write_backs_up_the_source_and_rewrites_it_to_list_only_the_gateway(tmp_path, tag):
    harness.write_json(tmp_path / ".mcp.json", client_config(tag))
    done = init(tmp_path, "--write")
    assert done.returncode == 0, done.stdout + done.stderr
    [backup] = tmp_path.glob(".mcp.json.bak-*")
    assert json.loads(backup.read_text()) == client_config(tag)
    rewritten = json.loads((tmp_path / ".mcp.json").read_text())
    assert list(rewritten["mcpServers"]) == ["gateway"] and rewritten["globalShortcut"] == "Ctrl+Space"
    again = init(tmp_path, "--force")
    assert again.returncode == 1 and "already lists only the gateway" in again.stdout


def test_nothing_is_overwritten_without_force(tmp_path, tag):
    harness.write_json(tmp_path / "claude_desktop_config.json", client_config(tag))
    (tmp_path / "servers.mcp.json").write_text("{}")
    refused = init(tmp_path, "--from", "claude_desktop_config.json")
    assert refused.returncode == 1 and "--force" in refused.stdout
    assert (tmp_path / "servers.mcp.json").read_text() == "{}"
    assert not (tmp_path / ".mcp-gateway-rules.json").exists()
    assert init(tmp_path, "--from", "claude_desktop_config.json", "--force").returncode == 0
    assert "notes" in json.loads((tmp_path / "servers.mcp.json").read_text())["mcpServers"]
