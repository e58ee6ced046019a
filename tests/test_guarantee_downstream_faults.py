"""Promise: a failing downstream server gives a clear error within its deadline, and
nothing it started is left running.

Each fault of the hardening issue, against the real gateway process: the agent reads a
tool result with the documented error code, the gateway serves the next call, and
afterwards no process descends from the gateway (a /proc ppid walk) and none carries the
test's tag (the conftest fixture). The gateway enforces each call's deadline itself, so
any answer but TIMEOUT came before it; how soon after a deadline a TIMEOUT comes is the
benchmark's row 6, which prints it. Most faults are servers of one shared
gateway (`gw`), whose servers carry the module's tag (conftest's `shared_dir`).
"""

from __future__ import annotations

import pytest

import harness
from gateway_lib.errors import DOWNSTREAM_ERROR, SERVER_UNAVAILABLE, TIMEOUT

RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}}
DEADLINE_MS = 3000
SLOW_FAULT_MS = 20_000  # for faults whose wrong outcome was a TIMEOUT: a deadline no busy machine meets by chance


def error_of(result) -> dict:
    assert result.is_error, harness.result_text(result)
    return result.structured_content["error"]


def execute(gw: harness.Gateway, server: str, tool: str = "echo", args=None, timeout_ms: int = DEADLINE_MS):
    return gw.call_tool("execute_tool", {"agent_id": "dev", "server": server, "tool": tool,
                                         "args": {"text": "x"} if args is None else args,
                                         "timeout_ms": timeout_ms}, timeout=timeout_ms / 1000 + 30)


def assert_still_serves(gw: harness.Gateway) -> None:
    assert gw.call_json("list_servers", {"agent_id": "dev"})["servers"]


def assert_nothing_left(gw: harness.Gateway) -> None:
    assert gw.pid is not None
    assert harness.wait_no_descendants(gw.pid) == []


@pytest.fixture
def gateway_for(config_dir, tag):
    """Starts a gateway over `servers`; on the way out, checks that nothing descends from it.

    One call to a healthy server first pays for the SDK's import (seconds on a loaded
    machine) under a deadline of its own: the deadlines under test are the fault's alone.
    """
    opened = []

    def start(servers: dict, *args: str) -> harness.Gateway:
        config_dir.write({**servers, "warm-up": harness.fault_server(tag)}, RULES)
        gw = config_dir.gateway("--audit-log", str(config_dir.path("audit.jsonl")), *args)
        gw.start()
        opened.append(gw)
        warm_up = execute(gw, "warm-up", timeout_ms=60_000)
        assert not warm_up.is_error, harness.result_text(warm_up)
        return gw

    yield start
    for gw in opened:
        pid = gw.pid
        gw.close()
        assert pid is not None and harness.wait_no_descendants(pid) == []


def fault_servers(tag: str) -> dict:
    """One server per fault; each call starts its own process of it (per-call sessions)."""
    return {
        "missing": {"command": f"/nonexistent/{tag}-server"},
        "exits": harness.fault_server(tag, "--mode", "exit-at-once"),
        "normal": harness.fault_server(tag),
        "never-init": harness.fault_server(tag, "--mode", "never-initialize"),
        "stubborn": harness.fault_server(tag, "--mode", "ignore-sigterm"),
        "banner": harness.fault_server(tag, "--mode", "banner"),
        "flood": harness.fault_server(tag, "--mode", "flood-stderr"),
        "bad-utf8": harness.fault_server(tag, "--mode", "bad-utf8"),
        "unreadable": harness.fault_server(tag, "--fault-tools"),
        "closer": harness.fault_server(tag, "--mode", "close-stdout"),
        "grandchild": harness.fault_server(tag, "--mode", "grandchild"),
        "setsid": harness.fault_server(tag, "--mode", "setsid-grandchild"),
        "refused": harness.http_server(f"http://127.0.0.1:{harness.free_port()}/mcp"),
    }


@pytest.fixture(scope="module")
def gw(shared_dir):
    """One gateway for every fault below that is a per-call server's: each call starts a
    fresh process, and each test waits until nothing descends from the gateway, so no
    fault reaches the next test. The tests that need other settings start their own."""
    config = shared_dir.config_dir
    config.write(fault_servers(shared_dir.tag), RULES)
    with config.gateway("--audit-log", str(config.path("audit.jsonl")), env=shared_dir.env) as gateway:
        # A first session with the default deadline: the SDK import it may wait for (seconds
        # on a busy machine) is then never charged to a fault's short deadline.
        assert gateway.call_json("get_server_tools", {"agent_id": "dev", "server": "normal"})["tools"]
        yield gateway
        assert_nothing_left(gateway)


@pytest.fixture
def shared_tag(shared_dir) -> str:
    return shared_dir.tag


