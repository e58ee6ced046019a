"""Loading, validating and swapping the two config files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway_lib import config, locate, policy, schema_check
from gateway_lib import store as config_store
from gateway_lib.errors import ConfigError, Problem
from gateway_lib.model import HTTP, KEEP_ALIVE, PER_CALL, SSE, STDIO, ServersConfig

# ============================================================================ helpers


def write(tmp_path: Path, name: str, content: str | dict | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content, indent=2), encoding="utf-8")
    return path


def servers_file(tmp_path: Path, servers: dict, **top_level) -> Path:
    return write(tmp_path, ".mcp.json", {"mcpServers": servers, **top_level})


def rules_file(tmp_path: Path, agents: dict, **top_level) -> Path:
    return write(tmp_path, ".mcp-gateway-rules.json", {"agents": agents, **top_level})


def problems_of(load, path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    return caught.value.problems


def load_servers(path: Path | str, environ: dict | None = None):
    return config.load_servers(str(path), environ or {})


def own_env(spec) -> dict:
    """The env a server entry gives its process, without the gateway's recursion marker."""
    return {key: value for key, value in spec.env.items() if key != config.PARENT_CONFIGS_ENV}


# ============================================================================ servers

CLAUDE_CODE_CONFIG = {
    "mcpServers": {
        "brave-search": {
            "type": "stdio",
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-brave-search"],
            "env": {"BRAVE_API_KEY": "${BRAVE_API_KEY}"},
        },
        "remote": {
            "type": "http",
            "url": "https://example.com/mcp",
            "headers": {"Authorization": "Bearer ${API_TOKEN}"},
            "alwaysAllow": ["x"],  # a key only some clients write
        },
    },
    "someClientSetting": True,
}


def test_a_claude_code_mcp_json_loads_unchanged(tmp_path):
    path = write(tmp_path, ".mcp.json", CLAUDE_CODE_CONFIG)
    loaded = load_servers(path, {"BRAVE_API_KEY": "k1", "API_TOKEN": "t1"})
    brave, remote = loaded.servers["brave-search"], loaded.servers["remote"]
    assert loaded.path == str(path)
    assert (brave.transport, brave.command) == (STDIO, "npx")
    assert brave.args == ("-y", "@modelcontextprotocol/server-brave-search")
    assert own_env(brave) == {"BRAVE_API_KEY": "k1"}
    assert (remote.transport, remote.url) == (HTTP, "https://example.com/mcp")
    assert dict(remote.headers) == {"Authorization": "Bearer t1"}
    assert brave.description == "" and brave.unusable is None and remote.unusable is None


def test_server_options_are_carried_over(tmp_path):
    path = servers_file(tmp_path, {"s": {
        "command": "x", "description": "Does things", "timeout_ms": 5000,
        "max_concurrency": 2, "session": "keep-alive", "idle_timeout_ms": 1000,
    }})
    spec = load_servers(path).servers["s"]
    assert (spec.description, spec.timeout_ms, spec.max_concurrency) == ("Does things", 5000, 2)
    assert (spec.session, spec.idle_timeout_ms) == (KEEP_ALIVE, 1000)


def test_server_options_have_defaults(tmp_path):
    spec = load_servers(servers_file(tmp_path, {"s": {"command": "x"}})).servers["s"]
    assert (spec.session, spec.timeout_ms, spec.max_concurrency) == (PER_CALL, None, None)
    assert spec.cwd is None and spec.args == () and own_env(spec) == {}


@pytest.mark.parametrize(
    "entry, transport",
    [
        pytest.param({"command": "x"}, STDIO, id="command without a transport is stdio"),
        pytest.param({"url": "http://h"}, HTTP, id="url without a transport is http"),
        pytest.param({"url": "http://h", "transport": "sse"}, SSE, id="transport key is read"),
        pytest.param({"url": "http://h", "type": "sse"}, SSE, id="type key is read"),
        pytest.param({"url": "http://h", "type": "streamable-http"}, HTTP,
                     id="streamable-http is a synonym of http"),
        pytest.param({"url": "http://h", "type": "http", "transport": "streamable-http"}, HTTP,
                     id="type and transport agree through the synonym"),
        pytest.param({"command": "x", "type": "stdio", "transport": "stdio"}, STDIO,
                     id="type and transport may both be given when equal"),
    ],
)
def test_transport_is_resolved(tmp_path, entry, transport):
    assert load_servers(servers_file(tmp_path, {"s": entry})).servers["s"].transport == transport


