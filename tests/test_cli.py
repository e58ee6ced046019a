"""The gateway's start-up path, as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

import harness

# Loaded in the background after notifications/initialized, never before the answers below.
HEAVY = {"mcp", "mcp_types", "httpx2", "anyio", "asyncio", "watchdog", "pydantic", "starlette", "uvicorn"}


def test_initialize_tools_list_and_list_servers_are_served_without_importing_the_sdk(config_dir, tag):
    config_dir.write({"tools": harness.fault_server(tag)}, {"agents": {"default": {"allow": {"servers": ["*"]}}}})
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "list_servers", "arguments": {}}},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in requests).encode()
    # No notifications/initialized, so no preload: every import in the process's whole life
    # belongs to start-up and these three answers. -X importtime lists them on stderr.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *harness.gateway_argv(config_dir.mcp_config, config_dir.rules)],
        input=stdin, capture_output=True, timeout=60, env=harness.gateway_env(),
    )
    answers = {m["id"]: m for m in map(json.loads, done.stdout.decode().splitlines())}
    assert done.returncode == 0
    assert sorted(answers) == [1, 2, 3] and all("result" in a for a in answers.values())
    assert answers[3]["result"]["structuredContent"]["servers"][0]["name"] == "tools"
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "gateway_lib" in imported and "jsonschema" in imported  # the listing is real
    assert imported & HEAVY == set()


RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}}


def start(config_dir, *args: str, env: dict | None = None, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The gateway with stdin at EOF: it either refuses to start or starts and exits 0."""
    argv = [sys.executable, *python, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules, *args)]
    return subprocess.run(argv, input=b"", capture_output=True, timeout=60, env=harness.gateway_env(env))


@pytest.mark.parametrize("args, env, source", [
    ((), {"GATEWAY_AGENT": ""}, "GATEWAY_AGENT"),
    (("--agent", ""), {}, "--agent"),
    ((), {"GATEWAY_AGENT": "dev team"}, "GATEWAY_AGENT"),
    (("--agent", "d*"), {}, "--agent"),
    (("--agent", ""), {"GATEWAY_AGENT": "dev"}, "--agent"),  # the flag wins, and is checked
], ids=["empty variable", "empty flag", "variable with a space", "flag with a pattern", "empty flag over a good variable"])
def test_an_empty_or_invalid_pinned_agent_refuses_to_start_with_exit_2(config_dir, args, env, source):
    config_dir.write({}, RULES)
    done = start(config_dir, *args, env=env)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert f"{source} " in stderr and "agent id" in stderr
    assert done.stdout == b""
    assert "Traceback" not in stderr and "Loaded" not in stderr