# --- stdio servers ---------------------------------------------------------------------------


def test_a_command_that_does_not_exist_is_server_unavailable_naming_it(gw):
    result = execute(gw, "missing")
    error = error_of(result)
    assert error["code"] == SERVER_UNAVAILABLE
    assert "not found" in error["message"] and "/nonexistent/" in error["message"]
    assert_still_serves(gw)
    assert_nothing_left(gw)


def test_a_server_that_exits_at_once_is_server_unavailable_with_its_exit_status(gw):
    result = execute(gw, "exits")
    error = error_of(result)
    assert error["code"] == SERVER_UNAVAILABLE
    assert "before answering initialize" in error["message"]
    assert_still_serves(gw)
    assert_nothing_left(gw)


def test_a_server_that_crashes_mid_call_is_server_unavailable(gw):
    result = execute(gw, "normal", "crash", {})
    error = error_of(result)
    assert error["code"] == SERVER_UNAVAILABLE
    assert "during tools/call" in error["message"]
    assert_still_serves(gw)
    assert_nothing_left(gw)


def test_a_server_that_never_answers_initialize_is_server_unavailable_at_the_deadline(gw):
    result = execute(gw, "never-init", timeout_ms=1000)
    error = error_of(result)
    assert error["code"] == SERVER_UNAVAILABLE
    assert "did not finish starting within 1000 ms" in error["message"]
    assert_still_serves(gw)
    assert_nothing_left(gw)


def test_a_call_that_hangs_is_a_timeout_at_the_deadline_not_after_the_cleanup(gateway_for, config_dir, tag):
    # ignore-sigterm: closing this server takes the SDK's grace periods and a SIGKILL (4 s or
    # more), so the answer must come while the call's server still runs.
    log = config_dir.path("stubborn.log")
    gw = gateway_for({"stubborn": harness.fault_server(tag, "--mode", "ignore-sigterm", log=log)})
    result = execute(gw, "stubborn", "sleep", {"seconds": 600}, timeout_ms=1000)
    error = error_of(result)
    assert error["code"] == TIMEOUT
    assert "did not answer within" in error["message"]
    [call_pid] = [entry["pid"] for entry in harness.read_log(log) if entry.get("tool") == "sleep"]
    assert call_pid in harness.tagged_pids(tag), "the answer waited for the server's cleanup"
    assert_still_serves(gw)
    assert harness.wait_no_tagged(tag, timeout=20) == []  # the cleanup went on in the background
    assert_nothing_left(gw)


def test_banners_and_garbage_on_a_servers_stdout_are_skipped_and_the_call_succeeds(gw):
    result = execute(gw, "banner", "echo", {"text": "through the noise"})
    assert not result.is_error
    assert harness.result_text(result) == "through the noise"
    assert_nothing_left(gw)


def test_a_server_flooding_stderr_neither_blocks_nor_fails_the_call(gw):
    result = execute(gw, "flood", "echo", {"text": "after the flood"})
    assert harness.result_text(result) == "after the flood"
    assert "flood flood" in gw.stderr_text()  # it went to the gateway's stderr, not to stdout
    assert_nothing_left(gw)


def test_a_result_over_the_message_limit_is_a_downstream_error_and_one_under_it_passes_whole(gateway_for, tag):
    # A result budget above the message limit, so that only the limit is tested here.
    gw = gateway_for({"s": harness.fault_server(tag, max_result_tokens=256 * 1024)}, "--max-line-bytes", str(256 * 1024))
    # The long deadline: this first call may wait for the SDK import on a busy machine.
    fits = execute(gw, "s", "huge", {"size": 200_000}, timeout_ms=SLOW_FAULT_MS)
    assert harness.result_text(fits) == "x" * 200_000
    result = execute(gw, "s", "huge", {"size": 2_000_000})
    error = error_of(result)
    assert error["code"] == DOWNSTREAM_ERROR
    assert error["limit"] == 256 * 1024 and error["size"] > 2_000_000
    assert_still_serves(gw)
    assert_nothing_left(gw)


def test_a_json_rpc_error_from_the_server_is_a_downstream_error_with_its_code(gw):
    result = execute(gw, "normal", "rpc_error", {})
    error = error_of(result)
    assert error["code"] == DOWNSTREAM_ERROR
    assert error["downstream_code"] == -32050
    assert_nothing_left(gw)



def test_a_json_rpc_error_with_the_code_the_sdk_uses_for_closed_connections_is_a_downstream_error(gw):
    # -32000 is also the SDK's code for "connection closed"; a server answering with it is no closed connection.
    result = execute(gw, "normal", "rpc_error", {"code": -32000, "message": "the database is read-only"},
                        timeout_ms=SLOW_FAULT_MS)
    error = error_of(result)
    assert error["code"] == DOWNSTREAM_ERROR
    assert error["downstream_code"] == -32000
    assert "the database is read-only" in error["message"]
    assert_nothing_left(gw)