def test_loaded_servers_are_immutable(tmp_path):
    path = write(tmp_path, ".mcp.json", CLAUDE_CODE_CONFIG)
    loaded = load_servers(path, {"BRAVE_API_KEY": "k", "API_TOKEN": "t"})
    assert isinstance(loaded.servers, MappingProxyType)
    assert isinstance(loaded.servers["brave-search"].env, MappingProxyType)
    assert isinstance(loaded.servers["remote"].headers, MappingProxyType)
    assert isinstance(loaded.servers["brave-search"].args, tuple)
    with pytest.raises(TypeError):
        loaded.servers["brave-search"].env["X"] = "y"  # type: ignore[index]


def test_env_and_header_values_stay_out_of_repr(tmp_path):
    path = write(tmp_path, ".mcp.json", CLAUDE_CODE_CONFIG)
    loaded = load_servers(path, {"BRAVE_API_KEY": "sekrit-1", "API_TOKEN": "sekrit-2"})
    assert "sekrit" not in repr(loaded)


# ----------------------------------------------------------------------------- substitution


def test_variables_are_substituted_in_every_substitutable_field(tmp_path):
    path = servers_file(tmp_path, {
        "local": {"command": "${BIN}", "args": ["--db", "${DB}", "x${DB}y"],
                  "env": {"TOKEN": "${TOKEN}"}},
        "remote": {"url": "https://${HOST}/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
    })
    environ = {"BIN": "uvx", "DB": "main", "TOKEN": "t0k", "HOST": "h.example"}
    loaded = load_servers(path, environ)
    local, remote = loaded.servers["local"], loaded.servers["remote"]
    assert local.command == "uvx" and local.args == ("--db", "main", "xmainy")
    assert own_env(local) == {"TOKEN": "t0k"}
    assert remote.url == "https://h.example/mcp"
    assert dict(remote.headers) == {"Authorization": "Bearer t0k"}


@pytest.mark.parametrize(
    "environ, expected",
    [
        pytest.param({}, "fallback", id="an unset variable takes the default"),
        pytest.param({"V": ""}, "fallback", id="an empty variable takes the default"),
        pytest.param({"V": "given"}, "given", id="a set variable wins over the default"),
    ],
)
def test_variable_defaults(tmp_path, environ, expected):
    path = servers_file(tmp_path, {"s": {"command": "run", "args": ["${V:-fallback}"]}})
    spec = load_servers(path, environ).servers["s"]
    assert spec.args == (expected,) and spec.unusable is None


def test_a_set_but_empty_variable_without_default_is_used_as_is(tmp_path):
    path = servers_file(tmp_path, {"s": {"command": "run", "args": ["a${V}b"]}})
    spec = load_servers(path, {"V": ""}).servers["s"]
    assert spec.args == ("ab",) and spec.unusable is None


def test_text_that_is_not_a_variable_reference_is_left_alone(tmp_path):
    path = servers_file(tmp_path, {"s": {"command": "run", "args": ["$V", "${1X}", "${", "{V}"]}})
    spec = load_servers(path, {"V": "no"}).servers["s"]
    assert spec.args == ("$V", "${1X}", "${", "{V}")


def test_an_unset_variable_makes_only_that_server_unusable(tmp_path):
    path = servers_file(tmp_path, {
        "needs-token": {"url": "https://h/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"},
                        "description": "d"},
        "fine": {"command": "run", "env": {"KEY": "${KEY}"}},
    })
    loaded = load_servers(path, {"KEY": "super-secret-value"})
    broken = loaded.servers["needs-token"]
    assert broken.unusable == (
        "Server 'needs-token' needs environment variable 'TOKEN', which is not set"
    )
    assert broken.description == "d"
    assert loaded.servers["fine"].unusable is None
    assert "super-secret-value" not in broken.unusable


def test_several_unset_variables_are_all_named(tmp_path):
    path = servers_file(tmp_path, {"s": {"command": "${A}", "env": {"X": "${B}", "Y": "${A}"}}})
    spec = load_servers(path, {}).servers["s"]
    assert spec.unusable == "Server 's' needs environment variables 'A' and 'B', which are not set"


# ----------------------------------------------------------------------------- cwd


def test_a_relative_cwd_is_relative_to_the_config_file(tmp_path, monkeypatch):
    config_dir = tmp_path / "project"
    config_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = servers_file(config_dir, {"s": {"command": "x", "cwd": "tools/../server"}})
    monkeypatch.chdir(elsewhere)
    spec = load_servers(path).servers["s"]
    assert spec.cwd == str(config_dir / "server")


