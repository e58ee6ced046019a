"""Warm spare sessions of per-call servers, against real gateway and server processes.

A spare is a per-call session started before it is needed: every call still runs in a
process no other call touched. tests/servers/call_counter_server.py answers `served` with
how many calls its process has served (and its pid), so each answer shows which process
served the call, and that it served no other. Its --log records every start, so a test
counts exactly how many processes the gateway launched.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sys

import pytest

import harness
from gateway_lib.config import load_servers
from gateway_lib.downstream import Downstream
from gateway_lib.downstream.spares import EAGER, SpareSettings
from gateway_lib.errors import SERVER_UNAVAILABLE, ConfigError
from gateway_lib.pins import PINS_NAME

COUNTER_SERVER = harness.SERVERS_DIR / "call_counter_server.py"
CRASH_LOOP_SERVER = harness.SERVERS_DIR / "crash_loop_server.py"
RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}
WAIT_S = 30  # bound on a spare starting on a busy machine


def counter(tag: str, *extra: str, log=None, **entry) -> dict:
    """A .mcp.json entry for the call counter server."""
    args = [str(COUNTER_SERVER), "--tag", tag, *(["--log", str(log)] if log else []), *extra]
    return {"command": sys.executable, "args": args, **entry}


def gateway(config_dir: harness.ConfigDir, *args: str, env: dict | None = None) -> harness.Gateway:
    """A debug gateway with the default init strategy (the harness turns spares off elsewhere)."""
    return config_dir.gateway("--debug", *args, env={"GATEWAY_INIT_STRATEGY": "", **(env or {})})


def served(gw: harness.Gateway, server: str = "srv") -> dict:
    """One execute_tool of `served`: {"pid", "calls", "lists", "probe"} of the process that served it."""
    return gw.call_json("execute_tool", {"server": server, "tool": "served", "args": {}})


def downstream_status(gw: harness.Gateway) -> dict:
    return gw.call_json("get_gateway_status", {})["downstream"]


def spare_of(gw: harness.Gateway, server: str = "srv") -> dict:
    return downstream_status(gw)["spares"].get(server, {})


def wait_spare(gw: harness.Gateway, server: str = "srv", other_than: int | None = None) -> dict:
    """The status of `server`'s spare once one is ready (and is not the process `other_than`)."""
    found = harness.wait_until(
        lambda: (s := spare_of(gw, server)).get("ready") and s.get("pid") != other_than and s, WAIT_S)
    assert found, f"no spare of {server!r} became ready: {spare_of(gw, server)}"
    return found


def spare_warnings(gw: harness.Gateway) -> list[str]:
    return [line for line in gw.stderr_text().splitlines() if "WARNING gateway_lib.downstream.spares" in line]


def starts(log) -> int:
    return harness.count_events(log, "start")


def alive(pid: int, tag: str) -> bool:
    return pid in harness.tagged_pids(tag)


def pinned_servers(config_dir: harness.ConfigDir) -> set[str]:
    try:
        return set(json.loads((config_dir.root / PINS_NAME).read_text(encoding="utf-8"))["servers"])
    except FileNotFoundError:
        return set()


def error_code(result) -> str:
    assert result.is_error, harness.result_text(result)
    return json.loads(result.content[0].text)["error"]["code"]


# --- a spare serves one call, and the next one is started -----------------------------------


def test_every_call_taken_from_a_spare_runs_in_a_process_no_other_call_touched(config_dir, tag):
    log = config_dir.path("starts.jsonl")
    config_dir.write({"srv": counter(tag, log=log)}, RULES)
    with gateway(config_dir) as gw:
        answers = []
        for _ in range(3):
            spare = wait_spare(gw, other_than=answers[-1]["pid"] if answers else None)
            answers.append(served(gw))
            assert answers[-1]["pid"] == spare["pid"]  # the call took the ready spare

        assert [a["calls"] for a in answers] == [1, 1, 1]
        assert len({a["pid"] for a in answers}) == 3
        assert harness.wait_until(lambda: not any(alive(a["pid"], tag) for a in answers), 10)  # each closed after its call
        status = spare_of(gw)
        assert (status["served_by_spare"], status["served_fresh"]) == (3, 0)


def test_a_taken_spare_is_replaced_in_the_background_by_a_fresh_process(config_dir, tag):
    config_dir.write({"srv": counter(tag)}, RULES)
    with gateway(config_dir) as gw:
        first = wait_spare(gw)
        assert served(gw)["pid"] == first["pid"]

        second = wait_spare(gw, other_than=first["pid"])

        assert second["pid"] != first["pid"]
        assert served(gw) == {"pid": second["pid"], "calls": 1, "lists": 0, "probe": None}


