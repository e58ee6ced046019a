"""The tool-list cache: as a unit with a fake lister, and end to end by counting the
downstream sessions a real gateway opens (the fault server logs one "start" per process).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest

import harness
from gateway_lib.catalog import MAX_DESCRIPTION_CHARS, ToolCatalog
from gateway_lib.errors import INVALID_ARGUMENTS, TOOL_NOT_FOUND, RequestCancelled, ToolTimeout
from gateway_lib.model import ServerSpec

ECHO = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}
ADD = {"name": "add", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}}}}
SPEC = ServerSpec(name="s", transport="stdio", command="srv", args=("--one",))


class FakeLister:
    """A list_tools stand-in that counts its calls and returns whatever `tools` holds now."""

    def __init__(self, *tools: dict):
        self.tools = list(tools)
        self.calls = 0

    def __call__(self, spec, timeout_s, cancel, agent=None) -> list[dict]:
        self.calls += 1
        return list(self.tools)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def catalog(lister: FakeLister, ttl_s: float = 300.0, clock: FakeClock | None = None) -> ToolCatalog:
    return ToolCatalog(lister, ttl_s=ttl_s, clock=clock or FakeClock())


def fetch(cat: ToolCatalog, spec: ServerSpec = SPEC) -> list[dict]:
    return cat.tools(spec, time.monotonic() + 5.0, threading.Event())


# --- as a unit -------------------------------------------------------------------------------


def test_a_second_listing_is_served_from_the_cache_without_fetching():
    lister = FakeLister(ECHO)
    cat = catalog(lister)
    assert fetch(cat) == [ECHO]
    assert fetch(cat) == [ECHO]
    assert lister.calls == 1


def test_a_changed_config_entry_is_fetched_again_and_the_old_list_never_served():
    lister = FakeLister(ECHO)
    cat = catalog(lister)
    fetch(cat)
    lister.tools = [ADD]
    changed = replace(SPEC, args=("--two",))
    assert fetch(cat, changed) == [ADD]
    assert lister.calls == 2
    assert cat.known(SPEC, "echo") is None  # the old entry's spec no longer matches
    assert fetch(cat, SPEC) == [ADD]  # going back to the old entry refetches too
    assert lister.calls == 3


def test_forget_missing_drops_servers_that_a_reload_removed_or_changed():
    lister = FakeLister(ECHO)
    cat = catalog(lister)
    other = replace(SPEC, name="other")
    fetch(cat)
    fetch(cat, other)
    cat.forget_missing({"s": replace(SPEC, description="now described")})
    assert cat.known(other, "echo") is None
    fetch(cat)
    assert lister.calls == 3


def test_a_list_older_than_the_ttl_is_fetched_again():
    clock = FakeClock()
    lister = FakeLister(ECHO)
    cat = catalog(lister, ttl_s=60, clock=clock)
    fetch(cat)
    clock.now += 59
    fetch(cat)
    assert lister.calls == 1
    assert cat.known(SPEC, "echo") == ECHO
    clock.now += 2
    assert cat.known(SPEC, "echo") is None
    fetch(cat)
    assert lister.calls == 2


def test_known_answers_only_from_a_fresh_list_and_never_fetches():
    lister = FakeLister(ECHO)
    cat = catalog(lister)
    assert cat.known(SPEC, "echo") is None
    cat.store(SPEC, [ECHO])
    assert cat.known(SPEC, "echo") == ECHO
    assert cat.known(SPEC, "add") is None
    assert lister.calls == 0


def test_a_tools_checker_is_compiled_once_per_cached_list():
    cat = catalog(FakeLister())
    cat.store(SPEC, [ECHO])
    first = cat.checker(SPEC, ECHO)
    assert cat.checker(SPEC, ECHO) is first
    assert first.problems({}) == ["$: 'text' is a required property"]
    cat.store(SPEC, [ECHO])  # a refreshed list starts with no checkers
    assert cat.checker(SPEC, ECHO) is not first


def test_a_tool_with_an_invalid_schema_gets_no_checker_judged_and_logged_once(caplog):
    cat = catalog(FakeLister())
    broken = {"name": "broken", "inputSchema": {"type": "object", "properties": {"x": {"type": 5}}}}
    cat.store(SPEC, [broken, ECHO])
    with caplog.at_level("WARNING", logger="gateway_lib.catalog"):
        assert cat.checker(SPEC, broken) is None
        assert cat.checker(SPEC, broken) is None
    assert cat.checker(SPEC, ECHO) is not None  # the server's other tools are checked as usual
    assert len([r for r in caplog.records if "invalid inputSchema" in r.getMessage()]) == 1


class BlockingLister:
    """A list_tools stand-in that blocks until released, counting its calls."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, spec, timeout_s, cancel, agent=None) -> list[dict]:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)
        return [ECHO]