def test_a_relative_cwd_works_with_a_relative_config_path(tmp_path, monkeypatch):
    servers_file(tmp_path, {"s": {"command": "x", "cwd": "srv"}})
    monkeypatch.chdir(tmp_path)
    assert load_servers(".mcp.json").servers["s"].cwd == str(tmp_path / "srv")


def test_an_absolute_cwd_is_kept(tmp_path):
    absolute = str(tmp_path / "abs")
    spec = load_servers(servers_file(tmp_path, {"s": {"command": "x", "cwd": absolute}}))
    assert spec.servers["s"].cwd == absolute


# ============================================================================ rules


EXAMPLE_RULES = {
    "agents": {
        "researcher": {"allow": {"servers": ["brave-search"], "tools": {"brave-search": ["*"]}}},
        "backend": {
            "allow": {"servers": ["postgres"], "tools": {"postgres": ["query", "list_*"]}},
            "deny": {"tools": {"postgres": ["drop_*", "truncate_*"]}},
        },
        "admin": {"allow": {"servers": ["*"], "tools": {"*": ["*"]}}},
        "default": {"deny": {"servers": ["*"]}},
        "team.db-1_x": {},
    },
    "defaults": {"deny_on_missing_agent": True},
}


def test_rules_load_into_frozen_agent_rules(tmp_path):
    path = write(tmp_path, "rules.json", EXAMPLE_RULES)
    rules = config.load_rules(str(path))
    backend = rules.agents["backend"]
    assert rules.path == str(path) and rules.deny_on_missing_agent is True
    assert backend.allow_servers == ("postgres",) and backend.deny_servers == ()
    assert dict(backend.allow_tools) == {"postgres": ("query", "list_*")}
    assert dict(backend.deny_tools) == {"postgres": ("drop_*", "truncate_*")}
    assert rules.agents["default"].deny_servers == ("*",)
    assert isinstance(rules.agents, MappingProxyType)
    assert isinstance(backend.allow_tools, MappingProxyType)
    with pytest.raises(TypeError):
        rules.agents["x"] = backend  # type: ignore[index]


def test_loaded_rules_drive_decisions(tmp_path):
    rules = config.load_rules(str(write(tmp_path, "rules.json", EXAMPLE_RULES)))
    assert policy.decide_tool(rules, "backend", "postgres", "list_tables").allowed
    assert not policy.decide_tool(rules, "backend", "postgres", "drop_users").allowed
    assert not policy.decide_server(rules, "default", "postgres").allowed


def test_deny_on_missing_agent_defaults_to_false(tmp_path):
    rules = config.load_rules(str(rules_file(tmp_path, {"a": {}})))
    assert rules.deny_on_missing_agent is False


def test_a_schema_reference_is_tolerated_in_the_rules(tmp_path):
    path = rules_file(tmp_path, {"a": {}}, **{"$schema": "./gateway-rules.schema.json"})
    assert list(config.load_rules(str(path)).agents) == ["a"]


# ============================================================================ broken files