def test_a_spare_taken_by_a_long_call_has_its_successor_ready_before_that_call_is_answered(config_dir, tag):
    config_dir.write({"srv": counter(tag)}, RULES)
    with gateway(config_dir) as gw, concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = wait_spare(gw)
        long_call = pool.submit(gw.call_json, "execute_tool", {"server": "srv", "tool": "sleep", "args": {"seconds": 60}},
                                timeout=90)

        second = wait_spare(gw, other_than=first["pid"])  # started 100 ms into the call, not at its answer

        assert not long_call.done()
        assert spare_of(gw)["served_by_spare"] == 1 and alive(first["pid"], tag)  # the first is still serving
        assert served(gw)["pid"] == second["pid"]
        gw.close(check=False)  # shutting down ends the long call, which the pool then need not wait for
        assert long_call in concurrent.futures.wait([long_call], timeout=30).done


def test_eager_is_the_default_and_fills_every_tool_cache_so_the_first_get_server_tools_opens_no_session(config_dir, tag):
    logs = {name: config_dir.path(f"{name}.jsonl") for name in ("spared", "unspared", "kept")}
    config_dir.write({
        "spared": counter(tag, log=logs["spared"]),
        "unspared": counter(tag, log=logs["unspared"], spare=False),
        "kept": counter(tag, log=logs["kept"], session="keep-alive"),
    }, RULES)
    with gateway(config_dir) as gw:
        assert downstream_status(gw)["init_strategy"] == "eager"
        wait_spare(gw, "spared")
        for name in ("unspared", "kept"):  # listed on a transient session, which then closed
            assert harness.wait_until(lambda: harness.count_events(logs[name], "request", method="tools/list"), WAIT_S)
        assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 1, 10)  # only the spare is left
        before = {name: starts(log) for name, log in logs.items()}
        # Trust on first use happened as the warm-up listed them, off every agent's clock.
        assert harness.wait_until(lambda: pinned_servers(config_dir) == set(logs), WAIT_S), pinned_servers(config_dir)

        for name in logs:
            tools = gw.call_json("get_server_tools", {"server": name})["tools"]
            assert [t["name"] for t in tools] == ["served", "sleep"]

        assert {name: starts(log) for name, log in logs.items()} == before == {"spared": 1, "unspared": 1, "kept": 1}
        assert harness.count_events(logs["spared"], "request", method="tools/list") == 1  # listed by the spare
        assert served(gw, "spared")["lists"] == 1  # ... which then served the call


# --- when a spare is not used -----------------------------------------------------------------


def test_a_spare_is_not_used_after_its_entry_changed(config_dir, tag):
    config_dir.write({"srv": counter(tag, env={"SPARE_PROBE": "old"})}, RULES)
    with gateway(config_dir) as gw:
        old = wait_spare(gw)

        config_dir.write_servers({"srv": counter(tag, env={"SPARE_PROBE": "new"})})

        assert harness.wait_until(lambda: not alive(old["pid"], tag), 10)  # the reload closed it
        answer = served(gw)
        assert (answer["probe"], answer["calls"]) == ("new", 1)
        assert answer["pid"] != old["pid"]


def test_a_spare_resolved_with_an_older_variable_value_is_not_used(config_dir, tag):
    config_dir.write({"srv": counter(tag, env={"SPARE_PROBE": "${PROBE}"})}, RULES)
    environ = {"PROBE": "old"}
    old = load_servers(str(config_dir.mcp_config), environ).servers["srv"]
    environ["PROBE"] = "new"  # the same file, a different ${VAR} value: a different resolved spec
    new = load_servers(str(config_dir.mcp_config), environ).servers["srv"]
    ds = Downstream(spares=SpareSettings(strategy=EAGER))
    try:
        ds.warm({"srv": old})
        spare = harness.wait_until(lambda: (s := ds.status()["spares"].get("srv", {})).get("ready") and s, WAIT_S)
        assert spare, ds.status()

        answer = ds.call_tool(new, "served", {}, WAIT_S)["structuredContent"]

        assert (answer["probe"], answer["calls"]) == ("new", 1)
        assert answer["pid"] != spare["pid"]
        assert harness.wait_until(lambda: not alive(spare["pid"], tag), 10)  # the stale spare was closed
    finally:
        ds.shutdown()
    assert harness.wait_no_tagged(tag) == []


