"""Promise: however the gateway is told to stop (stdin EOF, SIGTERM, SIGINT, SIGQUIT), it
stops cleanly within a few seconds, whatever is stuck.

In-flight calls either finish and are answered, or are cancelled and answered with an
error; every child process is reaped; every audit record is on disk; the exit status is 0;
and stdout holds nothing but JSON-RPC messages. The few-seconds bound is asserted
(generously): promptness is the behaviour under test.
"""

from __future__ import annotations

import fcntl
import json
import signal
import struct
import subprocess
import sys
import termios

import pytest

import harness
from gateway_lib.errors import INTERNAL_ERROR

RULES = {"agents": {"dev": {"allow": {"servers": ["tools"]}}}}
EXIT_WITHIN_S = 10.0  # the gateway's grace is 3 s; the rest is margin for a loaded machine

STOPS = {
    "stdin EOF": lambda raw: raw.process.stdin.close(),
    "SIGTERM": lambda raw: raw.process.send_signal(signal.SIGTERM),
    "SIGINT": lambda raw: raw.process.send_signal(signal.SIGINT),
    "SIGQUIT": lambda raw: raw.process.send_signal(signal.SIGQUIT),
}
# Two mechanisms: stdin EOF ends the reader; the three signals share one handler that sets
# the same stop event (lifecycle.STOP_SIGNALS). Every stop is proven on an idle gateway;
# the scenarios with work in flight run once per mechanism, SIGTERM standing for the signals.
MECHANISMS = ["stdin EOF", "SIGTERM"]


def execute(request_id: str, tool: str, args: dict) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {
        "name": "execute_tool", "arguments": {"agent_id": "dev", "server": "tools", "tool": tool, "args": args}}}


def wait_exit(raw: harness.RawGateway) -> int:
    try:
        return raw.process.wait(EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"The gateway did not exit within {EXIT_WITHIN_S} s; stderr: {raw.stderr_text()[-2000:]}")


@pytest.fixture
def started(config_dir, tag):
    """A gateway with its tool list cached, plus its server log and audit path."""
    log, audit = config_dir.path("server.log"), config_dir.path("audit.jsonl")
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, RULES)
    raw = config_dir.raw_gateway("--audit-log", str(audit))
    raw.initialize()
    raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "tools"}},
                timeout=30)
    yield raw, log, audit
    raw.close()


@pytest.mark.parametrize("stop", list(STOPS), ids=list(STOPS))
def test_an_idle_gateway_exits_0_promptly_with_nothing_left(started, stop):
    raw, _, _ = started
    pid = raw.pid
    STOPS[stop](raw)
    assert wait_exit(raw) == 0
    assert harness.descendants(pid) == []
    assert "Shutting down" in raw.stderr_text()  # the one clean shutdown path, whatever the stop
    assert "Fatal Python error" not in raw.stderr_text()
    assert harness.protocol_problems(raw.all_stdout_bytes()) == []


@pytest.mark.parametrize("stop", MECHANISMS)
def test_a_gateway_stopped_before_its_first_call_exits_0_without_finishing_the_sdk_import(config_dir, tag, stop):
    # The handshake starts the SDK's import in the background (most of a second of CPU);
    # a stop right after it meets that import half done and must neither wait for it nor
    # let the interpreter's exit run into it.
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    raw = config_dir.raw_gateway("--log-level", "DEBUG")
    try:
        raw.initialize()
        # The reader runs `notifications/initialized` (which starts the import) before it reads
        # the next line, so once the ping is answered the import is under way.
        raw.request("ping", {})
        pid = raw.pid
        STOPS[stop](raw)
        assert wait_exit(raw) == 0
    finally:
        raw.close()
    stderr = raw.stderr_text()
    assert "Exiting without finishing what nothing needs: the SDK's background import" in stderr
    assert "Exiting without waiting for what is still stuck" not in stderr
    assert "Fatal Python error" not in stderr and "Traceback" not in stderr
    assert harness.descendants(pid) == []


@pytest.mark.parametrize("stop", MECHANISMS)
def test_a_call_in_flight_finishes_and_is_answered_before_the_exit(started, stop, tag):
    raw, log, _ = started
    raw.send(execute("short", "sleep", {"seconds": 1}))
    assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=20)
    STOPS[stop](raw)
    assert wait_exit(raw) == 0
    raw.close()
    answers = [json.loads(line) for line in raw.all_stdout_bytes().splitlines()]
    finished = [a for a in answers if a.get("id") == "short"]
    assert len(finished) == 1 and finished[0]["result"]["content"][0]["text"] == "slept 1"
    assert harness.wait_no_tagged(tag) == []


@pytest.mark.parametrize("stop", MECHANISMS)
def test_a_call_outliving_the_grace_is_cancelled_answered_once_and_its_server_reaped(started, stop, tag):
    raw, log, audit = started
    pid = raw.pid
    raw.send(execute("long", "spawn_grandchild", {}))  # leaves a grandchild behind it
    raw.response_for("long", timeout=30)
    raw.send(execute("stuck", "sleep", {"seconds": 600}))
    assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=20)
    assert harness.descendants(pid)  # the sleeping server is the gateway's
    STOPS[stop](raw)
    assert wait_exit(raw) == 0
    raw.close()
    assert harness.descendants(pid) == []
    assert harness.wait_no_tagged(tag) == []
    stuck = [json.loads(line) for line in raw.all_stdout_bytes().splitlines() if b'"stuck"' in line]
    assert len(stuck) == 1
    assert stuck[0]["error"]["code"] == INTERNAL_ERROR
    assert "shutting down" in stuck[0]["error"]["message"]
    assert harness.protocol_problems(raw.all_stdout_bytes()) == []
    records = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    calls = [r for r in records if r.get("tool") == "execute_tool"]
    assert len(calls) == 2  # the cancelled call was audited too, before the exit
    assert calls[-1]["outcome"] == "cancelled"


