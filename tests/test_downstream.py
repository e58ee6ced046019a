"""gateway_lib.downstream against real child processes and real HTTP servers."""

from __future__ import annotations

import http.server
import importlib.util
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

import harness
from gateway_lib.downstream import Downstream
from gateway_lib.errors import DownstreamError, RequestCancelled, ServerUnavailable, ToolNotFound
from gateway_lib.model import ServerSpec

SERVERS = Path(__file__).parent / "servers"
FIXTURE = SERVERS / "downstream_fixture.py"
ROOT = Path(__file__).parent.parent


def _load_fixture():
    spec = importlib.util.spec_from_file_location("downstream_fixture", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture = _load_fixture()


tagged = harness.tagged_pids
wait_until = harness.wait_until
free_port = harness.free_port


def assert_no_process_left(tag: str) -> None:
    survivors = harness.wait_no_tagged(tag)
    assert not survivors, f"processes still alive: {survivors}"


@pytest.fixture
def tag() -> str:
    return f"downstream-test-{uuid.uuid4()}"


@pytest.fixture
def downstream():
    ds = Downstream()
    yield ds
    ds.shutdown()
    assert ds.live_sessions == 0


def stdio(tag: str, *args: str, **fields) -> ServerSpec:
    return ServerSpec(name="fx", transport="stdio", command=sys.executable, args=(str(FIXTURE), "--tag", tag, *args), **fields)


# --- the happy path -----------------------------------------------------------------


def test_list_tools_follows_pagination_and_returns_wire_form(downstream, tag):
    tools = downstream.list_tools(stdio(tag), 10)

    assert [t["name"] for t in tools] == [t["name"] for t in fixture.TOOLS]  # more than one page
    assert len(fixture.TOOLS) > fixture.PAGE_SIZE
    by_name = {t["name"]: t for t in tools}
    assert by_name["echo"] == fixture.TOOLS[0]  # no added keys, no None values
    assert by_name["blocks"]["title"] == "All blocks"
    assert by_name["blocks"]["annotations"] == {"readOnlyHint": True}
    assert by_name["blocks"]["_meta"] == {"fixture/x": 1}
    assert by_name["structured"]["outputSchema"]["required"] == ["n"]
    assert_no_process_left(tag)


def test_every_content_block_type_passes_through_unchanged(downstream, tag):
    result = downstream.call_tool(stdio(tag), "blocks", {}, 10)

    expected, _ = fixture.call_tool("blocks", {})
    assert result == expected  # exactly content + isError: no resultType, nothing added
    assert_no_process_left(tag)


def test_structured_content_and_tool_errors(downstream, tag):
    structured = downstream.call_tool(stdio(tag), "structured", {}, 10)
    failed = downstream.call_tool(stdio(tag), "fail", {}, 10)
    echoed = downstream.call_tool(stdio(tag), "echo", {"text": "hé\nllo"}, 10)

    assert structured == {"content": [{"type": "text", "text": '{"n": 7}'}], "structuredContent": {"n": 7}, "isError": False}
    assert failed == {"content": [{"type": "text", "text": "it broke"}], "isError": True}
    assert echoed == {"content": [{"type": "text", "text": "hé\nllo"}], "isError": False}


def test_child_gets_configured_env_but_not_the_gateways(downstream, tag, monkeypatch):
    monkeypatch.setenv("DOWNSTREAM_TEST_PARENT_ONLY", "leak")
    spec = stdio(tag, env={"DB_TOKEN": "s3cret"})

    assert downstream.call_tool(spec, "env", {"name": "DB_TOKEN"}, 10)["content"][0]["text"] == "s3cret"
    assert downstream.call_tool(spec, "env", {"name": "DOWNSTREAM_TEST_PARENT_ONLY"}, 10)["content"][0]["text"] == "<unset>"


def test_child_stderr_goes_to_errlog_and_nothing_to_stdout(tag, tmp_path, capfd):
    with open(tmp_path / "err.log", "w") as errlog:
        ds = Downstream(errlog=errlog)
        ds.call_tool(stdio(tag), "echo", {"text": "x"}, 10)
        ds.shutdown()

    assert "fixture serve starting" in (tmp_path / "err.log").read_text()
    assert capfd.readouterr().out == ""


def test_cwd_is_applied(downstream, tag, tmp_path):
    spec = stdio(tag, cwd=str(tmp_path))
    assert downstream.call_tool(spec, "cwd", {}, 10)["content"][0]["text"] == str(tmp_path)
    bad = stdio(tag, cwd=str(tmp_path / "missing"))
    with pytest.raises(ServerUnavailable, match=r"^Server 'fx' could not be started: working directory .* not found$"):
        downstream.list_tools(bad, 10)


# --- failures become ServerUnavailable / DownstreamError -----------------------------


def test_a_missing_command_is_unavailable_and_the_message_names_only_the_command(downstream):
    spec = ServerSpec(name="db", transport="stdio", command="nope-no-such-command", env={"K": "s3cret"})
    with pytest.raises(ServerUnavailable) as caught:
        downstream.list_tools(spec, 10)
    assert caught.value.message == "Server 'db' could not be started: command 'nope-no-such-command' not found"


def test_a_server_that_exits_at_once_is_unavailable_and_the_message_gives_its_exit_status_and_no_secret(
        downstream, tag):
    spec = stdio(tag, "--mode", "exit", env={"API_KEY": "s3cret-value"})
    with pytest.raises(ServerUnavailable) as caught:
        downstream.list_tools(spec, 10)
    assert caught.value.message == "Server 'fx' closed the connection before answering initialize (exit status 3)"
    assert "s3cret-value" not in caught.value.message
    assert_no_process_left(tag)


def test_a_crash_mid_call_is_unavailable_and_the_message_gives_the_exit_status(downstream, tag):
    with pytest.raises(ServerUnavailable) as caught:
        downstream.call_tool(stdio(tag), "crash", {}, 10)
    assert caught.value.message == "Server 'fx' closed the connection during tools/call (exit status 9)"
    assert_no_process_left(tag)


def test_a_json_rpc_error_message_names_the_method_the_code_and_the_servers_words(downstream, tag):
    with pytest.raises(DownstreamError) as caught:
        downstream.call_tool(stdio(tag), "rpc_error", {}, 10)
    assert caught.value.context == {"downstream_code": -32050}
    assert caught.value.message == "Server 'fx' answered tools/call with error -32050: database is locked"


def test_an_unusable_spec_spawns_nothing_and_its_reason_is_the_message(downstream, tmp_path):
    marker = tmp_path / "spawned"
    spec = ServerSpec(
        name="db", transport="stdio", command=sys.executable, args=("-c", f"open({str(marker)!r}, 'w')"),
        unusable="Server 'db' cannot be used: variable DB_URL is not set",
    )
    with pytest.raises(ServerUnavailable) as caught:
        downstream.call_tool(spec, "x", {}, 10)
    assert caught.value.message == "Server 'db' cannot be used: variable DB_URL is not set"
    assert not marker.exists()
    assert downstream.live_sessions == 0


# --- deadlines, cancellation, process groups ------------------------------------------


def test_cancel_while_waiting(downstream, tag):
    cancel = threading.Event()

    def cancel_once_running():
        wait_until(lambda: tagged(tag), timeout=10)
        cancel.set()

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    # Cancelled, not ToolTimeout: it ended on the cancel, before the 30 s deadline.
    with pytest.raises(RequestCancelled):
        downstream.call_tool(stdio(tag, "--mode", "grandchild"), "sleep", {"seconds": 60}, 30, cancel)
    canceller.join()

    assert_no_process_left(tag)


def test_cancel_already_set_spawns_nothing(downstream, tmp_path):
    marker = tmp_path / "spawned"
    spec = ServerSpec(name="db", transport="stdio", command=sys.executable, args=("-c", f"open({str(marker)!r}, 'w')"))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RequestCancelled):
        downstream.list_tools(spec, 10, cancel)
    assert not marker.exists()


