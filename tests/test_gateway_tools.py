"""End to end: the gateway as a process, a real SDK client, real downstream servers.

Each test states one promise of the gateway tools.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from gateway_lib.errors import (
    DENIED_BY_POLICY,
    FALLBACK_AGENT_NOT_IN_RULES,
    INVALID_AGENT_ID,
    INVALID_ARGUMENTS,
    INVALID_PARAMS,
    NO_FALLBACK_CONFIGURED,
    SERVER_UNAVAILABLE,
    TIMEOUT,
    TOOL_NOT_FOUND,
)

RULES = {
    "agents": {
        "dev": {
            "allow": {"servers": ["tools", "web", "ghost"]},
            "deny": {"tools": {"tools": ["crash", "spawn_*"]}},
        },
        "reader": {"allow": {"servers": ["tools"], "tools": {"tools": ["echo", "add"]}}},
        "default": {"allow": {"servers": ["tools"], "tools": {"tools": ["echo"]}}},
    }
}


def error_of(result) -> dict:
    """The gateway error payload of an isError result, checked to match its text block."""
    assert result.is_error, harness.result_text(result)
    payload = result.structured_content
    assert json.loads(result.content[0].text) == payload
    return payload["error"]


@pytest.fixture(scope="module")
def gateway(shared_dir):
    """One gateway for the tests that only read and are answered: none changes its config or
    state that another test looks at (its tool cache only saves them server starts)."""
    config = shared_dir.config_dir
    config.write({"tools": harness.fault_server(shared_dir.tag, description="Fault-injection test server")}, RULES)
    with config.gateway("--audit-log", str(config.path("audit.jsonl")), env=shared_dir.env) as gw:
        yield gw


# --- tools/list ---------------------------------------------------------------------------


def test_tools_list_shows_exactly_the_three_gateway_tools_in_well_under_2000_characters(gateway):
    tools = gateway.list_tools()
    assert [t.name for t in tools] == ["list_servers", "get_server_tools", "execute_tool"]
    size = len(json.dumps([t.model_dump(by_alias=True, exclude_none=True) for t in tools], separators=(",", ":")))
    assert size <= 1600


def test_debug_mode_adds_get_gateway_status(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.gateway("--debug") as gw:
        assert [t.name for t in gw.list_tools()][-1] == "get_gateway_status"
        gw.call_json("list_servers", {"agent_id": "dev"})
        status = gw.call_json("get_gateway_status", {"agent_id": "dev"})
    assert status["available_servers"] == ["tools"]
    assert status["config_paths"]["mcp_config"] == str(config_dir.mcp_config)
    assert sorted(status["policy_state"]["agent_ids"]) == ["default", "dev", "reader"]
    assert status["metrics"]["dev"]["list_servers"]["count"] == 1


# --- list_servers --------------------------------------------------------------------------


def test_list_servers_shows_only_servers_the_agent_may_use_with_descriptions(config_dir, tag):
    config_dir.write(
        {"tools": harness.fault_server(tag, description="Fault server"),
         "other": harness.fault_server(tag, description="Not for readers")},
        RULES,
    )
    with config_dir.gateway() as gw:
        assert gw.call_json("list_servers", {"agent_id": "reader"}) == {
            "servers": [{"name": "tools", "description": "Fault server"}]
        }


def test_list_servers_metadata_shows_transport_and_command_but_never_args_or_env(config_dir, tag):
    entry = harness.fault_server(tag, env={"API_KEY": "sk-very-secret"})
    config_dir.write({"tools": entry, "web": harness.http_server("http://127.0.0.1:9/mcp")}, RULES)
    with config_dir.gateway() as gw:
        result = gw.call_tool("list_servers", {"agent_id": "dev", "include_metadata": True})
    servers = {s["name"]: s for s in result.structured_content["servers"]}
    assert servers["tools"] == {"name": "tools", "description": "", "transport": "stdio", "command": sys.executable}
    assert servers["web"] == {"name": "web", "description": "", "transport": "http", "url": "http://127.0.0.1:9/mcp"}
    assert "sk-very-secret" not in harness.result_text(result)
    assert tag not in harness.result_text(result)  # args are not shown


# --- get_server_tools ----------------------------------------------------------------------


def test_get_server_tools_hides_denied_tools_and_counts_what_is_allowed(gateway):
    listing = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools"})
    names = {t["name"] for t in listing["tools"]}
    assert "echo" in names and "add" in names
    assert "crash" not in names and "spawn_grandchild" not in names
    assert listing["server"] == "tools"
    assert listing["total_available"] == listing["returned"] == len(listing["tools"])
    assert listing["tokens_used"] > 0


def test_get_server_tools_keeps_schemas_annotations_and_output_schemas(gateway, tag):
    direct = {t.name: t.model_dump(by_alias=True, exclude_none=True) for t in _direct_tools(tag)}
    listing = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", "names": "add"})
    assert listing["tools"] == [direct["add"]]
    assert "outputSchema" in listing["tools"][0]


def _direct_tools(tag):
    entry = harness.fault_server(tag)
    with harness.McpClient(entry["command"], entry["args"]) as client:
        return client.list_tools()


def test_get_server_tools_filters_by_names_and_by_pattern(gateway):
    by_names = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", "names": " echo, add ,nope"})
    assert sorted(t["name"] for t in by_names["tools"]) == ["add", "echo"]
    by_pattern = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", "pattern": "ec*"})
    assert [t["name"] for t in by_pattern["tools"]] == ["echo"]
    both = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", "names": "echo,add", "pattern": "*dd"})
    assert [t["name"] for t in both["tools"]] == ["add"]
    assert by_pattern["total_available"] == by_names["total_available"] > 2


def test_get_server_tools_stops_at_the_token_budget(gateway):
    everything = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools"})
    first_cost = len(json.dumps(everything["tools"][0], separators=(",", ":"))) / 4
    budget = int(first_cost) + 1
    trimmed = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", "max_schema_tokens": budget})
    assert trimmed["returned"] == 1
    assert trimmed["tokens_used"] <= budget
    assert trimmed["total_available"] == everything["total_available"]


def test_get_server_tools_refuses_a_server_the_agent_may_not_use(gateway):
    error = error_of(gateway.call_tool("get_server_tools", {"agent_id": "reader", "server": "web"}))
    assert error["code"] == DENIED_BY_POLICY
    assert error["rule"] == "default-deny"


# --- execute_tool: results pass through unchanged -------------------------------------------


@pytest.mark.parametrize(
    "tool, args",
    [
        ("echo", {"text": "héllo"}),
        ("add", {"a": 2, "b": 3.5}),
        ("image", {}),
        ("audio", {}),
        ("resource", {}),
        ("fail", {}),
    ],
    ids=["text", "structuredContent", "image", "audio", "embedded resource", "isError from the tool"],
)
def test_execute_tool_returns_the_downstream_result_unchanged(gateway, tag, tool, args):
    entry = harness.fault_server(tag)
    with harness.McpClient(entry["command"], entry["args"]) as client:
        direct = client.call_tool(tool, args)
    through = gateway.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": tool, "args": args})
    assert through.model_dump(by_alias=True, exclude_none=True) == direct.model_dump(by_alias=True, exclude_none=True)


def test_execute_tool_reaches_a_streamable_http_server(config_dir, tag):
    port = harness.free_port()
    server = subprocess.Popen([sys.executable, str(harness.SDK_HTTP_SERVER), "--port", str(port), "--tag", tag],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait_for_port(port, process=server)
        config_dir.write({"web": harness.http_server(f"http://127.0.0.1:{port}/mcp")}, RULES)
        with config_dir.gateway() as gw:
            result = gw.call_tool("execute_tool", {"agent_id": "dev", "server": "web", "tool": "echo", "args": {"text": "over http"}})
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not result.is_error
    assert "over http" in harness.result_text(result)


def test_execute_tool_reaches_a_server_written_with_the_sdk(config_dir, tag):
    config_dir.write({"tools": harness.sdk_stdio_server(tag)}, RULES)
    with config_dir.gateway() as gw:
        result = gw.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "echo", "args": {"text": "sdk"}})
    assert "sdk" in harness.result_text(result)


# --- execute_tool: errors -----------------------------------------------------------------


def test_a_denied_tool_names_the_deciding_rule(gateway, tag):
    error = error_of(gateway.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "crash", "args": {}}))
    assert error["code"] == DENIED_BY_POLICY
    assert error["rule"] == "agents.dev.deny.tools.tools[0]"


def test_a_tool_outside_the_allow_list_is_denied_by_default(gateway):
    error = error_of(gateway.call_tool("execute_tool", {"agent_id": "reader", "server": "tools", "tool": "image", "args": {}}))
    assert error["code"] == DENIED_BY_POLICY
    assert error["rule"] == "default-deny"


def test_an_undefined_server_is_unavailable(gateway):
    error = error_of(gateway.call_tool("execute_tool", {"agent_id": "dev", "server": "ghost", "tool": "x", "args": {}}))
    assert error["code"] == SERVER_UNAVAILABLE


def test_an_unknown_tool_is_tool_not_found(gateway):
    error = error_of(gateway.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "nope", "args": {}}))
    assert error["code"] == TOOL_NOT_FOUND


def test_arguments_that_break_the_tools_schema_are_refused_with_every_problem(gateway):
    error = error_of(gateway.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "add", "args": {"a": "two"}}))
    assert error["code"] == INVALID_ARGUMENTS
    assert len(error["problems"]) == 2  # a is not a number, b is missing


def test_a_cancelled_call_gets_no_answer_and_its_process_is_stopped(config_dir, tag):
    log = config_dir.path("server.log")
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, RULES)
    raw = config_dir.raw_gateway()
    try:
        raw.initialize()
        raw.send({"jsonrpc": "2.0", "id": "slow", "method": "tools/call", "params": {
            "name": "execute_tool",
            "arguments": {"agent_id": "dev", "server": "tools", "tool": "sleep", "args": {"seconds": 60}}}})
        assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=20)
        raw.notify("notifications/cancelled", {"requestId": "slow", "reason": "user stopped"})
        assert harness.wait_no_tagged(tag) == []
        pong = raw.request("ping", {})
        assert pong["result"] == {}
        assert all(m.get("id") != "slow" for m in raw.other_messages)
    finally:
        raw.close()
    assert b'"id":"slow"' not in raw.all_stdout_bytes()


# --- identity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent_id, code",
    [
        ("stranger", INVALID_AGENT_ID),
        ("", INVALID_AGENT_ID),
        ("DEV", INVALID_AGENT_ID),
        ("dev ", INVALID_AGENT_ID),
        ("d\u0435v", INVALID_AGENT_ID),  # Cyrillic e
    ],
    ids=["unknown id", "empty id", "different case", "trailing space", "look-alike letter"],
)
def test_an_agent_id_not_in_the_rules_gets_nothing(gateway, agent_id, code):
    error = error_of(gateway.call_tool("list_servers", {"agent_id": agent_id}))
    assert error["code"] == code


def test_an_omitted_agent_id_falls_back_to_the_default_agent(gateway):
    listing = gateway.call_json("get_server_tools", {"server": "tools"})
    assert [t["name"] for t in listing["tools"]] == ["echo"]


def test_gateway_default_agent_overrides_the_default_agent(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.gateway(env={"GATEWAY_DEFAULT_AGENT": "reader"}) as gw:
        listing = gw.call_json("get_server_tools", {"server": "tools"})
    assert sorted(t["name"] for t in listing["tools"]) == ["add", "echo"]


def test_a_default_agent_missing_from_the_rules_is_reported(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.gateway(env={"GATEWAY_DEFAULT_AGENT": "ghost"}) as gw:
        assert error_of(gw.call_tool("list_servers", {}))["code"] == FALLBACK_AGENT_NOT_IN_RULES


def test_no_default_anywhere_is_reported(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, {"agents": {"dev": {"allow": {"servers": ["*"]}}}})
    with config_dir.gateway() as gw:
        assert error_of(gw.call_tool("list_servers", {}))["code"] == NO_FALLBACK_CONFIGURED


def test_deny_on_missing_agent_requires_an_agent_id(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, {**RULES, "defaults": {"deny_on_missing_agent": True}})
    with config_dir.gateway() as gw:
        assert error_of(gw.call_tool("list_servers", {}))["code"] == INVALID_AGENT_ID
        assert gw.call_json("list_servers", {"agent_id": "reader"})["servers"]


def test_a_pinned_gateway_acts_as_its_agent_and_refuses_any_other(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.gateway("--agent", "reader") as gw:
        listing = gw.call_json("get_server_tools", {"server": "tools"})
        assert sorted(t["name"] for t in listing["tools"]) == ["add", "echo"]
        assert gw.call_json("get_server_tools", {"server": "tools", "agent_id": "reader"})["returned"] == 2
        error = error_of(gw.call_tool("get_server_tools", {"server": "tools", "agent_id": "dev"}))
    assert error["code"] == INVALID_AGENT_ID


# --- malformed arguments to the gateway's own tools -------------------------------------------


@pytest.mark.parametrize(
    "tool, arguments",
    [
        ("list_servers", {"include_metadata": "yes"}),
        ("list_servers", {"agent_id": 5}),
        ("get_server_tools", {"limit": 0}),
        ("get_server_tools", {"server": ["tools"]}),
        ("get_server_tools", {"server": "tools", "max_schema_tokens": "many"}),
        ("get_server_tools", {"server": "tools", "pattern": "a*b"}),
        ("execute_tool", {"server": "tools", "tool": "echo"}),
        ("execute_tool", {"server": "tools", "tool": "echo", "args": "text"}),
        ("execute_tool", {"server": "tools", "tool": "echo", "args": {}, "timeout_ms": 0}),
        ("execute_tool", {"server": "tools", "tool": "echo", "args": {}, "timeout_ms": int("9" * 400)}),
        ("execute_tool", {"server": "tools", "tool": "echo", "arguments": {}}),
    ],
    ids=["bool as string", "agent id a number", "limit zero", "server a list", "budget a string",
         "pattern of another form", "args missing", "args a string", "timeout zero",
         "timeout of 400 nines", "unknown key"],
)
def test_malformed_arguments_are_invalid_params(gateway, tool, arguments):
    with pytest.raises(Exception) as refused:
        gateway.call_tool(tool, arguments)
    assert refused.value.error.code == INVALID_PARAMS


# --- audit ----------------------------------------------------------------------------------


def test_twenty_concurrent_calls_give_twenty_whole_audit_lines_without_argument_values(config_dir, tag):
    audit = config_dir.path("audit.jsonl")
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.gateway("--audit-log", str(audit)) as gw:
        gw.call_json("get_server_tools", {"agent_id": "dev", "server": "tools"})
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(
                lambda n: gw.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "echo",
                                                        "args": {"text": f"secret-{n}"}}),
                range(20)))
    assert sorted(harness.result_text(r) for r in results) == sorted(f"secret-{n}" for n in range(20))
    lines = audit.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    calls = [r for r in records if r.get("tool") == "execute_tool"]
    assert len(calls) == 20
    assert all(r["agent"] == "dev" and r["outcome"] == "ok" and r["arg_names"] == ["text"] for r in calls)
    assert "secret-" not in audit.read_text(encoding="utf-8")


def test_denials_are_audited_with_their_rule(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.gateway("--audit-log", str(config_dir.path("audit.jsonl"))) as gw:
        gw.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "crash", "args": {}})
    records = harness.read_log(config_dir.path("audit.jsonl"))
    denial = [r for r in records if r.get("tool") == "execute_tool"][-1]
    assert denial["decision"] == "deny"
    assert denial["rule"] == "agents.dev.deny.tools.tools[0]"
    assert denial["error_code"] == DENIED_BY_POLICY


# --- start-up -------------------------------------------------------------------------------


def test_an_invalid_config_stops_start_up_with_nothing_on_stdout(config_dir):
    config_dir.mcp_config.write_text('{"mcpServers": {"x": {"args": []}}}', encoding="utf-8")
    config_dir.write_rules(RULES)
    done = subprocess.run([sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules)],
                          input=b"", capture_output=True, timeout=30, env=harness.gateway_env())
    assert done.returncode == 1
    assert done.stdout == b""
    assert "$.mcpServers.x" in done.stderr.decode()


def test_the_demo_shows_a_session_end_to_end():
    done = subprocess.run([sys.executable, str(harness.GATEWAY), "demo"], capture_output=True, timeout=120,
                          env=harness.gateway_env(), cwd=harness.ROOT)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert '"protocolVersion": "2025-11-25"' in out
    assert '"sum": 5' in out
    assert "DENIED_BY_POLICY" in out


# --- arguments no server could read (issue 9, items 7 and 8) -------------------------------------

UNSENDABLE = {
    "a lone surrogate in server": '{"agent_id":"dev","server":"\\ud800","tool":"echo","args":{}}',
    "a lone surrogate in tool": '{"agent_id":"dev","server":"tools","tool":"\\udfff","args":{}}',
    "a lone surrogate in an args key": '{"agent_id":"dev","server":"tools","tool":"echo","args":{"\\ud800":"x"}}',
    "args nested 300 deep": ('{"agent_id":"dev","server":"tools","tool":"echo","args":{"text":'
                             + "[" * 300 + "]" * 300 + "}}"),
    "1e400 in args": '{"agent_id":"dev","server":"tools","tool":"echo","args":{"text":1e400}}',
}


@pytest.mark.parametrize("case", list(UNSENDABLE))
def test_arguments_no_server_could_read_are_invalid_arguments_audited_and_reach_no_server(config_dir, tag, case):
    log, audit = config_dir.path("server.log"), config_dir.path("audit.jsonl")
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, {"agents": {"dev": {"allow": {"servers": ["*"]}}}})
    with config_dir.raw_gateway("--audit-log", str(audit)) as raw:
        raw.initialize(announce=False)  # no server may be reached: no SDK import to wait for at the exit
        line = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_tool","arguments":%s}}'
        raw.send_bytes((line % UNSENDABLE[case]).encode() + b"\n")
        answer = raw.response_for(7, timeout=30)
    assert harness.raw_error_of(answer)["code"] == INVALID_ARGUMENTS
    assert harness.count_events(log, "start") == 0
    [record] = [r for r in harness.read_log(audit) if r.get("tool") == "execute_tool"]
    assert record["error_code"] == INVALID_ARGUMENTS


# --- listings take a server slot (issue 9, item 12) -----------------------------------------------


def test_a_listing_that_opens_a_session_waits_for_a_slot_of_max_concurrency(config_dir, tag):
    log = config_dir.path("server.log")
    entry = harness.fault_server(tag, log=log, max_concurrency=1, timeout_ms=1500)
    config_dir.write({"tools": entry}, RULES)
    with config_dir.raw_gateway("--tool-cache-ttl", "0") as raw:
        raw.initialize()
        raw.send(harness.execute_message("busy", "tools", "sleep", {"seconds": 60}, timeout_ms=60_000))
        assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=20)
        listing = raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "tools"}},
                              timeout=30)
        sessions_meanwhile = harness.count_events(log, "start")
        raw.notify("notifications/cancelled", {"requestId": "busy"})
    assert harness.raw_error_of(listing)["code"] == TIMEOUT  # no slot freed up within the server's timeout
    assert sessions_meanwhile == 1


# --- what the answers say ------------------------------------------------------------------------


def test_a_budget_too_small_for_the_first_match_says_how_many_matched_and_that_the_budget_stopped_them(gateway):
    listing = gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", "names": "echo,add",
                                                     "max_schema_tokens": 1})
    assert listing["tools"] == [] and listing["returned"] == 0
    assert listing["matched"] == 2
    assert "max_schema_tokens" in listing["note"]


def test_a_pinned_gateway_leaves_agent_id_out_of_its_tool_schemas(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.gateway("--agent", "reader", "--debug") as gw:
        schemas = {t.name: t.input_schema for t in gw.list_tools()}
    assert len(schemas) == 4
    assert all("agent_id" not in schema["properties"] for schema in schemas.values())


def test_status_shows_one_warnings_list_that_is_the_union_of_the_files_warnings(config_dir, tag):
    servers = {"tools": harness.fault_server(tag, sesion="keep-alive"),
               "needs": {"command": "${UNSET_FOR_THIS_TEST}"}}
    config_dir.write(servers, {"agents": {"dev": {"allow": {"servers": ["tools", "ghost"]}}}})
    with config_dir.gateway("--debug") as gw:
        status = gw.call_json("get_gateway_status", {"agent_id": "dev"})
        stderr = gw.stderr_text()
    per_file = status["reload_status"]
    assert status["warnings"] == per_file["mcp_config"]["warnings"] + per_file["gateway_rules"]["warnings"]
    assert len(status["warnings"]) == 3
    for needle in ("did you mean 'session'?", "UNSET_FOR_THIS_TEST", "'ghost'"):
        assert sum(needle in warning for warning in status["warnings"]) == 1
        assert stderr.count(needle) == 1


# --- the gateway never loads itself (issue 9, item 19) ---------------------------------------------


def test_a_gateway_never_starts_itself_as_a_downstream_server(config_dir, tag):
    """An entry that runs this gateway is skipped (warned in check, the log and status); one
    hidden behind a shell starts a gateway that sees the marker and loads no servers."""
    own_args = ["--mcp-config", str(config_dir.mcp_config), "--rules", str(config_dir.rules),
                "--audit-log", str(config_dir.path(f"nested-{tag}.jsonl"))]
    hidden = " ".join(shlex.quote(word) for word in [sys.executable, str(harness.GATEWAY), *own_args])
    servers = {"self": {"command": sys.executable, "args": [str(harness.GATEWAY), *own_args]},
               "wrapped": {"command": "/bin/sh", "args": ["-c", f"exec {hidden}"]},
               "tools": harness.fault_server(tag)}
    config_dir.write(servers, {"agents": {"dev": {"allow": {"servers": ["*"]}}}})
    checked = subprocess.run([sys.executable, str(harness.GATEWAY), "check", "--mcp-config", str(config_dir.mcp_config),
                              "--rules", str(config_dir.rules)], capture_output=True, timeout=60, env=harness.gateway_env())
    skipped = "Server 'self' is skipped: its entry starts this gateway"
    assert checked.returncode == 0 and skipped in checked.stdout.decode()
    with config_dir.gateway("--debug") as gw:
        listed = gw.call_json("list_servers", {"agent_id": "dev"})
        nested = gw.call_tool("execute_tool", {"agent_id": "dev", "server": "wrapped", "tool": "list_servers",
                                               "args": {"agent_id": "dev"}})
        status = gw.call_json("get_gateway_status", {"agent_id": "dev"})
        stderr = gw.stderr_text()
    assert [s["name"] for s in listed["servers"]] == ["tools", "wrapped"]
    assert nested.structured_content == {"servers": []}  # the nested gateway loaded none of them
    assert sum(skipped in warning for warning in status["warnings"]) == 1
    assert stderr.count(skipped) == 1