@pytest.mark.parametrize("stop", MECHANISMS)
def test_every_audit_record_is_on_disk_when_the_gateway_has_exited(started, stop):
    raw, _, audit = started
    for n in range(20):
        raw.send({"jsonrpc": "2.0", "id": f"c{n}", "method": "tools/call",
                  "params": {"name": "list_servers", "arguments": {"agent_id": "dev"}}})
    answered = set()
    while len(answered) < 20:  # pooled answers may come in any order
        answered.add(raw.read_message(timeout=30).get("id"))
    STOPS[stop](raw)
    assert wait_exit(raw) == 0
    records = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    assert sum(1 for r in records if r.get("tool") == "list_servers") == 20
    assert audit.read_bytes().endswith(b"\n")


def test_a_request_arriving_during_shutdown_is_answered_not_dropped(started, tag):
    raw, log, _ = started
    raw.send(execute("stuck", "sleep", {"seconds": 600}))
    assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=20)
    raw.process.send_signal(signal.SIGTERM)
    assert harness.wait_until(lambda: "Shutting down" in raw.stderr_text(), timeout=10)
    raw.send(execute("late", "echo", {"text": "too late"}))
    assert wait_exit(raw) == 0
    raw.close()
    late = [json.loads(line) for line in raw.all_stdout_bytes().splitlines() if b'"late"' in line]
    assert len(late) == 1  # read during the stuck call's grace, so refused: once, never dropped
    assert late[0]["error"]["code"] == INTERNAL_ERROR
    assert harness.wait_no_tagged(tag) == []


@pytest.mark.parametrize("stop", MECHANISMS)
def test_requests_queued_behind_a_busy_worker_are_each_answered_exactly_once(config_dir, tag, stop):
    log = config_dir.path("server.log")
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, RULES)
    raw = config_dir.raw_gateway("--max-workers", "1")
    raw.initialize()
    raw.send(execute("running", "sleep", {"seconds": 600}))
    assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=30)
    raw.send(execute("queued-1", "echo", {"text": "a"}))
    raw.send(execute("queued-2", "echo", {"text": "b"}))
    raw.request("ping", timeout=10)  # answered in arrival order: both queued requests were read
    STOPS[stop](raw)
    assert wait_exit(raw) == 0
    raw.close()
    answers = [json.loads(line) for line in raw.all_stdout_bytes().splitlines()]
    by_id: dict = {}
    for answer in answers:
        by_id.setdefault(answer.get("id"), []).append(answer)
    for request_id in ("running", "queued-1", "queued-2"):
        assert len(by_id.get(request_id, [])) == 1, request_id
        answer = by_id[request_id][0]
        # A queued call may still run if the worker frees up in time; otherwise it is refused.
        assert "result" in answer or answer["error"]["code"] == INTERNAL_ERROR
    assert by_id["running"][0]["error"]["code"] == INTERNAL_ERROR
    assert harness.protocol_problems(raw.all_stdout_bytes()) == []


@pytest.mark.parametrize("stop", MECHANISMS)
def test_a_client_that_stops_reading_stdout_does_not_keep_the_gateway_alive(config_dir, tag, stop):
    audit = config_dir.path("audit.jsonl")
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    argv = [sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules, "--audit-log", str(audit))]
    # A client that never reads stdout, on a pipe made as small as Linux allows.
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=harness.gateway_env())
    try:
        pipe_bytes = fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        big = "x" * (4 * pipe_bytes)  # its answer can never fit: the worker writing it blocks
        for message in (
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            execute("big", "echo", {"text": big}),
        ):
            process.stdin.write(json.dumps(message).encode() + b"\n")
        process.stdin.flush()
        # Audited once the downstream answered, just before the answer is written.
        assert harness.wait_until(lambda: harness.count_events(audit, "tool_call", tool="execute_tool") == 1,
                                  timeout=60)
        if stop == "stdin EOF":
            process.stdin.close()
        else:
            process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_WITHIN_S) == 0
    finally:
        reap(process)
    assert harness.wait_no_tagged(tag) == []


def test_stdin_eof_ends_the_gateway_while_its_reader_is_blocked_answering_a_client_that_stopped_reading(config_dir):
    config_dir.write({}, RULES)
    argv = [sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules)]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=harness.gateway_env())
    try:
        pipe_bytes = fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        pings = b"".join(json.dumps({"jsonrpc": "2.0", "id": n, "method": "ping"}).encode() + b"\n"
                         for n in range(1000))
        # Every ping fits in stdin's pipe, so the client never waits; their answers (pings are
        # answered by the reader itself) are ten times what fits in stdout's.
        assert len(pings) < fcntl.fcntl(process.stdin.fileno(), fcntl.F_GETPIPE_SZ) and 1000 * 36 > 8 * pipe_bytes
        process.stdin.write(pings)
        process.stdin.flush()
        # stdout is full (no room for one more answer) before stdin closes.
        assert harness.wait_until(lambda: unread_bytes(process.stdout) > pipe_bytes - 64, timeout=60)
        process.stdin.close()
        assert process.wait(EXIT_WITHIN_S) == 0
    finally:
        reap(process)


def reap(process: subprocess.Popen) -> None:
    """Kills a gateway a failed test left running and closes the test's ends of its pipes."""
    if process.poll() is None:
        process.kill()
        process.wait(5)
    for stream in (process.stdin, process.stdout):
        stream.close()


def unread_bytes(stream) -> int:
    return struct.unpack("i", fcntl.ioctl(stream.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