BROKEN_SERVERS = [
    pytest.param('{\n  "mcpServers": {\n    "a": {"command": "x",}\n  }\n}',
                 "$", 3, "not valid JSON", id="bad JSON is reported with its line"),
    pytest.param("", "$", None, "file is empty", id="an empty file"),
    pytest.param(" \n\t\n", "$", None, "file is empty", id="a whitespace-only file"),
    pytest.param('{"mcpServers": {\n"a": {"command": "x"', "$", 2, "not valid JSON",
                 id="a truncated file"),
    pytest.param(b"\xef\xbb\xbf", "$", None, "file is empty", id="a file holding only a BOM"),
    pytest.param(b'{"mcpServers": {"a": {"command": "\xff"}}}', "$", None, "not valid UTF-8",
                 id="bytes that are not UTF-8"),
    pytest.param('[1, 2]', "$", 1, "must be an object, not an array",
                 id="a top level that is not an object"),
    pytest.param('{\n  "servers": {}\n}', "$.mcpServers", 1, "missing required key 'mcpServers'",
                 id="mcpServers is missing"),
    pytest.param('{\n  "mcpServers": {\n    "db": {\n      "command": 5\n    }\n  }\n}',
                 "$.mcpServers.db.command", 4, "must be a string, not a whole number",
                 id="a wrong type is reported with its JSON path and line"),
    pytest.param('{"mcpServers": {"db": {"command": "x",\n "args": ["a", 3]}}}',
                 "$.mcpServers.db.args[1]", 2, "must be a string",
                 id="a wrong type inside a list names the index"),
    pytest.param('{"mcpServers": {"db": {"command": "x",\n "timeout_ms": 0}}}',
                 "$.mcpServers.db.timeout_ms", 2, "must be at least 1, not 0",
                 id="a timeout below one millisecond"),
    pytest.param('{"mcpServers": {"db": {"command": "x", "idle_timeout_ms": 999}}}',
                 "$.mcpServers.db.idle_timeout_ms", 1, "must be at least 1000",
                 id="an idle timeout below one second"),
    pytest.param('{"mcpServers": {"db": {"command": "x", "session": "forever"}}}',
                 "$.mcpServers.db.session", 1, "'forever' is not allowed here: use one of",
                 id="an unknown session mode"),
    pytest.param('{"mcpServers": {"db": {"url": "http://h", "type": "grpc"}}}',
                 "$.mcpServers.db.type", 1, "'grpc' is not allowed here",
                 id="an unknown transport"),
    pytest.param('{"mcpServers": {"db": {"command": "x", "max_concurrency": 1.5}}}',
                 "$.mcpServers.db.max_concurrency", 1, "must be a whole number, not a number",
                 id="a fractional concurrency"),
    pytest.param('{"mcpServers": {\n"db": {"command": "x", "url": "http://h"}}}',
                 "$.mcpServers.db", 2, "has both 'command' and 'url'",
                 id="command and url together"),
    pytest.param('{"mcpServers": {"db": {"args": []}}}', "$.mcpServers.db", 1,
                 "needs 'command' for a local (stdio) server or 'url'",
                 id="neither command nor url"),
    pytest.param('{"mcpServers": {"db": {"command": "x", "type": "stdio", "transport": "sse"}}}',
                 "$.mcpServers.db", 1, "'type' is 'stdio' but 'transport' is 'sse'",
                 id="type and transport disagree"),
    pytest.param('{"mcpServers": {"db": {"url": "http://h", "type": "stdio"}}}',
                 "$.mcpServers.db", 1, "transport 'stdio' needs 'command'",
                 id="a stdio server with only a url"),
    pytest.param('{"mcpServers": {"db": {"command": "x", "transport": "sse"}}}',
                 "$.mcpServers.db", 1, "transport 'sse' needs 'url'",
                 id="an sse server with only a command"),
    pytest.param('{"mcpServers": {"db": {"command": ""}}}', "$.mcpServers.db.command", 1,
                 "must not be empty", id="an empty command"),
    pytest.param('{"mcpServers": {\n  "db": {"command": "a"},\n  "db": {"command": "b"}\n}}',
                 "$.mcpServers.db", 3, "appears more than once",
                 id="a duplicate server name"),
    pytest.param('{"mcpServers": {"db": {"command": "a",\n "command": "b"}}}',
                 "$.mcpServers.db.command", 2, "appears more than once",
                 id="a duplicate key inside a server"),
    pytest.param('{"mcpServers": {"odd.name": {"command": 1}}}',
                 "$.mcpServers['odd.name'].command", 1, "must be a string",
                 id="a name with a dot is quoted in the path"),
    pytest.param('{"mcpServers": {\n"\\ud800": {"command": "x"}}}', r"$.mcpServers['\ud800']", 2,
                 "lone surrogate", id="a lone surrogate in a server name"),
    pytest.param('{"mcpServers": {"db": {"command": "x", "args": ["\\udc00"]}}}', "$.mcpServers.db.args[0]", 1,
                 "lone surrogate", id="a lone surrogate in an argument"),
    pytest.param('{"mcpServers": {"db": {"command": "x",\n "timeout_ms": ' + "9" * 5000 + '}}}', "$", 2,
                 "thousands of digits", id="a 5,000-digit integer is a problem line, not a traceback"),
    pytest.param('{"mcpServers": {"db": {"url": "ftp://files.example.com/mcp"}}}', "$.mcpServers.db.url", 1,
                 "must be an http:// or https:// URL", id="a url that is not http(s)"),
    pytest.param('{"mcpServers": {"db": {"url": "mcp.example.com/mcp"}}}', "$.mcpServers.db.url", 1,
                 "must be an http:// or https:// URL", id="a url without a scheme"),
]


@pytest.mark.parametrize("content, json_path, line, fragment", BROKEN_SERVERS)
def test_broken_servers_files(tmp_path, content, json_path, line, fragment):
    path = write(tmp_path, ".mcp.json", content)
    problems = problems_of(lambda p: config.load_servers(p, {}), path)
    matching = [p for p in problems if p.path == json_path and fragment in p.message]
    assert matching, problems
    assert matching[0].line == line
    assert matching[0].file == str(path)


