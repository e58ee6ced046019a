"""Both protocol generations: the stateless 2026-07-28 upstream (server/discover, the
per-request _meta envelope, resultType, a downstream's requests as input_required rounds)
and downstream servers that speak only 2026-07-28 (probed once, input_required resolved
through the client, tool definitions unchanged)."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from mcp import Client, StdioServerParameters

import harness
from gateway_lib.catalog import ToolCatalog
from gateway_lib.downstream.sdk import ListedTools
from gateway_lib.errors import (
    INPUT_STATE_MISMATCH,
    INPUT_STATE_UNKNOWN,
    INVALID_PARAMS,
    UNSUPPORTED_PROTOCOL_VERSION,
    InputStateMismatch,
)
from gateway_lib.input_rounds import InputRounds, Owner, RoundsFull
from gateway_lib.model import ServerSpec
from gateway_lib.relay import ClientLink
from passthrough_helpers import Recorder, answer_of, audit_records, execute, passthrough_server, start_gateway
from servers.passthrough_server import LIST_IN_2026, SAMPLE_PARAMS

MODERN = "2026-07-28"
WAIT_S = 30
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
}
RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}


@pytest.fixture
def fixture_log(config_dir):
    return config_dir.path("server.jsonl")


def modern_client(config_dir, recorder=None) -> Client:
    argv = harness.gateway_argv(config_dir.mcp_config, config_dir.rules, "--audit-log", str(config_dir.path("audit.jsonl")))
    params = StdioServerParameters(command=sys.executable, args=[str(a) for a in argv], env=harness.gateway_env())
    callbacks = {}
    if recorder is not None:
        callbacks = {"sampling_callback": recorder.sampling, "elicitation_callback": recorder.elicitation,
                     "list_roots_callback": recorder.roots}
    return Client(params, mode="auto", **callbacks)


def raw_modern_gateway(config_dir, env=None):
    return config_dir.raw_gateway("--audit-log", str(config_dir.path("audit.jsonl")), env=env)


SAMPLING_ENVELOPE = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}
SAMPLE_CALL = {"name": "execute_tool", "arguments": {"server": "fx", "tool": "sample", "args": {}}}
SAMPLED = {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "raw-model"}


def retry(raw, call, state, responses):
    params = {**call, "_meta": SAMPLING_ENVELOPE, "inputResponses": responses, "requestState": state}
    return raw.request("tools/call", params, timeout=WAIT_S)["result"]


def error_code(result) -> str:
    assert result["isError"] is True, result
    return result["structuredContent"]["error"]["code"]


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, WAIT_S)
    return asyncio.run(bounded())


# --- upstream: the gateway as a 2026-07-28 server --------------------------------------------


def test_the_sdk_client_in_auto_mode_ends_on_2026_07_28_with_the_gateway(config_dir, tag, fixture_log):
    config_dir.write({"fx": passthrough_server(tag, fixture_log)}, RULES)

    async def session():
        async with modern_client(config_dir) as client:
            tools = await client.list_tools()
            result = await client.call_tool("execute_tool", {"server": "fx", "tool": "meta", "args": {}})
            return client.protocol_version, [t.name for t in tools.tools], result

    version, names, result = run(session())
    assert version == MODERN  # not 2025-11-25: the probe was answered, no fallback
    assert "execute_tool" in names
    assert not result.is_error, harness.result_text(result)


def test_server_discover_names_2026_07_28_and_the_gateways_capabilities(config_dir):
    config_dir.write({}, RULES)
    with config_dir.raw_gateway() as raw:
        found = raw.request("server/discover", {"_meta": ENVELOPE})["result"]
    assert found["supportedVersions"] == [MODERN]
    assert set(found["capabilities"]) == {"tools", "logging"}
    assert found["resultType"] == "complete"
    assert found["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "agent-mcp-gateway"


def test_result_type_is_sent_to_2026_requests_without_initialize_and_only_to_them(config_dir):
    config_dir.write({}, RULES)
    call = {"name": "list_servers", "arguments": {}}
    with config_dir.raw_gateway() as raw:
        listed = raw.request("tools/list", {"_meta": ENVELOPE})["result"]
        modern = raw.request("tools/call", {**call, "_meta": ENVELOPE})["result"]
        raw.initialize()
        legacy = raw.request("tools/call", call)["result"]
    assert listed["resultType"] == "complete" and "execute_tool" in [t["name"] for t in listed["tools"]]
    assert modern["resultType"] == "complete" and modern["structuredContent"] == {"servers": []}
    assert "resultType" not in legacy and legacy["structuredContent"] == {"servers": []}


def test_a_2026_request_naming_another_version_is_refused_with_the_supported_list(config_dir):
    config_dir.write({}, RULES)
    with config_dir.raw_gateway() as raw:
        error = raw.request("tools/list", {"_meta": {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}})["error"]
        missing = {k: v for k, v in ENVELOPE.items() if k != "io.modelcontextprotocol/clientCapabilities"}
        no_caps = raw.request("tools/list", {"_meta": missing})["error"]
    assert error["code"] == UNSUPPORTED_PROTOCOL_VERSION
    assert error["data"] == {"supported": [MODERN], "requested": "2099-01-01"}
    assert no_caps["code"] == INVALID_PARAMS


@pytest.mark.parametrize("tool, era", [("ask_twice", ()), ("sample", ("--only-2026",))])
def test_a_downstream_request_during_a_2026_clients_call_becomes_input_required_rounds(
        config_dir, tag, fixture_log, tool, era):
    # The SDK client drives the rounds itself: each round's requests go to its callbacks,
    # and its retry carries the answers down to the call, which goes on where it waited.
    config_dir.write({"fx": passthrough_server(tag, fixture_log, *era)}, RULES)
    recorder = Recorder()

    async def session():
        async with modern_client(config_dir, recorder) as client:
            result = await client.call_tool("execute_tool", {"server": "fx", "tool": tool, "args": {}})
            return client.protocol_version, result

    version, result = run(session())
    answer = answer_of(result)["answer"]
    assert version == MODERN
    if tool == "ask_twice":  # two requests one after the other: two rounds
        assert answer["elicit"] == {"action": "accept", "content": {"name": "Ada"}}
        assert answer["roots"]["roots"] == [{"uri": "file:///work/project", "name": "project"}]
        expected = ["elicitation/create", "roots/list"]
    else:  # a 2026-07-28 server's own input_required, resolved through the client's rounds
        assert answer["state"] == "state-sample" and answer["responses"]["q1"]["model"] == "fixture-model"
        expected = ["sampling/createMessage"]
    assert [recorder.asked.get(timeout=WAIT_S)[0] for _ in expected] == expected
    assert [(r["method"], r["outcome"]) for r in audit_records(config_dir)] == [(m, "answered") for m in expected]


def test_an_input_required_round_names_its_call_by_a_single_use_state_bound_to_the_same_call(
        config_dir, tag, fixture_log):
    rules = {"agents": {"default": {"allow": {"servers": ["*"]}}, "other": {"allow": {"servers": ["*"]}}}}
    config_dir.write({"fx": passthrough_server(tag, fixture_log)}, rules)
    as_other = {**SAMPLE_CALL, "arguments": {**SAMPLE_CALL["arguments"], "agent_id": "other"}}
    with raw_modern_gateway(config_dir) as raw:
        first = raw.request("tools/call", {**SAMPLE_CALL, "_meta": SAMPLING_ENVELOPE}, timeout=WAIT_S)["result"]
        state = first["requestState"]
        [(key, asked)] = first["inputRequests"].items()
        another_agent = retry(raw, as_other, state, {key: SAMPLED})
        made_up = retry(raw, SAMPLE_CALL, "made-up", {key: SAMPLED})
        unanswered = retry(raw, SAMPLE_CALL, state, {})  # asked again, under a new state
        final = retry(raw, SAMPLE_CALL, unanswered["requestState"], {key: SAMPLED})
        again = retry(raw, SAMPLE_CALL, unanswered["requestState"], {key: SAMPLED})
        old = retry(raw, SAMPLE_CALL, state, {key: SAMPLED})
    assert first["resultType"] == "input_required" and "content" not in first
    assert asked["method"] == "sampling/createMessage"
    assert asked["params"]["messages"] == SAMPLE_PARAMS["messages"] and asked["params"]["maxTokens"] == 20
    assert len(state) >= 43  # 256 bits, URL-safe
    assert error_code(another_agent) == INPUT_STATE_MISMATCH  # and the call stayed parked for its own retry
    assert error_code(made_up) == INPUT_STATE_UNKNOWN
    assert unanswered["resultType"] == "input_required" and unanswered["inputRequests"] == {key: asked}
    assert unanswered["requestState"] != state
    assert final["resultType"] == "complete"
    assert final["structuredContent"]["answer"]["model"] == "raw-model"
    assert error_code(again) == INPUT_STATE_UNKNOWN and error_code(old) == INPUT_STATE_UNKNOWN  # single-use
    [record] = audit_records(config_dir)
    assert (record["method"], record["server"], record["agent"], record["outcome"]) == (
        "sampling/createMessage", "fx", "default", "answered")


def test_a_parked_call_whose_client_never_retries_is_cancelled_downstream_at_its_cap(config_dir, tag, fixture_log):
    config_dir.write({"fx": passthrough_server(tag, fixture_log)}, RULES)
    with raw_modern_gateway(config_dir, env={"GATEWAY_MAX_TIMEOUT_MS": "4000"}) as raw:
        listing = {"name": "get_server_tools", "arguments": {"server": "fx"}, "_meta": ENVELOPE}
        raw.request("tools/call", listing, timeout=WAIT_S)  # the SDK loaded: the cap is for the call alone
        first = raw.request("tools/call", {**SAMPLE_CALL, "_meta": SAMPLING_ENVELOPE}, timeout=WAIT_S)["result"]
        assert first["resultType"] == "input_required", first
        # No retry: at the cap the call is cancelled downstream, and its state is gone.
        harness.wait_until(lambda: harness.count_events(fixture_log, "cancelled"), WAIT_S)
        harness.wait_until(lambda: audit_records(config_dir, "tool_call"), WAIT_S)  # the call has ended
        [key] = first["inputRequests"]
        late = retry(raw, SAMPLE_CALL, first["requestState"], {key: SAMPLED})
    assert error_code(late) == INPUT_STATE_UNKNOWN
    # The wait for the retry and the call itself end at the same cap: either may see it first.
    assert [r["outcome"] for r in audit_records(config_dir)] in (["timeout"], ["cancelled"])


def test_progress_of_a_call_in_rounds_goes_under_the_token_of_the_request_waiting_for_it(config_dir, tag, fixture_log):
    config_dir.write({"fx": passthrough_server(tag, fixture_log)}, RULES)
    envelope = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}
    call = {"name": "execute_tool", "arguments": {"server": "fx", "tool": "elicit_progress", "args": {}}}
    with raw_modern_gateway(config_dir) as raw:
        first = raw.request("tools/call", {**call, "_meta": {**envelope, "progressToken": "p1"}}, timeout=WAIT_S)
        [key] = first["result"]["inputRequests"]
        answer = {"action": "accept", "content": {"name": "Ada"}}
        final = raw.request("tools/call", {**call, "_meta": {**envelope, "progressToken": "p2"},
                                           "inputResponses": {key: answer},
                                           "requestState": first["result"]["requestState"]}, timeout=WAIT_S)
    assert final["result"]["structuredContent"]["answer"] == answer
    progress = [m["params"] for m in raw.other_messages if m.get("method") == "notifications/progress"]
    assert progress == [{"progressToken": "p2", "progress": 1.0, "message": "answered"}]


def test_a_request_state_is_redeemed_only_by_the_caller_it_was_handed_to():
    # The HTTP transport's caller (a bearer token's agent) is part of the binding; unit-level,
    # as stdio has one caller.
    rounds = InputRounds()
    link = ClientLink(peer=None, version=MODERN, capabilities={"sampling": {}}, cancel=threading.Event())
    answers = []

    def work(call_link, cancel):
        answers.append(call_link.inputs.ask("sampling/createMessage", SAMPLE_PARAMS, WAIT_S, cancel))
        return {"content": [], "isError": False}

    owner = Owner("agent-a", "execute_tool", {"server": "fx"})
    first = rounds.start(owner, link, threading.Event(), work)
    [key] = first["inputRequests"]
    with pytest.raises(InputStateMismatch):
        rounds.resume(first["requestState"], Owner("agent-b", "execute_tool", {"server": "fx"}), {key: SAMPLED},
                      link, threading.Event())
    final = rounds.resume(first["requestState"], owner, {key: SAMPLED}, link, threading.Event())
    assert final == {"content": [], "isError": False} and answers == [SAMPLED]
    assert rounds.parked == 0


def test_past_the_bound_on_parked_calls_a_downstream_request_is_refused_and_its_call_goes_on():
    rounds = InputRounds(max_parked=1)
    link = ClientLink(peer=None, version=MODERN, capabilities={"sampling": {}}, cancel=threading.Event())
    refused = []

    def work(call_link, cancel):
        try:
            call_link.inputs.ask("sampling/createMessage", SAMPLE_PARAMS, WAIT_S, cancel)
        except RoundsFull:
            refused.append(True)
        return {"content": [], "isError": False}

    parked = rounds.start(Owner(None, "execute_tool", {"n": 1}), link, threading.Event(), work)
    second = rounds.start(Owner(None, "execute_tool", {"n": 2}), link, threading.Event(), work)
    rounds.close()  # the parked one is cancelled
    assert parked["resultType"] == "input_required"
    assert second == {"content": [], "isError": False} and refused == [True]
    assert rounds.parked == 0


# --- downstream: servers that speak only 2026-07-28 ------------------------------------------


@pytest.mark.parametrize("session_mode", ["per-call", "keep-alive"])
def test_a_2026_only_server_works_in_both_session_modes_and_is_probed_once(config_dir, tag, fixture_log, session_mode):
    config_dir.write({"fx": passthrough_server(tag, fixture_log, "--only-2026", session=session_mode)}, RULES)
    with start_gateway(config_dir, Recorder()) as gw:
        first = execute(gw, "meta", meta={"traceparent": "t-1"})
        second = execute(gw, "meta", meta={"traceparent": "t-2"})
    assert answer_of(first)["answer"]["traceparent"] == "t-1"
    assert answer_of(second)["answer"]["io.modelcontextprotocol/protocolVersion"] == MODERN
    assert harness.count_events(fixture_log, "discover") == 1


def test_input_required_from_a_2026_server_is_resolved_through_the_client(config_dir, tag, fixture_log):
    config_dir.write({"fx": passthrough_server(tag, fixture_log, "--only-2026")}, RULES)
    recorder = Recorder()
    with start_gateway(config_dir, recorder) as gw:
        answer = answer_of(execute(gw, "sample"))["answer"]
    method, _ = recorder.asked.get(timeout=WAIT_S)
    assert method == "sampling/createMessage"
    assert answer["state"] == "state-sample"  # the retry carried requestState unchanged
    assert answer["responses"]["q1"]["model"] == "fixture-model"


def test_2026_tool_definitions_and_results_pass_through_unchanged(config_dir, tag, fixture_log):
    config_dir.write({"fx": passthrough_server(tag, fixture_log, "--only-2026")}, RULES)
    with start_gateway(config_dir, Recorder()) as gw:
        listed = gw.call_json("get_server_tools", {"server": "fx", "names": "list_in_2026"})["tools"]
        older = execute(gw, "list_in_2026", {"n": 1})

    async def session():
        async with modern_client(config_dir) as client:
            return await client.call_tool("execute_tool", {"server": "fx", "tool": "list_in_2026", "args": {"n": 1}})

    newer = run(session())
    assert listed == [LIST_IN_2026]  # as the server sent it, key for key
    assert newer.structured_content == [1, 2, 3]
    # Before 2026-07-28 structured content must be an object: older clients get the text alone.
    assert older.structured_content is None and harness.result_text(older) == "[1, 2, 3]"


def test_a_servers_ttl_ms_bounds_how_long_its_tool_list_is_cached():
    now = [0.0]
    fetched = []

    def list_tools(spec, timeout_s, cancel, agent=None):
        tools = ListedTools([{"name": "t", "inputSchema": {"type": "object"}}])
        tools.ttl_ms = 1000
        fetched.append(now[0])
        return tools

    catalog = ToolCatalog(list_tools, ttl_s=300, clock=lambda: now[0])
    spec = ServerSpec(name="s", transport="stdio", command="x")
    catalog.tools(spec, 1, None)
    now[0] = 0.9
    catalog.tools(spec, 1, None)
    now[0] = 1.1
    catalog.tools(spec, 1, None)
    assert fetched == [0.0, 1.1]  # fresh for the server's 1000 ms, not the gateway's 300 s
