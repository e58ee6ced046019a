"""Promise: /health, /ready and /metrics tell a supervisor and a scraper the truth, and
nothing secret.

/health is always 200 while the process serves; /ready is 503 until the SDK is loaded and
stays 200 after a rejected reload (saying so); /metrics is Prometheus text (or JSON when
asked) that parses, counts calls by agent, tool and outcome, and escapes label values. A
GATEWAY_METRICS_TOKEN, when set, guards all three.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

import harness
from gateway_lib import __version__
from gateway_lib.metrics import Metrics
from gateway_lib.probes import Probes
from gateway_lib.prometheus import Family, escape_label_value, render
from http_harness import HttpGatewayProcess

RULES = {"agents": {"dev": {"allow": {"servers": ["tools"]}}}}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, dict]:
    """name -> {"type": ..., "samples": [(labels, value)]}, failing on any line out of format."""
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            current = families.setdefault(name, {"type": kind, "samples": []})
            continue
        found = SAMPLE.match(line)
        assert found, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(found.group(3) or ""))
        assert current is not None and found.group(1).startswith(next(reversed(families)))
        current["samples"].append((found.group(1), labels, float(found.group(4))))
    return families


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


@pytest.fixture
def gateway(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with HttpGatewayProcess(config_dir) as process:
        yield process, config_dir


def wait_ready(raw) -> dict:
    assert harness.wait_until(lambda: raw.request("GET", "/ready").status == 200, timeout=30)
    return raw.request("GET", "/ready").json()


def test_health_is_200_with_the_service_version_and_uptime_without_any_token(gateway):
    process, _ = gateway
    reply = process.raw().request("GET", "/health")
    body = reply.json()
    assert reply.status == 200 and reply.header("Content-Type") == "application/json"
    assert body["status"] == "healthy" and body["service"] == "agent-mcp-gateway"
    assert body["version"] == __version__ and body["uptime_seconds"] >= 0
    assert set(body) == {"status", "service", "version", "uptime_seconds"}


def test_ready_is_200_with_the_servers_configured_once_the_sdk_is_loaded(gateway):
    process, _ = gateway
    assert wait_ready(process.raw()) == {"status": "ready", "servers_configured": 1}


def test_ready_is_503_not_ready_with_a_reason_until_the_sdk_is_loaded():
    store = SimpleNamespace(current=lambda: SimpleNamespace(servers=SimpleNamespace(servers={"a": None})))
    reloader = SimpleNamespace(status=lambda: {})
    probes = Probes(store, reloader, Metrics(), None, lambda: 0)
    status, body = probes.ready()
    assert status == 503 and body["status"] == "not_ready" and body["reason"]
    probes.sdk_loaded.set()
    assert probes.ready() == (200, {"status": "ready", "servers_configured": 1})


def test_a_rejected_reload_keeps_the_gateway_ready_and_the_body_says_which_file_failed(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with HttpGatewayProcess(config_dir, "--log-level", "DEBUG", env={"GATEWAY_RELOAD_DEBOUNCE_MS": "50"}) as process:
        raw = process.raw()
        wait_ready(raw)
        assert harness.wait_until(lambda: "Watching" in process.stderr_text(), timeout=15)  # the watcher is up
        config_dir.rules.write_text('{"agents": {"dev": {"allow": {"servers": "not-a-list"}}}}', encoding="utf-8")
        assert harness.wait_until(lambda: "failed_reloads" in raw.request("GET", "/ready").json(), timeout=20)
        reply = raw.request("GET", "/ready")
        assert reply.status == 200 and reply.json()["status"] == "ready"
        assert list(reply.json()["failed_reloads"]) == ["gateway_rules"]
        assert "not-a-list" not in reply.body.decode()


def test_metrics_is_prometheus_text_counting_calls_by_agent_tool_and_outcome(gateway):
    process, _ = gateway
    raw = process.raw()
    session = raw.initialize()
    raw.call_result(session, "list_servers", {"agent_id": "dev"})
    raw.call_result(session, "list_servers", {"agent_id": "dev"})
    raw.call_result(session, "execute_tool", {"agent_id": "dev", "server": "nowhere", "tool": "x", "args": {}})
    reply = raw.request("GET", "/metrics")
    assert reply.status == 200 and reply.header("Content-Type").startswith("text/plain; version=0.0.4")
    families = parse_prometheus(reply.body.decode())
    calls = {(s[1]["agent"], s[1]["tool"], s[1]["outcome"]): s[2] for s in families["gateway_tool_calls_total"]["samples"]}
    assert families["gateway_tool_calls_total"]["type"] == "counter"
    assert calls == {("dev", "list_servers", "ok"): 2, ("dev", "execute_tool", "error"): 1}
    histogram = families["gateway_tool_call_duration_seconds"]
    assert histogram["type"] == "histogram"
    buckets = [s for s in histogram["samples"] if s[0].endswith("_bucket") and s[1]["tool"] == "list_servers"]
    assert buckets[-1][1]["le"] == "+Inf" and buckets[-1][2] == 2
    assert [s[2] for s in buckets] == sorted(s[2] for s in buckets)  # cumulative
    sessions = families["gateway_http_sessions_open"]["samples"]
    assert families["gateway_http_sessions_open"]["type"] == "gauge" and sessions[0][2] == 1
    reloads = {(s[1]["file"], s[1]["outcome"]): s[2] for s in families["gateway_config_reloads_total"]["samples"]}
    assert reloads[("gateway_rules", "applied")] == 1 and reloads[("mcp_config", "rejected")] == 0
    for name in ("gateway_downstream_sessions_in_flight", "gateway_kept_alive_sessions_open", "gateway_uptime_seconds"):
        assert families[name]["type"] == "gauge"


def test_metrics_count_the_downstream_sessions_opened_in_text_and_json(config_dir, tag):
    log = config_dir.path("server.log")
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, RULES)
    with HttpGatewayProcess(config_dir) as process:
        raw = process.raw()

        def opened() -> tuple[float, float]:
            families = parse_prometheus(raw.request("GET", "/metrics").body.decode())
            [(_, _, text)] = families["gateway_downstream_sessions_opened_total"]["samples"]
            assert families["gateway_downstream_sessions_opened_total"]["type"] == "counter"
            return text, raw.request("GET", "/metrics", headers={"Accept": "application/json"}).json()[
                "downstream_sessions_opened"]

        assert opened() == (0, 0)
        session = raw.initialize()
        for _ in range(2):  # per-call sessions: a process each (and any the tool list needs)
            raw.call_result(session, "execute_tool", {"agent_id": "dev", "server": "tools", "tool": "echo",
                                                      "args": {"text": "x"}})
        # Every process the fixture started is a session opened, in both forms (once spares settle).
        assert harness.wait_until(lambda: opened() == (harness.count_events(log, "start"),) * 2, timeout=20)
        assert harness.count_events(log, "start") >= 2


def test_metrics_come_as_json_in_the_seeds_shape_when_asked(gateway):
    process, _ = gateway
    raw = process.raw()
    session = raw.initialize()
    raw.call_result(session, "list_servers", {"agent_id": "dev"})
    reply = raw.request("GET", "/metrics", headers={"Accept": "application/json"})
    body = reply.json()
    assert reply.status == 200 and {"timestamp", "operations", "uptime_seconds"} <= set(body)
    assert body["operations"]["dev"]["list_servers"]["count"] == 1


def test_metrics_count_per_call_calls_served_by_a_spare_and_by_a_fresh_process_in_both_forms(config_dir, tag):
    config_dir.write({"spared": harness.fault_server(tag), "unspared": harness.fault_server(tag, spare=False)},
                     {"agents": {"dev": {"allow": {"servers": ["*"]}}}})
    with HttpGatewayProcess(config_dir, "--debug", env={"GATEWAY_INIT_STRATEGY": "eager"}) as process:
        raw = process.raw()
        session = raw.initialize()

        def spare_ready() -> bool:
            status = raw.call_result(session, "get_gateway_status", {"agent_id": "dev"})["structuredContent"]
            return status["downstream"]["spares"].get("spared", {}).get("ready", False)

        assert harness.wait_until(spare_ready, timeout=30)
        for server in ("spared", "unspared"):
            raw.call_result(session, "execute_tool", {"agent_id": "dev", "server": server, "tool": "echo",
                                                      "args": {"text": "hi"}})
        families = parse_prometheus(raw.request("GET", "/metrics").body.decode())
        body = raw.request("GET", "/metrics", headers={"Accept": "application/json"}).json()

    expected = {("spared", "spare"): 1, ("spared", "fresh"): 0, ("unspared", "spare"): 0, ("unspared", "fresh"): 1}
    served = families["gateway_per_call_calls_total"]
    assert served["type"] == "counter"
    assert {(s[1]["server"], s[1]["served_by"]): s[2] for s in served["samples"]} == expected
    assert {(server, by): n for server, counts in body["per_call_calls"].items() for by, n in counts.items()} == expected


def test_label_values_are_escaped_as_the_exposition_format_says():
    hostile = 'a"b\\c\nd'
    family = Family("x_total", "counter", "help")
    family.add(1, agent=hostile)
    text = render([family])
    assert escape_label_value(hostile) == 'a\\"b\\\\c\\nd'
    labels = parse_prometheus(text)["x_total"]["samples"][0][1]
    assert unescape(labels["agent"]) == hostile and text.count("\n") == 3


def test_the_probes_need_the_metrics_token_when_one_is_set(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with HttpGatewayProcess(config_dir, env={"GATEWAY_METRICS_TOKEN": "scrape-secret"}) as process:
        raw = process.raw()
        for path in ("/health", "/ready", "/metrics"):
            refused = raw.request("GET", path)
            assert refused.status == 401 and refused.header("WWW-Authenticate").startswith("Bearer")
            allowed = raw.with_token("scrape-secret").request("GET", path)
            assert allowed.status in (200, 503)
        assert "scrape-secret" not in process.stderr_text()
