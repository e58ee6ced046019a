"""Promise: over Streamable HTTP, what a downstream does during execute_tool travels on the
call's event stream: progress under the client's token, log messages at the HTTP session's
level, and sampling, elicitation and roots requests, answered by the client's POSTs.

Only the HTTP leg is proven here; what passes through and how (levels, policy, audit
content, timeouts) is proven over stdio in test_passthrough.py. The gateway runs in HTTP
mode as a process; the client is the official SDK's streamable HTTP client with sampling,
elicitation, roots and logging callbacks (or raw HTTP where the wire itself is the point),
and the downstream is tests/servers/passthrough_server.py.
"""

from __future__ import annotations

import http.client
import json
import queue
import signal
import socket
import uuid

import pytest

import harness
from gateway_lib.errors import INTERNAL_ERROR, INVALID_REQUEST, TIMEOUT
from gateway_lib.http_stream import ANSWER, EVENT, PostExchange, sse_chunk
from http_harness import HttpGatewayProcess
from passthrough_helpers import Recorder, answer_of, audit_records, open_rules, passthrough_server

WAIT_S = 20
CAP_MS = 4000  # the shared gateway's absolute cap on a call: a client that never answers ends there
# One downstream entry per test, each with its own event log, so tests share the gateway.
SERVERS = ("progress", "log", "relay", "refusal", "silent", "gone", "old", "plain")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One HTTP gateway for the module: (process, config_dir, tag)."""
    root = tmp_path_factory.mktemp("http-streaming")
    module_tag = f"streaming-{uuid.uuid4().hex}"
    config_dir = harness.ConfigDir(root / "config")
    config_dir.write({name: passthrough_server(module_tag, config_dir.path(f"{name}.jsonl")) for name in SERVERS},
                     open_rules())
    env = {"GATEWAY_MAX_TIMEOUT_MS": str(CAP_MS), "HOME": str(root)}
    with HttpGatewayProcess(config_dir, "--audit-log", str(config_dir.path("audit.jsonl")), env=env) as process:
        yield process, config_dir, module_tag
    assert harness.wait_no_tagged(module_tag) == []


def sdk_client(process: HttpGatewayProcess, recorder: Recorder, **caps) -> harness.HttpMcpClient:
    client = harness.HttpMcpClient(process.url)
    client.session_kwargs = recorder.session_kwargs(**caps)
    return client  # opened by `with`


def execute(client, server: str, tool: str, args=None, progress=None, timeout=WAIT_S):
    arguments = {"server": server, "tool": tool, "args": args or {}}
    coro = client.session.call_tool("execute_tool", arguments, progress_callback=progress, read_timeout_seconds=timeout)
    return client._run(coro, timeout + 5)


def events(config_dir, server: str, event: str) -> list[dict]:
    return [e for e in harness.read_log(config_dir.path(f"{server}.jsonl")) if e["event"] == event]


# --- notifications ---------------------------------------------------------------------------


def test_progress_reaches_an_http_client_under_its_own_token(shared):
    process, _, _ = shared
    seen: queue.Queue = queue.Queue()

    async def on_progress(progress, total, message):
        seen.put((progress, total, message))

    with sdk_client(process, Recorder()) as client:
        result = execute(client, "progress", "progress", {"steps": 3}, progress=on_progress)
        got = [seen.get(timeout=WAIT_S) for _ in range(3)]
    assert not result.is_error, harness.result_text(result)
    # The SDK matched each one to its call by the token it sent: the token came back unchanged.
    assert got == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]


def drain(q: queue.Queue) -> list:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
def test_log_messages_reach_an_http_client_at_the_level_its_session_set(shared):
    process, _, _ = shared
    recorder = Recorder()
    with sdk_client(process, recorder) as client:
        client._run(client.session.set_logging_level("warning"), WAIT_S)
        execute(client, "log", "log")
    # The SDK hands each event to the callback before it reads the answer after it.
    relayed = drain(recorder.logs)
    assert [(m.level, m.logger, m.data) for m in relayed] == [("warning", "log/worker", {"disk": "low"})]


# --- server-to-client requests ---------------------------------------------------------------


def test_sampling_elicitation_and_roots_are_relayed_to_an_http_client_and_answered(shared):
    process, config_dir, _ = shared
    recorder = Recorder()
    with sdk_client(process, recorder) as client:
        sampled = answer_of(execute(client, "relay", "sample"))["answer"]
        elicited = answer_of(execute(client, "relay", "elicit"))["answer"]
        rooted = answer_of(execute(client, "relay", "roots"))["answer"]
    asked = [method for method, _ in drain(recorder.asked)]
    assert asked == ["sampling/createMessage", "elicitation/create", "roots/list"]
    assert sampled["model"] == "fixture-model" and sampled["content"]["text"] == "hi"
    assert elicited == {"action": "accept", "content": {"name": "Ada"}}
    assert rooted["roots"] == [{"uri": "file:///work/project", "name": "project"}]
    # Each downstream session declared what this HTTP client declared at initialize.
    declared = [e["capabilities"] for e in events(config_dir, "relay", "initialize")]
    assert declared and all({"sampling", "elicitation", "roots"} <= set(caps) for caps in declared)
    outcomes = [(r["method"], r["outcome"]) for r in audit_records(config_dir) if r["server"] == "relay"]
    assert outcomes == [("sampling/createMessage", "answered"), ("elicitation/create", "answered"),
                        ("roots/list", "answered")]


def test_a_capability_the_http_client_did_not_declare_gets_the_sdk_refusal(shared):
    process, config_dir, _ = shared
    recorder = Recorder()
    with sdk_client(process, recorder, sampling=False) as client:
        error = answer_of(execute(client, "refusal", "sample"))["error"]
    assert error == {"code": INVALID_REQUEST, "message": "Sampling not supported"}
    assert recorder.asked.empty()
    declared = [e["capabilities"] for e in events(config_dir, "refusal", "initialize")]
    assert declared and all("sampling" not in caps and "roots" in caps for caps in declared)


def test_an_http_client_that_never_answers_ends_the_call_at_its_cap(shared):
    process, _, _ = shared
    recorder = Recorder()
    recorder.never_answer = True
    with sdk_client(process, recorder) as client:
        result = execute(client, "silent", "sample")
        withdrawn = recorder.withdrawn.get(timeout=WAIT_S)  # the gateway's cancel reached the client
    assert result.is_error and result.structured_content["error"]["code"] == TIMEOUT
    assert withdrawn == "sampling/createMessage"


# --- the wire: disconnect and shutdown ---------------------------------------------------------


class RawStream:
    """One POST over http.client whose event-stream answer is read event by event."""

    def __init__(self, url_process: HttpGatewayProcess, session: str, message: dict):
        raw = url_process.raw()
        self.connection = http.client.HTTPConnection(raw.host, raw.port, timeout=WAIT_S)
        self.connection.request("POST", raw.path, body=json.dumps(message).encode(), headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "Mcp-Session-Id": session})
        self.response = self.connection.getresponse()

    def next_message(self) -> dict | None:
        """The next event's message; None when the stream ended."""
        while True:
            line = self.response.readline()
            if not line:
                return None
            if line.startswith(b"data: "):
                return json.loads(line[len(b"data: "):])

    def close(self) -> None:
        self.connection.close()


