"""What the OAuth tests share: the OAuth-protected test server as a process, its controls,
the headless $BROWSER, and the gateway's view of a result's error."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

import harness

OAUTH_SERVER = harness.SERVERS_DIR / "oauth_server.py"
OAUTH_BROWSER = harness.SERVERS_DIR / "oauth_browser.py"
SERVER_NAME = "secure"
READY_S = 15.0


class OAuthServer:
    """tests/servers/oauth_server.py, running; `url` is its MCP endpoint."""

    def __init__(self, process: subprocess.Popen, port: int, issuer: str, transport: str):
        self.process = process
        self.port = port
        self.issuer = issuer
        self.url = f"http://127.0.0.1:{port}/mcp" if transport == "streamable-http" else f"http://127.0.0.1:{port}/sse"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.issuer}/admin/stats", timeout=10) as response:
            return json.load(response)

    def control(self, path: str) -> None:
        request = urllib.request.Request(f"{self.issuer}/admin/{path}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def entry(self, **extra) -> dict:
        transport = "sse" if self.url.endswith("/sse") else "http"
        return {"type": transport, "url": self.url, **extra}


@contextlib.contextmanager
def oauth_server(tag: str, *args: str, transport: str = "streamable-http") -> Iterator[OAuthServer]:
    port = harness.free_port()
    process = subprocess.Popen(
        [sys.executable, str(OAUTH_SERVER), "--port", str(port), "--tag", tag, "--transport", transport, *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline()), name="oauth-server-ready")
    reader.start()
    try:
        try:
            issuer = json.loads(lines.get(timeout=READY_S))["issuer"]
        except (queue.Empty, ValueError):
            raise RuntimeError("The OAuth test server did not start") from None
        harness.wait_for_port(port, READY_S, process)
        yield OAuthServer(process, port, issuer, transport)
    finally:
        process.kill()
        process.wait(10)
        reader.join(10)
        process.stdout.close()


def browser_env(log: Path, mode: str = "follow", tag: str = "") -> dict[str, str]:
    """$BROWSER for the gateway: the headless browser, recording each visit in `log`."""
    tagged = f" --tag {tag}" if tag else ""
    return {"BROWSER": f"{sys.executable} {OAUTH_BROWSER} --log {log} --mode {mode}{tagged} %s"}


def visits(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def error_of(result) -> dict:
    """The gateway's error object of a tool result that must be an error."""
    assert result.is_error, harness.result_text(result)
    return result.structured_content["error"]


def run_gateway_command(config: harness.ConfigDir, *args: str, env: dict[str, str] | None = None,
                        timeout: float = 60) -> subprocess.CompletedProcess:
    """`gateway.py ARGS --mcp-config … --rules …` as a process (login, logout, check)."""
    argv = [sys.executable, str(harness.GATEWAY), *args, "--mcp-config", str(config.mcp_config),
            "--rules", str(config.rules)]
    return subprocess.run(argv, env=harness.gateway_env(env), capture_output=True, text=True, timeout=timeout)


ALLOW_ALL = {"agents": {"default": {"allow": {"servers": ["*"]}}}}
