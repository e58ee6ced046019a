"""What a downstream does during execute_tool reaches the client: progress, logs, sampling,
elicitation, roots, cancellation and _meta (clients of 2024-11-05 … 2025-11-25).

Real processes throughout: the gateway over stdio, driven by the SDK's ClientSession with
sampling, elicitation, roots and logging callbacks, and tests/servers/passthrough_server.py
as the downstream.
"""

from __future__ import annotations

import asyncio
import queue

import pytest

import harness
from gateway_lib.errors import INVALID_REQUEST, TIMEOUT
from passthrough_helpers import Recorder, answer_of, audit_records, execute, open_rules, passthrough_server, start_gateway

WAIT_S = 10


@pytest.fixture
def fixture_log(config_dir):
    return config_dir.path("server.jsonl")


@pytest.fixture
def servers(config_dir, tag, fixture_log):
    def write(*extra, rules=None, **entry):
        config_dir.write({"fx": passthrough_server(tag, fixture_log, *extra, **entry)}, rules or open_rules())
    return write


# --- progress --------------------------------------------------------------------------------


def test_downstream_progress_reaches_the_client_under_its_own_token(config_dir, servers):
    servers()
    recorder = Recorder()
    seen: queue.Queue = queue.Queue()

    async def on_progress(progress, total, message):
        seen.put((progress, total, message))

    with start_gateway(config_dir, recorder) as gw:
        result = execute(gw, "progress", {"steps": 3}, progress=on_progress)
        assert not result.is_error, harness.result_text(result)
        got = [seen.get(timeout=WAIT_S) for _ in range(3)]
    assert got == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]


def test_progress_restarts_the_timeout_of_a_call(config_dir, servers):
    servers()
    with start_gateway(config_dir, Recorder()) as gw:
        gw.call_json("get_server_tools", {"server": "fx"})  # the SDK loaded and the tool list cached
        # 4 steps 700 ms apart: 2.8 s in all, more than the 2 s timeout, but each gap is less.
        # No progress token from the client: the gateway asks for progress all the same.
        result = execute(gw, "progress", {"steps": 4, "delay_ms": 700}, timeout_ms=2000)
    assert not result.is_error, harness.result_text(result)


def test_progress_never_carries_a_call_past_the_absolute_cap(config_dir, servers):
    servers()
    env = {"GATEWAY_MAX_TIMEOUT_MS": "4000"}
    with start_gateway(config_dir, Recorder(), env=env) as gw:
        gw.call_json("get_server_tools", {"server": "fx"})
        # Progress every 700 ms would keep a 2 s timeout alive for 8.4 s; the cap ends it at 4 s.
        result = execute(gw, "progress", {"steps": 12, "delay_ms": 700}, timeout_ms=2000)
    assert result.is_error
    assert result.structured_content["error"]["code"] == TIMEOUT


# --- log messages ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
def test_downstream_log_messages_reach_the_client_at_its_level_named_by_server(config_dir, servers):
    servers()
    recorder = Recorder()
    with start_gateway(config_dir, recorder) as gw:
        assert "logging" in gw.initialize_result.capabilities.model_dump(exclude_none=True)
        execute(gw, "log")
        first = [recorder.logs.get(timeout=WAIT_S) for _ in range(2)]
        gw._run(gw.session.set_logging_level("debug"), WAIT_S)
        execute(gw, "log")
        second = [recorder.logs.get(timeout=WAIT_S) for _ in range(3)]
    # Default level info: the debug line is not relayed until the client asks for it.
    assert [(m.level, m.logger) for m in first] == [("info", "fx"), ("warning", "fx/worker")]
    assert [(m.level, m.logger) for m in second] == [("debug", "fx"), ("info", "fx"), ("warning", "fx/worker")]
    assert second[2].data == {"disk": "low"}


# --- server-to-client requests ---------------------------------------------------------------