def capable_session(process: HttpGatewayProcess) -> str:
    raw = process.raw()
    opened = raw.post({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
        "protocolVersion": harness.LATEST_PROTOCOL_VERSION, "capabilities": {"sampling": {}},
        "clientInfo": {"name": "raw-http", "version": "0"}}})
    session = opened.header("Mcp-Session-Id")
    assert raw.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session).status == 202
    return session


def sample_call(server: str) -> dict:
    return {"jsonrpc": "2.0", "id": "call-1", "method": "tools/call",
            "params": {"name": "execute_tool", "arguments": {"server": server, "tool": "sample", "args": {}}}}


def test_a_client_that_disconnects_mid_stream_cancels_the_call_downstream(shared):
    process, config_dir, _ = shared
    session = capable_session(process)
    stream = RawStream(process, session, sample_call("gone"))
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type") == "text/event-stream"
        asked = stream.next_message()
        assert asked["method"] == "sampling/createMessage" and isinstance(asked["id"], str)
    finally:
        stream.close()  # gone before answering
    assert harness.wait_until(lambda: events(config_dir, "gone", "cancelled"), WAIT_S)
    [call] = events(config_dir, "gone", "call")
    assert call["tool"] == "sample"
    assert process.raw().post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, session).status == 200


def test_a_post_that_accepts_only_json_gets_one_body_and_relays_nothing(shared):
    process, config_dir, _ = shared
    session = capable_session(process)  # declared sampling at initialize
    message = sample_call("plain")
    message["params"]["_meta"] = {"progressToken": "t-plain"}
    reply = process.raw().post(message, session, headers={"Accept": "application/json"})
    assert reply.status == 200 and reply.header("Content-Type") == "application/json"
    # Without a stream nothing can be asked of the client: the server sees a client without sampling.
    assert reply.json()["result"]["structuredContent"]["error"] == {"code": INVALID_REQUEST,
                                                                     "message": "Sampling not supported"}
    assert [e["capabilities"] for e in events(config_dir, "plain", "initialize")] == [{}]