@pytest.mark.parametrize("args, env, valid", [
    ((), {"GATEWAY_DEBUG": "maybe"}, "use one of"),
    ((), {"GATEWAY_TIMEOUT_MS": "abc"}, "from 1 to"),
    (("--timeout-ms", "-5"), {}, "from 1 to"),
    (("--max-workers", "0"), {}, "from 1 to"),
    ((), {"GATEWAY_MAX_WORKERS": "many"}, "from 1 to"),
    ((), {"GATEWAY_MAX_LINE_BYTES": "10"}, "from 1024 to"),
    (("--tool-cache-ttl", "-1"), {}, "from 0 to"),
    ((), {"GATEWAY_TOOL_CACHE_TTL": "nan"}, "from 0 to"),
    ((), {"GATEWAY_LOG_LEVEL": "loud"}, "use one of"),
    ((), {"GATEWAY_RELOAD_DEBOUNCE_MS": "-1"}, "from 0 to"),
    ((), {"GATEWAY_DEFAULT_AGENT": "a/b"}, "agent id"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_an_invalid_setting_refuses_to_start_before_anything_else_naming_the_valid_range(config_dir, args, env, valid):
    config_dir.write({}, RULES)
    done = start(config_dir, *args, env=env)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert valid in stderr
    assert "Loaded" not in stderr and "Traceback" not in stderr  # checked before the config is read
    assert done.stdout == b""


def test_every_invalid_setting_is_reported_at_once(config_dir):
    config_dir.write({}, RULES)
    done = start(config_dir, "--max-workers", "0", env={"GATEWAY_DEBUG": "maybe", "GATEWAY_TIMEOUT_MS": "abc"})
    stderr = done.stderr.decode()
    assert done.returncode == 2
    assert all(name in stderr for name in ("--max-workers", "GATEWAY_DEBUG", "GATEWAY_TIMEOUT_MS"))


def test_an_abbreviated_flag_is_refused_not_taken_for_a_longer_one(config_dir):
    config_dir.write({}, RULES)
    done = start(config_dir, "--tool", "5")  # would otherwise be --tool-cache-ttl 5
    assert done.returncode == 2
    assert "unrecognized arguments: --tool" in done.stderr.decode()


def test_a_default_agent_missing_from_the_rules_is_a_start_up_warning(config_dir):
    config_dir.write({}, RULES)
    done = start(config_dir, env={"GATEWAY_DEFAULT_AGENT": "ghost"})
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    warnings = [line for line in stderr.splitlines() if "WARNING" in line and "'ghost'" in line]
    assert len(warnings) == 1 and "GATEWAY_DEFAULT_AGENT" in warnings[0]


def test_missing_dependencies_stop_the_start_with_one_line_naming_them_and_the_install_command(config_dir):
    config_dir.write({}, RULES)
    # -S leaves site-packages off sys.path: the gateway's own code (beside gateway.py) is
    # found, its dependencies are not, as in a Python they were never installed into.
    done = start(config_dir, python=("-S",))
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 1
    assert len(lines) == 1, lines
    assert all(name in lines[0] for name in ("mcp", "watchdog", "jsonschema"))
    assert f"{sys.executable} -m pip install" in lines[0]
    assert done.stdout == b""


def test_the_install_command_asks_for_what_pyproject_requires():
    import tomllib

    from gateway_lib.requirements import REQUIREMENTS

    pyproject = tomllib.loads((harness.ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert sorted(REQUIREMENTS.values()) == sorted(pyproject["project"]["dependencies"])


def test_a_sighup_that_comes_before_the_handlers_is_a_reload_not_the_end(config_dir):
    config_dir.write({}, RULES)
    audit = config_dir.path("audit.jsonl")
    # Blocked in the child from its first instruction, the signal waits for the gateway to
    # unblock it: the same as one arriving at any moment before the handlers exist.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        raw = config_dir.raw_gateway("--audit-log", str(audit))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    raw.process.send_signal(signal.SIGHUP)
    try:
        raw.initialize()
        assert harness.wait_until(lambda: harness.count_events(audit, "config_reload") == 2, timeout=30)
    finally:
        code = raw.close()
    assert code == 0


def test_a_background_task_that_fails_logs_one_line_and_shows_in_status(config_dir, tmp_path):
    config_dir.write({}, RULES)
    shadow = tmp_path / "shadow" / "watchdog"
    shadow.mkdir(parents=True)
    # Found by the start-up check, broken on import: the watcher's thread is what fails.
    (shadow / "__init__.py").write_text('raise ImportError("deliberately broken", name="watchdog")\n')
    with config_dir.raw_gateway("--debug", env={"PYTHONPATH": str(shadow.parent)}) as raw:
        raw.initialize()

        def watcher_state() -> str:
            answer = raw.request("tools/call", {"name": "get_gateway_status", "arguments": {"agent_id": "dev"}})
            return answer["result"]["structuredContent"]["background_threads"]["watcher"]

        assert harness.wait_until(lambda: watcher_state().startswith("failed"), timeout=30)
        assert "'watchdog'" in watcher_state()
    stderr = raw.stderr_text()
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if "Hot reload is off" in line]) == 1


@pytest.mark.parametrize("command, code", [(["pins"], 2), (["explain"], 1), (["login", "a"], 1)],
                         ids=["pins", "explain", "login"])
def test_a_command_given_an_invalid_mcp_json_writes_each_problem_as_an_error_line_and_exits(config_dir, command, code):
    config_dir.write({"a": {"command": 5}, "b": {"command": "x", "args": "not a list"}}, {"agents": {}})
    done = subprocess.run([sys.executable, str(harness.GATEWAY), *command, "--mcp-config", str(config_dir.mcp_config),
                           "--rules", str(config_dir.rules)], capture_output=True, text=True, timeout=60,
                          env=harness.gateway_env())
    errors = [line for line in done.stdout.splitlines() if line.startswith("error: ")]
    assert done.returncode == code, done.stdout + done.stderr
    assert len(errors) >= 2 and errors == done.stdout.splitlines()  # one line per problem, and nothing else