def test_lines_that_are_not_utf8_on_a_servers_stdout_are_skipped_and_the_call_succeeds(gw):
    result = execute(gw, "bad-utf8", "echo", {"text": "past the bytes"}, timeout_ms=SLOW_FAULT_MS)
    assert not result.is_error, harness.result_text(result)
    assert harness.result_text(result) == "past the bytes"
    assert_still_serves(gw)
    assert_nothing_left(gw)


@pytest.mark.parametrize("kind", ["deep", "surrogate"], ids=["nested 5000 deep", "holding a lone surrogate"])
def test_an_answer_the_sdk_cannot_parse_is_a_downstream_error_not_a_timeout(gw, kind):
    # The deadline is long: the old behaviour waited for it and answered TIMEOUT.
    result = execute(gw, "unreadable", "unreadable", {"kind": kind}, timeout_ms=SLOW_FAULT_MS)
    error = error_of(result)
    assert error["code"] == DOWNSTREAM_ERROR
    assert "cannot be read" in error["message"]
    assert_still_serves(gw)
    assert_nothing_left(gw)

@pytest.fixture
def kept_with_a_call_held(config_dir, tag):
    """A gateway whose server "s" runs on a kept-alive session, with `held` in flight on it
    (the server has it and keeps its answer back) and `counter` called once before."""
    log = config_dir.path("server.log")
    config_dir.write({"s": harness.fault_server(tag, "--fault-tools", log=log, session="keep-alive")}, RULES)
    raw = config_dir.raw_gateway()
    raw.initialize()
    assert answer_text(raw.request("tools/call", call("s", "counter"), timeout=60)) == "1"
    raw.send(harness.execute_message("held", "s", "held", {}, timeout_ms=SLOW_FAULT_MS))
    assert harness.wait_until(lambda: harness.count_events(log, "call", tool="held") == 1, timeout=30)
    yield raw
    assert raw.close() == 0


def call(server: str, tool: str, args=None) -> dict:
    return {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": server, "tool": tool,
                                                 "args": args or {}, "timeout_ms": SLOW_FAULT_MS}}


def answer_text(response: dict) -> str:
    assert not response["result"]["isError"], response
    return response["result"]["content"][0]["text"]


def answers(raw: harness.RawGateway, *request_ids: str) -> dict[str, dict]:
    """The responses to `request_ids`, in whatever order they come (those read already included)."""
    found = {m["id"]: m for m in raw.other_messages if m.get("id") in request_ids}
    while len(found) < len(request_ids):
        message = raw.read_message(timeout=SLOW_FAULT_MS / 1000 + 30)
        if message.get("id") in request_ids:
            found[message["id"]] = message
    return found


@pytest.mark.parametrize("kind", ["deep", "surrogate"], ids=["nested 5000 deep", "holding a lone surrogate"])
def test_an_unreadable_answer_on_a_kept_session_fails_only_its_own_call_and_the_session_serves_on(
        kept_with_a_call_held, kind):
    raw = kept_with_a_call_held
    raw.send(harness.execute_message("bad", "s", "unreadable", {"kind": kind}, timeout_ms=SLOW_FAULT_MS))
    error = harness.raw_error_of(answers(raw, "bad")["bad"])  # not TIMEOUT: the deadline is long
    assert error["code"] == DOWNSTREAM_ERROR and "cannot be read" in error["message"]
    # Matched by the id on the unreadable line: the held call was not failed with it.
    raw.send(harness.execute_message("release", "s", "release", {}, timeout_ms=SLOW_FAULT_MS))
    released = answers(raw, "held", "release")
    assert answer_text(released["held"]) == "released" and answer_text(released["release"]) == "released 1"
    assert answer_text(raw.request("tools/call", call("s", "counter"), timeout=60)) == "2"  # the same session


def test_an_unreadable_answer_matching_no_call_fails_every_call_on_its_kept_session_and_a_fresh_one_serves_on(
        kept_with_a_call_held):
    raw = kept_with_a_call_held
    raw.send(harness.execute_message("bad", "s", "unreadable", {"kind": "deep", "hide_id": True},
                                     timeout_ms=SLOW_FAULT_MS))
    failed = answers(raw, "bad", "held")  # both before their (long) deadlines
    for request_id in ("bad", "held"):
        error = harness.raw_error_of(failed[request_id])
        assert error["code"] == DOWNSTREAM_ERROR and "cannot be read" in error["message"], request_id
    assert answer_text(raw.request("tools/call", call("s", "counter"), timeout=60)) == "1"  # a fresh session