def test_shutdown_stops_live_sessions_and_refuses_new_ones(tag):
    ds = Downstream()
    outcome: list[BaseException] = []

    def call():
        try:
            ds.call_tool(stdio(tag, "--mode", "grandchild"), "sleep", {"seconds": 60}, 30)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert wait_until(lambda: len(tagged(tag)) == 2, timeout=10)  # server and grandchild are up
    assert ds.live_sessions == 1

    ds.shutdown(timeout_s=5)
    caller.join(timeout=5)

    assert not caller.is_alive()
    assert isinstance(outcome[0], ServerUnavailable) and "shutting down" in outcome[0].message
    assert ds.live_sessions == 0
    assert_no_process_left(tag)
    with pytest.raises(ServerUnavailable, match="shutting down"):
        ds.list_tools(stdio(tag), 10)


# --- import cost -----------------------------------------------------------------------


def _run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_module_does_not_import_the_sdk():
    loaded = _run_python(
        "import sys, gateway_lib.downstream\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'httpx2', 'anyio', 'asyncio')))"
    )
    assert loaded == "[]"


def test_preload_imports_the_client_in_the_background():
    loaded = _run_python(
        "import sys, threading\n"
        "from gateway_lib.downstream import Downstream\n"
        "ds = Downstream(); ds.preload(); began = ds.preloading\n"
        "[thread.join(30) for thread in threading.enumerate() if thread.name == 'downstream-preload']\n"
        "print(began, ds.preloading, 'mcp.client.stdio' in sys.modules, 'mcp.client.streamable_http' in sys.modules)"
    )
    assert loaded == "True False True True"


