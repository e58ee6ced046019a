"""Benchmark rows: per-call servers with a warm spare session, against kept-alive and plain per-call.

Measured in one run, at the client, on tests/servers/sdk_stdio_server.py (a Python server
on the official SDK), each as a ratio against its baseline:

    a. execute_tool served by a ready spare    vs the same server kept alive, and per-call without a spare
    b. the first get_server_tools after an eager start, once the cache is warm (the server
       declares its list fresh: --list-ttl-ms)  vs the first one without spares (a listing session)
    c. a burst of 10 concurrent execute_tool, a spare ready
                                               vs the same burst without spares
    d. idle cost: RSS of the spare process, and the gateway's own RSS with and without spares

Standalone:  .venv/bin/python tests/benchmark_spares.py [--rounds N]
Imported:    from benchmark_spares import measure_spares (tests/benchmark.py, row 10)

Sequential calls are spaced so the spare is ready: before each, the benchmark waits (off
the clock) until get_gateway_status says so.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, when run as a script

import harness  # noqa: E402

RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}
BURST = 10
READY_WAIT_S = 60
# The SDK's servers say `ttlMs: 0` on tools/list unless told otherwise, and the gateway honours
# it (no cache); row b is about a warm cache, so its server declares its list fresh this long.
LIST_TTL_MS = 300_000
GOALS = {
    "spare_vs_kept": 2.0,  # a call on a ready spare: at most twice the kept-alive figure
    "spare_vs_fresh": 1 / 50,  # ... and at most 1/50 of the per-call figure without a spare
    "first_listing_ms": 5.0,  # the first get_server_tools after an eager start, cache warm
    "burst_ratio": 1.0,  # a burst is no slower than without spares
}


def measure_spares(rounds: int = 10) -> dict:
    """Every figure of the rows, in ms (RSS in MiB), with the ratios and goals."""
    tag = f"bench-spares-{uuid.uuid4().hex}"
    entry = harness.sdk_stdio_server(tag)
    servers = {"spared": entry, "unspared": {**entry, "spare": False}, "kept": {**entry, "session": "keep-alive"}}
    found: dict = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-spares-") as tmp:
            config = harness.ConfigDir(Path(tmp) / "config")
            config.write(servers, RULES)
            audit = str(Path(tmp) / "audit.jsonl")
            found.update(_sequential(config, audit, rounds))
            listed = harness.ConfigDir(Path(tmp) / "listed")  # a list the server says stays fresh: cacheable
            listed.write({"spared": {**entry, "args": [*entry["args"], "--list-ttl-ms", str(LIST_TTL_MS)]}}, RULES)
            found.update(_first_listing(listed, audit, rounds))
            alone = harness.ConfigDir(Path(tmp) / "burst")  # no other server warming up beside the burst
            alone.write({"spared": entry}, RULES)
            found.update(_burst(alone, audit, max(3, rounds // 3)))
    finally:
        harness.kill_tagged(tag)
    found["spare_vs_kept"] = found["spare_ms"] / found["kept_ms"]
    found["spare_vs_fresh"] = found["spare_ms"] / found["fresh_ms"]
    found["burst_ratio"] = found["burst_spare_ms"] / found["burst_off_ms"]
    found["gateway_rss_ratio"] = found["gateway_rss_eager_mib"] / found["gateway_rss_off_mib"]
    found["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # other processes' load skews every figure
    found["goals"] = GOALS
    return found


def _gateway(config: harness.ConfigDir, audit: str, strategy: str) -> harness.Gateway:
    return config.gateway("--debug", "--audit-log", audit, "--init-strategy", strategy)


def _execute(gw: harness.Gateway, server: str, text: str = "bench") -> None:
    result = gw.call_tool("execute_tool", {"server": server, "tool": "echo", "args": {"text": text}})
    if result.is_error:
        raise RuntimeError(f"execute_tool on {server!r} failed: {harness.result_text(result)}")


def _spare(gw: harness.Gateway, server: str = "spared") -> dict:
    return gw.call_json("get_gateway_status", {})["downstream"]["spares"].get(server, {})


def _wait_ready(gw: harness.Gateway, server: str = "spared", other_than: int | None = None) -> dict:
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        spare = _spare(gw, server)
        if spare.get("ready") and spare.get("pid") != other_than:
            return spare
        time.sleep(0.05)  # a benchmark may poll: this is off the clock
    raise RuntimeError(f"no spare of {server!r} became ready within {READY_WAIT_S} s")


def _ms(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _sequential(config: harness.ConfigDir, audit: str, rounds: int) -> dict:
    """a and d: alternate spare, kept-alive and fresh calls on one eager gateway; then RSS."""
    spare_ms, kept_ms, fresh_ms = [], [], []
    with _gateway(config, audit, "eager") as gw:
        for server in ("spared", "kept", "unspared"):  # caches, the kept session, the SDK import
            _execute(gw, server)
        pid = None
        for _ in range(rounds):
            pid = _wait_ready(gw, other_than=pid)["pid"]
            spare_ms.append(_ms(lambda: _execute(gw, "spared")))
            kept_ms += [_ms(lambda: _execute(gw, "kept")) for _ in range(5)]
            fresh_ms.append(_ms(lambda: _execute(gw, "unspared")))
        spare = _wait_ready(gw, other_than=pid)
        spare_rss = spare["rss_bytes"] / 2**20
        eager_rss = harness.rss_bytes(gw.pid) / 2**20
    with _gateway(config, audit, "off") as gw:
        for server in ("spared", "kept", "unspared"):  # the same work, without spares
            _execute(gw, server)
        off_rss = harness.rss_bytes(gw.pid) / 2**20
    return {
        "spare_ms": statistics.median(spare_ms), "kept_ms": statistics.median(kept_ms),
        "fresh_ms": statistics.median(fresh_ms), "sequential_calls": rounds,
        "spare_rss_mib": spare_rss, "gateway_rss_eager_mib": eager_rss, "gateway_rss_off_mib": off_rss,
    }


def _first_listing(config: harness.ConfigDir, audit: str, rounds: int) -> dict:
    """b: a fresh gateway per sample; eager waits (off the clock) for its warm cache."""
    warm, cold = [], []
    for _ in range(rounds):
        with _gateway(config, audit, "eager") as gw:
            _wait_ready(gw)  # the spare listed the tools into the cache as it started
            warm.append(_ms(lambda: gw.call_json("get_server_tools", {"server": "spared"})))
        with _gateway(config, audit, "off") as gw:
            cold.append(_ms(lambda: gw.call_json("get_server_tools", {"server": "spared"})))
    return {"first_listing_ms": statistics.median(warm), "first_listing_off_ms": statistics.median(cold)}


def _burst(config: harness.ConfigDir, audit: str, rounds: int) -> dict:
    """c: BURST concurrent execute_tool calls, a spare ready, against the same without spares."""
    timings: dict[str, list[float]] = {"eager": [], "off": []}
    for _ in range(rounds):
        for strategy in ("eager", "off"):
            with _gateway(config, audit, strategy) as gw:
                _execute(gw, "spared")  # the cache, the SDK import
                if strategy == "eager":
                    _wait_ready(gw)
                with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
                    timings[strategy].append(_ms(lambda: list(pool.map(lambda n: _execute(gw, "spared", str(n)), range(BURST)))))
    return {"burst_spare_ms": statistics.median(timings["eager"]), "burst_off_ms": statistics.median(timings["off"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="samples per figure (default 10)")
    options = parser.parse_args(argv)
    print(json.dumps(measure_spares(options.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