def test_a_server_that_closes_stdout_but_keeps_running_is_server_unavailable_before_the_deadline(gw):
    # The wrong outcome waited for the deadline (TIMEOUT); one no busy machine reaches by chance.
    result = execute(gw, "closer", timeout_ms=SLOW_FAULT_MS)
    error = error_of(result)
    assert error["code"] == SERVER_UNAVAILABLE
    assert "closed the connection" in error["message"]
    assert_still_serves(gw)
    assert_nothing_left(gw)


def test_a_server_that_ignores_sigterm_answers_normally_and_is_killed_afterwards(gw):
    gw.call_json("get_server_tools", {"agent_id": "dev", "server": "stubborn"})
    result = execute(gw, "stubborn", "echo", {"text": "stubborn"}, timeout_ms=1500)
    assert harness.result_text(result) == "stubborn"  # not a TIMEOUT while the SDK waits for its exit
    assert_nothing_left(gw)


@pytest.mark.parametrize("how", ["at start", "during the call"])
def test_a_grandchild_that_ignores_stdin_does_not_outlive_the_call(gw, shared_tag, how):
    server, tool, args = ("grandchild", "echo", {"text": "x"}) if how == "at start" else ("normal", "spawn_grandchild", {})
    result = execute(gw, server, tool, args)
    assert not result.is_error
    assert harness.wait_no_tagged(shared_tag) == []
    assert_nothing_left(gw)



def test_a_grandchild_that_left_the_process_group_with_setsid_does_not_outlive_the_call(gw, shared_tag):
    result = execute(gw, "setsid", "echo", {"text": "x"}, timeout_ms=SLOW_FAULT_MS)
    assert not result.is_error, harness.result_text(result)
    assert harness.wait_no_tagged(shared_tag) == []
    assert_nothing_left(gw)

def test_many_failing_calls_in_a_row_leave_nothing_behind(gw):
    for _ in range(3):
        assert error_of(execute(gw, "normal", "crash", {}))["code"] == SERVER_UNAVAILABLE
        assert error_of(execute(gw, "exits"))["code"] == SERVER_UNAVAILABLE
    assert_nothing_left(gw)


# --- HTTP servers ----------------------------------------------------------------------------


def test_an_http_server_that_refuses_connections_is_server_unavailable(gw):
    result = execute(gw, "refused")
    error = error_of(result)
    assert error["code"] == SERVER_UNAVAILABLE
    assert "connection failed" in error["message"]
    assert_still_serves(gw)


@pytest.mark.parametrize("mode", ["500", "html", "stall"], ids=["status 500", "an HTML page", "a stalled stream"])
def test_an_http_server_that_misbehaves_is_server_unavailable_within_the_deadline(gateway_for, tag, mode):
    with harness.http_process(harness.BAD_HTTP_SERVER, tag, "--mode", mode) as (url, _):
        gw = gateway_for({"web": harness.http_server(url)})
        result = execute(gw, "web", timeout_ms=1500)
        assert error_of(result)["code"] == SERVER_UNAVAILABLE
        assert_still_serves(gw)
        assert_nothing_left(gw)  # the bad server is the test's child, not the gateway's


# --- the wire stays clean through all of it ----------------------------------------------------


def test_no_fault_puts_a_byte_on_the_gateways_stdout_that_is_not_json_rpc(config_dir, tag):
    config_dir.write({
        "noisy": harness.fault_server(tag, "--mode", "banner"),
        "flood": harness.fault_server(tag, "--mode", "flood-stderr"),
        "gone": harness.fault_server(tag, "--mode", "exit-at-once"),
        "closer": harness.fault_server(tag, "--mode", "close-stdout"),
        "normal": harness.fault_server(tag),
    }, RULES)
    raw = config_dir.raw_gateway()
    try:
        raw.initialize()
        calls = [("noisy", "echo", {"text": "x"}), ("flood", "echo", {"text": "x"}), ("gone", "echo", {"text": "x"}),
                 ("closer", "echo", {"text": "x"}), ("normal", "crash", {}), ("normal", "spawn_grandchild", {})]
        for server, tool, args in calls:
            answer = raw.request("tools/call", {"name": "execute_tool", "arguments": {
                "agent_id": "dev", "server": server, "tool": tool, "args": args, "timeout_ms": 3000}}, timeout=30)
            assert "result" in answer
        assert harness.wait_no_descendants(raw.pid) == []
    finally:
        assert raw.close() == 0
    assert harness.protocol_problems(raw.all_stdout_bytes()) == []
    # The banner's own lines (fault_server.py), not the word: an error may name a server.
    assert b"this line is not JSON-RPC" not in raw.all_stdout_bytes()
    assert b"fault_server banner" not in raw.all_stdout_bytes()
