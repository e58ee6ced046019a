"""The gateway started in HTTP mode as a process, and a raw HTTP client for it.

    HttpGatewayProcess   `gateway.py --transport http --port 0`: waits (bounded) for the
                         URL it prints on stderr; stdin is /dev/null, as under a supervisor
    RawHttp              http.client requests with every status and header visible, plus
                         the JSON-RPC steps (initialize, call) the tests repeat

The SDK's own streamable HTTP client is harness.HttpMcpClient.
"""

from __future__ import annotations

import http.client
import json
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import harness

LATEST = harness.LATEST_PROTOCOL_VERSION
_URL_LINE = re.compile(r"serving MCP over HTTP on (http://\S+)")
START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class HttpGatewayProcess:
    """One gateway in HTTP mode over a ConfigDir's two files."""

    def __init__(self, config_dir: harness.ConfigDir, *extra_args: str, env: dict[str, str] | None = None):
        argv = [sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules,
                                                       "--transport", "http", "--port", "0", *extra_args)]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=harness.gateway_env(env))
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._stdout = b""
        self._reader = threading.Thread(target=self._read_stderr, name="harness-http-gateway-stderr", daemon=True)
        self._reader.start()
        self._stdout_reader = threading.Thread(target=self._read_stdout, name="harness-http-gateway-stdout",
                                               daemon=True)
        self._stdout_reader.start()
        self.url: str | None = None

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace")
            self._stderr.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _read_stdout(self) -> None:
        self._stdout = self.process.stdout.read()

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> HttpGatewayProcess:
        """Returns once the gateway printed its URL; raises if it exited first."""
        while self.url is None:
            line = self._lines.get(timeout=timeout)
            if line is None:
                raise RuntimeError(f"The gateway exited before serving: {self.stderr_text()[-3000:]}")
            found = _URL_LINE.search(line)
            if found:
                self.url = found.group(1)
        return self

    def wait_exit(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        code = self.process.wait(timeout)
        self._join_readers(timeout)
        return code

    def _join_readers(self, timeout: float) -> None:
        self._reader.join(timeout)
        self._stdout_reader.join(timeout)
        if not self._reader.is_alive() and not self._stdout_reader.is_alive():
            self.process.stderr.close()
            self.process.stdout.close()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait_exit()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(EXIT_TIMEOUT_S)
        self._join_readers(EXIT_TIMEOUT_S)

    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def stdout_bytes(self) -> bytes:
        return self._stdout

    def __enter__(self) -> HttpGatewayProcess:
        try:
            return self.wait_serving()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def raw(self) -> RawHttp:
        assert self.url is not None, "wait_serving() first"
        return RawHttp(self.url)


class RawHttp:
    """Plain HTTP requests to one gateway; every call opens its own connection."""

    def __init__(self, url: str, token: str | None = None):
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.token = token

    def with_token(self, token: str | None) -> RawHttp:
        return RawHttp(self.base + self.path, token)

    def request(self, method: str, path: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            if self.token is not None and "Authorization" not in sent:
                sent["Authorization"] = f"Bearer {self.token}"
            connection.request(method, path or self.path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def post(self, message: Any, session: str | None = None, headers: dict[str, str] | None = None,
             timeout: float = 30) -> Reply:
        sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                **(headers or {})}
        if session is not None:
            sent["Mcp-Session-Id"] = session
        body = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
        return self.request("POST", body=body, headers=sent, timeout=timeout)

    def initialize(self, version: str = LATEST, headers: dict[str, str] | None = None) -> str:
        """A new initialized session; returns its id."""
        reply = self.post({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw-http", "version": "0"}}},
            headers=headers)
        assert reply.status == 200, (reply.status, reply.body)
        session = reply.header("Mcp-Session-Id")
        assert session, "initialize answered without a session id"
        done = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session, headers=headers)
        assert done.status == 202, (done.status, done.body)
        return session

    def call(self, session: str, name: str, arguments: dict, request_id: Any = 1,
             headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
        return self.post({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                          "params": {"name": name, "arguments": arguments}}, session, headers=headers,
                         timeout=timeout)

    def call_result(self, session: str, name: str, arguments: dict, **kwargs: Any) -> dict:
        """The tool result (the `result` member) of a call that must get a 200 answer."""
        reply = self.call(session, name, arguments, **kwargs)
        assert reply.status == 200, (reply.status, reply.body)
        return reply.json()["result"]


def tool_error(result: dict) -> dict:
    """The gateway's error object of a tool result with isError true."""
    assert result["isError"] is True, result
    return result["structuredContent"]["error"]