def test_an_http_1_0_client_gets_its_stream_unchunked_ended_by_closing_the_connection(shared):
    process, _, _ = shared
    session = capable_session(process)
    raw = process.raw()
    message = {"jsonrpc": "2.0", "id": "old-1", "method": "tools/call", "params": {
        "name": "execute_tool", "arguments": {"server": "old", "tool": "progress", "args": {"steps": 2}},
        "_meta": {"progressToken": "t-old"}}}
    body = json.dumps(message).encode()
    with socket.create_connection((raw.host, raw.port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST /mcp HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Accept: application/json, text/event-stream\r\n"
                     + f"Mcp-Session-Id: {session}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        received = b""
        while chunk := sock.recv(65536):  # the gateway closes the connection after the answer
            received += chunk
    head, _, stream = received.partition(b"\r\n\r\n")
    assert b"text/event-stream" in head and b"chunked" not in head.lower()
    messages = [json.loads(line[len(b"data: "):]) for line in stream.split(b"\n") if line.startswith(b"data: ")]
    assert [m.get("params", {}).get("progressToken") for m in messages[:-1]] == ["t-old", "t-old"]
    assert messages[-1]["id"] == "old-1" and messages[-1]["result"]["isError"] is False


def test_an_exchange_keeps_order_and_drops_what_comes_after_its_end():
    exchange = PostExchange()
    exchange.send({"jsonrpc": "2.0", "method": "notifications/progress"})
    exchange.reply({"jsonrpc": "2.0", "id": 1, "result": {}})
    exchange.close()
    exchange.send({"jsonrpc": "2.0", "method": "notifications/message"})  # the POST is answered: dropped
    assert [exchange.get(0)[0] for _ in range(2)] == [EVENT, ANSWER]
    with pytest.raises(queue.Empty):
        exchange.get(0)


def test_an_event_is_one_sse_message_and_one_http_chunk():
    event = b"event: message\ndata: {\"a\":1}\n\n"
    assert sse_chunk(b'{"a":1}\n', chunked=False) == event
    assert sse_chunk(b'{"a":1}\n') == b"%X\r\n" % len(event) + event + b"\r\n"


def test_a_stop_closes_open_event_streams_with_an_answer(tmp_path, tag):
    config_dir = harness.ConfigDir(tmp_path / "config")
    config_dir.write({"stop": passthrough_server(tag, config_dir.path("stop.jsonl"))}, open_rules())
    with HttpGatewayProcess(config_dir, env={"HOME": str(tmp_path)}) as process:
        session = capable_session(process)
        stream = RawStream(process, session, sample_call("stop"))
        try:
            asked = stream.next_message()
            assert asked["method"] == "sampling/createMessage"
            process.process.send_signal(signal.SIGTERM)
            rest = []
            while (message := stream.next_message()) is not None:
                rest.append(message)
        finally:
            stream.close()
        assert process.wait_exit() == 0
    # The relayed request is withdrawn on the stream, then the call is answered and the stream ends.
    withdrawn, answered = rest
    assert withdrawn["method"] == "notifications/cancelled" and withdrawn["params"]["requestId"] == asked["id"]
    assert answered["id"] == "call-1" and answered["error"]["code"] == INTERNAL_ERROR
    assert harness.wait_no_tagged(tag) == []
