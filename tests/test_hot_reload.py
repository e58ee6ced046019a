"""Hot reload end to end: a real gateway process, a real SDK client, real files on disk.

Every change is observed the way an agent would see it: through the client's next call,
polled with a bound (harness.wait_until), never after a fixed pause.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import harness
from gateway_lib.errors import SERVER_UNAVAILABLE

WAIT_S = 20  # bound on one change becoming visible; generous, the machine is shared
# A shorter debounce than the default 300 ms, for the tests that do not test the default:
# each change is then seen sooner (the debouncer's own promises are in test_watcher.py).
FAST_RELOAD = {"GATEWAY_RELOAD_DEBOUNCE_MS": "50"}

ECHO_ONLY = {"agents": {"dev": {"allow": {"servers": ["tools"], "tools": {"tools": ["echo"]}}}}}
ADD_ONLY = {"agents": {"dev": {"allow": {"servers": ["tools"], "tools": {"tools": ["add"]}}}}}


def visible_tools(gw) -> list[str]:
    listing = gw.call_json("get_server_tools", {"agent_id": "dev", "server": "tools"})
    return sorted(tool["name"] for tool in listing["tools"])


def reload_status(gw) -> dict:
    return gw.call_json("get_gateway_status", {"agent_id": "dev"})["reload_status"]


def eventually(predicate) -> None:
    assert harness.wait_until(predicate, WAIT_S), "the change was not seen within the bound"


def attempts(gw, kind: str = "gateway_rules") -> int:
    return reload_status(gw)[kind]["attempt_count"]


@pytest.fixture
def gateway(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, ECHO_ONLY)
    with config_dir.gateway("--debug", "--audit-log", str(config_dir.path("audit.jsonl")), env=FAST_RELOAD) as gw:
        assert visible_tools(gw) == ["echo"]
        yield gw


# --- ways of saving ---------------------------------------------------------------------


def write_in_place(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(obj if isinstance(obj, str) else json.dumps(obj))


def write_temp_and_rename(path: Path, obj) -> None:
    temp = path.with_name(path.name + ".tmp")
    write_in_place(temp, obj)
    os.replace(temp, path)


def delete_and_recreate(path: Path, obj) -> None:
    path.unlink()
    write_in_place(path, obj)


@pytest.mark.parametrize("save", [write_in_place, write_temp_and_rename, delete_and_recreate],
                         ids=["in-place write", "temp file renamed over", "delete then re-create"])
def test_a_saved_rules_file_governs_the_next_call(gateway, config_dir, save):
    save(config_dir.rules, ADD_ONLY)
    eventually(lambda: visible_tools(gateway) == ["add"])
    status = reload_status(gateway)["gateway_rules"]
    assert status["last_error"] is None and status["success_count"] >= 2


def test_after_a_burst_of_writes_the_last_write_is_in_force(gateway, config_dir):
    # How many reloads the burst makes depends on timing; that a burst is coalesced is
    # the debouncer's promise, tested without timing in test_watcher.py.
    for n in range(20):
        write_in_place(config_dir.rules, ECHO_ONLY if n % 2 else ADD_ONLY)
    write_in_place(config_dir.rules, ADD_ONLY)
    eventually(lambda: visible_tools(gateway) == ["add"])
    status = reload_status(gateway)["gateway_rules"]
    assert status["last_error"] is None and status["success_count"] >= 2


def test_a_saved_servers_file_governs_the_next_call(gateway, config_dir, tag):
    config_dir.write_servers({"tools": harness.fault_server(tag, description="second version")})
    eventually(lambda: gateway.call_json("list_servers", {"agent_id": "dev"})["servers"]
               == [{"name": "tools", "description": "second version"}])


def test_a_symlinked_rules_file_reloads_when_its_target_is_saved(config_dir, tag, tmp_path):
    real_dir = tmp_path / "dotfiles"
    real_dir.mkdir()
    target = harness.write_json(real_dir / "rules.json", ECHO_ONLY)
    config_dir.write_servers({"tools": harness.fault_server(tag)})
    config_dir.rules.symlink_to(target)
    with config_dir.gateway("--debug", env=FAST_RELOAD) as gw:
        assert visible_tools(gw) == ["echo"]
        write_temp_and_rename(target, ADD_ONLY)
        eventually(lambda: visible_tools(gw) == ["add"])
        assert reload_status(gw)["gateway_rules"]["path"] == str(config_dir.rules)


# --- invalid files keep the old config --------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"agents": {"dev": {"allow": {"servers": ["tools"]', ":1: $: not valid JSON"),
        ('{"agents": {"dev": }}', ":1: $: not valid JSON"),
        ("", ": $: file is empty"),
        ('{\n  "agents": {\n    "dev": {"allow": {"servers": ["to*ls"]}}\n  }\n}',
         ":3: $.agents.dev.allow.servers[0]: pattern 'to*ls' is not allowed"),
    ],
    ids=["truncated mid-write", "bad JSON", "empty", "schema violation"],
)
def test_an_invalid_rules_file_keeps_the_old_rules_and_shows_in_status(gateway, config_dir, content, expected):
    write_in_place(config_dir.rules, content)
    eventually(lambda: attempts(gateway) >= 2)
    status = reload_status(gateway)["gateway_rules"]
    assert status["last_error"].startswith(str(config_dir.rules) + expected)
    assert status["success_count"] == 1
    assert visible_tools(gateway) == ["echo"]
    assert str(config_dir.rules) + expected in gateway.stderr_text()
    gateway.close()
    audit = harness.read_log(config_dir.path("audit.jsonl"))
    reloads = {(r["file"], r["outcome"]) for r in audit if r["event"] == "config_reload"}
    assert reloads == {("gateway_rules", "rejected")}


def test_a_rules_file_replaced_by_a_fifo_is_rejected_and_the_gateway_keeps_reloading(gateway, config_dir):
    config_dir.rules.unlink()
    os.mkfifo(config_dir.rules)  # reading it would block the reload, and status with it, for ever
    eventually(lambda: "FIFO" in (reload_status(gateway)["gateway_rules"]["last_error"] or ""))
    assert visible_tools(gateway) == ["echo"]
    os.kill(gateway.pid, signal.SIGHUP)
    eventually(lambda: attempts(gateway) >= 3)
    config_dir.rules.unlink()
    write_in_place(config_dir.rules, ADD_ONLY)
    eventually(lambda: visible_tools(gateway) == ["add"])


def test_an_invalid_servers_file_keeps_the_old_servers(gateway, config_dir):
    write_in_place(config_dir.mcp_config, '{"mcpServers": {"tools": {"args": []}}}')
    eventually(lambda: attempts(gateway, "mcp_config") >= 2)
    assert "$.mcpServers.tools" in reload_status(gateway)["mcp_config"]["last_error"]
    assert visible_tools(gateway) == ["echo"]
    result = gateway.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "echo",
                                                "args": {"text": "still here"}})
    assert harness.result_text(result) == "still here"


def test_a_fixed_file_after_an_invalid_one_is_applied_and_clears_the_error(gateway, config_dir):
    write_in_place(config_dir.rules, "{")
    eventually(lambda: reload_status(gateway)["gateway_rules"]["last_error"] is not None)
    write_in_place(config_dir.rules, ADD_ONLY)
    eventually(lambda: visible_tools(gateway) == ["add"])
    assert reload_status(gateway)["gateway_rules"]["last_error"] is None


def test_a_file_that_disappears_keeps_the_config_and_is_picked_up_when_it_returns(gateway, config_dir):
    config_dir.rules.unlink()
    eventually(lambda: "file not found" in (reload_status(gateway)["gateway_rules"]["last_error"] or ""))
    assert visible_tools(gateway) == ["echo"]
    write_in_place(config_dir.rules, ADD_ONLY)
    eventually(lambda: visible_tools(gateway) == ["add"])


# --- SIGHUP ------------------------------------------------------------------------------


def test_sighup_reloads_both_files_and_the_gateway_keeps_serving(gateway):
    before = reload_status(gateway)
    assert (before["mcp_config"]["attempt_count"], before["gateway_rules"]["attempt_count"]) == (1, 1)
    os.kill(gateway.pid, signal.SIGHUP)
    eventually(lambda: [s["success_count"] for s in reload_status(gateway).values()] == [2, 2])
    gateway.ping()
    assert visible_tools(gateway) == ["echo"]


# --- warnings ----------------------------------------------------------------------------


def test_rules_naming_an_undefined_server_are_applied_with_a_warning_that_clears_when_fixed(gateway, config_dir, tag):
    rules = {"agents": {"dev": {"allow": {"servers": ["tools", "pg"], "tools": {"tools": ["add"]}}}}}
    write_in_place(config_dir.rules, rules)
    eventually(lambda: visible_tools(gateway) == ["add"])  # applied despite the warning
    warning = "Rule agents.dev.allow.servers[1] names server 'pg' which is not defined in .mcp.json"
    status = gateway.call_json("get_gateway_status", {"agent_id": "dev"})
    assert status["reload_status"]["gateway_rules"]["warnings"] == [warning]
    assert status["warnings"] == [warning]
    assert warning in gateway.stderr_text()

    config_dir.write_servers({"tools": harness.fault_server(tag), "pg": harness.fault_server(tag)})
    eventually(lambda: reload_status(gateway)["gateway_rules"]["warnings"] == [])


# --- what a reload touches ---------------------------------------------------------------


def test_a_rules_change_keeps_tool_lists_and_a_server_change_drops_only_that_servers(config_dir, tag):
    log_a, log_b = config_dir.path("a.log"), config_dir.path("b.log")

    def servers(a_description: str) -> dict:
        return {"a": harness.fault_server(tag, log=log_a, description=a_description),
                "b": harness.fault_server(tag, log=log_b)}

    def tools_of(gw, server: str) -> list[str]:
        listing = gw.call_json("get_server_tools", {"agent_id": "dev", "server": server})
        return sorted(tool["name"] for tool in listing["tools"])

    config_dir.write(servers("first"), {"agents": {"dev": {"allow": {"servers": ["a", "b"]}}}})
    with config_dir.gateway(env=FAST_RELOAD) as gw:
        everything = tools_of(gw, "a")
        tools_of(gw, "b")
        starts = lambda: (harness.count_events(log_a, "start"), harness.count_events(log_b, "start"))  # noqa: E731
        assert starts() == (1, 1)

        config_dir.write_rules({"agents": {"dev": {"allow": {"servers": ["a", "b"], "tools": {"a": ["echo"]}}}}})
        eventually(lambda: tools_of(gw, "a") == ["echo"])
        assert tools_of(gw, "b") == everything
        assert starts() == (1, 1)  # both lists still came from the cache

        config_dir.write_servers(servers("second"))
        eventually(lambda: {"name": "a", "description": "second"} in gw.call_json("list_servers", {"agent_id": "dev"})["servers"])
        assert tools_of(gw, "a") == ["echo"]
        assert tools_of(gw, "b") == everything
        assert starts() == (2, 1)  # only the changed server's list was fetched again


def test_an_in_flight_call_finishes_under_its_config_and_a_removed_server_leaves_no_process(config_dir, tag):
    log, release = config_dir.path("slow.log"), config_dir.path("release")
    config_dir.write({"slow": harness.fault_server(tag, "--fault-tools", log=log), "tools": harness.fault_server(tag)},
                     {"agents": {"dev": {"allow": {"servers": ["*"]}}}})
    with config_dir.gateway(env=FAST_RELOAD) as gw, ThreadPoolExecutor(1) as pool:
        # wait_file answers once `release` exists: the call is in flight until the test says.
        in_flight = pool.submit(gw.call_tool, "execute_tool",
                                {"agent_id": "dev", "server": "slow", "tool": "wait_file", "args": {"path": str(release)}})
        eventually(lambda: harness.count_events(log, "call", tool="wait_file") == 1)

        config_dir.write_servers({"tools": harness.fault_server(tag)})
        eventually(lambda: [s["name"] for s in gw.call_json("list_servers", {"agent_id": "dev"})["servers"]] == ["tools"])
        assert not in_flight.done()
        refused = gw.call_tool("execute_tool", {"agent_id": "dev", "server": "slow", "tool": "echo", "args": {"text": "x"}})
        assert refused.is_error and refused.structured_content["error"]["code"] == SERVER_UNAVAILABLE

        release.touch()
        result = in_flight.result(timeout=WAIT_S)
        assert not result.is_error and harness.result_text(result) == "released"
        assert harness.wait_no_tagged(tag) == []


# --- concurrency -------------------------------------------------------------------------

POLICY_A = {"agents": {"dev": {"allow": {"servers": ["tools"], "tools": {"tools": ["echo", "add"]}}}}}
POLICY_B = {"agents": {"dev": {"allow": {"servers": ["tools"], "tools": {"tools": ["image", "audio"]}}}}}
SEEN_UNDER = {("add", "echo"): "A", ("audio", "image"): "B"}
INVALID = '{"agents": {"dev": {"allow": {"servers": ["tools"], "tools": {"tools": ["echo"'
CALLERS = 20
REWRITES = 30  # A, B, invalid, A, B, invalid, ...: the last valid file is B


def test_calls_during_rapid_rewrites_each_see_exactly_one_whole_policy(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, POLICY_A)
    env = {"GATEWAY_RELOAD_DEBOUNCE_MS": "20"}  # many reloads, so many interleavings
    with config_dir.gateway("--debug", env=env) as gw:
        visible_tools(gw)  # fill the tool cache: the callers then measure the gateway alone
        stop = threading.Event()
        outcomes: list[str] = []
        failures: list[str] = []

        def caller() -> None:
            while not stop.is_set():
                try:
                    result = gw.call_tool("get_server_tools", {"agent_id": "dev", "server": "tools"})
                    if result.is_error:
                        failures.append(harness.result_text(result))
                        continue
                    names = tuple(sorted(t["name"] for t in result.structured_content["tools"]))
                    outcomes.append(SEEN_UNDER.get(names, f"a mix: {names}"))
                except Exception as exc:  # reported below; the loop must keep calling
                    failures.append(repr(exc))

        with ThreadPoolExecutor(CALLERS) as pool:
            running = [pool.submit(caller) for _ in range(CALLERS)]
            try:
                for n in range(REWRITES):
                    # A rename is one event, so each rewrite is exactly one reload to wait for.
                    write_temp_and_rename(config_dir.rules, [POLICY_A, POLICY_B, INVALID][n % 3])
                    eventually(lambda: attempts(gw) == 2 + n)
            finally:
                stop.set()
                for future in running:
                    future.result(timeout=WAIT_S)

        assert failures == []
        assert set(outcomes) == {"A", "B"}, sorted(set(outcomes))
        assert len(outcomes) > REWRITES
        status = reload_status(gw)["gateway_rules"]
        assert (status["attempt_count"], status["success_count"]) == (1 + REWRITES, 1 + REWRITES * 2 // 3)
        assert status["last_error"] is not None  # the last write was the invalid one
        assert visible_tools(gw) == ["audio", "image"]  # ...so the last valid one, B, is in force
