"""Benchmark row: `execute_tool` on a kept-alive Python stdio server.

Compares, at the client, the median time of one `echo` call
    through the gateway, on a kept-alive session of tests/servers/sdk_stdio_server.py
    against a direct SDK client on one open session with the same server,
and adds the per-call strategy through the gateway for comparison. Goal: ratio <= 1.5
and under 20 ms median through the gateway.

Standalone:  /tmp/venv/bin/python tests/benchmark_keepalive.py [--calls N] [--per-call-calls M]
Imported:    from benchmark_keepalive import measure_keepalive; row = measure_keepalive()

The gateway and the direct calls alternate, so both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, when run as a script

import harness  # noqa: E402

GOAL_RATIO = 1.5
GOAL_MEDIAN_MS = 20.0
WARM_UP_CALLS = 5


def measure_keepalive(calls: int = 200, per_call_calls: int = 5) -> dict:
    """One row: median ms through the gateway (kept-alive) and direct, their ratio, and per-call."""
    tag = f"bench-keepalive-{uuid.uuid4().hex}"
    rules = {"agents": {"bench": {"allow": {"servers": ["*"]}}}}
    entry = harness.sdk_stdio_server(tag)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-keepalive-") as tmp:
            config = harness.ConfigDir(Path(tmp) / "config")
            config.write({"kept": {**entry, "session": "keep-alive"}, "fresh": entry}, rules)
            # No spares: the per-call figure is a process start-up per call (row 10 has spares).
            with config.gateway("--audit-log", str(Path(tmp) / "audit.jsonl"), "--init-strategy", "off") as gateway, \
                    harness.McpClient(entry["command"], entry["args"]) as direct:
                through_kept = _timer(lambda: _execute(gateway, "kept"))
                directly = _timer(lambda: direct.call_tool("echo", {"text": "ping"}))
                for _ in range(WARM_UP_CALLS):  # opens the kept session, fills the caches
                    through_kept()
                    directly()
                kept_ms, direct_ms = [], []
                for _ in range(calls):
                    kept_ms.append(through_kept())
                    direct_ms.append(directly())
                _execute(gateway, "fresh")  # the tool list is cached: time the calls only
                per_call_ms = [_timer(lambda: _execute(gateway, "fresh"))() for _ in range(per_call_calls)]
    finally:
        harness.kill_tagged(tag)
    gateway_median = statistics.median(kept_ms)
    direct_median = statistics.median(direct_ms)
    ratio = gateway_median / direct_median
    return {
        "benchmark": "execute_tool on a kept-alive Python stdio server (sdk_stdio_server.py echo)",
        "calls": calls,
        "gateway_kept_alive_median_ms": round(gateway_median, 2),
        "direct_one_session_median_ms": round(direct_median, 2),
        "ratio": round(ratio, 2),
        "gateway_per_call_median_ms": round(statistics.median(per_call_ms), 1),
        "per_call_calls": per_call_calls,
        "goal": f"ratio <= {GOAL_RATIO} and gateway median < {GOAL_MEDIAN_MS:g} ms",
        "goal_met": ratio <= GOAL_RATIO and gateway_median < GOAL_MEDIAN_MS,
    }


def _execute(gateway: harness.Gateway, server: str) -> None:
    result = gateway.call_tool("execute_tool", {"agent_id": "bench", "server": server, "tool": "echo",
                                                "args": {"text": "ping"}})
    if result.is_error:
        raise RuntimeError(f"execute_tool on {server!r} failed: {harness.result_text(result)}")


def _timer(call):
    def timed() -> float:
        started = time.perf_counter()
        call()
        return (time.perf_counter() - started) * 1000

    return timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="measured calls per side (default 200)")
    parser.add_argument("--per-call-calls", type=int, default=5, help="per-call calls through the gateway (default 5)")
    options = parser.parse_args(argv)
    print(json.dumps(measure_keepalive(options.calls, options.per_call_calls), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