BROKEN_RULES = [
    pytest.param('{"agents": {\n  "a b": {}\n}}', "$.agents['a b']", 2,
                 "agent id 'a b' may contain only letters, digits, '_', '.', '-'",
                 id="an agent id with a space"),
    pytest.param('{"agents": {"ok\\n": {}}}', "$.agents['ok\\n']", 1,
                 "agent id 'ok\\n' may contain only",
                 id="an agent id with a trailing newline"),
    pytest.param('{"agents": {"\u0430dmin": {}}}', "$.agents['\u0430dmin']", 1,
                 "may contain only letters", id="an agent id with a Cyrillic letter"),
    pytest.param('{"agents": {"": {}}}', "$.agents['']", 1, "may contain only letters",
                 id="an empty agent id"),
    pytest.param('{"agents": {"x": {"allow": {\n"servers": ["a*b"]}}}}',
                 "$.agents.x.allow.servers[0]", 2,
                 "pattern 'a*b' is not allowed: use '*', 'prefix*', '*suffix' or an exact name",
                 id="a star in the middle of a server pattern"),
    pytest.param('{"agents": {"x": {"deny": {"tools": {"pg": ["q",\n "*a*"]}}}}}',
                 "$.agents.x.deny.tools.pg[1]", 2, "pattern '*a*' is not allowed",
                 id="stars at both ends of a tool pattern"),
    pytest.param('{"agents": {"x": {"allow": {"servers": [""]}}}}',
                 "$.agents.x.allow.servers[0]", 1, "pattern '' is not allowed",
                 id="an empty pattern"),
    pytest.param('{"agents": {"x": {"allow": {"tools": {"pg*": ["q"]}}}}}',
                 "$.agents.x.allow.tools['pg*']", 1, "tools key 'pg*' is not allowed",
                 id="a wildcard server key under tools"),
    pytest.param('{"agents": {"x": {"deny": {"tools": {"": ["q"]}}}}}',
                 "$.agents.x.deny.tools['']", 1, "tools key '' is not allowed",
                 id="an empty server key under tools"),
    pytest.param('{"agents": {"x": {\n"alow": {"servers": ["*"]}}}}', "$.agents.x.alow", 2,
                 "unknown key 'alow': allowed keys here are 'allow', 'deny', 'rate_limit', 'token_sha256' (did you mean 'allow'?)",
                 id="a misspelt allow"),
    pytest.param('{"agents": {"x": {"allow": {"server": ["*"]}}}}',
                 "$.agents.x.allow.server", 1, "did you mean 'servers'?",
                 id="a misspelt servers"),
    pytest.param('{"agents": {}, "default": {}}', "$.default", 1, "unknown key 'default'",
                 id="an unknown top-level key"),
    pytest.param('{"agents": {}, "defaults": {"deny_on_missing": true}}',
                 "$.defaults.deny_on_missing", 1, "did you mean 'deny_on_missing_agent'?",
                 id="a misspelt default"),
    pytest.param('{"agents": {}, "defaults": {"deny_on_missing_agent": "yes"}}',
                 "$.defaults.deny_on_missing_agent", 1, "must be true or false, not a string",
                 id="a default that is not a boolean"),
    pytest.param('{"agents": {"x": {"allow": {"servers": "pg"}}}}',
                 "$.agents.x.allow.servers", 1, "must be an array, not a string",
                 id="servers given as a string"),
    pytest.param('{"defaults": {}}', "$.agents", 1, "missing required key 'agents'",
                 id="agents is missing"),
    pytest.param('{"agents": {"x": {},\n "x": {"allow": {"servers": ["*"]}}}}',
                 "$.agents.x", 2, "appears more than once", id="a duplicate agent"),
]


@pytest.mark.parametrize("content, json_path, line, fragment", BROKEN_RULES)
def test_broken_rules_files(tmp_path, content, json_path, line, fragment):
    path = write(tmp_path, "rules.json", content)
    problems = problems_of(config.load_rules, path)
    matching = [p for p in problems if p.path == json_path and fragment in p.message]
    assert matching, problems
    assert matching[0].line == line


def test_a_missing_file_is_a_problem(tmp_path):
    problems = problems_of(config.load_rules, tmp_path / "nope.json")
    assert [p.message for p in problems] == ["file not found"]