@pytest.mark.parametrize("tool, method", [
    ("sample", "sampling/createMessage"),
    ("elicit", "elicitation/create"),
    ("elicit_url", "elicitation/create"),
    ("roots", "roots/list"),
])
def test_a_downstream_request_is_relayed_to_a_capable_client_and_its_answer_returned(
        config_dir, servers, fixture_log, tool, method):
    servers()
    recorder = Recorder()
    with start_gateway(config_dir, recorder) as gw:
        answer = answer_of(execute(gw, tool))["answer"]
    asked_method, _ = recorder.asked.get(timeout=WAIT_S)
    assert asked_method == method
    expected = {
        "sample": lambda a: a["model"] == "fixture-model" and a["content"]["text"] == "hi",
        "elicit": lambda a: a == {"action": "accept", "content": {"name": "Ada"}},
        "elicit_url": lambda a: a["action"] == "accept",
        "roots": lambda a: a["roots"] == [{"uri": "file:///work/project", "name": "project"}],
    }[tool]
    assert expected(answer), answer
    [record] = audit_records(config_dir)
    assert (record["method"], record["server"], record["agent"], record["outcome"]) == (method, "fx", "default", "answered")
    assert "Ada" not in config_dir.path("audit.jsonl").read_text()


def test_without_the_capability_the_downstream_gets_the_sdk_refusal_at_once(config_dir, servers, fixture_log):
    servers()
    recorder = Recorder()
    with start_gateway(config_dir, recorder, sampling=False) as gw:
        error = answer_of(execute(gw, "sample"))["error"]
    assert error["code"] == INVALID_REQUEST
    assert error["message"] == "Sampling not supported"
    assert recorder.asked.empty()


def test_downstream_sessions_declare_the_clients_capabilities_and_list_accordingly(config_dir, servers, fixture_log):
    servers()

    def listed(**caps) -> list[str]:
        with start_gateway(config_dir, Recorder(), **caps) as gw:
            found = gw.call_json("get_server_tools", {"server": "fx"})
        return [t["name"] for t in found["tools"]]

    assert "sampling_only" in listed()
    assert "sampling_only" not in listed(sampling=False)
    declared = [e["capabilities"] for e in harness.read_log(fixture_log) if e["event"] == "initialize"]
    assert "sampling" in declared[0] and "roots" in declared[0] and "elicitation" in declared[0]
    assert "sampling" not in declared[-1]


def test_the_rules_can_withhold_a_kind_of_client_request_from_an_agent(config_dir, servers, fixture_log):
    servers(rules=open_rules(client_requests=["roots"]))
    recorder = Recorder()
    with start_gateway(config_dir, recorder) as gw:
        refused = answer_of(execute(gw, "sample"))["error"]
        allowed = answer_of(execute(gw, "roots"))["answer"]
    # To the server, this agent's calls come from a client without sampling.
    assert refused == {"code": INVALID_REQUEST, "message": "Sampling not supported"}
    assert allowed["roots"][0]["uri"] == "file:///work/project"
    declared = [e["capabilities"] for e in harness.read_log(fixture_log) if e["event"] == "initialize"]
    assert all(set(caps) == {"roots"} for caps in declared)
    assert [r["outcome"] for r in audit_records(config_dir)] == ["answered"]


def test_a_client_that_never_answers_ends_the_call_at_its_cap_and_the_request_is_withdrawn(config_dir, servers):
    servers()
    recorder = Recorder()
    recorder.never_answer = True
    with start_gateway(config_dir, recorder, env={"GATEWAY_MAX_TIMEOUT_MS": "3000"}) as gw:
        gw.call_json("get_server_tools", {"server": "fx"})
        # A timeout alone would wait forever: waiting for the client pauses it; the cap does not.
        result = execute(gw, "sample", timeout_ms=1000)
        withdrawn = recorder.withdrawn.get(timeout=WAIT_S)
    assert result.is_error and result.structured_content["error"]["code"] == TIMEOUT
    assert withdrawn == "sampling/createMessage"
    assert [r["outcome"] for r in audit_records(config_dir)] in (["timeout"], ["cancelled"])


def outside_call_roots(fixture_log) -> list:
    """What the server got for each roots/list it sent outside any call (roots_later)."""
    return [e for e in harness.read_log(fixture_log) if e["event"] == "answer" and e["method"] == "roots/list"]


