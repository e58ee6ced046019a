"""What /health, /ready and /metrics answer: liveness, readiness, and the gateway's measures.

Reads only what the gateway already keeps (metrics, reload status, downstream status, the
session count); nothing secret goes into any of the three.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from . import __version__
from .metrics import HISTOGRAM_BUCKETS_S
from .prometheus import Family, render

SERVICE = "agent-mcp-gateway"


class Probes:
    def __init__(self, store, reloader, metrics, downstream, sessions_open: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._reloader = reloader
        self._metrics = metrics
        self._downstream = downstream
        self._sessions_open = sessions_open
        self._clock = clock
        self._started = clock()
        self.sdk_loaded = threading.Event()  # set once the downstream client SDK is imported

    def uptime_s(self) -> float:
        return round(self._clock() - self._started, 3)

    def health(self) -> tuple[int, dict]:
        return 200, {"status": "healthy", "service": SERVICE, "version": __version__,
                     "uptime_seconds": self.uptime_s()}

    def ready(self) -> tuple[int, dict]:
        if not self.sdk_loaded.is_set():
            return 503, {"status": "not_ready", "reason": "the MCP client SDK is still loading"}
        body: dict[str, Any] = {"status": "ready",
                                "servers_configured": len(self._store.current().servers.servers)}
        # A rejected reload leaves the previous config serving: still ready, but say so.
        # Only where and when: the problems themselves may quote values from the file.
        failed = {kind: {"path": status["path"], "last_attempt": status["last_attempt"],
                         "last_success": status["last_success"]}
                  for kind, status in self._reloader.status().items() if status["last_error"]}
        if failed:
            body["failed_reloads"] = failed
        return 200, body

    # --- metrics ----------------------------------------------------------------------

    def metrics_json(self) -> dict:
        """The seeds' shape: a timestamp, per-agent per-operation summaries, the uptime."""
        return {"timestamp": time.time(), "operations": self._metrics.snapshot(),
                "uptime_seconds": self.uptime_s(), **self._gauges()}

    def _gauges(self) -> dict:
        status = self._downstream.status()
        return {"http_sessions_open": self._sessions_open(),
                "downstream_sessions_in_flight": status["live_sessions"],
                "downstream_sessions_opened": status["sessions_opened"],
                "kept_alive_sessions_open": len(status["kept_sessions"]),
                "reloads": {kind: {"applied": s["success_count"], "rejected": s["attempt_count"] - s["success_count"]}
                            for kind, s in self._reloader.status().items()},
                "per_call_calls": _per_call_calls(status)}

    def metrics_text(self) -> str:
        calls = Family("gateway_tool_calls_total", "counter", "Gateway tool calls by agent, tool and outcome.")
        latency = Family("gateway_tool_call_duration_seconds", "histogram", "Duration of gateway tool calls.")
        for agent, tool, outcomes, buckets, count, total_s in self._metrics.histograms():
            for outcome, n in sorted(outcomes.items()):
                calls.add(n, agent=agent, tool=tool, outcome=outcome)
            running = 0
            for bound, n in zip(HISTOGRAM_BUCKETS_S, buckets):
                running += n
                latency.add(running, "_bucket", agent=agent, tool=tool, le=f"{bound:g}")
            latency.add(count, "_bucket", agent=agent, tool=tool, le="+Inf")
            latency.add(total_s, "_sum", agent=agent, tool=tool)
            latency.add(count, "_count", agent=agent, tool=tool)
        gauges = self._gauges()
        reloads = Family("gateway_config_reloads_total", "counter",
                         "Config file loads (the start-up load included) by file and outcome.")
        for kind, counts in sorted(gauges["reloads"].items()):
            for outcome, n in sorted(counts.items()):
                reloads.add(n, file=kind, outcome=outcome)
        opened = Family("gateway_downstream_sessions_opened_total", "counter",
                        "Downstream sessions opened since start (per-call, spare and kept-alive).")
        opened.add(gauges["downstream_sessions_opened"])
        families = [calls, latency, reloads, opened]
        for name, key, text in (
            ("gateway_http_sessions_open", "http_sessions_open", "HTTP sessions open."),
            ("gateway_downstream_sessions_in_flight", "downstream_sessions_in_flight",
             "Per-call downstream sessions open now."),
            ("gateway_kept_alive_sessions_open", "kept_alive_sessions_open", "Kept-alive downstream sessions open."),
        ):
            family = Family(name, "gauge", text)
            family.add(gauges[key])
            families.append(family)
        served = Family("gateway_per_call_calls_total", "counter",
                        "Calls of per-call servers by what served them: a warm spare, or a process started for the call.")
        for server, counts in sorted(gauges["per_call_calls"].items()):
            for served_by, n in counts.items():
                served.add(n, server=server, served_by=served_by)
        families.append(served)
        uptime = Family("gateway_uptime_seconds", "gauge", "Seconds since the gateway started.")
        uptime.add(self.uptime_s())
        families.append(uptime)
        return render(families)


def _per_call_calls(status: dict) -> dict[str, dict[str, int]]:
    """Per server, its per-call calls served by a spare and by a fresh session (downstream.spares)."""
    return {server: {"spare": spare["served_by_spare"], "fresh": spare["served_fresh"]}
            for server, spare in status.get("spares", {}).items()}
