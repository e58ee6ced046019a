#!/usr/bin/env python3
"""Benchmark rows of HTTP mode (issue 11), run by tests/benchmark.py or on their own:

    python tests/benchmark_http.py [--rounds N]

    10. 100 concurrent HTTP clients, each initialize + list_servers + a cached
        get_server_tools: how many succeed, and the p95 of the gateway-answered calls
    10. execute_tool on a kept-alive server over HTTP against the same call over stdio
    10. idle RSS of the gateway in HTTP mode against stdio mode (both with the SDK loaded)

Beside the first row, the same clients against servers/http_floor_server.py: the
standard library's threaded server answering at once, the floor this design's HTTP
server sets on these machines before the gateway does any work. Both gateways write
their audit log outside the watched config folder, as by default (a write inside it
would cost the file watcher an event per call).

The clients are bare JSON-RPC (http.client on one kept-alive connection each, a pipe for
stdio), so the gateway is what is measured, not a client SDK.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from http_harness import HttpGatewayProcess  # noqa: E402

CLIENTS = 100
GOAL_P95_MS = 10.0
GOAL_RATIO = 1.5
GOAL_RSS_MIB = 10.0
PRELOAD_PAUSE_S = 3.0  # the stdio gateway loads the SDK in the background after initialize
RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


class KeptConnection:
    """One client: JSON-RPC over one kept-alive HTTP/1.1 connection."""

    def __init__(self, url: str):
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self._path = parts.path
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.session: str | None = None
        self._ids = 0

    def send(self, message: dict) -> tuple[int, Any]:
        import json

        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        self._connection.request("POST", self._path, body=json.dumps(message).encode(), headers=headers)
        response = self._connection.getresponse()
        body = response.read()
        if response.getheader("Mcp-Session-Id"):
            self.session = response.getheader("Mcp-Session-Id")
        return response.status, (json.loads(body) if body else None)

    def request(self, method: str, params: dict) -> dict:
        self._ids += 1
        status, answer = self.send({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        if status != 200 or "result" not in answer:
            raise RuntimeError(f"{method} failed: HTTP {status} {answer}")
        return answer["result"]

    def initialize(self) -> None:
        self.request("initialize", {"protocolVersion": harness.LATEST_PROTOCOL_VERSION, "capabilities": {},
                                    "clientInfo": {"name": "bench", "version": "0"}})
        status, _ = self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert status == 202

    def call(self, tool: str, arguments: dict) -> dict:
        result = self.request("tools/call", {"name": tool, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{tool} failed: {result}")
        return result

    def close(self) -> None:
        self._connection.close()


def _config(workdir: Path, tag: str) -> harness.ConfigDir:
    config = harness.ConfigDir(Path(tempfile.mkdtemp(dir=workdir)))
    config.write({"fault": harness.fault_server(tag),
                  "kept": harness.sdk_stdio_server(tag, session="keep-alive")}, RULES)
    return config


def _wait_ready(gateway: HttpGatewayProcess) -> None:
    raw = gateway.raw()
    if not harness.wait_until(lambda: raw.request("GET", "/ready").status == 200, timeout=60):
        raise RuntimeError("the HTTP gateway never became ready")


def concurrent_clients(url: str) -> tuple[int, list[float]]:
    """CLIENTS threads, released at once; (how many finished all steps, per-call seconds)."""
    start = threading.Barrier(CLIENTS)
    timings: list[float] = []
    succeeded = [0]
    lock = threading.Lock()

    def one_client() -> None:
        client = KeptConnection(url)
        try:
            start.wait(60)
            client.initialize()
            mine = []
            for tool, arguments in (("list_servers", {}), ("get_server_tools", {"server": "fault"})):
                began = time.perf_counter()
                client.call(tool, arguments)
                mine.append(time.perf_counter() - began)
            with lock:
                timings.extend(mine)
                succeeded[0] += 1
        except Exception as exc:  # counted as a failure; the row says how many succeeded
            print(f"# a client failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            client.close()

    threads = [threading.Thread(target=one_client, name=f"bench-client-{n}") for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return succeeded[0], timings


def floor_p95(rounds: int, tag: str) -> list[float]:
    """p95 (ms) of each of `rounds` runs of the clients against the floor server."""
    import subprocess

    floor = subprocess.Popen([sys.executable, str(harness.SERVERS_DIR / "http_floor_server.py"), "--tag", tag],
                             stdout=subprocess.PIPE, text=True)
    try:
        url = floor.stdout.readline().strip()
        found = []
        for _ in range(rounds):
            _, timings = concurrent_clients(url)
            found.append(percentile(timings, 0.95) * 1000)
        return found
    finally:
        floor.kill()
        floor.wait(10)


def measure_http(rounds: int = 10, workdir: Path | None = None) -> dict[str, Any]:
    tag = f"bench-http-{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="gateway-bench-http-", dir=workdir) as tmp:
        config = _config(Path(tmp), tag)
        found: dict[str, Any] = {}
        env = {"HOME": tmp}
        http_gateway = HttpGatewayProcess(config, "--audit-log", str(Path(tmp) / "audit-http.jsonl"), env=env)
        stdio = None
        try:
            http_gateway.wait_serving()
            _wait_ready(http_gateway)
            stdio = harness.RawGateway(config.mcp_config, config.rules, "--audit-log",
                                       str(Path(tmp) / "audit-stdio.jsonl"), env=harness.gateway_env(env))
            stdio.initialize()
            time.sleep(PRELOAD_PAUSE_S)  # let the stdio gateway's SDK load, as HTTP mode's has
            found["rss_stdio_mib"] = harness.rss_bytes(stdio.pid) / 2**20
            found["rss_http_mib"] = harness.rss_bytes(http_gateway.process.pid) / 2**20

            warm = KeptConnection(http_gateway.url)
            warm.initialize()
            warm.call("get_server_tools", {"server": "fault"})  # fills the tool cache
            runs = []  # the median run of several: one run of 100 clients swings by 3x on 2 cores
            for _ in range(max(3, rounds // 2)):
                ok, timings = concurrent_clients(http_gateway.url)
                runs.append((percentile(timings, 0.95) * 1000 if timings else float("nan"),
                             statistics.median(timings) * 1000 if timings else float("nan"), ok))
            found["p95_ms"], found["p50_ms"], _ = sorted(runs)[len(runs) // 2]
            found["clients_ok"] = min(ok for _, _, ok in runs)
            found["floor_p95_ms"] = statistics.median(floor_p95(len(runs), tag))

            args = {"server": "kept", "tool": "echo", "args": {"text": "hi"}}
            warm.call("execute_tool", args)  # opens the kept-alive session of the HTTP gateway
            stdio.request("tools/call", {"name": "execute_tool", "arguments": args}, timeout=120)
            over_http, over_stdio = [], []
            for _ in range(20 * rounds):  # alternate, so load falls on both alike
                began = time.perf_counter()
                warm.call("execute_tool", args)
                over_http.append(time.perf_counter() - began)
                began = time.perf_counter()
                stdio.request("tools/call", {"name": "execute_tool", "arguments": args}, timeout=120)
                over_stdio.append(time.perf_counter() - began)
            warm.close()
            found["http_kept_ms"] = statistics.median(over_http) * 1000
            found["stdio_kept_ms"] = statistics.median(over_stdio) * 1000
        finally:
            if stdio is not None:
                stdio.close(30)
            http_gateway.close()
            harness.kill_tagged(tag)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description="HTTP mode's benchmark rows.")
    parser.add_argument("--rounds", type=int, default=10)
    found = measure_http(parser.parse_args().rounds)
    for key, value in found.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