@pytest.mark.filterwarnings("ignore:The roots capability is deprecated")
def test_a_kept_alive_server_asking_for_roots_outside_a_call_gets_the_clients_last_roots(
        config_dir, servers, fixture_log):
    servers(session="keep-alive")
    recorder = Recorder()

    def roots_later(count: int) -> dict:
        assert not execute(gw, "roots_later", {"delay_ms": 300}).is_error
        harness.wait_until(lambda: len(outside_call_roots(fixture_log)) >= count, WAIT_S)
        return outside_call_roots(fixture_log)[count - 1]

    with start_gateway(config_dir, recorder) as gw:
        before = roots_later(1)  # nothing fetched yet: refused, as before
        answer_of(execute(gw, "roots"))  # relayed during a call: the gateway keeps the answer
        assert recorder.asked.get(timeout=WAIT_S)[0] == "roots/list"
        cached = roots_later(3)
        assert recorder.asked.empty()  # answered from what was kept, not asked again
        recorder.roots_uri = "file:///work/other"
        gw._run(gw.session.send_roots_list_changed(), WAIT_S)
        assert recorder.asked.get(timeout=WAIT_S)[0] == "roots/list"  # refetched at once
        refreshed = roots_later(4)
    assert before["kind"] == "error" and before["code"] == INVALID_REQUEST
    assert cached["roots"] == [{"uri": "file:///work/project", "name": "project"}]
    assert refreshed["roots"] == [{"uri": "file:///work/other", "name": "project"}]
    outside = [r for r in audit_records(config_dir) if r.get("outside_call")]
    assert [(r["server"], r["agent"], r["outcome"]) for r in outside] == [
        ("fx", "default", "no_roots"), ("fx", "default", "answered_from_cache"), ("fx", "default", "answered_from_cache")]


@pytest.mark.filterwarnings("ignore:The roots capability is deprecated")
def test_roots_outside_a_call_are_refused_once_the_rules_in_force_withhold_them(config_dir, servers, fixture_log):
    servers(session="keep-alive")
    go = config_dir.path("go")
    with start_gateway(config_dir, Recorder()) as gw:
        answer_of(execute(gw, "roots"))  # the client's roots are kept
        assert not execute(gw, "roots_later", {"delay_ms": 0, "when_exists": str(go)}).is_error
        config_dir.write_rules(open_rules(client_requests=["sampling"]))
        harness.wait_until(lambda: [r for r in audit_records(config_dir, "config_reload") if r["outcome"] == "applied"],
                           WAIT_S)
        go.touch()  # the kept session, opened under the old rules, asks now
        harness.wait_until(lambda: len(outside_call_roots(fixture_log)) >= 2, WAIT_S)
    refused = outside_call_roots(fixture_log)[1]
    assert refused["kind"] == "error" and refused["code"] == INVALID_REQUEST
    assert [r["outcome"] for r in audit_records(config_dir) if r.get("outside_call")] == ["denied"]


def test_roots_outside_a_call_are_given_only_while_one_client_uses_the_session():
    # Which client's roots to give a session two clients share would be a guess: none are.
    from gateway_lib.client_roots import ClientRoots
    from gateway_lib.downstream.sdk_relay import RelayRouter
    from gateway_lib.relay import ClientLink

    class Relay:
        def __init__(self, roots):
            self.link = ClientLink(None, None, roots=roots)

    first, second = Relay(ClientRoots()), Relay(ClientRoots())
    router = RelayRouter()
    with router.serving(first):
        pass
    alone = router.outside_calls()
    with router.serving(second):
        pass
    assert alone is first
    assert router.outside_calls() is None and router.clients == 2


# --- cancellation and _meta ------------------------------------------------------------------


@pytest.mark.parametrize("session_mode", ["per-call", "keep-alive"])
def test_a_cancelled_execute_tool_is_cancelled_downstream(config_dir, servers, fixture_log, session_mode):
    servers(session=session_mode)
    with start_gateway(config_dir, Recorder()) as gw:
        arguments = {"server": "fx", "tool": "wait_cancel", "args": {}}
        future = asyncio.run_coroutine_threadsafe(gw.session.call_tool("execute_tool", arguments), gw._loop)
        harness.wait_until(lambda: harness.count_events(fixture_log, "call", tool="wait_cancel"), WAIT_S)
        future.cancel()  # the SDK client sends notifications/cancelled to the gateway
        harness.wait_until(lambda: harness.count_events(fixture_log, "cancelled"), WAIT_S)
        gw.call_json("list_servers")  # the gateway still serves
    [call] = [e for e in harness.read_log(fixture_log) if e["event"] == "call"]
    assert harness.count_events(fixture_log, "cancelled") == 1
    assert call["tool"] == "wait_cancel"


def test_meta_is_forwarded_down_and_the_results_meta_comes_back(config_dir, servers):
    servers()
    with start_gateway(config_dir, Recorder()) as gw:
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        result = execute(gw, "meta", meta={"traceparent": traceparent})
    seen = answer_of(result)["answer"]
    assert seen["traceparent"] == traceparent
    assert result.meta == {"fixture/seen": True}
