"""Promise: the official MCP conformance suite's protocol-level server scenarios pass against
the gateway in HTTP mode, DNS-rebinding protection included.

Opt-in (it needs Node 22 and the npm package): set RUN_CONFORMANCE=1 after
    npm install --prefix ~/.cache/agent-mcp-gateway/conformance node@22 @modelcontextprotocol/conformance
The suite's other server scenarios call tools, resources and prompts of its own reference
server ("test_simple_text" and the like), which a gateway does not have by design.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import harness
from http_harness import HttpGatewayProcess

INSTALL_DIR = Path(os.environ.get("CONFORMANCE_DIR", Path.home() / ".cache" / "agent-mcp-gateway" / "conformance"))
BIN = INSTALL_DIR / "node_modules" / ".bin"
SCENARIOS = ["server-initialize", "ping", "tools-list", "server-sse-multiple-streams", "dns-rebinding-protection"]

pytestmark = pytest.mark.skipif(
    os.environ.get("RUN_CONFORMANCE") != "1" or not (BIN / "conformance").exists() or not (BIN / "node").exists(),
    reason="opt-in: RUN_CONFORMANCE=1 with the conformance suite installed (see the module docstring)",
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    config_dir = harness.ConfigDir(tmp_path_factory.mktemp("conformance"))
    config_dir.write({}, {"agents": {"default": {"allow": {"servers": ["*"]}}}})
    with HttpGatewayProcess(config_dir) as process:
        yield process


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_conformance_scenario_passes(gateway, scenario, tmp_path):
    url = gateway.url.replace("127.0.0.1", "localhost")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([str(BIN / "conformance"), "server", "--url", url, "--scenario", scenario],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    output = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
    found = re.search(r"Passed: (\d+)/(\d+), (\d+) failed", output)
    assert found, output[-3000:]
    passed, total, failed = map(int, found.groups())
    assert failed == 0 and passed == total > 0, output[-3000:]
