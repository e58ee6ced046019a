"""`gateway.py check`: what it prints and the exit code it gives, for good and broken files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from gateway_lib import cli

CONFIG_DIR = harness.ROOT / "config"

GOOD_SERVERS = {"mcpServers": {"db": {"command": "db-server"}}}
GOOD_RULES = {"agents": {"dev": {"allow": {"servers": ["db"]}}}}


def check(*argv: str, environ: dict | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(["check", *argv], environ=environ or {}, out=out)
    return code, out.getvalue()


def write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2), encoding="utf-8")
    return path


# --- the examples shipped in config/ ------------------------------------------------------


def example_pairs() -> list[tuple[Path, Path]]:
    """Every servers file in config/ with the rules file next to it of the same name."""
    pairs = [(CONFIG_DIR / ".mcp.json", CONFIG_DIR / ".mcp-gateway-rules.json")]
    for servers in sorted((CONFIG_DIR / "examples").glob("*.mcp.json")):
        pairs.append((servers, servers.with_name(servers.name.replace(".mcp.json", ".rules.json"))))
    return pairs


def test_every_json_file_in_config_belongs_to_a_checked_example():
    checked = {path for pair in example_pairs() for path in pair}
    assert set(CONFIG_DIR.rglob("*.json")) | set(CONFIG_DIR.rglob(".*.json")) == checked


@pytest.mark.parametrize("servers, rules", example_pairs(), ids=lambda path: path.name)
def test_every_example_config_is_valid(servers, rules):
    code, output = check("--mcp-config", str(servers), "--rules", str(rules))
    assert code == 0, output
    assert "0 error(s)" in output


# --- broken files -------------------------------------------------------------------------

# (servers file, rules file, what the output must contain, exit code); None is a good file.
# {mcp} and {rules} stand for the two paths.
BROKEN = [
    pytest.param(None, '{\n  "agents": {\n    "back end": {}\n  }\n}',
                 ["error: {rules}:3: $.agents['back end']: agent id 'back end' may contain only letters, digits, '_', '.', '-'"],
                 1, id="an agent id with a space"),
    pytest.param(None, '{"agents": {\n  "dev": {"allow": {"servers": ["d*b"]}}}}',
                 ["error: {rules}:2: $.agents.dev.allow.servers[0]: pattern 'd*b' is not allowed: "
                  "use '*', 'prefix*', '*suffix' or an exact name"],
                 1, id="a wildcard in the middle"),
    pytest.param(None, '{"agents": {"dev": {"allow": {"tools": {\n"d*": ["x"]}}}}}',
                 ["error: {rules}:2: $.agents.dev.allow.tools['d*']: tools key 'd*' is not allowed: "
                  "use a server name, or '*' for every server"],
                 1, id="a wildcard server key under tools"),
    pytest.param(None, '{"agents": {"dev": {\n"alow": {}}}}',
                 ["error: {rules}:2: $.agents.dev.alow: unknown key 'alow': allowed keys here are "
                  "'allow', 'deny', 'rate_limit', 'token_sha256' (did you mean 'allow'?)"],
                 1, id="a misspelt key"),
    pytest.param(None, "", ["error: {rules}: $: file is empty: it must contain a JSON object"],
                 1, id="an empty rules file"),
    pytest.param('{"mcpServers": {\n  "db": {"command": "x"', None,
                 ["error: {mcp}:2: $: not valid JSON"], 1, id="a truncated servers file"),
    pytest.param('{"mcpServers": {\n  "db": {"command": "x", "url": "http://h"}}}', None,
                 ["error: {mcp}:2: $.mcpServers.db: has both 'command' and 'url': keep 'command' for a "
                  "local (stdio) server or 'url' for a remote (http/sse) server"],
                 1, id="command and url together"),
    pytest.param('{"mcpServers": {"db": {"command": "x"}}}', '{"agents": {"dev": {"allow": {"servers": ["db", "pg"]}}}}',
                 ["warning: Rule agents.dev.allow.servers[1] names server 'pg' which is not defined in .mcp.json",
                  "0 error(s), 1 warning(s)"],
                 0, id="a rule naming an undefined server is only a warning"),
    pytest.param('{"mcpServers": {"db": {"command": "x", "env": {"T": "${TOKEN}"}}}}', None,
                 ["warning: Server 'db' needs environment variable 'TOKEN', which is not set"],
                 0, id="an unset variable is only a warning"),
    pytest.param('{"mcpServers": {"db": {"command": 5}}}', '{"agents": {"a b": {}}}',
                 ["error: {mcp}:1: $.mcpServers.db.command: must be a string, not a whole number",
                  "error: {rules}:1: $.agents['a b']: agent id",
                  "2 error(s), 0 warning(s)"],
                 1, id="problems of both files are all listed"),
]


@pytest.mark.parametrize("servers, rules, expected, exit_code", BROKEN)
def test_check_reports_each_broken_file_with_its_place_and_fix(tmp_path, servers, rules, expected, exit_code):
    mcp_path = write(tmp_path / ".mcp.json", GOOD_SERVERS if servers is None else servers)
    rules_path = write(tmp_path / ".mcp-gateway-rules.json", GOOD_RULES if rules is None else rules)
    code, output = check("--mcp-config", str(mcp_path), "--rules", str(rules_path))
    for fragment in expected:
        assert fragment.format(mcp=mcp_path, rules=rules_path) in output
    assert code == exit_code, output


def test_a_missing_file_is_an_error_with_a_hint(tmp_path):
    rules_path = write(tmp_path / "rules.json", GOOD_RULES)
    missing = tmp_path / "nowhere.json"
    code, output = check("--mcp-config", str(missing), "--rules", str(rules_path))
    assert code == 1
    assert f"error: {missing}: $: file not found" in output
    assert "hint: to check another file, give its path with --mcp-config PATH or GATEWAY_MCP_CONFIG" in output


def test_check_reads_the_paths_from_the_environment_like_the_gateway(tmp_path):
    mcp_path = write(tmp_path / "servers.json", GOOD_SERVERS)
    rules_path = write(tmp_path / "rules.json", '{"agents": {"dev": {"deny": {"servers": ["x*y"]}}}}')
    code, output = check(environ={"GATEWAY_MCP_CONFIG": str(mcp_path), "GATEWAY_RULES": str(rules_path)})
    assert code == 1
    assert f"Checked {mcp_path}" in output
    assert f"error: {rules_path}:1: $.agents.dev.deny.servers[0]: pattern 'x*y' is not allowed" in output


def test_check_as_a_command_prints_on_stdout_and_exits_with_its_code(tmp_path):
    mcp_path = write(tmp_path / ".mcp.json", GOOD_SERVERS)
    rules_path = write(tmp_path / ".mcp-gateway-rules.json", '{"agents": {"dev": {"allow": {"servers": ["db", "pg"]}}}}')
    argv = [sys.executable, str(harness.GATEWAY), "check", "--mcp-config", str(mcp_path), "--rules", str(rules_path)]
    valid = subprocess.run(argv, capture_output=True, timeout=60, env=harness.gateway_env())
    assert valid.returncode == 0, valid.stderr.decode()
    assert "warning: Rule agents.dev.allow.servers[1] names server 'pg'" in valid.stdout.decode()

    write(rules_path, '{"agents": {"dev": {"allow": {"servers": ["db"]}},}}')
    invalid = subprocess.run(argv, capture_output=True, timeout=60, env=harness.gateway_env())
    assert invalid.returncode == 1
    assert f"error: {rules_path}:1: $: not valid JSON" in invalid.stdout.decode()


def run_check_command(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(harness.GATEWAY), "check", *argv]
    return subprocess.run(command, capture_output=True, timeout=60, env=harness.gateway_env(env))


def test_check_prints_each_warning_once_on_stdout_and_nothing_on_stderr(tmp_path):
    mcp_path = write(tmp_path / ".mcp.json", {"mcpServers": {"db": {"command": "${DB_COMMAND_NOT_SET}"}}})
    rules_path = write(tmp_path / "rules.json", {"agents": {"dev": {"allow": {"servers": ["db", "pg"]}}}})
    done = run_check_command("--mcp-config", str(mcp_path), "--rules", str(rules_path))
    stdout = done.stdout.decode()
    assert done.returncode == 0
    assert stdout.count("DB_COMMAND_NOT_SET") == 1 and stdout.count("server 'pg'") == 1
    assert done.stderr == b""


def test_a_config_that_is_a_fifo_is_an_error_not_a_hang(tmp_path):
    mcp_path = tmp_path / ".mcp.json"
    os.mkfifo(mcp_path)
    rules_path = write(tmp_path / "rules.json", GOOD_RULES)
    done = run_check_command("--mcp-config", str(mcp_path), "--rules", str(rules_path))
    assert done.returncode == 1
    assert f"error: {mcp_path}: $: it is a FIFO: a config must be a regular file" in done.stdout.decode()


@pytest.mark.parametrize("argv, environ, expected", [
    (("--agent", "ghost"), {}, "warning: pinned agent 'ghost' (--agent / GATEWAY_AGENT) is not in the rules"),
    ((), {"GATEWAY_AGENT": "ghost"}, "warning: pinned agent 'ghost'"),
    ((), {"GATEWAY_DEFAULT_AGENT": "ghost"}, "warning: GATEWAY_DEFAULT_AGENT 'ghost' is not in the rules"),
], ids=["--agent", "GATEWAY_AGENT", "GATEWAY_DEFAULT_AGENT"])
def test_check_warns_of_a_pinned_or_default_agent_the_rules_lack(tmp_path, argv, environ, expected):
    mcp_path, rules_path = write(tmp_path / ".mcp.json", GOOD_SERVERS), write(tmp_path / "rules.json", GOOD_RULES)
    code, output = check("--mcp-config", str(mcp_path), "--rules", str(rules_path), *argv, environ=environ)
    assert code == 0
    assert expected in output
    assert "0 error(s), 1 warning(s)" in output


@pytest.mark.parametrize("argv, environ, source", [
    (("--agent", ""), {}, "--agent"),
    ((), {"GATEWAY_AGENT": ""}, "GATEWAY_AGENT"),
    ((), {"GATEWAY_DEFAULT_AGENT": "two words"}, "GATEWAY_DEFAULT_AGENT"),
], ids=["empty --agent", "empty GATEWAY_AGENT", "invalid GATEWAY_DEFAULT_AGENT"])
def test_check_reports_an_agent_setting_the_gateway_would_refuse_as_an_error(tmp_path, argv, environ, source):
    mcp_path, rules_path = write(tmp_path / ".mcp.json", GOOD_SERVERS), write(tmp_path / "rules.json", GOOD_RULES)
    code, output = check("--mcp-config", str(mcp_path), "--rules", str(rules_path), *argv, environ=environ)
    assert code == 1
    assert f"error: {source} " in output and "agent id" in output


def test_a_pinned_agent_in_the_rules_passes_check(tmp_path):
    mcp_path, rules_path = write(tmp_path / ".mcp.json", GOOD_SERVERS), write(tmp_path / "rules.json", GOOD_RULES)
    code, output = check("--mcp-config", str(mcp_path), "--rules", str(rules_path), "--agent", "dev")
    assert (code, output.splitlines()[-1]) == (0, "0 error(s), 0 warning(s)")