def test_waiting_for_another_callers_fetch_ends_when_cancelled_or_at_the_deadline():
    lister = BlockingLister()
    cat = ToolCatalog(lister)
    filler = threading.Thread(target=lambda: cat.tools(SPEC, time.monotonic() + 30, threading.Event()))
    filler.start()
    try:
        assert lister.entered.wait(10)
        cancelled = threading.Event()
        cancelled.set()
        with pytest.raises(RequestCancelled):
            cat.tools(SPEC, time.monotonic() + 30, cancelled)
        with pytest.raises(ToolTimeout):
            cat.tools(SPEC, time.monotonic() + 0.2, threading.Event())
        assert not lister.release.is_set()  # both gave up while the fetch still ran
    finally:
        lister.release.set()
        filler.join(10)
    assert lister.calls == 1 and cat.known(SPEC, "echo") == ECHO


def test_a_fetch_holds_what_hold_gives_it_and_gives_it_back_and_a_cache_hit_takes_nothing():
    held = []
    cat = catalog(FakeLister(ECHO))

    def hold():
        held.append("taken")
        return lambda: held.append("given back")

    cat.tools(SPEC, time.monotonic() + 5, threading.Event(), hold=hold)
    cat.tools(SPEC, time.monotonic() + 5, threading.Event(), hold=hold)
    assert held == ["taken", "given back"]


def test_an_over_long_tool_description_is_cut_with_a_marker():
    cat = catalog(FakeLister())
    [kept] = cat.store(SPEC, [{**ECHO, "description": "d" * (MAX_DESCRIPTION_CHARS + 10)}])
    assert kept["description"] == "d" * MAX_DESCRIPTION_CHARS + "... [cut: 10 more characters]"


# --- end to end: counting downstream sessions --------------------------------------------------

RULES = {"agents": {"default": {"allow": {"servers": ["tools"]}}}}


def started(log) -> int:
    return harness.count_events(log, "start")


def listed(log) -> int:
    return harness.count_events(log, "call", method="tools/list")


def called(log) -> int:
    return harness.count_events(log, "call", method="tools/call")


def error_code(result) -> str:
    assert result.is_error, harness.result_text(result)
    return json.loads(result.content[0].text)["error"]["code"]


@pytest.fixture
def log(config_dir):
    return config_dir.path("server.log")


# The tests with the default TTL share one gateway, each with a server (and log) of its own.
SHARED_SERVERS = ("cache", "first", "unknown", "added", "cached-schema", "cold")


@pytest.fixture(scope="module")
def shared(shared_dir):
    config = shared_dir.config_dir
    servers = {name: harness.fault_server(shared_dir.tag, log=config.path(f"{name}.log")) for name in SHARED_SERVERS}
    servers["added"] = harness.fault_server(shared_dir.tag, "--tools-file", str(config.path("extra-tools.txt")),
                                            log=config.path("added.log"))
    # A tool added to a pinned server is blocked by default (test_pins.py); here it is served.
    config.write(servers, {"agents": {"default": {"allow": {"servers": list(SHARED_SERVERS)}}},
                           "defaults": {"on_tool_change": "warn"}})
    with config.gateway(env=shared_dir.env) as gw:
        yield gw, config


def shared_server(shared, name: str):
    """The shared gateway, and the log of `name`, the server no other test calls."""
    gw, config = shared
    return gw, config.path(f"{name}.log")


