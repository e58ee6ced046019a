"""Promise: what a downstream server lists or answers can neither freeze the gateway, nor
spoil the server's other tools, nor make it write an answer past the message limit.

- Checking a call's arguments against a tool's inputSchema never runs what can explode
  (regular expressions of `pattern`, `patternProperties`, `format`; `uniqueItems` over a
  large array): those are left to the server. Every other check stops at the call's
  deadline (TIMEOUT) or when it is cancelled, and a `ping` meanwhile is answered at once.
- One invalid tool in a server's list affects only that tool (listed, called unchecked);
  the server's other tools are listed, checked and called as usual.
- An over-long downstream error message or tool description is cut with a marker; a
  listing that would not fit leaves tools out and says so. No line the gateway writes is
  longer than `--max-line-bytes`.
"""

from __future__ import annotations

import pytest

import harness
from gateway_lib.errors import DOWNSTREAM_ERROR, INVALID_ARGUMENTS, TIMEOUT
from harness import execute_message, raw_error_of

EVERYTHING = {"agents": {"dev": {"allow": {"servers": ["*"]}}}}
CATASTROPHIC = {"type": "string", "pattern": "^(a+)+$"}
UNIQUE = {"type": "array", "uniqueItems": True}

# Each of these froze the whole gateway when checked before the call (3.9 s to forever).
EXPLOSIVE = {
    "pattern, 27 a's": ({"s": CATASTROPHIC}, {"s": "a" * 27 + "!"}),
    "pattern, 34 a's": ({"s": CATASTROPHIC}, {"s": "a" * 34 + "!"}),
    "uniqueItems, 4,000 objects": ({"xs": UNIQUE}, {"xs": [{"i": i} for i in range(4000)]}),
    "uniqueItems, 20,000 objects": ({"xs": UNIQUE}, {"xs": [{"i": i} for i in range(20000)]}),
}

# Two failing branches at every level: 2**depth descents, no regex involved.
EXPONENTIAL = {
    "type": "object",
    "properties": {"t": {"$ref": "#/$defs/n"}},
    "$defs": {"n": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/n"}},
                              {"type": "array", "items": {"$ref": "#/$defs/n"}}]}},
}


def nested_list(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def explosive_server(case: str, cached: bool) -> str:
    return f"{'cached' if cached else 'cold'}-{list(EXPLOSIVE).index(case)}"


@pytest.fixture(scope="module")
def explosive(shared_dir):
    """One gateway with a server per case and cache state, each listing one tool `t` and
    logging to a file of its own; the SDK is loaded before any test (a first listing), so
    each call's 1 s deadline is the call's own."""
    config = shared_dir.config_dir
    servers, logs = {}, {}
    for case, (properties, _) in EXPLOSIVE.items():
        tool = {"name": "t", "inputSchema": {"type": "object", "properties": properties}}
        for cached in (True, False):
            name = explosive_server(case, cached)
            logs[name] = config.path(f"{name}.log")
            servers[name] = harness.listed_tools_server(config, shared_dir.tag, [tool], log=logs[name])
    servers["warm"] = harness.listed_tools_server(config, shared_dir.tag, [{"name": "w", "inputSchema": {"type": "object"}}])
    config.write(servers, EVERYTHING)
    with config.raw_gateway(env=shared_dir.env) as raw:
        raw.initialize()
        raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "warm"}}, timeout=30)
        yield raw, logs
        assert harness.protocol_problems(raw.all_stdout_bytes()) == []


@pytest.mark.parametrize("cached", [True, False], ids=["schema from the cache", "schema listed in the call's session"])
@pytest.mark.parametrize("case", list(EXPLOSIVE))
def test_a_check_that_could_explode_is_left_to_the_server_and_a_ping_meanwhile_is_answered(explosive, case, cached):
    raw, logs = explosive
    server = explosive_server(case, cached)
    if cached:  # fills the cache of this server (no other test uses it)
        raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": server}},
                    timeout=30)
    raw.send(execute_message(f"call-{server}", server, "t", EXPLOSIVE[case][1], timeout_ms=1000))
    assert raw.request("ping", {}, id=f"ping-{server}", timeout=10)["result"] == {}
    answer = raw.response_for(f"call-{server}", timeout=30)
    assert answer["result"]["isError"] is False, answer
    assert harness.count_events(logs[server], "call", tool="t") == 1  # the server got the call and judged it


def test_an_expensive_schema_check_ends_at_the_calls_deadline_as_a_timeout(config_dir, tag):
    log = config_dir.path("server.log")
    config_dir.write({"s": harness.listed_tools_server(config_dir, tag, [{"name": "t", "inputSchema": EXPONENTIAL}], log=log)},
                     EVERYTHING)
    with config_dir.raw_gateway() as raw:
        raw.initialize()
        raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "s"}})
        raw.send(execute_message("call", "s", "t", {"t": nested_list(40)}, timeout_ms=500))
        assert raw.request("ping", {}, id="ping", timeout=10)["result"] == {}
        answer = raw.response_for("call", timeout=30)
    assert raw_error_of(answer)["code"] == TIMEOUT
    assert harness.count_events(log, "call", tool="t") == 0


