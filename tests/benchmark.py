#!/usr/bin/env python3
"""The gateway's performance benchmark: real processes, measured side by side in one run.

    python tests/benchmark.py [--rounds N]

Not part of the test suite (pytest does not collect this file). Prints one Markdown table
of medians and ratios; README's "Performance" section says what each row means.

The benchmark is a list of small measurement functions (MEASUREMENTS at the bottom). Each
takes the shared `Bench` and returns `Row`s; to add a row (kept-alive sessions, say),
write a function and append it. Gateway and baseline are measured in alternation, round
by round, so that load from other processes falls on both alike.

The Node row installs a pinned official MCP server with npm into a cache directory on
first use; without npm or the registry it prints "skipped: <reason>".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp_types import CallToolRequest, CallToolRequestParams, CallToolResult  # noqa: E402

NODE_PACKAGE = "@modelcontextprotocol/server-everything"
NODE_VERSION = "2026.8.31"
NODE_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agent-mcp-gateway" / "benchmark-node"
RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}
MEMORY_CALLS = 5000
PRELOAD_PAUSE_S = 3.0  # before a gateway's first execute_tool (see _execute_vs_direct)
MEMORY_REAL_EVERY = 25  # every 25th of the 5,000 calls is a real execute_tool (200 sessions)


@dataclass
class Row:
    what: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def ms(value_s: float) -> str:
    return f"{value_s * 1000:.1f} ms" if value_s < 10 else f"{value_s:.2f} s"


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ratio_row(what: str, measured: list[float], against: list[float], against_name: str, goal: str = "") -> Row:
    m, a = statistics.median(measured), statistics.median(against)
    return Row(what, ms(m), f"{ms(a)} ({against_name})", f"{m / a:.2f}", goal)


# ----------------------------------------------------------------------------- the shared set-up


class Bench:
    """Work directory, servers, and gateways for one run; closes what it started."""

    def __init__(self, rounds: int, workdir: Path):
        self.rounds = rounds
        self.dir = workdir
        self.tag = f"bench-{uuid.uuid4().hex}"
        self.fault_log = workdir / "fault.log"
        self._http: subprocess.Popen | None = None
        self.http_url: str | None = None
        self.node: list[str] | None = None
        self.node_skip: str | None = None
        self._gateways: list[harness.RawGateway] = []

    # servers

    def start_http(self) -> None:
        port = harness.free_port()
        self._http = subprocess.Popen(
            [sys.executable, str(harness.SDK_HTTP_SERVER), "--port", str(port), "--tag", self.tag],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        harness.wait_for_port(port, 30, self._http)
        self.http_url = f"http://127.0.0.1:{port}/mcp"

    def install_node(self) -> None:
        """npm-installs the pinned Node server into NODE_CACHE (once); sets node or node_skip."""
        node, npm = shutil.which("node"), shutil.which("npm")
        if not node or not npm:
            self.node_skip = "node or npm is not installed"
            return
        entry = NODE_CACHE / "node_modules" / NODE_PACKAGE / "dist" / "index.js"
        if not entry.exists():
            NODE_CACHE.mkdir(parents=True, exist_ok=True)
            try:
                done = subprocess.run(
                    [npm, "install", "--prefix", str(NODE_CACHE), "--no-audit", "--no-fund", "--loglevel=error",
                     f"{NODE_PACKAGE}@{NODE_VERSION}"],
                    capture_output=True, text=True, timeout=180,
                )
            except subprocess.TimeoutExpired:
                self.node_skip = "npm install took longer than 180 s"
                return
            if done.returncode != 0 or not entry.exists():
                self.node_skip = f"npm install failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:120]}"
                return
        self.node = [node, str(entry), "stdio"]

    def servers(self) -> dict[str, dict]:
        servers = {
            "py": harness.sdk_stdio_server(self.tag),
            "fault": harness.fault_server(self.tag, log=self.fault_log),
        }
        if self.http_url:
            servers["web"] = harness.http_server(self.http_url)
        if self.node:
            servers["node"] = {"command": self.node[0], "args": self.node[1:]}
        return servers

    # gateways

    def gateway(self, *extra: str, strategy: str = "off", more_servers: dict | None = None) -> harness.RawGateway:
        """A gateway over every server (and `more_servers`), initialized (and so preloading the SDK).

        Without spares unless asked (`strategy`): rows 1-9 measure a session per call as it
        starts; row 10 (benchmark_spares.py) measures what spares change.
        """
        config = harness.ConfigDir(Path(tempfile.mkdtemp(dir=self.dir)))
        config.write({**self.servers(), **(more_servers or {})}, RULES)
        raw = harness.RawGateway(config.mcp_config, config.rules, "--audit-log", str(config.path("audit.jsonl")),
                                 "--init-strategy", strategy, *extra, env=harness.gateway_env({"HOME": str(self.dir)}))
        self._gateways.append(raw)
        raw.initialize()
        return raw

    def close_gateway(self, raw: harness.RawGateway) -> None:
        self._gateways.remove(raw)
        raw.close(30)

    def close(self) -> None:
        for raw in list(self._gateways):
            self.close_gateway(raw)
        if self._http is not None:
            self._http.kill()
            self._http.wait(10)
        harness.kill_tagged(self.tag)


def call(raw: harness.RawGateway, tool: str, arguments: dict, timeout: float = 120) -> dict:
    """One gateway tool call at the client; the result, checked to be a JSON-RPC result."""
    answer = raw.request("tools/call", {"name": tool, "arguments": arguments}, timeout=timeout)
    if "result" not in answer:
        raise RuntimeError(f"{tool} failed: {answer!r}")
    return answer["result"]


def execute(raw: harness.RawGateway, server: str, tool: str, args: dict, **extra: Any) -> dict:
    return call(raw, "execute_tool", {"server": server, "tool": tool, "args": args, **extra})


def error_code(result: dict) -> str | None:
    return (result.get("structuredContent") or {}).get("error", {}).get("code") if result.get("isError") else None


def direct_call(open_transport: Callable[[], Any], tool: str, args: dict) -> float:
    """A client on its own fresh session: open, initialize, one tools/call; seconds to the result.

    The request goes out as one tools/call (send_request), as the gateway sends it, so that
    the SDK's extra outputSchema tools/list does not flatter the gateway.
    """

    async def run() -> float:
        started = time.perf_counter()
        async with open_transport() as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                request = CallToolRequest(params=CallToolRequestParams(name=tool, arguments=args))
                result = await session.send_request(request, CallToolResult)
                elapsed = time.perf_counter() - started
        if result.is_error:
            raise RuntimeError(f"direct {tool} failed: {result!r}")
        return elapsed

    return asyncio.run(run())


def stdio_transport(command: str, args: list[str]) -> Callable[[], Any]:
    errlog = open(os.devnull, "w")  # the SDK needs a real file descriptor; closed at exit
    return lambda: stdio_client(StdioServerParameters(command=command, args=args), errlog=errlog)


# ----------------------------------------------------------------------------- measurements


def spawn_to_initialize(bench: Bench) -> list[Row]:
    """1. Process start to the initialize answer: gateway, a Python SDK server, python -c pass."""
    gateway_config = harness.ConfigDir(Path(tempfile.mkdtemp(dir=bench.dir)))
    gateway_config.write(bench.servers(), RULES)
    gateway_argv = [sys.executable, *harness.gateway_argv(gateway_config.mcp_config, gateway_config.rules,
                                                          "--audit-log", str(bench.dir / "spawn-audit.jsonl"))]
    sdk_argv = [sys.executable, str(harness.SDK_STDIO_SERVER), "--tag", bench.tag]
    env = harness.gateway_env({"HOME": str(bench.dir)})

    def answer_time(argv: list[str]) -> float:
        started = time.perf_counter()
        raw = harness.RawProcess(argv, env=env)
        try:
            raw.initialize()
            return time.perf_counter() - started
        finally:
            raw.close(30)

    gateway, sdk, floor = [], [], []
    for _ in range(bench.rounds):
        gateway.append(answer_time(gateway_argv))
        sdk.append(answer_time(sdk_argv))
        floor.append(timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)))
    return [
        ratio_row("1. spawn → initialize answer: gateway vs Python SDK server", gateway, sdk, "SDK server"),
        ratio_row("1. spawn → initialize answer: gateway vs `python -c pass`", gateway, floor, "floor"),
    ]


def _execute_vs_direct(bench: Bench, label: str, server: str, open_direct: Callable[[], Any],
                       tool: str, args: dict) -> list[Row]:
    raw = bench.gateway()
    try:
        # An agent's first call comes seconds after initialize; by then the SDK has loaded
        # in the background. Measured as such: the cache is empty, the import is done.
        time.sleep(PRELOAD_PAUSE_S)
        cold = timed(lambda: execute(raw, server, tool, args))  # empty cache: lists and calls in one session
        first_direct = direct_call(open_direct, tool, args)
        through, direct = [], []
        for _ in range(bench.rounds):
            through.append(timed(lambda: execute(raw, server, tool, args)))
            direct.append(direct_call(open_direct, tool, args))
    finally:
        bench.close_gateway(raw)
    return [
        ratio_row(f"2. execute_tool vs direct fresh session: {label}", through, direct, "direct", "≤ 1.10"),
        ratio_row(f"2. … first execute_tool, empty cache (one session, lists + calls), {label}", [cold],
                  [first_direct], "direct, 1 sample"),
    ]


def execute_python(bench: Bench) -> list[Row]:
    """2a. A Python stdio server written with the SDK."""
    entry = harness.sdk_stdio_server(bench.tag)
    return _execute_vs_direct(bench, "Python SDK stdio", "py", stdio_transport(entry["command"], entry["args"]),
                              "echo", {"text": "bench"})


def execute_node(bench: Bench) -> list[Row]:
    """2b. A Node stdio server from npm (skipped without npm or the registry)."""
    bench.install_node()
    if bench.node is None:
        return [Row("2. execute_tool vs direct fresh session: Node stdio", f"skipped: {bench.node_skip}")]
    return _execute_vs_direct(bench, f"Node stdio ({NODE_PACKAGE.split('/')[-1]} {NODE_VERSION})", "node",
                              stdio_transport(bench.node[0], bench.node[1:]), "echo", {"message": "bench"})


def execute_http(bench: Bench) -> list[Row]:
    """2c. A streamable HTTP server (the SDK's, already running)."""
    url = bench.http_url
    return _execute_vs_direct(bench, "streamable HTTP", "web", lambda: streamable_http_client(url),
                              "echo", {"text": "bench"})


def tool_list_cache(bench: Bench) -> list[Row]:
    """3. get_server_tools: the first call (one listing session) against cache hits."""
    first, repeated = [], []
    for _ in range(bench.rounds):
        raw = bench.gateway()
        try:
            first.append(timed(lambda: call(raw, "get_server_tools", {"server": "py"})))
            repeated += [timed(lambda: call(raw, "get_server_tools", {"server": "py"})) for _ in range(20)]
        finally:
            bench.close_gateway(raw)
    return [
        ratio_row("3. get_server_tools: repeated (cache hit) vs first call, Python SDK server", repeated, first,
                  "first call"),
    ]


def cheap_calls(bench: Bench) -> list[Row]:
    """4. list_servers, and an execute_tool refused by the schema check (cache warm)."""
    raw = bench.gateway()
    try:
        call(raw, "get_server_tools", {"server": "fault"})
        starts_before = harness.count_events(bench.fault_log, "start")
        listing = [timed(lambda: call(raw, "list_servers", {})) for _ in range(bench.rounds * 20)]
        refused: list[float] = []
        for _ in range(bench.rounds * 20):
            started = time.perf_counter()
            result = execute(raw, "fault", "add", {"a": "two"})
            refused.append(time.perf_counter() - started)
            assert error_code(result) == "INVALID_ARGUMENTS", result
        opened = harness.count_events(bench.fault_log, "start") - starts_before
    finally:
        bench.close_gateway(raw)
    return [
        Row("4. list_servers round trip", ms(statistics.median(listing))),
        Row("4. invalid execute_tool, refused by schema check", ms(statistics.median(refused)),
            f"{opened} downstream sessions opened", "", "0 sessions"),
    ]


def concurrency(bench: Bench) -> list[Row]:
    """5. 20 execute_tool calls sent at once against the same 20 one after another."""
    rows = []
    for label, server, tool, args, rounds in (
        ("fault server echo (stdlib, ~40 ms start)", "fault", "echo", {"text": "x"}, bench.rounds),
        ("fault server sleep 0.2 s", "fault", "sleep", {"seconds": 0.2}, max(1, bench.rounds // 2)),
        ("Python SDK server echo", "py", "echo", {"text": "x"}, 1),
    ):
        raw = bench.gateway()
        try:
            call(raw, "get_server_tools", {"server": server})
            together, apart = [], []
            for _ in range(rounds):
                together.append(timed(lambda: _all_at_once(raw, server, tool, args, 20)))
                apart.append(timed(lambda: [execute(raw, server, tool, args) for _ in range(20)]))
        finally:
            bench.close_gateway(raw)
        rows.append(ratio_row(f"5. 20 concurrent vs 20 sequential execute_tool: {label}", together, apart,
                              "sequential"))
    return rows


def _all_at_once(raw: harness.RawGateway, server: str, tool: str, args: dict, count: int) -> None:
    ids = [f"c{uuid.uuid4().hex}" for _ in range(count)]
    for request_id in ids:
        raw.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                  "params": {"name": "execute_tool", "arguments": {"server": server, "tool": tool, "args": args}}})
    waiting = set(ids)
    deadline = time.monotonic() + 180
    while waiting:
        answer = raw.read_message(max(deadline - time.monotonic(), 0))
        if answer.get("id") not in waiting:
            continue
        waiting.discard(answer["id"])
        if answer.get("result", {}).get("isError"):
            raise RuntimeError(f"concurrent call failed: {answer!r}")


def timeout_promptness(bench: Bench) -> list[Row]:
    """6. How late after a 500 ms deadline its error comes: a tool that hangs (TIMEOUT), and
    a server that never answers initialize (SERVER_UNAVAILABLE). The tests check which error
    comes and that it does not wait for the server's cleanup; these rows say how promptly."""
    raw = bench.gateway(more_servers={"never-init": harness.fault_server(bench.tag, "--mode", "never-initialize")})
    late: dict[str, list[float]] = {"TIMEOUT": [], "SERVER_UNAVAILABLE": []}
    try:
        call(raw, "get_server_tools", {"server": "fault"})
        for _ in range(bench.rounds):
            for server, tool, args, code in (("fault", "sleep", {"seconds": 60}, "TIMEOUT"),
                                             ("never-init", "echo", {"text": "x"}, "SERVER_UNAVAILABLE")):
                started = time.perf_counter()
                result = execute(raw, server, tool, args, timeout_ms=500)
                late[code].append(time.perf_counter() - started - 0.5)
                assert error_code(result) == code, result
    finally:
        bench.close_gateway(raw)
    return [Row("6. TIMEOUT answer after the 500 ms deadline (lateness)", ms(statistics.median(late["TIMEOUT"])),
                f"max {ms(max(late['TIMEOUT']))}"),
            Row("6. SERVER_UNAVAILABLE after a 500 ms deadline to start (lateness)",
                ms(statistics.median(late["SERVER_UNAVAILABLE"])), f"max {ms(max(late['SERVER_UNAVAILABLE']))}")]


def memory(bench: Bench) -> list[Row]:
    """7. Peak RSS (VmHWM) of the gateway idle, and after 5,000 calls (200 of them real sessions).

    The other 4,800 are cache-hit get_server_tools, list_servers and schema-refused
    execute_tool: 5,000 real sessions would take minutes.
    """
    raw = bench.gateway()
    try:
        call(raw, "list_servers", {})
        at_start = _peak_rss_kib(raw.pid)
        time.sleep(PRELOAD_PAUSE_S)  # the SDK loads in the background after initialize
        idle = _peak_rss_kib(raw.pid)
        call(raw, "get_server_tools", {"server": "fault"})
        for n in range(MEMORY_CALLS):
            if n % MEMORY_REAL_EVERY == 0:
                execute(raw, "fault", "echo", {"text": "x" * 100})
            elif n % 3 == 0:
                call(raw, "list_servers", {})
            elif n % 3 == 1:
                call(raw, "get_server_tools", {"server": "fault", "pattern": "e*"})
            else:
                execute(raw, "fault", "add", {"a": "two"})  # refused by the schema check
        after = _peak_rss_kib(raw.pid)
    finally:
        bench.close_gateway(raw)
    return [
        Row("7. gateway peak RSS, idle: after initialize + list_servers, SDK not loaded", f"{at_start / 1024:.1f} MiB"),
        Row("7. gateway peak RSS, idle: SDK loaded in the background", f"{idle / 1024:.1f} MiB"),
        Row(f"7. gateway peak RSS after {MEMORY_CALLS:,} calls ({MEMORY_CALLS // MEMORY_REAL_EVERY} downstream sessions)",
            f"{after / 1024:.1f} MiB", f"{idle / 1024:.1f} MiB (idle, SDK loaded)", f"{after / idle:.2f}"),
    ]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")


def tools_list_size(bench: Bench) -> list[Row]:
    """8. The size of the gateway's tools/list, in characters / 4."""
    raw = bench.gateway()
    try:
        listing = raw.request("tools/list", {})["result"]  # the whole result, as it goes on the wire
    finally:
        bench.close_gateway(raw)
    chars = len(json.dumps(listing, ensure_ascii=False, separators=(",", ":")))
    return [Row("8. tools/list of the gateway (3 tools)", f"{chars / 4:.0f} tokens", f"{chars:,} characters", "",
                "≤ 400 tokens")]


def kept_alive(bench: Bench) -> list[Row]:
    """Issue 6's row: a kept-alive Python stdio server, gateway against one open direct session."""
    from benchmark_keepalive import GOAL_MEDIAN_MS, GOAL_RATIO, measure_keepalive

    found = measure_keepalive(calls=20 * bench.rounds)
    return [
        Row("9. execute_tool on a kept-alive Python SDK stdio server vs direct client on one open session",
            f"{found['gateway_kept_alive_median_ms']:.1f} ms",
            f"{found['direct_one_session_median_ms']:.1f} ms (direct)", f"{found['ratio']:.2f}",
            f"≤ {GOAL_RATIO}, < {GOAL_MEDIAN_MS:g} ms"),
        Row("9. … the same server per-call through the gateway", f"{found['gateway_per_call_median_ms']:.1f} ms"),
    ]


def context_saving(bench: Bench) -> list[Row]:
    """Issue 15's row: context paid for tool definitions, six real servers up front vs the gateway."""
    from benchmark_context import Skipped, measure_context, rows

    try:
        found = measure_context(bench.dir)
    except Skipped as exc:
        return [Row("10. context for tools, 6 real servers", f"skipped: {exc}")]
    return [Row(what, value, against, ratio) for what, value, against, ratio in rows(found)]


def http_mode(bench: Bench) -> list[Row]:
    """Issue 11's rows: HTTP mode under 100 concurrent clients, kept-alive calls, idle RSS."""
    from benchmark_http import CLIENTS, GOAL_P95_MS, GOAL_RATIO, GOAL_RSS_MIB, measure_http

    found = measure_http(bench.rounds, bench.dir)
    return [
        Row(f"12. HTTP: {CLIENTS} concurrent clients, initialize + list_servers + cached get_server_tools: "
            "p95 of the two calls", f"{found['p95_ms']:.1f} ms",
            f"{found['clients_ok']}/{CLIENTS} clients succeeded; median {found['p50_ms']:.1f} ms", "",
            f"all succeed, p95 < {GOAL_P95_MS:g} ms"),
        Row("12. … the same clients against the standard library's threaded server answering at once (the floor)",
            f"{found['floor_p95_ms']:.1f} ms", f"{found['p95_ms']:.1f} ms (gateway)",
            f"{found['p95_ms'] / found['floor_p95_ms']:.2f}", ""),
        Row("12. HTTP: execute_tool on a kept-alive server vs the same call over stdio",
            f"{found['http_kept_ms']:.1f} ms", f"{found['stdio_kept_ms']:.1f} ms (stdio)",
            f"{found['http_kept_ms'] / found['stdio_kept_ms']:.2f}", f"≤ {GOAL_RATIO}"),
        Row("12. HTTP: idle RSS of HTTP mode vs stdio mode (SDK loaded in both)", f"{found['rss_http_mib']:.1f} MiB",
            f"{found['rss_stdio_mib']:.1f} MiB (stdio)", f"{found['rss_http_mib'] - found['rss_stdio_mib']:+.1f} MiB",
            f"within {GOAL_RSS_MIB:g} MiB"),
    ]


def spares(bench: Bench) -> list[Row]:
    """Issue 14's rows: a per-call Python SDK stdio server with a warm spare session."""
    from benchmark_spares import measure_spares

    f = measure_spares(rounds=bench.rounds)
    goals = f["goals"]
    return [
        Row("11. execute_tool on a ready spare vs kept-alive, Python SDK stdio", f"{f['spare_ms']:.1f} ms",
            f"{f['kept_ms']:.1f} ms (kept-alive)", f"{f['spare_vs_kept']:.2f}", f"≤ {goals['spare_vs_kept']:g}"),
        Row("11. … ready spare vs per-call without a spare", f"{f['spare_ms']:.1f} ms",
            f"{f['fresh_ms']:.1f} ms (no spare)", f"{f['spare_vs_fresh']:.3f}", f"≤ {goals['spare_vs_fresh']:.2f}"),
        Row("11. first get_server_tools after an eager start, cache warm", f"{f['first_listing_ms']:.1f} ms",
            f"{f['first_listing_off_ms']:.1f} ms (no spares: a listing session)",
            f"{f['first_listing_ms'] / f['first_listing_off_ms']:.3f}", f"≤ {goals['first_listing_ms']:g} ms"),
        Row("11. burst of 10 concurrent execute_tool, spare ready vs no spares", f"{f['burst_spare_ms']:.0f} ms",
            f"{f['burst_off_ms']:.0f} ms (no spares)", f"{f['burst_ratio']:.2f}", f"≤ {goals['burst_ratio']:g}"),
        Row("11. idle cost: RSS of one spare (Python SDK server)", f"{f['spare_rss_mib']:.1f} MiB"),
        Row("11. … gateway's own RSS, eager vs off, same calls", f"{f['gateway_rss_eager_mib']:.1f} MiB",
            f"{f['gateway_rss_off_mib']:.1f} MiB (off)", f"{f['gateway_rss_ratio']:.2f}", "unchanged"),
    ]


MEASUREMENTS: list[Callable[[Bench], list[Row]]] = [
    spawn_to_initialize,
    execute_python,
    execute_node,
    execute_http,
    tool_list_cache,
    cheap_calls,
    concurrency,
    timeout_promptness,
    memory,
    tools_list_size,
    kept_alive,
    context_saving,
    spares,
    http_mode,
]


# ----------------------------------------------------------------------------- output


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {platform.system()} "
            f"{platform.release()}; load average {load} at start")


def table(rows: list[Row]) -> str:
    lines = ["| measurement | median | against | ratio | goal |", "| --- | ---: | --- | ---: | --- |"]
    lines += [f"| {r.what} | {r.value} | {r.baseline} | {r.ratio} | {r.goal} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Measure the gateway against direct sessions; print a table.")
    parser.add_argument("--rounds", type=int, default=10, help="samples per side of each comparison (default 10)")
    options = parser.parse_args()
    started = time.monotonic()
    print(f"# agent-mcp-gateway benchmark, {datetime.date.today().isoformat()}", flush=True)
    print(f"# {machine()}", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as workdir:
        bench = Bench(options.rounds, Path(workdir))
        try:
            bench.start_http()
            for measure in MEASUREMENTS:
                step = time.monotonic()
                try:
                    new = measure(bench)
                except Exception as exc:  # one broken row must not hide the others
                    new = [Row(measure.__name__, f"failed: {type(exc).__name__}: {str(exc)[:100]}")]
                rows += new
                print(f"# {measure.__name__}: {time.monotonic() - step:.1f} s", file=sys.stderr, flush=True)
        finally:
            bench.close()
    print(table(rows))
    print(f"# total {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