def test_a_spare_idle_past_gateway_spare_idle_s_is_closed_and_replaced_only_after_the_next_call(config_dir, tag):
    log = config_dir.path("starts.jsonl")
    config_dir.write({"srv": counter(tag, log=log)}, RULES)
    with gateway(config_dir, env={"GATEWAY_SPARE_IDLE_S": "1"}) as gw:
        spare = wait_spare(gw)

        assert harness.wait_until(lambda: spare_of(gw).get("state") == "idle-closed", WAIT_S), spare_of(gw)
        assert harness.wait_no_tagged(tag, timeout=10) == []
        assert starts(log) == 1  # not replaced while nobody calls

        answer = served(gw)
        assert answer["pid"] != spare["pid"] and answer["calls"] == 1
        assert spare_of(gw)["served_fresh"] == 1
        assert wait_spare(gw, other_than=answer["pid"])["pid"] != spare["pid"]  # the call brought a spare back


def test_a_server_with_spare_false_gets_no_spare_and_every_call_starts_its_own_process(config_dir, tag):
    logs = {name: config_dir.path(f"{name}.jsonl") for name in ("spared", "unspared")}
    config_dir.write({"spared": counter(tag, log=logs["spared"]),
                      "unspared": counter(tag, log=logs["unspared"], spare=False)}, RULES)
    with gateway(config_dir) as gw:
        wait_spare(gw, "spared")  # the eager start has run

        answers = [served(gw, "unspared") for _ in range(2)]

        assert [a["calls"] for a in answers] == [1, 1]
        status = spare_of(gw, "unspared")
        assert (status["ready"], status["served_by_spare"], status["served_fresh"]) == (False, 0, 2)
        assert starts(logs["unspared"]) == 3  # the eager cache fill, then one per call


# --- init strategies ----------------------------------------------------------------------------


def test_lazy_gives_a_server_its_spare_only_after_its_first_call(config_dir, tag):
    logs = {name: config_dir.path(f"{name}.jsonl") for name in ("called", "uncalled")}
    config_dir.write({name: counter(tag, log=log) for name, log in logs.items()}, RULES)
    with gateway(config_dir, "--init-strategy", "lazy") as gw:
        assert downstream_status(gw)["init_strategy"] == "lazy"

        first = served(gw, "called")
        spare = wait_spare(gw, "called", other_than=first["pid"])

        assert spare_of(gw, "uncalled").get("ready") is not True
        assert starts(logs["uncalled"]) == 0  # no spare and no cache fill for a server nobody called
        assert served(gw, "called")["pid"] == spare["pid"]


def test_off_starts_no_spare_and_no_process_before_a_call(config_dir, tag):
    log = config_dir.path("starts.jsonl")
    config_dir.write({"srv": counter(tag, log=log)}, RULES)
    with gateway(config_dir, env={"GATEWAY_INIT_STRATEGY": "off"}) as gw:
        assert downstream_status(gw)["init_strategy"] == "off"

        answers = [served(gw) for _ in range(3)]

        assert [a["calls"] for a in answers] == [1, 1, 1]
        assert harness.wait_no_tagged(tag, timeout=10) == []
        assert starts(log) == 3
        status = spare_of(gw)
        assert (status["ready"], status["served_by_spare"], status["served_fresh"]) == (False, 0, 3)


def test_an_unknown_init_strategy_stops_the_gateway_with_a_clear_error(config_dir, tag):
    config_dir.write({"srv": counter(tag)}, RULES)
    gw = config_dir.raw_gateway(env={"GATEWAY_INIT_STRATEGY": "sometimes"})
    assert gw.close() != 0
    assert "GATEWAY_INIT_STRATEGY" in gw.stderr_text()
    assert gw.all_stdout_bytes() == b""


# --- process deaths and failures ----------------------------------------------------------------


def test_a_spare_whose_process_died_is_replaced_and_the_next_call_runs_on_a_fresh_process(config_dir, tag):
    config_dir.write({"srv": counter(tag)}, RULES)
    with gateway(config_dir) as gw:
        dead = wait_spare(gw)

        os.kill(dead["pid"], signal.SIGKILL)

        assert harness.wait_until(lambda: spare_of(gw).get("pid") != dead["pid"], WAIT_S), spare_of(gw)
        answer = served(gw)
        assert answer["pid"] != dead["pid"] and answer["calls"] == 1
        assert wait_spare(gw, other_than=answer["pid"])["pid"] not in (dead["pid"], answer["pid"])