def test_a_cancelled_schema_check_stops_and_frees_its_worker_for_the_next_call(config_dir, tag):
    tools = [{"name": "t", "inputSchema": EXPONENTIAL}, {"name": "ok", "inputSchema": {"type": "object"}}]
    config_dir.write({"s": harness.listed_tools_server(config_dir, tag, tools)}, EVERYTHING)
    with config_dir.raw_gateway("--max-workers", "1") as raw:
        raw.initialize()
        raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "s"}})
        raw.send(execute_message("slow", "s", "t", {"t": nested_list(40)}, timeout_ms=600_000))
        raw.notify("notifications/cancelled", {"requestId": "slow"})
        after = raw.request("tools/call", execute_message("next", "s", "ok", {})["params"], id="next", timeout=30)
    assert after["result"]["isError"] is False
    assert all(message.get("id") != "slow" for message in raw.other_messages)


# --- every answer fits the message limit (issue 9, item 9) ---------------------------------------

SIX_MIB = 6 * 1024 * 1024
DEFAULT_CAP = 4 * 1024 * 1024


def test_an_over_long_downstream_error_is_cut_with_a_marker_and_the_answer_fits_the_limit(config_dir, tag):
    tool = {"name": "loud", "inputSchema": {"type": "object"}, "x-test-error": {"code": -32050, "size": SIX_MIB}}
    config_dir.write({"s": harness.listed_tools_server(config_dir, tag, [tool])}, EVERYTHING)
    with config_dir.raw_gateway() as raw:
        raw.initialize()
        answer = raw.request("tools/call", execute_message(1, "s", "loud", {})["params"], id=1, timeout=60)
        stdout = raw.all_stdout_bytes()
    error = raw_error_of(answer)
    assert error["code"] == DOWNSTREAM_ERROR and error["downstream_code"] == -32050
    assert "[cut: " in error["message"]
    assert max(len(line) for line in stdout.splitlines(keepends=True)) <= DEFAULT_CAP


def test_an_over_long_tool_description_is_cut_with_a_marker_and_the_listing_fits_the_limit(config_dir, tag):
    tools = [{"name": "wordy", "description": "d" * SIX_MIB, "inputSchema": {"type": "object"}},
             {"name": "plain", "description": "Short.", "inputSchema": {"type": "object"}}]
    config_dir.write({"s": harness.listed_tools_server(config_dir, tag, tools)}, EVERYTHING)
    with config_dir.raw_gateway() as raw:
        raw.initialize()
        answer = raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "s"}},
                             timeout=60)
        stdout = raw.all_stdout_bytes()
    listed = {t["name"]: t for t in answer["result"]["structuredContent"]["tools"]}
    assert "[cut: " in listed["wordy"]["description"] and listed["plain"]["description"] == "Short."
    assert max(len(line) for line in stdout.splitlines(keepends=True)) <= DEFAULT_CAP


def test_a_listing_too_large_for_the_limit_leaves_tools_out_and_says_so(config_dir, tag):
    cap = 64 * 1024
    tools = [{"name": f"t{i}", "description": "d" * 4000, "inputSchema": {"type": "object"}} for i in range(40)]
    config_dir.write({"s": harness.listed_tools_server(config_dir, tag, tools)}, EVERYTHING)
    with config_dir.raw_gateway("--max-line-bytes", str(cap)) as raw:
        raw.initialize()
        answer = raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "s"}})
        stdout = raw.all_stdout_bytes()
    listing = answer["result"]["structuredContent"]
    assert 0 < listing["returned"] < 40 == listing["matched"]
    assert "message limit" in listing["note"]
    assert max(len(line) for line in stdout.splitlines(keepends=True)) <= cap




# --- one invalid tool spoils nothing else (issue 9, item 17) ---------------------------------------


def test_one_invalid_tool_in_a_servers_list_is_listed_and_called_unchecked_and_the_others_work(config_dir, tag):
    log = config_dir.path("server.log")
    tools = [{"name": "odd", "inputSchema": {"type": "nonsense"}},
             {"name": "strict", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}},
                                                "required": ["n"]}}]
    config_dir.write({"s": harness.listed_tools_server(config_dir, tag, tools, log=log)}, EVERYTHING)
    with config_dir.raw_gateway() as raw:
        raw.initialize()
        listing = raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "s"}},
                              timeout=30)
        odd = raw.request("tools/call", execute_message(1, "s", "odd", {"any": 1})["params"], timeout=30)
        refused = raw.request("tools/call", execute_message(2, "s", "strict", {"n": "one"})["params"], timeout=30)
        fine = raw.request("tools/call", execute_message(3, "s", "strict", {"n": 1})["params"], timeout=30)
        stderr = raw.stderr_text()
    assert [t["name"] for t in listing["result"]["structuredContent"]["tools"]] == ["odd", "strict"]
    assert odd["result"]["isError"] is False and fine["result"]["isError"] is False
    assert raw_error_of(refused)["code"] == INVALID_ARGUMENTS
    assert harness.count_events(log, "call", tool="odd") == 1 and harness.count_events(log, "call", tool="strict") == 1
    assert stderr.count("Tool 'odd' of server 's' has an invalid inputSchema") == 1