def test_first_calls_racing_the_preload_import_all_succeed(tag):
    # Concurrent first imports of the SDK's circular modules fail unless serialized.
    counts = _run_python(
        "import sys, threading\n"
        "from gateway_lib.downstream import Downstream\n"
        "from gateway_lib.model import ServerSpec\n"
        f"spec = ServerSpec(name='fx', transport='stdio', command=sys.executable, args=({str(FIXTURE)!r}, '--tag', {tag!r}))\n"
        "ds = Downstream(); ds.preload(); counts = []\n"
        "callers = [threading.Thread(target=lambda: counts.append(len(ds.list_tools(spec, 30)))) for _ in range(3)]\n"
        "[c.start() for c in callers]; [c.join() for c in callers]; ds.shutdown()\n"
        "print(counts)"
    )
    assert counts == str([len(fixture.TOOLS)] * 3)


# --- HTTP and SSE ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_server():
    """The SDK's own server on free ports: yields {"http": url, "sse": url}."""
    procs, urls = [], {}
    for transport, path in (("streamable-http", "/mcp"), ("sse", "/sse")):
        port = free_port()
        procs.append(subprocess.Popen(
            [sys.executable, str(SERVERS / "downstream_http.py"), "--port", str(port), "--transport", transport],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        urls["http" if transport == "streamable-http" else "sse"] = f"http://127.0.0.1:{port}{path}"
    try:
        for proc, url in zip(procs, urls.values()):
            harness.wait_for_port(int(url.split(":")[2].split("/")[0]), 20, proc)
        yield urls
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_http_transports_list_call_and_send_headers(downstream, sdk_server, transport):
    spec = ServerSpec(name="web", transport=transport, url=sdk_server[transport], headers={"X-Api-Key": "k-123"})

    names = {t["name"] for t in downstream.list_tools(spec, 10)}
    echoed = downstream.call_tool(spec, "echo", {"text": "over http"}, 10)
    header = downstream.call_tool(spec, "header", {"name": "x-api-key"}, 10)

    assert {"echo", "header"} <= names
    assert echoed["content"] == [{"type": "text", "text": "over http"}]
    assert echoed["isError"] is False
    assert header["content"][0]["text"] == "k-123"
    assert wait_until(lambda: downstream.live_sessions == 0, timeout=5)  # sessions close after answering


def test_a_refused_http_connection_is_unavailable_and_the_message_names_the_url_without_credentials(
        downstream):
    port = free_port()
    spec = ServerSpec(
        name="web", transport="http", url=f"http://user:pw@127.0.0.1:{port}/mcp?token=q-s3cret",
        headers={"Authorization": "Bearer h-s3cret"},
    )
    with pytest.raises(ServerUnavailable) as caught:
        downstream.list_tools(spec, 10)
    assert caught.value.message == f"Server 'web' could not be reached at http://127.0.0.1:{port}/mcp: connection failed"


class _BadHandler(http.server.BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def do_POST(self):
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/500"):
            body, status, ctype = b'{"oops": true}', 500, "application/json"
        else:
            body, status, ctype = b"<html><body>login</body></html>", 200, "text/html"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_DELETE = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def bad_http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BadHandler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    _BadHandler.seen_auth.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(("path", "reason"), [("/500", "Server returned an error response"),
                                                ("/html", "Unexpected content type: text/html")])
def test_an_http_server_answering_500_or_html_is_unavailable_and_the_message_gives_the_sdks_reason(
        downstream, bad_http_server, path, reason):
    spec = ServerSpec(name="web", transport="http", url=f"{bad_http_server}{path}?token=q-s3cret",
                      headers={"Authorization": "Bearer h-s3cret"})
    with pytest.raises(ServerUnavailable) as caught:
        downstream.list_tools(spec, 10)

    assert caught.value.message == f"Server 'web' failed to initialize: {reason}"
    assert "s3cret" not in json.dumps(caught.value.to_payload())
    assert _BadHandler.seen_auth[0] == "Bearer h-s3cret"  # the configured headers were sent


# --- one round trip per request, one session per call -----------------------------------


def logged_fault_server(tag: str, log: Path) -> ServerSpec:
    """The e2e fault server, which logs every start and request to `log`."""
    script = SERVERS / "fault_server.py"
    return ServerSpec(name="fault", transport="stdio", command=sys.executable,
                      args=(str(script), "--tag", tag, "--log", str(log)))


def logged(log: Path, event: str, **match) -> int:
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return sum(1 for e in entries if e["event"] == event and all(e.get(k) == v for k, v in match.items()))


def test_call_tool_sends_only_the_call_even_for_a_tool_with_an_output_schema(downstream, tag, tmp_path):
    log = tmp_path / "server.log"
    result = downstream.call_tool(logged_fault_server(tag, log), "add", {"a": 1, "b": 2}, 10)

    assert result["structuredContent"] == {"sum": 3}
    assert logged(log, "call", method="tools/call") == 1
    assert logged(log, "call", method="tools/list") == 0


def test_list_and_call_tool_lists_checks_and_calls_in_one_session(downstream, tag, tmp_path):
    log = tmp_path / "server.log"
    seen: list[list[dict]] = []

    result = downstream.list_and_call_tool(logged_fault_server(tag, log), "echo", {"text": "once"}, 10, check=seen.append)

    assert result == {"content": [{"type": "text", "text": "once"}], "isError": False}
    assert "echo" in [t["name"] for t in seen[0]]
    assert logged(log, "start") == 1
    assert logged(log, "call", method="tools/list") == 1
    assert logged(log, "call", method="tools/call") == 1
    assert_no_process_left(tag)


def test_list_and_call_tool_never_calls_when_the_check_refuses(downstream, tag, tmp_path):
    log = tmp_path / "server.log"

    def refuse(tools: list[dict]) -> None:
        raise ToolNotFound("Server 'fault' has no tool 'nope'", server="fault", tool="nope")

    with pytest.raises(ToolNotFound):
        downstream.list_and_call_tool(logged_fault_server(tag, log), "nope", {}, 10, check=refuse)
    assert logged(log, "start") == 1
    assert logged(log, "call", method="tools/call") == 0
    assert_no_process_left(tag)


def test_a_result_comes_back_before_a_slow_closing_server_is_gone_and_on_closed_fires_once_after(downstream, tag, tmp_path):
    # ignore-sigterm: the server keeps running after stdin closes, so closing the session
    # takes the SDK's grace periods and a kill; the answer must not wait for that.
    spec = ServerSpec(name="fault", transport="stdio", command=sys.executable,
                      args=(str(SERVERS / "fault_server.py"), "--tag", tag, "--mode", "ignore-sigterm"))
    closed: list[int] = []

    result = downstream.call_tool(spec, "echo", {"text": "early"}, 20, on_closed=lambda: closed.append(1))

    assert result["content"] == [{"type": "text", "text": "early"}]
    assert closed == [] and tagged(tag)
    assert wait_until(lambda: closed == [1], 15)
    assert_no_process_left(tag)


def test_on_closed_fires_at_once_when_no_session_could_start(downstream):
    closed: list[int] = []
    spec = ServerSpec(name="x", transport="stdio", command="x", unusable="Server 'x' needs ${TOKEN}, which is not set")

    with pytest.raises(ServerUnavailable):
        downstream.call_tool(spec, "echo", {}, 5, on_closed=lambda: closed.append(1))
    assert closed == [1]


# --- what is translated, and how often ---------------------------------------------------------


def test_a_bug_in_the_gateway_during_a_session_goes_up_as_itself_not_as_the_servers_fault(downstream, tag, tmp_path):
    # A RuntimeError used to read "the server returned an invalid result" (DOWNSTREAM_ERROR),
    # anything else "failed unexpectedly" (SERVER_UNAVAILABLE): both blamed the server.
    def buggy_check(tools: list[dict]) -> None:
        raise RuntimeError("a bug in the gateway's check")

    with pytest.raises(RuntimeError, match="a bug in the gateway's check") as caught:
        downstream.list_and_call_tool(logged_fault_server(tag, tmp_path / "log"), "echo", {"text": "x"}, 10,
                                      check=buggy_check)
    assert caught.value.__traceback__ is not None  # the endpoint logs it with this traceback
    assert_no_process_left(tag)


def test_a_failure_is_translated_once(downstream, tag, monkeypatch):
    from gateway_lib.downstream import per_call

    calls: list[BaseException] = []
    translate = per_call.translate
    monkeypatch.setattr(per_call, "translate", lambda attempt, exc: calls.append(exc) or translate(attempt, exc))

    with pytest.raises(ServerUnavailable, match="closed the connection during tools/call"):
        downstream.call_tool(stdio(tag), "crash", {}, 10)
    assert len(calls) == 1
