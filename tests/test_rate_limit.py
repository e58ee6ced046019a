"""Promise: `agents.<id>.rate_limit` caps an agent's tools/call requests with a token bucket,
over stdio and HTTP alike, across all its sessions of one gateway process.

A call over the limit is the tool error RATE_LIMITED carrying `retry_after_s`, audited like
any call; other agents are not affected; `check` refuses a malformed limit.
"""

from __future__ import annotations

import io
import json

import pytest

import harness
from gateway_lib import cli
from gateway_lib.errors import RATE_LIMITED, RateLimited
from gateway_lib.model import RateLimit
from gateway_lib.ratelimit import RateLimiter
from http_harness import HttpGatewayProcess, tool_error

LIMITED = {"agents": {
    "slow": {"allow": {"servers": ["*"]}, "rate_limit": {"calls_per_minute": 1, "burst": 2}},
    "free": {"allow": {"servers": ["*"]}},
}}


def test_a_bucket_allows_its_burst_then_refuses_with_the_time_to_the_next_token():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limit = RateLimit(calls_per_minute=60, burst=2)
    limiter.take("a", limit)
    limiter.take("a", limit)
    with pytest.raises(RateLimited) as refused:
        limiter.take("a", limit)
    assert refused.value.context["retry_after_s"] == 1.0
    now[0] = 0.5
    with pytest.raises(RateLimited) as still:
        limiter.take("a", limit)
    assert still.value.context["retry_after_s"] == 0.5
    now[0] = 1.0
    limiter.take("a", limit)  # one token has come back


def test_each_agent_has_its_own_bucket_and_no_limit_means_none():
    limiter = RateLimiter(clock=lambda: 0.0)
    tight = RateLimit(calls_per_minute=1, burst=1)
    limiter.take("a", tight)
    limiter.take("b", tight)
    for _ in range(100):
        limiter.take("c", None)
    with pytest.raises(RateLimited):
        limiter.take("a", tight)


def test_a_reloaded_limit_takes_effect_at_once_keeping_no_more_than_the_new_burst():
    limiter = RateLimiter(clock=lambda: 0.0)
    limiter.take("a", RateLimit(calls_per_minute=60, burst=10))
    smaller = RateLimit(calls_per_minute=60, burst=1)
    limiter.take("a", smaller)
    with pytest.raises(RateLimited):
        limiter.take("a", smaller)


def test_over_the_limit_over_stdio_is_rate_limited_with_retry_after_and_audited(config_dir, tag):
    audit = config_dir.path("audit.jsonl")
    config_dir.write({"tools": harness.fault_server(tag)}, LIMITED)
    with config_dir.gateway("--audit-log", str(audit)) as gateway:
        first = [gateway.call_tool("list_servers", {"agent_id": "slow"}) for _ in range(2)]
        third = gateway.call_tool("list_servers", {"agent_id": "slow"})
        other = gateway.call_tool("list_servers", {"agent_id": "free"})
    assert not any(result.is_error for result in first) and not other.is_error
    error = json.loads(harness.result_text(third))["error"]
    assert third.is_error and error["code"] == RATE_LIMITED and 0 < error["retry_after_s"] <= 60
    lines = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    limited = [line for line in lines if line.get("error_code") == RATE_LIMITED]
    assert len(limited) == 1 and limited[0]["agent"] == "slow" and limited[0]["tool"] == "list_servers"


def test_over_http_the_limit_spans_every_session_of_the_agent(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, LIMITED)
    with HttpGatewayProcess(config_dir) as gateway:
        raw = gateway.raw()
        first, second = raw.initialize(), raw.initialize()
        assert not raw.call_result(first, "list_servers", {"agent_id": "slow"})["isError"]
        assert not raw.call_result(second, "list_servers", {"agent_id": "slow"})["isError"]
        third = raw.call_result(raw.initialize(), "list_servers", {"agent_id": "slow"})
        error = tool_error(third)
        assert error["code"] == RATE_LIMITED and error["retry_after_s"] > 0
        assert not raw.call_result(first, "list_servers", {"agent_id": "free"})["isError"]


def test_check_refuses_a_malformed_rate_limit(config_dir):
    config_dir.write({}, {"agents": {
        "a": {"rate_limit": {"calls_per_minute": 0}},
        "b": {"rate_limit": {"burst": 3}},
        "c": {"rate_limit": {"calls_per_minute": 10, "burst": 0, "per": "hour"}},
    }})
    out = io.StringIO()
    code = cli.main(["check", "--mcp-config", str(config_dir.mcp_config), "--rules", str(config_dir.rules)],
                    environ={}, out=out)
    report = out.getvalue()
    assert code == 1
    for path in ("$.agents.a.rate_limit.calls_per_minute", "$.agents.b.rate_limit.calls_per_minute",
                 "$.agents.c.rate_limit.burst", "$.agents.c.rate_limit.per"):
        assert path in report, report
