"""End to end: kept-alive servers behind the gateway process, with a real SDK client.

The gateway tools never know which strategy served a call; these tests show what an
agent sees: its own state kept between calls, nobody else's, and nothing left behind.
"""

from __future__ import annotations

import concurrent.futures
import json

import pytest

import harness
from gateway_lib.errors import SERVER_UNAVAILABLE, TIMEOUT

RULES = {"agents": {name: {"allow": {"servers": ["mem"]}} for name in ("alice", "bob")}}


def execute(gw: harness.Gateway, agent: str, tool: str, args: dict | None = None, **extra):
    return gw.call_tool("execute_tool", {"agent_id": agent, "server": "mem", "tool": tool, "args": args or {}, **extra})


def counter(gw: harness.Gateway, agent: str) -> str:
    result = execute(gw, agent, "counter")
    assert not result.is_error, harness.result_text(result)
    return harness.result_text(result)


def error_code(result) -> str:
    assert result.is_error, harness.result_text(result)
    return json.loads(result.content[0].text)["error"]["code"]


@pytest.fixture
def gateway(config_dir, tag):
    config_dir.write({"mem": harness.fault_server(tag, session="keep-alive")}, RULES)
    with config_dir.gateway("--debug") as gw:
        yield gw


def test_an_agent_keeps_its_state_between_calls_and_never_sees_another_agents(gateway, tag):
    seen = [(agent, counter(gateway, agent)) for agent in ("alice", "alice", "bob", "alice")]

    assert seen == [("alice", "1"), ("alice", "2"), ("bob", "1"), ("alice", "3")]
    assert len(harness.tagged_pids(tag)) == 2


def test_get_gateway_status_lists_the_open_kept_alive_sessions(gateway):
    counter(gateway, "alice")
    counter(gateway, "bob")

    downstream = gateway.call_json("get_gateway_status", {"agent_id": "alice"})["downstream"]

    sessions = downstream["kept_sessions"]
    assert [(s["server"], s["agent"]) for s in sessions] == [("mem", "alice"), ("mem", "bob")]
    assert all(set(s) >= {"age_s", "calls", "idle_s"} and s["calls"] >= 1 for s in sessions)
    assert downstream["live_sessions"] == 0


def test_a_timed_out_call_keeps_the_session_and_a_crash_starts_a_fresh_one(gateway):
    assert counter(gateway, "alice") == "1"

    assert error_code(execute(gateway, "alice", "sleep", {"seconds": 2}, timeout_ms=500)) == TIMEOUT
    assert counter(gateway, "alice") == "2"

    assert error_code(execute(gateway, "alice", "crash")) == SERVER_UNAVAILABLE
    assert counter(gateway, "alice") == "1"


def test_closing_the_gateway_leaves_no_kept_alive_process_behind_grandchildren_included(config_dir, tag):
    config_dir.write({"mem": harness.fault_server(tag, "--mode", "grandchild", session="keep-alive")}, RULES)
    with config_dir.gateway() as gw:
        assert counter(gw, "alice") == "1"
        assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 2, timeout=20)  # server and grandchild

    assert harness.wait_no_tagged(tag, timeout=20) == []


def test_a_changed_server_entry_closes_its_kept_alive_process_without_waiting_for_a_call(config_dir, tag):
    config_dir.write({"mem": harness.fault_server(tag, session="keep-alive")}, RULES)
    with config_dir.gateway() as gw:
        assert counter(gw, "alice") == "1"
        assert len(harness.tagged_pids(tag)) == 1

        config_dir.write_servers({"mem": harness.fault_server(tag, session="keep-alive", description="changed")})

        assert harness.wait_no_tagged(tag, timeout=10) == []  # the reload closed it
        assert counter(gw, "alice") == "1"  # a fresh process with fresh state


def test_a_removed_server_entry_closes_its_kept_alive_process(config_dir, tag):
    config_dir.write({"mem": harness.fault_server(tag, session="keep-alive"), "other": harness.fault_server(tag)}, RULES)
    with config_dir.gateway() as gw:
        assert counter(gw, "bob") == "1"

        config_dir.write_servers({"other": harness.fault_server(tag)})

        assert harness.wait_no_tagged(tag, timeout=10) == []


def test_saving_the_config_lets_a_running_kept_alive_call_finish_and_the_next_call_gets_a_fresh_process(
        config_dir, tag, tmp_path):
    release = tmp_path / "release"
    config_dir.write({"mem": harness.fault_server(tag, "--fault-tools", session="keep-alive")}, RULES)
    with config_dir.gateway("--debug") as gw, concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert counter(gw, "alice") == "1"
        [old_pid] = harness.tagged_pids(tag)
        running = pool.submit(execute, gw, "alice", "wait_file", {"path": str(release)})
        assert harness.wait_until(lambda: in_flight(gw) == 1, timeout=20)
        successes = reloads(gw)

        changed = harness.fault_server(tag, "--fault-tools", session="keep-alive", description="changed")
        config_dir.write_servers({"mem": changed})

        assert harness.wait_until(lambda: reloads(gw) > successes, timeout=20)
        assert counter(gw, "alice") == "1"  # the changed entry: a fresh process, fresh state
        assert old_pid in harness.tagged_pids(tag) and not running.done()  # the old call still runs
        release.touch()
        result = running.result(timeout=30)
        assert not result.is_error and harness.result_text(result) == "released"
        assert harness.wait_until(lambda: old_pid not in harness.tagged_pids(tag), timeout=20)


def test_closing_the_gateway_closes_a_kept_alive_servers_stdin_before_sending_it_sigterm(config_dir, tag, tmp_path):
    log = tmp_path / "server.log"
    config_dir.write({"mem": harness.fault_server(tag, "--mode", "linger", log=log, session="keep-alive")}, RULES)
    with config_dir.gateway() as gw:
        assert counter(gw, "alice") == "1"

    assert harness.wait_no_tagged(tag, timeout=20) == []
    events = [entry["event"] for entry in harness.read_log(log) if entry["event"] in ("stdin-closed", "sigterm")]
    assert events == ["stdin-closed", "sigterm"]  # the spec's order: EOF, wait, SIGTERM (not SIGKILL first)


def in_flight(gw: harness.Gateway) -> int:
    sessions = gw.call_json("get_gateway_status", {"agent_id": "alice"})["downstream"]["kept_sessions"]
    return sum(session["in_flight"] for session in sessions)


def reloads(gw: harness.Gateway) -> int:
    return gw.call_json("get_gateway_status", {"agent_id": "alice"})["reload_status"]["mcp_config"]["success_count"]
