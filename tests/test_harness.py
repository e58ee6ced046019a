"""The test harness and the test servers work, proven without the gateway."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import mcp_types
import pytest
from mcp import MCPError

import harness

DELIBERATE_FAILURE = -32050
METHOD_NOT_FOUND = -32601
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ODD_NAMES = ["get*", "a?b", "x[1]", "../up", "with space"]


def fault_client(tag, *extra_args, log=None, env=None) -> harness.McpClient:
    entry = harness.fault_server(tag, *extra_args, log=log)
    return harness.McpClient(entry["command"], entry["args"], env=env)


def raw_fault_server(tag, *extra_args, strict=True) -> harness.RawProcess:
    entry = harness.fault_server(tag, *extra_args)
    return harness.RawProcess([entry["command"], *entry["args"]], env={"PATH": "/usr/bin:/bin"}, strict=strict)


# ---------------------------------------------------------------------------- fault server over the SDK


def test_fault_server_initializes_and_lists_every_tool_with_schemas(tag):
    with fault_client(tag, "--tools-extra", "brand_new") as client:
        assert client.initialize_result.protocol_version == "2025-11-25"
        assert client.pid in harness.tagged_pids(tag)
        tools = {tool.name: tool for tool in client.list_tools()}

    expected = {"echo", "add", "image", "audio", "resource", "fail", "sleep", "crash", "rpc_error", "huge"}
    expected |= {"counter", "env", "spawn_grandchild", "brand_new", *ODD_NAMES}
    assert set(tools) == expected
    assert tools["add"].output_schema["properties"] == {"sum": {"type": "number"}}
    assert tools["echo"].input_schema["required"] == ["text"]
    assert tools["echo"].annotations.read_only_hint is True


def test_fault_server_answers_text_structured_and_binary_blocks(tag):
    with fault_client(tag) as client:
        client.list_tools()  # lets the SDK validate add's structuredContent against outputSchema
        assert harness.result_text(client.call_tool("echo", {"text": "héllo"})) == "héllo"
        assert client.call_json("add", {"a": 2, "b": 3.5}) == {"sum": 5.5}
        image = client.call_tool("image").content[0]
        audio = client.call_tool("audio").content[0]
        resource = client.call_tool("resource").content[0]
        huge = client.call_tool("huge", {"size": 200_000})

    assert isinstance(image, mcp_types.ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data).startswith(PNG_SIGNATURE)
    assert isinstance(audio, mcp_types.AudioContent) and base64.b64decode(audio.data).startswith(b"RIFF")
    assert isinstance(resource, mcp_types.EmbeddedResource)
    assert resource.resource.text == "embedded resource text"
    assert len(harness.result_text(huge)) == 200_000


def test_fault_server_counter_keeps_state_within_one_process(tag):
    with fault_client(tag) as client:
        counts = [harness.result_text(client.call_tool("counter")) for _ in range(3)]
    with fault_client(tag) as client:
        fresh = harness.result_text(client.call_tool("counter"))

    assert counts == ["1", "2", "3"]
    assert fresh == "1"


def test_fault_server_reports_failures_as_tool_errors_and_rpc_errors(tag):
    with fault_client(tag) as client:
        failed = client.call_tool("fail")
        with pytest.raises(harness.ToolCallError):
            client.call_json("fail")
        with pytest.raises(MCPError) as rpc:
            client.call_tool("rpc_error")

    assert failed.is_error is True
    assert harness.result_text(failed) == "deliberate tool failure"
    assert rpc.value.code == DELIBERATE_FAILURE


def test_fault_server_odd_tool_names_echo(tag):
    with fault_client(tag) as client:
        texts = [harness.result_text(client.call_tool(name, {"text": name})) for name in ODD_NAMES]
    assert texts == ODD_NAMES


def test_fault_server_env_tool_sees_only_the_given_environment(tag):
    with fault_client(tag, env={"SECRET_TOKEN": "s3cr3t"}) as client:
        given = harness.result_text(client.call_tool("env", {"name": "SECRET_TOKEN"}))
        missing = harness.result_text(client.call_tool("env", {"name": "GATEWAY_RULES_NOT_SET"}))
    assert (given, missing) == ("s3cr3t", "<unset>")


def test_a_crashing_server_fails_the_call_and_closes_cleanly(tag):
    with fault_client(tag) as client:
        with pytest.raises(MCPError):
            client.call_tool("crash", timeout=10)


def test_a_call_past_its_timeout_raises_the_sdk_timeout(tag):
    with fault_client(tag) as client:
        with pytest.raises(MCPError) as timeout:
            client.call_tool("sleep", {"seconds": 30}, timeout=0.5)
    assert timeout.value.code == mcp_types.REQUEST_TIMEOUT


def test_log_counts_one_start_per_process_and_one_line_per_call(tag, tmp_path):
    log = tmp_path / "fault.log"
    for _ in range(2):
        with fault_client(tag, log=log) as client:
            client.list_tools()
            client.call_tool("echo", {"text": "x"})

    assert harness.count_events(log, "start") == 2
    assert harness.count_events(log, "call", method="tools/list") == 2
    assert harness.count_events(log, "call", tool="echo") == 2
    assert len({entry["pid"] for entry in harness.read_log(log)}) == 2


# ---------------------------------------------------------------------------- process tracking


def test_grandchild_survives_the_session_until_its_group_is_killed(tag):
    with fault_client(tag, "--mode", "grandchild") as client:
        server_pid = client.pid
        # Bounded wait: on a loaded machine /proc sometimes shows the grandchild a moment late.
        assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 2, timeout=10)

    survivors = harness.wait_no_tagged(tag, timeout=1.0)
    assert len(survivors) == 1 and survivors[0] != server_pid
    harness.kill_process_group(survivors[0])
    assert harness.wait_no_tagged(tag) == []


def test_spawn_grandchild_tool_answers_with_a_tagged_pid(tag):
    with fault_client(tag) as client:
        pid = int(harness.result_text(client.call_tool("spawn_grandchild")))
        assert pid in harness.tagged_pids(tag)
    assert harness.kill_tagged(tag) == [pid]


# ---------------------------------------------------------------------------- raw pipes


def test_banner_mode_writes_lines_that_are_not_json_rpc(tag):
    with raw_fault_server(tag, "--mode", "banner", strict=False) as server:
        result = server.initialize(version="2025-03-26")
        server.request("ping", id="p-1")

    lines = server.all_stdout_bytes().splitlines()
    assert result["protocolVersion"] == "2025-03-26"
    assert b"fault_server banner: starting up" in lines
    assert sum(1 for line in lines if line.startswith(b"{")) == 2
    assert sum(1 for line in lines if not line.startswith(b"{")) >= 3


def test_raw_request_matches_ids_exactly_and_sees_unknown_methods(tag):
    with raw_fault_server(tag) as server:
        result = server.initialize(version="1999-01-01")
        string_id = server.request("ping", id="7")
        numeric_id = server.request("ping", id=7)
        unknown = server.request("server/discover", {})
        code = server.close()

    assert result["protocolVersion"] == "2025-11-25"
    assert string_id["id"] == "7" and numeric_id["id"] == 7
    assert unknown["error"]["code"] == METHOD_NOT_FOUND
    assert code == 0
    for line in server.all_stdout_bytes().splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0"


def test_raw_read_message_times_out_and_reports_a_closed_stdout(tag):
    with raw_fault_server(tag, "--mode", "never-initialize") as server:
        server.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
        with pytest.raises(TimeoutError):
            server.read_message(timeout=0.2)
        server.process.stdin.close()
        with pytest.raises(harness.StdoutClosedError):
            server.read_message(timeout=5)


def test_exit_at_once_mode_writes_a_reason_to_stderr(tag):
    server = raw_fault_server(tag, "--mode", "exit-at-once")
    assert server.close() == 1
    assert "exiting at once" in server.stderr_text()


# ---------------------------------------------------------------------------- SDK servers


def test_sdk_stdio_server_answers_structured_results(tag):
    entry = harness.sdk_stdio_server(tag)
    with harness.McpClient(entry["command"], entry["args"]) as client:
        assert {tool.name for tool in client.list_tools()} == {"echo", "add", "sleep"}
        assert client.call_json("add", {"a": 1, "b": 2}) == {"sum": 3}
        assert harness.result_text(client.call_tool("echo", {"text": "hi"})) == "hi"


def test_sdk_http_server_answers_a_tool_call_over_streamable_http(tag):
    with harness.http_process(harness.SDK_HTTP_SERVER, tag) as (url, _process):
        with harness.HttpMcpClient(url) as client:
            assert client.call_json("add", {"a": 2, "b": 2}) == {"sum": 4}
            assert harness.result_text(client.call_tool("echo", {"text": "over http"})) == "over http"


# ---------------------------------------------------------------------------- bad HTTP server


def post(url: str, timeout: float = 5):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=timeout)


def test_bad_http_server_answers_500(tag):
    with harness.http_process(harness.BAD_HTTP_SERVER, tag, "--mode", "500") as (url, _process):
        with pytest.raises(urllib.error.HTTPError) as failure:
            post(url)
        failure.value.close()
    assert failure.value.code == 500


def test_bad_http_server_answers_html(tag):
    with harness.http_process(harness.BAD_HTTP_SERVER, tag, "--mode", "html") as (url, _process):
        with post(url) as response:
            content_type = response.headers["Content-Type"]
            body = response.read()
    assert content_type.startswith("text/html")
    assert body.startswith(b"<!doctype html>")


def test_bad_http_server_stalls_after_a_partial_event(tag):
    with harness.http_process(harness.BAD_HTTP_SERVER, tag, "--mode", "stall") as (url, _process):
        with post(url, timeout=1) as response:
            content_type = response.headers["Content-Type"]
            first = response.readline()
            with pytest.raises((socket.timeout, TimeoutError)):
                response.read()
    assert content_type == "text/event-stream"
    assert first == b"event: message\n"


# ---------------------------------------------------------------------------- config helpers


def test_config_dir_writes_both_files_and_fault_server_entries(config_dir, tag, tmp_path):
    entry = harness.fault_server(tag, "--mode", "banner", log=tmp_path / "x.log", description="faulty")
    config_dir.write({"fault": entry}, {"agents": {}})

    written = json.loads(config_dir.mcp_config.read_text())
    assert written == {"mcpServers": {"fault": entry}}
    assert json.loads(config_dir.rules.read_text()) == {"agents": {}}
    assert entry["command"] == sys.executable
    assert entry["args"] == [str(harness.FAULT_SERVER), "--tag", tag, "--log", str(tmp_path / "x.log"), "--mode", "banner"]


def test_gateway_env_keeps_the_developer_shell_out(monkeypatch, user_dirs):
    monkeypatch.setenv("GATEWAY_RULES", "/somewhere/else.json")
    monkeypatch.setenv("GATEWAY_DEBUG", "1")

    env = harness.gateway_env({"EXTRA": "yes"})

    # The one GATEWAY_* variable is the harness's own: no spare sessions unless a test asks.
    assert {name: env[name] for name in env if name.startswith("GATEWAY_")} == {"GATEWAY_INIT_STRATEGY": "off"}
    assert env["HOME"] == str(user_dirs.home)
    assert env["XDG_CACHE_HOME"] == str(user_dirs.cache)
    assert env["EXTRA"] == "yes"


def test_gateway_builds_its_command_line_from_the_config_dir(config_dir):
    gateway = config_dir.gateway("--debug", "--agent", "backend", env={"GATEWAY_AUDIT_LOG": "/tmp/a"})
    try:
        assert gateway.command == sys.executable
        assert gateway.args == [
            str(harness.GATEWAY),
            "--mcp-config",
            str(config_dir.mcp_config),
            "--rules",
            str(config_dir.rules),
            "--debug",
            "--agent",
            "backend",
        ]
        assert gateway.env["GATEWAY_AUDIT_LOG"] == "/tmp/a"
    finally:
        gateway.close()


def test_wait_for_port_fails_fast_when_the_server_dies(tag):
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)", tag])
    try:
        with pytest.raises(RuntimeError):
            harness.wait_for_port(harness.free_port(), timeout=10, process=process)
    finally:
        process.wait(5)
