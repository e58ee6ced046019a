"""Promise: no one gets access their rules do not grant, and no secret leaves the gateway.

- Identity fails closed: an agent id that is not in the rules exactly (unknown, empty,
  malformed, another case, a Unicode look-alike) gets nothing, and a missing fallback is
  reported, never papered over.
- Names never widen access: pattern characters in a requested server or tool name match
  only literally; a denied tool is invisible and refused under every spelling, and no
  spelling of it reaches the server.
- get_gateway_status exists only in debug mode.
- Values from env, headers and ${VAR} never appear in responses, stderr, audit lines or
  status; argument values are never logged or audited.
- A child process sees only the minimal environment plus its own env.
- A pinned gateway (--agent / GATEWAY_AGENT) acts as its agent and refuses any other.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

import harness
from gateway_lib.config import PARENT_CONFIGS_ENV
from gateway_lib.errors import (
    DENIED_BY_POLICY,
    FALLBACK_AGENT_NOT_IN_RULES,
    INVALID_AGENT_ID,
    INVALID_PARAMS,
    NO_FALLBACK_CONFIGURED,
    SERVER_UNAVAILABLE,
    TOOL_NOT_FOUND,
)

RULES = {
    "agents": {
        "dev": {"allow": {"servers": ["tools"]}, "deny": {"tools": {"tools": ["crash", "spawn_*"]}}},
        "narrow": {"allow": {"servers": ["tools"], "tools": {"tools": ["echo", "a?b"]}}},
        "admin": {"allow": {"servers": ["*"]}},
        "default": {"allow": {"servers": ["tools"], "tools": {"tools": ["echo"]}}},
    }
}


def error_of(result) -> dict:
    assert result.is_error, harness.result_text(result)
    return result.structured_content["error"]


def execute(gw, server, tool, args=None, **extra):
    return gw.call_tool("execute_tool", {"server": server, "tool": tool, "args": args or {}, **extra})


@pytest.fixture
def logs(config_dir):
    return {"tools": config_dir.path("tools.log"), "vault": config_dir.path("vault.log")}


@pytest.fixture
def servers(tag, logs):
    return {"tools": harness.fault_server(tag, log=logs["tools"]), "vault": harness.fault_server(tag, log=logs["vault"])}


@pytest.fixture
def gateway(config_dir, servers):
    config_dir.write(servers, RULES)
    with config_dir.gateway("--audit-log", str(config_dir.path("audit.jsonl"))) as gw:
        yield gw


@pytest.fixture(scope="module")
def shared_logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    return {"root": root, "tools": root / "tools.log", "vault": root / "vault.log", "tag": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def shared(shared_logs):
    """One gateway for the promises that only read and are refused: none of them may
    ever make a tools/call reach a server, so they can share a server log."""
    tag = shared_logs["tag"]
    config = harness.ConfigDir(shared_logs["root"] / "config")
    config.write({"tools": harness.fault_server(tag, log=shared_logs["tools"]),
                  "vault": harness.fault_server(tag, log=shared_logs["vault"])}, RULES)
    with config.gateway("--audit-log", str(config.path("audit.jsonl")),
                        env=harness.user_dirs_env(shared_logs["root"])) as gw:  # not the developer's HOME
        yield gw
    assert harness.wait_no_tagged(tag) == []
    assert harness.count_events(shared_logs["tools"], "call", method="tools/call") == 0
    assert harness.read_log(shared_logs["vault"]) == []


# --- identity fails closed ----------------------------------------------------------------------

BAD_AGENT_IDS = ["stranger", "", " ", "dev ", " dev", "DEV", "Dev", "d\u0435v", "\uff44\uff45\uff56", "dev\u200b",
                 "dev\n", "dev\x00", "dev;admin", "../admin", "admin/..", "*", "adm*", "dev,admin", "dev admin",
                 "a" * 500]
BAD_AGENT_IDS_NAMES = ["unknown", "empty", "a space", "trailing space", "leading space", "upper case", "capitalised",
                       "Cyrillic e", "fullwidth letters", "zero-width space", "newline", "NUL", "semicolon",
                       "dot-dot path", "path suffix", "star", "prefix star", "comma list", "inner space", "500 chars"]


@pytest.mark.parametrize("agent_id", BAD_AGENT_IDS, ids=BAD_AGENT_IDS_NAMES)
def test_an_agent_id_not_exactly_in_the_rules_gets_nothing_from_any_tool(shared, shared_logs, agent_id):
    for name, arguments in [("list_servers", {}), ("get_server_tools", {"server": "tools"}),
                            ("execute_tool", {"server": "tools", "tool": "echo", "args": {"text": "x"}})]:
        error = error_of(shared.call_tool(name, {"agent_id": agent_id, **arguments}))
        assert error["code"] == INVALID_AGENT_ID, (name, error)
    assert harness.count_events(shared_logs["tools"], "call", method="tools/call") == 0


def test_a_bad_agent_id_never_falls_back_to_the_default_agent(shared):
    assert shared.call_json("list_servers", {})["servers"][0]["name"] == "tools"  # the default may
    assert error_of(shared.call_tool("list_servers", {"agent_id": "nobody"}))["code"] == INVALID_AGENT_ID


def test_a_fallback_agent_missing_from_the_rules_gets_nothing(config_dir, servers):
    config_dir.write(servers, RULES)
    with config_dir.gateway(env={"GATEWAY_DEFAULT_AGENT": "ghost"}) as gw:
        assert error_of(gw.call_tool("list_servers", {}))["code"] == FALLBACK_AGENT_NOT_IN_RULES
        assert error_of(execute(gw, "tools", "echo", {"text": "x"}))["code"] == FALLBACK_AGENT_NOT_IN_RULES


def test_without_any_fallback_an_omitted_agent_id_gets_nothing(config_dir, servers):
    config_dir.write(servers, {"agents": {"admin": {"allow": {"servers": ["*"]}}}})
    with config_dir.gateway() as gw:
        assert error_of(gw.call_tool("list_servers", {}))["code"] == NO_FALLBACK_CONFIGURED


def test_client_info_is_never_taken_as_identity(config_dir, servers):
    config_dir.write(servers, RULES)
    with config_dir.raw_gateway() as raw:
        raw.request("initialize", {"protocolVersion": harness.LATEST_PROTOCOL_VERSION, "capabilities": {},
                                   "clientInfo": {"name": "admin", "version": "1"}}, id=0)
        raw.notify("notifications/initialized")
        listing = raw.request("tools/call", {"name": "list_servers", "arguments": {}})
    assert [s["name"] for s in listing["result"]["structuredContent"]["servers"]] == ["tools"]  # default's view


# --- names never widen access ---------------------------------------------------------------------


def test_pattern_characters_in_tool_names_match_only_literally_in_listings(shared):
    listing = shared.call_json("get_server_tools", {"agent_id": "narrow", "server": "tools"})
    assert sorted(t["name"] for t in listing["tools"]) == ["a?b", "echo"]  # not "axb", not "get*" or "x[1]"
    dev = {t["name"] for t in shared.call_json("get_server_tools", {"agent_id": "dev", "server": "tools"})["tools"]}
    assert {"get*", "a?b", "x[1]", "../up", "with space"} <= dev  # odd names are ordinary names


@pytest.mark.parametrize("tool", ["*", "e*", "*o", "ech?", "[e]cho", "echo*", "get*", "x[1]", "../up", "with space",
                                  "a?", "?", "a*b"])
def test_a_requested_tool_name_with_pattern_characters_is_never_a_pattern(shared, shared_logs, tool):
    error = error_of(execute(shared, "tools", tool, {"text": "x"}, agent_id="narrow"))
    assert error["code"] == DENIED_BY_POLICY
    assert harness.count_events(shared_logs["tools"], "call", method="tools/call") == 0


def test_a_tool_with_pattern_characters_in_its_name_is_callable_when_allowed_by_that_exact_name(gateway):
    result = execute(gateway, "tools", "a?b", {"text": "literal"}, agent_id="narrow")
    assert harness.result_text(result) == "literal"


@pytest.mark.parametrize("server", ["*", "tool*", "*s", "t?ols", "[t]ools", "tools/..", "../vault", "vault/../tools",
                                    "tools ", " tools", "TOOLS", "tools\n", "tools\x00", "t\u043eols", "vault"])
def test_a_server_name_with_pattern_or_path_characters_reaches_no_other_server(shared, shared_logs, server):
    for name, arguments in [("get_server_tools", {"server": server}),
                            ("execute_tool", {"server": server, "tool": "echo", "args": {"text": "x"}})]:
        if (name, server) == ("get_server_tools", "*"):  # asks for a search of the servers dev may use
            listing = shared.call_json(name, {"agent_id": "dev", **arguments})
            assert {tool["server"] for tool in listing["tools"]} == {"tools"}
            continue
        error = error_of(shared.call_tool(name, {"agent_id": "dev", **arguments}))
        assert (error["code"], error["rule"]) == (DENIED_BY_POLICY, "default-deny"), (name, error)
    assert harness.read_log(shared_logs["vault"]) == []
    servers = shared.call_json("list_servers", {"agent_id": "dev"})["servers"]
    assert [s["name"] for s in servers] == ["tools"]


def test_an_undefined_server_is_server_unavailable_exactly_to_agents_whose_rules_allow_its_name(shared):
    calls = [("get_server_tools", {"server": "ghost"}),
             ("execute_tool", {"server": "ghost", "tool": "echo", "args": {"text": "x"}})]
    for name, arguments in calls:
        error = error_of(shared.call_tool(name, {"agent_id": "admin", **arguments}))  # admin may use any name
        assert error["code"] == SERVER_UNAVAILABLE, (name, error)
        # To an agent that may not use the name, an undefined server looks exactly like a
        # defined one it may not use: the answer tells it nothing about what exists.
        undefined = error_of(shared.call_tool(name, {"agent_id": "dev", **arguments}))
        defined = error_of(shared.call_tool(name, {"agent_id": "dev", **arguments, "server": "vault"}))
        assert undefined == {**defined, "message": defined["message"].replace("'vault'", "'ghost'")}
        assert (undefined["code"], undefined["rule"]) == (DENIED_BY_POLICY, "default-deny")


DENIED_SPELLINGS = ["crash", "Crash", "CRASH", "crash ", " crash", "crash\n", "crash\t", "crash\x00", "cr\u0430sh",
                    "\uff43\uff52\uff41\uff53\uff48", "crash\u200b", "./crash", "tools/crash", "tools.crash", "crash*",
                    "cra*", "*", "*sh", "spawn_grandchild", "Spawn_grandchild", "spawn_grandchild ", "spawn_*"]


def test_a_denied_tool_is_invisible_in_every_listing(shared):
    for arguments in [{}, {"pattern": "*"}, {"pattern": "cr*"}, {"pattern": "*sh"}, {"names": "crash,spawn_grandchild"},
                      {"names": ",".join(DENIED_SPELLINGS)}]:
        listing = shared.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", **arguments})
        names = {t["name"] for t in listing["tools"]}
        assert not names & {"crash", "spawn_grandchild"}, arguments
        assert listing["total_available"] == len(RULES_TOOLS_ALLOWED_TO_DEV)


RULES_TOOLS_ALLOWED_TO_DEV = ["echo", "add", "image", "audio", "resource", "fail", "sleep", "rpc_error",
                              "huge", "counter", "env", "get*", "a?b", "x[1]", "../up", "with space"]


@pytest.mark.parametrize("tool", DENIED_SPELLINGS, ids=[repr(s) for s in DENIED_SPELLINGS])
def test_a_denied_tool_is_refused_under_every_spelling_and_never_reaches_the_server(shared, shared_logs, tool):
    error = error_of(execute(shared, "tools", tool, {}, agent_id="dev"))
    assert error["code"] in (DENIED_BY_POLICY, TOOL_NOT_FOUND)
    assert harness.count_events(shared_logs["tools"], "call", method="tools/call") == 0
    assert harness.wait_no_tagged(shared_logs["tag"]) == []  # in particular, no grandchild was spawned


# --- get_gateway_status only in debug mode --------------------------------------------------------------


# Every other spelling that leaves debug mode off ("0", "no", "off", "", any case) is a unit
# test of the settings parser: tests/test_settings.py.
@pytest.mark.parametrize("debug", [None, "false"], ids=["unset", "false"])
def test_get_gateway_status_does_not_exist_without_debug_mode(config_dir, servers, debug):
    config_dir.write(servers, RULES)
    with config_dir.raw_gateway(env=None if debug is None else {"GATEWAY_DEBUG": debug}) as raw:
        raw.initialize(announce=False)  # only the gateway's own answers: no SDK import to wait for at the exit
        tools = raw.request("tools/list", {})["result"]["tools"]
        assert "get_gateway_status" not in [t["name"] for t in tools]
        for agent in ("admin", "dev", None):
            arguments = {} if agent is None else {"agent_id": agent}
            answer = raw.request("tools/call", {"name": "get_gateway_status", "arguments": arguments})
            assert answer["error"]["code"] == INVALID_PARAMS


def test_get_gateway_status_exists_with_debug_mode(config_dir, servers):
    # The --debug flag's gateway is test_gateway_tools.py::test_debug_mode_adds_get_gateway_status;
    # that the flag and every true word turn it on is tests/test_settings.py.
    config_dir.write(servers, RULES)
    with config_dir.gateway(env={"GATEWAY_DEBUG": "true"}) as gw:
        assert "get_gateway_status" in [t.name for t in gw.list_tools()]
        assert gw.call_json("get_gateway_status", {"agent_id": "admin"})["available_servers"]


# --- no secret leaves -------------------------------------------------------------------------------

SECRETS = {
    "SECRET_ENV": "env-value-7f3a91",
    "SECRET_URL": "url-value-2b8c44",
    "SECRET_HOST": "host-value-5d0e19",
    "SECRET_HEADER": "header-value-9c6b27",
    "SECRET_CMD": "cmd-value-4e1f63",
}
ARGUMENT_VALUE = "argument-value-81d2f0"
ATTEMPTED_ID = "attempted-id-4c19e7"


def test_no_env_header_or_variable_value_reaches_responses_logs_audit_or_status(config_dir, tag):
    audit = config_dir.path("audit.jsonl")
    with harness.http_process(harness.BAD_HTTP_SERVER, tag, "--mode", "500") as (url, _):
        config_dir.write({
            "tools": harness.fault_server(tag, env={"API_TOKEN": "${SECRET_ENV}", "PLAIN": "plain-env-value-33a0"}),
            "web": harness.http_server(url + "?key=${SECRET_URL}",
                                       headers={"Authorization": "Bearer ${SECRET_HEADER}", "X-Plain": "plain-header-value-5e"}),
            "remote": harness.http_server("http://${SECRET_HOST}.invalid/mcp/${SECRET_URL}"),
            "cmd": {"command": "/nonexistent/${SECRET_CMD}/server", "args": ["--token", "${SECRET_CMD}"]},
            "unset": {"command": "${NEVER_SET_VARIABLE}"},
        }, {"agents": {"admin": {"allow": {"servers": ["*"]}}}})
        with config_dir.raw_gateway("--debug", "--log-level", "DEBUG", "--audit-log", str(audit), env=SECRETS) as raw:
            raw.initialize()

            def call(name, arguments):
                return raw.request("tools/call", {"name": name, "arguments": {"agent_id": "admin", **arguments}},
                                   timeout=60)

            call("list_servers", {"include_metadata": True})
            call("get_server_tools", {"server": "tools"})
            for server in ("tools", "web", "remote", "cmd", "unset"):
                call("execute_tool", {"server": server, "tool": "echo", "args": {"text": "x"}, "timeout_ms": 5000})
            call("execute_tool", {"server": "tools", "tool": "add", "args": {"a": ARGUMENT_VALUE, "b": 1}})
            call("execute_tool", {"server": "tools", "tool": "nope", "args": {"token": ARGUMENT_VALUE}})
            call("get_gateway_status", {})
            # A refused id is quoted back to the caller and audited as the attempted id; never logged.
            call("list_servers", {"agent_id": ATTEMPTED_ID})
        stdout, stderr = raw.all_stdout_bytes().decode(), raw.stderr_text()
    audit_text = audit.read_text(encoding="utf-8")
    places = {"responses": stdout, "stderr": stderr, "audit": audit_text}
    for where, text in places.items():
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked into {where}"
        for value in ("plain-env-value-33a0", "plain-header-value-5e"):
            assert value not in text, f"{value} leaked into {where}"
    assert ARGUMENT_VALUE not in stderr and ATTEMPTED_ID not in stderr
    assert ARGUMENT_VALUE not in audit_text
    status = [json.loads(line) for line in stdout.splitlines() if "config_paths" in line]
    assert status, "get_gateway_status was answered"
    listing = next(json.loads(line) for line in stdout.splitlines() if '"transport"' in line)
    shown = {s["name"]: s for s in listing["result"]["structuredContent"]["servers"]}
    assert shown["web"]["url"].endswith("?key=${SECRET_URL}")  # as written, not substituted
    assert shown["cmd"]["command"] == "/nonexistent/${SECRET_CMD}/server"


MINIMAL_ENVIRONMENT = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}


def _environ_names(pid: int) -> set[str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return {entry.split(b"=", 1)[0].decode() for entry in raw.split(b"\0") if entry}


def test_a_child_sees_only_the_minimal_environment_plus_its_own_env(config_dir, tag):
    log = config_dir.path("tools.log")
    config_dir.write({"tools": harness.fault_server(tag, log=log, env={"OWN_SETTING": "own-value"})},
                     {"agents": {"dev": {"allow": {"servers": ["tools"]}}}})
    leaky = {"GATEWAY_CANARY": "must-not-pass", "AWS_SECRET_ACCESS_KEY": "must-not-pass", "PYTHONPATH": "/must/not"}
    with config_dir.raw_gateway(env=leaky) as raw:
        raw.initialize()
        raw.send({"jsonrpc": "2.0", "id": "sleep", "method": "tools/call", "params": {"name": "execute_tool",
                  "arguments": {"agent_id": "dev", "server": "tools", "tool": "sleep", "args": {"seconds": 2}}}})
        assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=30)
        children = harness.descendants(raw.pid)
        assert children
        names = _environ_names(children[0])
        own = raw.request("tools/call", {"name": "execute_tool", "arguments": {
            "agent_id": "dev", "server": "tools", "tool": "env", "args": {"name": "OWN_SETTING"}}}, timeout=30)
        canary = raw.request("tools/call", {"name": "execute_tool", "arguments": {
            "agent_id": "dev", "server": "tools", "tool": "env", "args": {"name": "GATEWAY_CANARY"}}}, timeout=30)
        raw.response_for("sleep", timeout=30)
    assert names <= MINIMAL_ENVIRONMENT | {"OWN_SETTING", PARENT_CONFIGS_ENV}, names - MINIMAL_ENVIRONMENT
    assert "OWN_SETTING" in names
    assert own["result"]["content"][0]["text"] == "own-value"
    assert canary["result"]["content"][0]["text"] == "<unset>"
    assert "must-not-pass" not in os.environ.get("GATEWAY_CANARY", "")  # the test's own env was not the source


# --- a pinned gateway -------------------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["flag", "environment"])
def test_a_pinned_gateway_acts_as_its_agent_and_refuses_every_other_id(config_dir, servers, logs, pin):
    config_dir.write(servers, RULES)
    args, env = (("--agent", "narrow"), {}) if pin == "flag" else ((), {"GATEWAY_AGENT": "narrow"})
    env["GATEWAY_DEFAULT_AGENT"] = "admin"  # the pin wins over the fallback too
    with config_dir.gateway(*args, env=env) as gw:
        listing = gw.call_json("get_server_tools", {"server": "tools"})
        assert sorted(t["name"] for t in listing["tools"]) == ["a?b", "echo"]
        assert gw.call_json("list_servers", {"agent_id": "narrow"})["servers"] == [{"name": "tools", "description": ""}]
        for other in ("admin", "dev", "default", "NARROW", "narrow ", "", "*"):
            for name, arguments in [("list_servers", {}), ("get_server_tools", {"server": "tools"}),
                                    ("execute_tool", {"server": "vault", "tool": "echo", "args": {"text": "x"}})]:
                error = error_of(gw.call_tool(name, {"agent_id": other, **arguments}))
                assert error["code"] == INVALID_AGENT_ID, (other, name)
        assert error_of(execute(gw, "vault", "echo", {"text": "x"}))["code"] == DENIED_BY_POLICY
    assert harness.read_log(logs["vault"]) == []


def test_a_gateway_pinned_to_an_agent_missing_from_the_rules_refuses_everything(config_dir, servers):
    config_dir.write(servers, RULES)
    with config_dir.gateway("--agent", "ghost") as gw:
        for arguments in ({}, {"agent_id": "ghost"}, {"agent_id": "admin"}):
            assert error_of(gw.call_tool("list_servers", arguments))["code"] == INVALID_AGENT_ID