def test_a_spare_that_fails_to_start_is_logged_once_shown_in_status_and_fails_no_call(config_dir, tag):
    broken = config_dir.path("broken")
    broken.write_text("")
    log = config_dir.path("starts.jsonl")
    config_dir.write({"srv": counter(tag, "--exit-while", str(broken), log=log)}, RULES)
    with gateway(config_dir) as gw:
        assert harness.wait_until(lambda: spare_of(gw).get("failures") == 1, WAIT_S), spare_of(gw)
        assert "srv" in spare_of(gw)["last_error"]

        broken.unlink()  # the server can start again; its failed spare must not fail the call

        answer = served(gw)
        assert answer["calls"] == 1
        spare = wait_spare(gw, other_than=answer["pid"])
        assert served(gw)["pid"] == spare["pid"]
        assert spare_of(gw)["failures"] == 0  # a spare that served a call ends the streak
        warnings = spare_warnings(gw)
        assert len(warnings) == 1, warnings


def test_a_crash_looping_server_gets_its_spare_retried_with_growing_backoff_not_in_a_loop(config_dir, tag):
    log = config_dir.path("starts.jsonl")
    config_dir.write({"crash": {"command": sys.executable, "args": [str(CRASH_LOOP_SERVER), "--tag", tag, "--log", str(log)]}},
                     RULES)
    call = {"server": "crash", "tool": "anything", "args": {}}
    with gateway(config_dir) as gw:
        assert harness.wait_until(lambda: spare_of(gw, "crash").get("failures") == 1, WAIT_S)
        assert starts(log) == 1  # the eager spare, not started again on its own

        assert error_code(gw.call_tool("execute_tool", call)) == SERVER_UNAVAILABLE  # its own start failed
        status = harness.wait_until(lambda: (s := spare_of(gw, "crash")).get("failures") == 2 and s, WAIT_S)
        assert status["backoff_s"] > 0 and status["retry_in_s"] > 0
        assert starts(log) == 3  # the call's process and one replacement spare

        assert error_code(gw.call_tool("execute_tool", call)) == SERVER_UNAVAILABLE
        assert starts(log) == 4  # during the backoff, a call starts only its own process
        assert spare_of(gw, "crash")["failures"] == 2

        assert harness.wait_until(lambda: spare_of(gw, "crash")["retry_in_s"] == 0, WAIT_S)
        assert error_code(gw.call_tool("execute_tool", call)) == SERVER_UNAVAILABLE
        grown = harness.wait_until(lambda: (s := spare_of(gw, "crash")).get("failures") == 3 and s, WAIT_S)
        assert grown["backoff_s"] == 2 * status["backoff_s"]
        assert starts(log) == 6
        warnings = spare_warnings(gw)
        assert len(warnings) == 1, warnings


# --- bounds -------------------------------------------------------------------------------------


def test_shutdown_leaves_no_spare_running_grandchildren_included(config_dir, tag):
    config_dir.write({"srv": counter(tag, "--grandchild")}, RULES)
    with gateway(config_dir) as gw:
        wait_spare(gw)
        assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 2, WAIT_S)  # the spare and its grandchild

    assert harness.wait_no_tagged(tag, timeout=20) == []


def test_a_ready_spare_holds_no_slot_of_a_server_limited_to_one_call(config_dir, tag):
    config_dir.write({"srv": counter(tag, max_concurrency=1, timeout_ms=20_000)}, RULES)
    with gateway(config_dir) as gw:
        spare = wait_spare(gw)

        assert served(gw)["pid"] == spare["pid"]


def test_a_burst_of_calls_takes_the_spare_for_one_and_every_call_is_answered_once_by_its_own_process(config_dir, tag):
    config_dir.write({"srv": counter(tag, max_concurrency=4)}, RULES)
    with gateway(config_dir) as gw:
        spare = wait_spare(gw)
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: served(gw), range(10)))

        assert [a["calls"] for a in answers] == [1] * 10
        assert len({a["pid"] for a in answers}) == 10
        assert spare["pid"] in {a["pid"] for a in answers}
        status = spare_of(gw)
        assert status["served_by_spare"] >= 1 and status["served_by_spare"] + status["served_fresh"] == 10
        after = wait_spare(gw, other_than=spare["pid"])  # the next spare, ready after the burst
        assert after["pid"] not in {a["pid"] for a in answers}


# --- config -------------------------------------------------------------------------------------


def test_spare_must_be_a_boolean_in_the_config(config_dir, tag):
    config_dir.write({"srv": counter(tag, spare="no")}, RULES)

    with pytest.raises(ConfigError) as raised:
        load_servers(str(config_dir.mcp_config), {})

    assert [problem.path for problem in raised.value.problems] == ["$.mcpServers.srv.spare"]