def test_get_server_tools_served_from_the_cache_opens_no_session(shared):
    gw, log = shared_server(shared, "cache")
    first = gw.call_json("get_server_tools", {"server": "cache"})
    again = gw.call_json("get_server_tools", {"server": "cache", "names": "echo"})
    assert started(log) == 1
    assert [t["name"] for t in again["tools"]] == ["echo"]
    assert again["total_available"] == first["total_available"]


def test_the_first_execute_tool_lists_and_calls_in_one_session_and_the_next_only_calls(shared):
    gw, log = shared_server(shared, "first")
    first = gw.call_tool("execute_tool", {"server": "first", "tool": "echo", "args": {"text": "one"}})
    assert (started(log), listed(log), called(log)) == (1, 1, 1)
    second = gw.call_tool("execute_tool", {"server": "first", "tool": "echo", "args": {"text": "two"}})
    assert (started(log), listed(log), called(log)) == (2, 1, 2)
    gw.call_json("get_server_tools", {"server": "first"})
    assert started(log) == 2  # the first call filled the cache
    assert harness.result_text(first) == "one" and harness.result_text(second) == "two"


def test_a_tool_list_past_its_ttl_is_fetched_again(config_dir, tag, log):
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, RULES)
    with config_dir.gateway("--tool-cache-ttl", "0") as gw:
        gw.call_json("get_server_tools", {"server": "tools"})
        gw.call_json("get_server_tools", {"server": "tools"})
        assert started(log) == 2
        gw.call_tool("execute_tool", {"server": "tools", "tool": "echo", "args": {"text": "x"}})
        assert (started(log), listed(log)) == (3, 3)  # expired: listed again, in the call's own session


def test_the_ttl_can_come_from_the_environment(config_dir, tag, log):
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, RULES)
    with config_dir.gateway(env={"GATEWAY_TOOL_CACHE_TTL": "0"}) as gw:
        gw.call_json("get_server_tools", {"server": "tools"})
        gw.call_json("get_server_tools", {"server": "tools"})
        assert started(log) == 2


def test_an_unknown_tool_refreshes_the_list_once_and_is_tool_not_found_without_a_call(shared):
    gw, log = shared_server(shared, "unknown")
    gw.call_json("get_server_tools", {"server": "unknown"})
    result = gw.call_tool("execute_tool", {"server": "unknown", "tool": "nope", "args": {}})
    assert error_code(result) == TOOL_NOT_FOUND
    assert (started(log), listed(log), called(log)) == (2, 2, 0)


def test_a_tool_added_after_the_list_was_cached_is_found_by_the_refresh(shared):
    gw, log = shared_server(shared, "added")
    tools_file = log.with_name("extra-tools.txt")  # read by the server at each start
    before = gw.call_json("get_server_tools", {"server": "added"})
    assert "fresh" not in [t["name"] for t in before["tools"]]
    tools_file.write_text("fresh\n", encoding="utf-8")
    result = gw.call_tool("execute_tool", {"server": "added", "tool": "fresh", "args": {"text": "new"}})
    assert harness.result_text(result) == "new"
    assert (started(log), listed(log), called(log)) == (2, 2, 1)
    after = gw.call_json("get_server_tools", {"server": "added"})
    assert "fresh" in [t["name"] for t in after["tools"]]
    assert started(log) == 2  # the refresh refilled the cache


def test_arguments_that_break_a_cached_schema_are_refused_without_opening_a_session(shared):
    gw, log = shared_server(shared, "cached-schema")
    gw.call_json("get_server_tools", {"server": "cached-schema"})
    result = gw.call_tool("execute_tool", {"server": "cached-schema", "tool": "add", "args": {"a": "two", "c": 1}})
    assert started(log) == 1
    assert error_code(result) == INVALID_ARGUMENTS
    problems = json.loads(result.content[0].text)["error"]["problems"]
    assert len(problems) == 2  # a is not a number; b is missing


def test_with_a_cold_cache_bad_arguments_are_refused_after_listing_and_never_called(shared):
    gw, log = shared_server(shared, "cold")
    result = gw.call_tool("execute_tool", {"server": "cold", "tool": "add", "args": {}})
    assert (started(log), listed(log), called(log)) == (1, 1, 0)
    assert error_code(result) == INVALID_ARGUMENTS
