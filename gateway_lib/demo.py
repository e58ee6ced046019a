"""`gateway.py demo`: start a real gateway process and drive one client session against it.

The client speaks MCP over the gateway's real stdin/stdout, one request at a time, and
prints what an agent would see: the handshake, the gateway's tools, discovery, a call,
and a call the rules refuse.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from .framing import MessageReader, Unreadable, encode

ANSWER_TIMEOUT_S = 30.0


class StdioClient:
    """A minimal synchronous MCP client over a child process's pipes."""

    def __init__(self, command: list[str]):
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._answers: queue.Queue[Any] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, name="demo-reader", daemon=True).start()

    def _read(self) -> None:
        MessageReader(self._process.stdout).listen(self._answers.put)
        self._answers.put(None)

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        while True:
            message = self._answers.get(timeout=ANSWER_TIMEOUT_S)
            if message is None or isinstance(message, Unreadable):
                raise RuntimeError("The gateway closed its output or wrote something that is not JSON")
            if message.get("id") == self._next_id:
                return message

    def notify(self, method: str) -> None:
        self._send({"jsonrpc": "2.0", "method": method})

    def _send(self, message: dict[str, Any]) -> None:
        self._process.stdin.write(encode(message))
        self._process.stdin.flush()

    def close(self) -> int:
        self._process.stdin.close()
        try:
            return self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait(timeout=5)


def _show(out: TextIO, title: str, value: Any) -> None:
    out.write(f"\n== {title}\n{json.dumps(value, indent=2, ensure_ascii=False)}\n")


def _call(client: StdioClient, out: TextIO, title: str, tool: str, arguments: dict[str, Any],
          whole: bool = False) -> dict[str, Any]:
    """One tools/call; shows the structured answer, or with `whole` the entire result."""
    out.write(f"\n-> tools/call {tool} {json.dumps(arguments)}")
    response = client.request("tools/call", {"name": tool, "arguments": arguments})
    if "error" in response:
        raise RuntimeError(f"The gateway refused {tool}: {response['error'].get('message')}")
    result = response["result"]
    _show(out, title, result if whole else result.get("structuredContent", result))
    return result


def run(gateway: Path, mcp_path: Path, rules_path: Path, out: TextIO) -> int:
    command = [sys.executable, str(gateway), "--mcp-config", str(mcp_path), "--rules", str(rules_path),
               "--log-level", "WARNING"]  # keep the gateway's routine stderr out of the transcript
    out.write("Starting the gateway as an MCP client would:\n  " + " ".join(command) + "\n")
    client = StdioClient(command)
    try:
        init = client.request("initialize", {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "gateway-demo", "version": "1"},
        })["result"]
        client.notify("notifications/initialized")
        _show(out, "initialize: the gateway answers", {k: init[k] for k in ("protocolVersion", "serverInfo")})
        listing = client.request("tools/list", {})["result"]
        size = len(json.dumps(listing, separators=(",", ":")))
        out.write(f"\n== tools/list: what every agent pays for in context\n"
                  f"{[t['name'] for t in listing['tools']]}: {size} characters, about {size // 4} tokens\n")
        servers = _call(client, out, "list_servers", "list_servers", {})
        first = servers["structuredContent"]["servers"][0]["name"]
        listed = _call(client, out, f"get_server_tools on {first!r}", "get_server_tools", {"server": first})
        names = [t["name"] for t in listed["structuredContent"]["tools"]]
        out.write(f"\n(the agent may call: {', '.join(names)})\n")
        _call(client, out, "execute_tool add(2, 3): the downstream result, unchanged",
              "execute_tool", {"server": first, "tool": "add", "args": {"a": 2, "b": 3}}, whole=True)
        _call(client, out, "execute_tool delete_all_notes: refused by the rules",
              "execute_tool", {"server": first, "tool": "delete_all_notes", "args": {}})
    finally:
        code = client.close()
    out.write(f"\nGateway exited with code {code}. Point your MCP client at gateway.py to use it for real.\n")
    return 0 if code == 0 else 1
