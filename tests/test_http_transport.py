"""Promise: over Streamable HTTP the gateway speaks MCP as the spec says (sessions, status
codes, bodies), a tool call behaves exactly as over stdio, and a stop answers what is in flight.

Every test starts the gateway as a process in HTTP mode (port 0) and talks to it with the
official SDK's streamable HTTP client or with raw HTTP.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import uuid

import pytest

import harness
from gateway_lib.errors import DENIED_BY_POLICY, INVALID_REQUEST, PARSE_ERROR
from gateway_lib.http_sessions import SessionStore
from gateway_lib.http_transport import SESSION_NOT_FOUND
from http_harness import HttpGatewayProcess, RawHttp, tool_error

RULES = {"agents": {"dev": {"allow": {"servers": ["tools"]}, "deny": {"tools": {"tools": ["fail"]}}}}}


MAX_BODY_BYTES = 65536


@pytest.fixture
def servers(config_dir, tag):
    """A config of this test's own, for tests that need a gateway of their own."""
    log = config_dir.path("server.log")
    config_dir.write({"tools": harness.fault_server(tag, log=log)}, RULES)
    return config_dir, log


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One gateway for the tests that only open sessions of their own: (process, config, log, tag).

    Started (as a supervisor would) with stdin at /dev/null; its user paths are in a temp dir.
    """
    root = tmp_path_factory.mktemp("http-transport")
    module_tag = f"shared-{uuid.uuid4().hex}"
    config_dir = harness.ConfigDir(root / "config")
    log = config_dir.path("server.log")
    config_dir.write({"tools": harness.fault_server(module_tag, log=log)}, RULES)
    env = {"HOME": str(root), "XDG_CACHE_HOME": str(root / "cache"), "XDG_CONFIG_HOME": str(root / "xdg")}
    with HttpGatewayProcess(config_dir, "--max-line-bytes", str(MAX_BODY_BYTES), env=env) as process:
        yield process, config_dir, log, module_tag
    assert harness.wait_no_tagged(module_tag) == []


@pytest.fixture
def gateway(shared):
    return shared[0]


# --- the whole flow, with the SDK client ------------------------------------------------------


def sessions_open(gateway: HttpGatewayProcess) -> int:
    """The gauge; reading it sweeps expired sessions and touches none."""
    reply = gateway.raw().request("GET", "/metrics", headers={"Accept": "application/json"})
    return reply.json()["http_sessions_open"]


def test_the_sdk_client_runs_the_whole_flow_and_its_session_ends_on_close(gateway):
    before = sessions_open(gateway)
    client = harness.HttpMcpClient(gateway.url)
    with client:
        assert sessions_open(gateway) == before + 1
        assert {tool.name for tool in client.list_tools()} == {"list_servers", "get_server_tools", "execute_tool"}
        assert client.call_json("list_servers", {"agent_id": "dev"})["servers"] == [{"name": "tools", "description": ""}]
        listing = client.call_json("get_server_tools", {"agent_id": "dev", "server": "tools", "names": "echo"})
        assert [tool["name"] for tool in listing["tools"]] == ["echo"]
        echoed = client.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "echo",
                                                   "args": {"text": "over http"}})
        assert not echoed.is_error and harness.result_text(echoed) == "over http"
        denied = client.call_tool("execute_tool", {"agent_id": "dev", "server": "tools", "tool": "fail", "args": {}})
        assert denied.is_error and json.loads(harness.result_text(denied))["error"]["code"] == DENIED_BY_POLICY
    # The SDK ends its session with DELETE on close: nothing stays open.
    assert sessions_open(gateway) == before


def test_a_deleted_session_is_404_afterwards(gateway):
    raw = gateway.raw()
    session = raw.initialize()
    assert raw.request("DELETE", headers={"Mcp-Session-Id": session}).status == 204
    after = raw.call(session, "list_servers", {"agent_id": "dev"})
    assert after.status == 404 and after.json()["error"]["code"] == SESSION_NOT_FOUND
    assert raw.request("DELETE", headers={"Mcp-Session-Id": session}).status == 404


def test_a_tool_call_answers_the_same_over_http_as_over_stdio(shared):
    gateway, config_dir, _, _ = shared
    arguments = {"agent_id": "dev", "server": "tools", "tool": "echo", "args": {"text": "same"}}
    denied_arguments = {**arguments, "tool": "fail"}
    raw = gateway.raw()
    session = raw.initialize()
    over_http = [raw.call_result(session, "execute_tool", args) for args in (arguments, denied_arguments)]
    with config_dir.gateway() as stdio:
        over_stdio = [stdio.call_tool("execute_tool", args).model_dump(by_alias=True, exclude_none=True,
                                                                        exclude={"result_type"})
                      for args in (arguments, denied_arguments)]
    for http_result, stdio_result in zip(over_http, over_stdio):
        assert http_result["isError"] == stdio_result["isError"]
        assert http_result["content"] == stdio_result["content"]


# --- POST bodies and answers --------------------------------------------------------------------


def test_a_notification_or_a_response_gets_202_with_no_body(gateway):
    raw = gateway.raw()
    session = raw.initialize()
    notification = raw.post({"jsonrpc": "2.0", "method": "notifications/unknown"}, session)
    response = raw.post({"jsonrpc": "2.0", "id": 7, "result": {}}, session)
    assert (notification.status, notification.body) == (202, b"")
    assert (response.status, response.body) == (202, b"")


def test_a_request_gets_its_answer_as_json_on_the_same_post(gateway):
    raw = gateway.raw()
    session = raw.initialize()
    reply = raw.post({"jsonrpc": "2.0", "id": "p-1", "method": "ping"}, session)
    assert reply.status == 200 and reply.header("Content-Type") == "application/json"
    assert reply.json() == {"jsonrpc": "2.0", "id": "p-1", "result": {}}


def test_a_request_without_a_session_is_400_and_with_an_unknown_one_404(gateway):
    raw = gateway.raw()
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    missing = raw.post(ping)
    unknown = raw.post(ping, session="not-a-session")
    assert missing.status == 400 and missing.json()["error"]["code"] == INVALID_REQUEST
    assert unknown.status == 404 and unknown.json()["error"]["code"] == SESSION_NOT_FOUND


def test_initialize_answers_with_a_fresh_random_session_id_each_time(gateway):
    raw = gateway.raw()
    first, second = raw.initialize(), raw.initialize()
    assert first != second and len(first) >= 32


@pytest.mark.parametrize("version", ["2025-06-18", "2025-03-26"])
def test_clients_of_older_versions_negotiate_theirs(gateway, version):
    raw = gateway.raw()
    reply = raw.post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "old"}}})
    assert reply.json()["result"]["protocolVersion"] == version


def test_an_unsupported_protocol_version_header_is_400_and_another_supported_one_accepted(gateway):
    raw = gateway.raw()
    session = raw.initialize()  # negotiated 2025-11-25
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    unsupported = raw.post(ping, session, headers={"MCP-Protocol-Version": "1999-01-01"})
    other_supported = raw.post(ping, session, headers={"MCP-Protocol-Version": "2025-06-18"})
    assert unsupported.status == 400 and unsupported.json()["error"]["code"] == INVALID_REQUEST
    assert other_supported.status == 200 and other_supported.json()["result"] == {}


def test_a_body_that_is_not_json_content_is_415_and_bad_json_400_with_a_parse_error(gateway):
    raw = gateway.raw()
    session = raw.initialize()
    wrong_type = raw.post(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}', session,
                          headers={"Content-Type": "text/plain"})
    bad_json = raw.post(b'{"jsonrpc": "2.0", "id": 1, "method": ', session)
    assert wrong_type.status == 415 and wrong_type.json()["error"]["code"] == INVALID_REQUEST
    assert bad_json.status == 400 and bad_json.json() == {
        "jsonrpc": "2.0", "error": {"code": PARSE_ERROR, "message": bad_json.json()["error"]["message"]}}
    assert raw.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, session).status == 200


def test_a_body_over_the_message_cap_is_413_unread_and_the_gateway_keeps_serving(gateway):
    raw = gateway.raw()
    session = raw.initialize()
    big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * MAX_BODY_BYTES}}
    too_big = raw.post(big, session)
    assert too_big.status == 413 and too_big.json()["error"]["code"] == INVALID_REQUEST
    assert raw.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, session).status == 200


def test_error_bodies_are_json_and_never_a_traceback(gateway):
    raw = gateway.raw()
    replies = [raw.request("GET", "/nowhere"), raw.request("PUT"), raw.post(b"\xff\xfe", "x"),
               raw.request("GET", headers={"Accept": "text/event-stream"})]
    for reply in replies:
        assert reply.header("Content-Type") == "application/json", (reply.status, reply.body)
        assert b"Traceback" not in reply.body and isinstance(reply.json(), dict)


def test_get_on_the_mcp_endpoint_is_405_since_nothing_is_sent_that_way(gateway):
    reply = gateway.raw().request("GET", headers={"Accept": "text/event-stream"})
    assert reply.status == 405 and "POST" in reply.header("Allow")


# --- sessions -------------------------------------------------------------------------------------


def test_an_idle_session_expires_after_the_ttl_and_is_404(servers):
    config_dir, _ = servers
    with HttpGatewayProcess(config_dir, env={"GATEWAY_HTTP_SESSION_TTL_S": "1"}) as gateway:
        raw = gateway.raw()
        session = raw.initialize()
        assert sessions_open(gateway) == 1
        assert harness.wait_until(lambda: sessions_open(gateway) == 0, timeout=15)
        assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session).status == 404


def test_the_session_store_evicts_the_oldest_idle_session_when_full():
    now = [0.0]
    store = SessionStore(ttl_s=100, max_sessions=2, clock=lambda: now[0])
    ended = []

    class Part:
        def __init__(self, name):
            self.name = name

        def shutdown(self, grace, cancel_wait=None):
            ended.append(self.name)

    oldest = store.add(Part("a"), None, None)
    busy = store.add(Part("b"), None, None)
    store.acquire(busy.session_id)  # in use: never evicted
    store.add(Part("c"), None, None)
    assert ended == ["a"] and store.acquire(oldest.session_id) is None
    assert store.acquire(busy.session_id) is busy


def test_the_session_store_expires_sessions_idle_past_the_ttl_but_not_busy_ones():
    now = [0.0]
    store = SessionStore(ttl_s=10, clock=lambda: now[0])

    class Part:
        def shutdown(self, grace, cancel_wait=None):
            pass

    idle = store.add(Part(), None, None)
    busy = store.add(Part(), None, None)
    assert store.acquire(busy.session_id) is busy
    now[0] = 11.0
    assert store.count() == 1
    assert store.acquire(idle.session_id) is None
    store.release(busy)
    assert store.acquire(busy.session_id) is busy


# --- process life ---------------------------------------------------------------------------------


def test_the_gateway_keeps_serving_with_stdin_at_end_of_file(gateway):
    raw = gateway.raw()
    session = raw.initialize()  # its stdin is /dev/null: end of file from the start
    assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session).status == 200
    assert gateway.process.poll() is None


def test_a_port_in_use_is_one_clear_line_and_exit_2(servers):
    config_dir, _ = servers
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.run(
            [sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules,
                                                   "--transport", "http", "--port", str(port))],
            stdin=subprocess.DEVNULL, capture_output=True, env=harness.gateway_env(), timeout=60)
    assert process.returncode == 2
    errors = [line for line in process.stderr.decode().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"port {port}" in errors[0], process.stderr


def test_a_host_that_cannot_be_bound_is_one_clear_line_and_exit_2(servers):
    config_dir, _ = servers
    process = subprocess.run(
        [sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules,
                                               "--transport", "http", "--host", "127.0.0.1.invalid", "--port", "0")],
        stdin=subprocess.DEVNULL, capture_output=True, env=harness.gateway_env(), timeout=60)
    assert process.returncode == 2
    errors = [line for line in process.stderr.decode().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "127.0.0.1.invalid" in errors[0], process.stderr


@pytest.mark.parametrize("env", [{"GATEWAY_TRANSPORT": "carrier-pigeon"},
                                 {"GATEWAY_TRANSPORT": "http", "GATEWAY_HTTP_PORT": "70000"},
                                 {"GATEWAY_TRANSPORT": "http", "GATEWAY_HTTP_SESSION_TTL_S": "0.5"}],
                         ids=["unknown transport", "port out of range", "ttl under 1 s"])
def test_a_bad_http_setting_stops_the_gateway_before_it_starts_with_exit_2(servers, env):
    config_dir, _ = servers
    process = subprocess.run([sys.executable, *harness.gateway_argv(config_dir.mcp_config, config_dir.rules)],
                             stdin=subprocess.DEVNULL, capture_output=True, env=harness.gateway_env(env), timeout=60)
    variable = [name for name in env if name != "GATEWAY_TRANSPORT"] or ["GATEWAY_TRANSPORT"]
    assert process.returncode == 2 and variable[0] in process.stderr.decode(), process.stderr
    assert b"serving" not in process.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_answers_the_call_in_flight_then_exits_0_with_nothing_left(servers, tag, signum):
    config_dir, log = servers
    with HttpGatewayProcess(config_dir) as gateway:
        raw = gateway.raw()
        session = raw.initialize()
        raw.call_result(session, "get_server_tools", {"agent_id": "dev", "server": "tools"})  # cache the list
        answers = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            slow = answers.submit(raw.call_result, session, "execute_tool",
                                  {"agent_id": "dev", "server": "tools", "tool": "sleep", "args": {"seconds": 1}})
            assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=20)
            gateway.process.send_signal(signum)
            assert slow.result(timeout=20)["content"][0]["text"] == "slept 1"
        finally:
            answers.shutdown(wait=True)
        assert gateway.wait_exit() == 0
        assert harness.wait_no_tagged(tag) == []
        assert gateway.stdout_bytes() == b""


def test_a_client_that_disconnects_mid_call_cancels_it_downstream(shared):
    gateway, _, log, module_tag = shared
    raw = gateway.raw()
    session = raw.initialize()
    raw.call_result(session, "get_server_tools", {"agent_id": "dev", "server": "tools"})
    body = json.dumps({"jsonrpc": "2.0", "id": "gone", "method": "tools/call", "params": {
        "name": "execute_tool",
        "arguments": {"agent_id": "dev", "server": "tools", "tool": "sleep", "args": {"seconds": 60}}}}).encode()
    with socket.create_connection((raw.host, raw.port), timeout=10) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Mcp-Session-Id: {session}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert harness.wait_until(lambda: harness.count_events(log, "call", tool="sleep") == 1, timeout=20)
    # The 60 s sleep's server is stopped long before it would have finished.
    assert harness.wait_no_tagged(module_tag, timeout=20) == []
    assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session).status == 200


def test_stdio_mode_imports_none_of_the_http_modules(servers):
    config_dir, _ = servers
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}}}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *harness.gateway_argv(config_dir.mcp_config, config_dir.rules)],
        input=(json.dumps(initialize) + "\n").encode(), capture_output=True, timeout=60, env=harness.gateway_env())
    imported = {line.split("|")[-1].strip() for line in done.stderr.decode().splitlines()
                if line.startswith("import time:") and "|" in line}
    assert done.returncode == 0 and "gateway_lib.rpc" in imported  # the listing is real
    http_modules = {"http.server", "gateway_lib.http_main", "gateway_lib.http_transport", "gateway_lib.http_sessions", "gateway_lib.http_stream",
                    "gateway_lib.http_security", "gateway_lib.probes", "gateway_lib.prometheus"}
    assert imported & http_modules == set()