def test_every_problem_is_reported_once_and_in_line_order(tmp_path):
    path = write(tmp_path, "rules.json", (
        '{"agents": {\n'
        '  "bad id": {},\n'
        '  "x": {"allow": {"servers": ["a*b"]}},\n'
        '  "y": {"alow": {}}\n'
        '}}'
    ))
    problems = problems_of(config.load_rules, path)
    assert [(p.line, p.path) for p in problems] == [
        (2, "$.agents['bad id']"),
        (3, "$.agents.x.allow.servers[0]"),
        (4, "$.agents.y.alow"),
    ]


def test_a_byte_order_mark_is_tolerated(tmp_path):
    content = b"\xef\xbb\xbf" + json.dumps({"mcpServers": {"s": {"command": "x"}}}).encode()
    assert "s" in load_servers(write(tmp_path, ".mcp.json", content)).servers


def test_problem_messages_never_contain_env_or_header_values(tmp_path):
    path = servers_file(tmp_path, {"s": {
        "url": "http://h", "command": "x", "type": "bogus", "timeout_ms": -1,
        "env": {"A": "sekrit-env", "B": 1}, "headers": {"H": "sekrit-header", "I": []},
    }})
    with pytest.raises(ConfigError) as caught:
        load_servers(path)
    assert len(caught.value.problems) >= 4
    assert "sekrit" not in str(caught.value)


# ============================================================================ schemas


def schema_nodes(node, where="$"):
    """Every subschema in a schema document, with where it sits."""
    if not isinstance(node, dict):
        return
    yield where, node
    for key in ("properties", "$defs"):
        for name, child in node.get(key, {}).items():
            yield from schema_nodes(child, f"{where}.{key}.{name}")
    for key in ("items", "additionalProperties", "propertyNames"):
        yield from schema_nodes(node.get(key), f"{where}.{key}")
    for index, child in enumerate(node.get("oneOf", [])):
        yield from schema_nodes(child, f"{where}.oneOf[{index}]")


@pytest.mark.parametrize("name", [schema_check.MCP_CONFIG_SCHEMA, schema_check.RULES_SCHEMA])
def test_every_schema_node_has_a_description(name):
    schema = json.loads((schema_check.SCHEMA_DIR / name).read_text(encoding="utf-8"))
    nodes = list(schema_nodes(schema))
    assert len(nodes) > 10
    assert [where for where, node in nodes if not node.get("description")] == []


def rules_schema_defs() -> dict:
    return json.loads((schema_check.SCHEMA_DIR / schema_check.RULES_SCHEMA).read_text())["$defs"]


@pytest.mark.parametrize(
    "pattern", ["*", "a*", "*a", "a", "a?b", "a b", "", "**", "a*b", "*a*", "***", "a**"]
)
def test_the_schema_pattern_regex_agrees_with_the_policy(pattern):
    regex = rules_schema_defs()["pattern"]["pattern"]
    assert (re.search(regex, pattern) is not None) is policy.is_valid_pattern(pattern)


@pytest.mark.parametrize("agent_id", ["backend", "a.b-c_9", "a b", "", "\u0430", "a:b"])
def test_the_schema_agent_id_regex_agrees_with_the_policy(agent_id):
    regex = rules_schema_defs()["agentId"]["pattern"]
    assert (re.search(regex, agent_id) is not None) is policy.is_valid_agent_id(agent_id)


# ============================================================================ warnings


def loaded_pair(tmp_path, servers: dict, agents: dict):
    servers_config = load_servers(servers_file(tmp_path, servers))
    rules_config = config.load_rules(str(rules_file(tmp_path, agents)))
    return servers_config, rules_config


def test_rules_naming_undefined_servers_are_warned_about(tmp_path):
    servers, rules = loaded_pair(
        tmp_path,
        {"known": {"command": "x"}},
        {
            "backend": {"allow": {"servers": ["pg", "known", "p*", "*"]}},
            "ops": {"allow": {"tools": {"cache": ["*"], "*": ["x"], "known": ["y"]}},
                    "deny": {"servers": ["*-prod", "legacy"]}},
        },
    )
    assert config_store.undefined_server_warnings(servers, rules) == (
        "Rule agents.backend.allow.servers[0] names server 'pg' which is not defined in .mcp.json",
        "Rule agents.ops.allow.tools.cache names server 'cache' which is not defined in .mcp.json",
        "Rule agents.ops.deny.servers[1] names server 'legacy' which is not defined in .mcp.json",
    )


def test_warnings_are_deduplicated(tmp_path):
    servers = ServersConfig(path=".mcp.json", servers=MappingProxyType({}))
    _, rules = loaded_pair(tmp_path, {}, {"a": {"allow": {"servers": ["pg"]}}})
    assert len(config_store.undefined_server_warnings(servers, rules)) == 1


