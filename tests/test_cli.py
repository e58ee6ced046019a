"""The gateway's start-up path, as a real process."""

from __future__ import annotations

import json
import subprocess
import sys

import harness

# Loaded in the background after notifications/initialized, never before the answers below.
HEAVY = {"mcp", "mcp_types", "httpx2", "anyio", "asyncio", "watchdog", "pydantic", "starlette", "uvicorn"}


def test_initialize_tools_list_and_list_servers_are_served_without_importing_the_sdk(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, {"agents": {"default": {"allow": {"servers": ["*"]}}}})
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "list_servers", "arguments": {}}},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in requests).encode()
    # No notifications/initialized, so no preload: every import in the process's whole life
    # belongs to start-up and these three answers. -X importtime lists them on stderr.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *harness.gateway_argv(config_dir.mcp_config, config_dir.rules)],
        input=stdin, capture_output=True, timeout=60, env=harness.gateway_env(),
    )
    answers = {m["id"]: m for m in map(json.loads, done.stdout.decode().splitlines())}
    assert done.returncode == 0
    assert sorted(answers) == [1, 2, 3] and all("result" in a for a in answers.values())
    assert answers[3]["result"]["structuredContent"]["servers"][0]["name"] == "tools"
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "gateway_lib" in imported and "jsonschema" in imported  # the listing is real
    assert imported & HEAVY == set()