def test_a_snapshot_carries_the_warnings(tmp_path):
    servers, rules = loaded_pair(tmp_path, {}, {"a": {"allow": {"servers": ["pg"]}}})
    snapshot = config_store.build_snapshot(servers, rules)
    assert (snapshot.servers, snapshot.rules) == (servers, rules)
    assert len(snapshot.warnings) == 1 and "'pg'" in snapshot.warnings[0]


def test_an_unknown_key_in_a_server_entry_is_a_warning_naming_the_nearest_known_key(tmp_path):
    path = servers_file(tmp_path, {"db": {"command": "x", "sesion": "keep-alive", "zzz": 1}})
    loaded = load_servers(path)
    assert loaded.servers["db"].session == PER_CALL  # ignored, as before
    [typo, unknown] = loaded.warnings
    assert typo.endswith("$.mcpServers.db.sesion: unknown key 'sesion' is ignored (did you mean 'session'?)")
    assert unknown.endswith("$.mcpServers.db.zzz: unknown key 'zzz' is ignored")


GATEWAY_PY = str(config.GATEWAY_SCRIPT)


@pytest.mark.parametrize("entry", [
    {"command": "python3", "args": [GATEWAY_PY, "--agent", "a"]},
    {"command": "python3", "args": [Path(GATEWAY_PY).name], "cwd": str(Path(GATEWAY_PY).parent)},
    {"command": "/home/u/.venv/bin/agent-mcp-gateway"},
    {"command": "python", "args": ["-m", "gateway_lib"]},
], ids=["gateway.py", "gateway.py relative to cwd", "the console script", "-m gateway_lib"])
def test_an_entry_that_starts_this_gateway_is_skipped_with_a_warning(tmp_path, entry):
    loaded = load_servers(servers_file(tmp_path, {"me": entry, "other": {"command": "x"}}))
    assert list(loaded.servers) == ["other"]
    assert loaded.warnings == ("Server 'me' is skipped: its entry starts this gateway, which would then call itself",)


def test_an_entry_that_only_mentions_a_gateway_py_elsewhere_is_loaded(tmp_path):
    loaded = load_servers(servers_file(tmp_path, {"other": {"command": "python3", "args": ["/srv/gateway.py"]}}))
    assert list(loaded.servers) == ["other"] and loaded.warnings == ()


def test_every_stdio_server_is_told_which_gateways_started_it_and_http_servers_are_not(tmp_path):
    path = servers_file(tmp_path, {"local": {"command": "x"}, "remote": {"url": "https://h/mcp"}})
    above = "/elsewhere/.mcp.json"
    loaded = load_servers(path, {config.PARENT_CONFIGS_ENV: above})
    marker = loaded.servers["local"].env[config.PARENT_CONFIGS_ENV]
    assert marker.split(os.pathsep) == [above, os.path.realpath(path)]
    assert config.PARENT_CONFIGS_ENV not in loaded.servers["remote"].env


def test_a_gateway_started_by_a_gateway_reading_the_same_file_loads_none_of_its_servers(tmp_path):
    path = servers_file(tmp_path, {"a": {"command": "x"}, "b": {"command": "y"}})
    loaded = load_servers(path, {config.PARENT_CONFIGS_ENV: os.path.realpath(path)})
    assert dict(loaded.servers) == {}
    [warning] = loaded.warnings
    assert "started by a gateway that reads the same file" in warning and "none of its 2 server(s)" in warning


def test_check_lists_every_warning_of_the_servers_file_once_and_logs_none_of_them(tmp_path, caplog):
    mcp = servers_file(tmp_path, {"s": {"command": "${MISSING}", "sesion": "keep-alive"}})
    rules = rules_file(tmp_path, {"a": {"allow": {"servers": ["s"]}}})
    with caplog.at_level("WARNING"):
        problems, warnings = config.check_files(mcp, rules, {})
    assert problems == [] and len(warnings) == 2
    assert caplog.records == []  # whoever shows the warnings (check, start-up, reload) logs them, once


# ============================================================================ store


def test_replacing_rules_leaves_earlier_snapshots_untouched(tmp_path):
    servers, rules = loaded_pair(tmp_path, {"pg": {"command": "x"}},
                                 {"a": {"allow": {"servers": ["pg"]}}})
    store = config_store.ConfigStore(config_store.build_snapshot(servers, rules))
    before = store.current()
    new_rules = config.load_rules(str(rules_file(tmp_path, {"a": {"allow": {"servers": ["gone"]}}})))
    after = store.replace_rules(new_rules)
    assert before.rules is rules and before.warnings == ()
    assert store.current() is after and after.rules is new_rules
    assert after.servers is servers
    assert after.warnings == (
        "Rule agents.a.allow.servers[0] names server 'gone' which is not defined in .mcp.json",
    )


def test_replacing_servers_recomputes_warnings(tmp_path):
    servers, rules = loaded_pair(tmp_path, {}, {"a": {"allow": {"servers": ["pg"]}}})
    store = config_store.ConfigStore(config_store.build_snapshot(servers, rules))
    assert len(store.current().warnings) == 1
    with_pg = load_servers(servers_file(tmp_path, {"pg": {"command": "x"}}))
    swapped = store.replace_servers(with_pg)
    assert swapped.warnings == () and swapped.rules is rules and store.current() is swapped


# ============================================================================ finding files


@pytest.fixture
def places(tmp_path):
    """Working directory, home and bundled directory, all empty."""
    dirs = {name: tmp_path / "places" / name for name in ("cwd", "home", "bundled")}
    for directory in dirs.values():
        directory.mkdir(parents=True)
    return dirs


def find(places, environ=None):
    return locate.find_config_paths(environ or {}, places["cwd"], places["home"],
                                    places["bundled"])


def user_dir(places) -> Path:
    directory = places["home"] / ".config" / "agent-mcp-gateway"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_without_any_file_the_bundled_defaults_are_used(places):
    assert find(places) == (places["bundled"] / ".mcp.json",
                            places["bundled"] / ".mcp-gateway-rules.json")


def test_the_user_config_directory_beats_the_bundled_defaults(places):
    write(user_dir(places), ".mcp.json", {})
    write(user_dir(places), ".mcp-gateway-rules.json", {})
    assert find(places) == (user_dir(places) / ".mcp.json",
                            user_dir(places) / ".mcp-gateway-rules.json")


def test_the_working_directory_beats_the_user_config_directory(places):
    for directory in (places["cwd"], user_dir(places)):
        write(directory, ".mcp.json", {})
        write(directory, ".mcp-gateway-rules.json", {})
    assert find(places) == (places["cwd"] / ".mcp.json",
                            places["cwd"] / ".mcp-gateway-rules.json")


def test_environment_variables_beat_everything_even_for_missing_files(places, tmp_path):
    write(places["cwd"], ".mcp.json", {})
    write(places["cwd"], ".mcp-gateway-rules.json", {})
    environ = {"GATEWAY_MCP_CONFIG": str(tmp_path / "m.json"),
               "GATEWAY_RULES": str(tmp_path / "r.json")}
    assert find(places, environ) == (tmp_path / "m.json", tmp_path / "r.json")


def test_each_file_is_located_on_its_own(places):
    write(places["cwd"], ".mcp.json", {})
    write(user_dir(places), ".mcp-gateway-rules.json", {})
    assert find(places) == (places["cwd"] / ".mcp.json",
                            user_dir(places) / ".mcp-gateway-rules.json")


def test_environment_paths_are_relative_to_cwd_and_expand_home(places):
    environ = {"GATEWAY_MCP_CONFIG": "conf/m.json", "GATEWAY_RULES": "~/secure/r.json"}
    assert find(places, environ) == (places["cwd"] / "conf" / "m.json",
                                     places["home"] / "secure" / "r.json")


def test_an_empty_environment_variable_is_ignored(places):
    assert find(places, {"GATEWAY_RULES": ""})[1] == places["bundled"] / ".mcp-gateway-rules.json"


# ============================================================================ check


def test_check_reports_problems_of_both_files(tmp_path):
    mcp = write(tmp_path, ".mcp.json", '{"mcpServers": {"a": {}}}')
    rules = write(tmp_path, "rules.json", '{"agents": {"a b": {}}}')
    problems, warnings = config.check_files(mcp, rules, {})
    assert {p.file for p in problems} == {str(mcp), str(rules)}
    assert warnings == []


def test_check_reports_warnings_when_both_files_are_valid(tmp_path):
    mcp = servers_file(tmp_path, {"s": {"command": "${MISSING}"}})
    rules = rules_file(tmp_path, {"a": {"allow": {"servers": ["pg"]}}})
    problems, warnings = config.check_files(mcp, rules, {})
    assert problems == []
    assert warnings == [
        "Server 's' needs environment variable 'MISSING', which is not set",
        "Rule agents.a.allow.servers[0] names server 'pg' which is not defined in .mcp.json",
    ]
