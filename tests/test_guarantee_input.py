"""Promise: whatever arrives on stdin, the gateway answers it correctly and keeps serving.

Bad bytes, bad JSON, bad envelopes, bad lifecycle and bad tool arguments each get the
answer JSON-RPC and MCP prescribe (or, for notifications and blank lines, none), the next
request is served as if nothing had happened, and stdout carries nothing but JSON-RPC
messages: the fixtures check every byte of it when the gateway ends.

Wire-level, against the real process (harness.RawGateway); the pure units behind these
promises are in test_framing.py and test_rpc.py.
"""

from __future__ import annotations

import itertools
import json
import random
import time

import pytest

import harness
from gateway_lib.errors import (
    INVALID_AGENT_ID,
    INVALID_ARGUMENTS,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

RULES = {"agents": {"dev": {"allow": {"servers": ["tools"]}}}}
MiB = 1024 * 1024


def ping_bytes(request_id, **extra) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "ping", **extra}).encode()


def tool_call(request_id, name, arguments) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


_SERVE_IDS = itertools.count()


def still_serves(raw: harness.RawGateway) -> None:
    """A ping and a real tool call, answered correctly (ids of their own, never reused)."""
    assert raw.request("ping", {}, id=f"serves-{next(_SERVE_IDS)}")["result"] == {}
    listing = raw.request("tools/call", {"name": "list_servers", "arguments": {"agent_id": "dev"}},
                          id=f"serves-{next(_SERVE_IDS)}")
    assert listing["result"]["structuredContent"] == {"servers": [{"name": "tools", "description": ""}]}


def finish(raw: harness.RawGateway) -> None:
    """Ends the gateway and checks the whole of its stdout."""
    assert raw.close() == 0
    assert harness.protocol_problems(raw.all_stdout_bytes()) == []


@pytest.fixture
def server_log(config_dir):
    return config_dir.path("server.log")


@pytest.fixture
def start(config_dir, tag, server_log):
    """Starts gateways over one fault server; each is closed and its stdout checked.

    The handshake leaves out notifications/initialized (harness.RawProcess.initialize): these
    promises are about the gateway's own answers to what arrives on the wire, which do not
    depend on it, and the background SDK import it would start only delays each exit."""
    config_dir.write({"tools": harness.fault_server(tag, log=server_log)}, RULES)
    started = []

    def start_gateway(*args: str, initialize: str | None = harness.LATEST_PROTOCOL_VERSION) -> harness.RawGateway:
        raw = config_dir.raw_gateway("--audit-log", str(config_dir.path("audit.jsonl")), *args)
        started.append(raw)
        if initialize:
            raw.initialize(initialize, announce=False)
        return raw

    yield start_gateway
    for raw in started:
        finish(raw)


@pytest.fixture
def gateway(start):
    """A fresh gateway, for promises that need a clean server log or a clean state."""
    return start()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One gateway for the stateless promises: none of them reaches a server, and each
    one ends by proving the gateway still serves. Its stdout is checked at the end."""
    root = tmp_path_factory.mktemp("shared")
    config = harness.ConfigDir(root / "config")
    config.write({"tools": harness.fault_server("guarantee-input-shared")}, RULES)
    raw = config.raw_gateway("--audit-log", str(config.path("audit.jsonl")),
                             env=harness.user_dirs_env(root))  # not the developer's HOME
    raw.initialize()
    yield raw
    finish(raw)


# --- bytes and JSON --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"{oops",
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping"',
        b'{"jsonrpc": "2.0", "id": 1, "method": "p\xffing"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "\xed\xa0\x80"}}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": -Infinity}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": ' + b"7" * 5000 + b"}}",
    ],
    ids=["invalid JSON", "truncated JSON", "invalid UTF-8", "UTF-8-encoded surrogate", "NaN", "-Infinity",
         "nested 100000 deep", "5000-digit number"],
)
def test_a_line_that_is_not_json_gets_a_parse_error_without_id_and_the_gateway_keeps_serving(shared, line):
    shared.send_bytes(line + b"\n")
    answer = shared.read_message(timeout=10)
    assert answer["error"]["code"] == PARSE_ERROR
    assert "id" not in answer
    still_serves(shared)


def test_blank_and_whitespace_lines_get_no_answer(shared):
    shared.send_bytes(b"\n   \n\t\r\n \n")
    shared.send_bytes(ping_bytes("after-blank") + b"\n")
    assert shared.read_message(timeout=10)["id"] == "after-blank"  # nothing came before it
    still_serves(shared)


def test_crlf_line_endings_and_a_byte_order_mark_are_accepted(shared):
    shared.send_bytes(ping_bytes("crlf") + b"\r\n")
    assert shared.read_message(timeout=10) == {"jsonrpc": "2.0", "id": "crlf", "result": {}}
    shared.send_bytes(b"\xef\xbb\xbf" + ping_bytes("bom") + b"\n")
    assert shared.read_message(timeout=10) == {"jsonrpc": "2.0", "id": "bom", "result": {}}


def test_a_lone_surrogate_escape_is_answered_on_a_valid_utf8_line(shared):
    shared.send_bytes(json.dumps(tool_call("s1", "list_servers", {"agent_id": "\ud800"})).encode() + b"\n")
    answer = shared.response_for("s1")
    assert answer["result"]["structuredContent"]["error"]["code"] == INVALID_AGENT_ID
    still_serves(shared)  # and finish() checks that the answer's line was valid UTF-8


def test_a_lone_surrogate_in_tool_args_is_invalid_arguments_and_reaches_no_server(gateway, server_log):
    args = {"agent_id": "dev", "server": "tools", "tool": "echo", "args": {"text": "a\udc00b"}}
    gateway.send_bytes(json.dumps(tool_call("s2", "execute_tool", args)).encode() + b"\n")
    error = gateway.response_for("s2", timeout=30)["result"]["structuredContent"]["error"]
    assert error["code"] == INVALID_ARGUMENTS
    assert harness.count_events(server_log, "call", method="tools/call") == 0
    still_serves(gateway)


# --- size ------------------------------------------------------------------------------------


def test_a_line_over_the_configured_cap_is_refused_and_the_next_line_served(start):
    raw = start("--max-line-bytes", str(64 * 1024))
    raw.send_bytes(b'{"jsonrpc": "2.0", "id": "big", "method": "ping", "params": {"pad": "' + b"x" * MiB + b'"}}\n')
    answer = raw.read_message(timeout=10)
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "65536-byte" in answer["error"]["message"]
    still_serves(raw)


def test_the_default_cap_is_a_few_mib(gateway):
    def padded_ping(request_id, size):
        return b'{"jsonrpc":"2.0","id":"' + request_id + b'","method":"ping","params":{"pad":"' + b"x" * size + b'"}}\n'

    gateway.send_bytes(padded_ping(b"3mib", 3 * MiB))
    assert gateway.read_message(timeout=20) == {"jsonrpc": "2.0", "id": "3mib", "result": {}}
    gateway.send_bytes(padded_ping(b"5mib", 5 * MiB))
    assert gateway.read_message(timeout=20)["error"]["code"] == INVALID_REQUEST
    still_serves(gateway)


def test_an_oversized_line_is_never_read_whole_into_memory(start):
    raw = start("--max-line-bytes", str(MiB))
    # A real listing first: the SDK (tens of MiB) loads in the background after the
    # handshake, and must be in before the baseline is taken.
    raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "tools"}},
                id="warm-up", timeout=60)
    before = harness.rss_bytes(raw.pid)
    chunk = b"y" * MiB
    for _ in range(64):  # one 64 MiB line
        raw.send_bytes(chunk)
    raw.send_bytes(b"\n")
    assert raw.read_message(timeout=30)["error"]["code"] == INVALID_REQUEST
    growth = harness.rss_bytes(raw.pid) - before
    assert growth < 16 * MiB, f"RSS grew by {growth / MiB:.1f} MiB while a 64 MiB line went by"
    still_serves(raw)


# --- envelopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, echoed_id",
    [
        ({"id": 5, "method": "ping"}, 5),
        ({"jsonrpc": "1.0", "id": 5, "method": "ping"}, 5),
        ({"jsonrpc": 2.0, "id": 5, "method": "ping"}, 5),
        ({"jsonrpc": "2.0", "id": 5, "method": 7}, 5),
        ({"jsonrpc": "2.0", "id": 5, "method": None}, 5),
        ({"jsonrpc": "2.0", "id": 5}, 5),
        ({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": "text"}, 5),
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": {"n": 1}, "method": "ping"}, None),
        ("ping", None),
        (42, None),
        ([], None),
    ],
    ids=["jsonrpc missing", "jsonrpc 1.0", "jsonrpc a number", "method a number", "method null", "method missing",
         "params a string", "id null", "id a bool", "id a float", "id an object", "a string", "a number",
         "an empty array"],
)
def test_a_message_that_is_not_a_request_is_an_invalid_request(shared, message, echoed_id):
    shared.send(message)
    answer = shared.read_message(timeout=10)
    assert answer["error"]["code"] == INVALID_REQUEST
    if echoed_id is None:
        assert "id" not in answer
    else:
        assert answer["id"] == echoed_id
    still_serves(shared)


@pytest.mark.parametrize("method", ["tools/list", "tools/call", "initialize"])
def test_params_as_an_array_where_an_object_is_required_are_invalid_params(start, method):
    raw = start(initialize=None) if method == "initialize" else start()
    answer = raw.request(method, ["list_servers"])
    assert answer["error"]["code"] == INVALID_PARAMS
    if method == "initialize":
        raw.initialize()
    still_serves(raw)


def test_a_batch_is_refused_under_versions_without_batches(shared):
    shared.send([{"jsonrpc": "2.0", "id": "b1", "method": "ping"}])
    answer = shared.read_message(timeout=10)
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "id" not in answer
    still_serves(shared)


def test_a_batch_is_answered_as_one_array_under_2025_03_26(start):
    raw = start(initialize="2025-03-26")
    raw.send([
        {"jsonrpc": "2.0", "id": "b1", "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/progress"},
        {"jsonrpc": "2.0", "id": "b2", "method": "tools/call",
         "params": {"name": "list_servers", "arguments": {"agent_id": "dev"}}},
        {"jsonrpc": "2.0", "id": "b3", "method": "no/such"},
        {"jsonrpc": "2.0", "id": True, "method": "ping"},
    ])
    answer = raw.read_message(timeout=10)
    assert isinstance(answer, list) and len(answer) == 4
    by_id = {a.get("id"): a for a in answer}
    assert by_id["b1"]["result"] == {}
    assert by_id["b2"]["result"]["structuredContent"]["servers"][0]["name"] == "tools"
    assert by_id["b3"]["error"]["code"] == METHOD_NOT_FOUND
    assert by_id[None]["error"]["code"] == INVALID_REQUEST
    still_serves(raw)


# --- lifecycle -------------------------------------------------------------------------------


def test_requests_before_initialize_are_refused_except_ping(start, server_log):
    raw = start(initialize=None)
    assert raw.request("ping", {})["result"] == {}
    assert raw.request("tools/list", {})["error"]["code"] == INVALID_REQUEST
    call = raw.request("tools/call", {"name": "execute_tool", "arguments": {
        "agent_id": "dev", "server": "tools", "tool": "echo", "args": {"text": "x"}}})
    assert call["error"]["code"] == INVALID_REQUEST
    assert raw.initialize()["protocolVersion"] == harness.LATEST_PROTOCOL_VERSION
    still_serves(raw)
    assert harness.read_log(server_log) == []  # nothing reached a server


def test_a_second_initialize_is_refused_and_the_first_version_stays(start):
    raw = start(initialize="2025-06-18")
    again = raw.request("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                                       "clientInfo": {"name": "again", "version": "0"}})
    assert again["error"]["code"] == INVALID_REQUEST
    raw.send([{"jsonrpc": "2.0", "id": "b", "method": "ping"}])  # still 2025-06-18: no batches
    assert raw.read_message(timeout=10)["error"]["code"] == INVALID_REQUEST
    still_serves(raw)


def test_unknown_methods_get_method_not_found_and_unknown_notifications_nothing(shared):
    for method in ("resources/list", "prompts/get", "tools/delete", ""):
        assert shared.request(method, {})["error"]["code"] == METHOD_NOT_FOUND
    shared.notify("notifications/unknown", {"x": 1})
    shared.notify("tools/call", {"name": "list_servers"})  # a method sent as a notification
    shared.send_bytes(ping_bytes("after-notifications") + b"\n")
    assert shared.read_message(timeout=10)["id"] == "after-notifications"


def test_an_id_already_in_flight_is_refused_and_the_first_request_answered_once(gateway, server_log):
    gateway.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "tools"}},
                    timeout=30)
    gateway.send(tool_call("dup", "execute_tool",
                           {"agent_id": "dev", "server": "tools", "tool": "sleep", "args": {"seconds": 1}}))
    assert harness.wait_until(lambda: harness.count_events(server_log, "call", tool="sleep") == 1, timeout=20)
    gateway.send({"jsonrpc": "2.0", "id": "dup", "method": "ping"})
    gateway.send(tool_call("dup", "list_servers", {"agent_id": "dev"}))
    answers = [gateway.response_for("dup", timeout=30) for _ in range(3)]
    refusals = [a for a in answers if "error" in a]
    results = [a for a in answers if "result" in a]
    assert [r["error"]["code"] for r in refusals] == [INVALID_REQUEST, INVALID_REQUEST]
    assert len(results) == 1 and results[0]["result"]["content"][0]["text"] == "slept 1"
    still_serves(gateway)
    assert b'"id":"dup"' not in b"".join(json.dumps(m, separators=(",", ":")).encode() for m in gateway.other_messages)


@pytest.mark.parametrize(
    "arguments",
    [
        b'{"agent_id": "dev", "server": "tools", "tool": "echo", "tool": "spawn_grandchild", "args": {}}',
        b'{"agent_id": "nobody", "agent_id": "dev", "server": "tools", "tool": "echo", "args": {"text": "x"}}',
        b'{"agent_id": "dev", "server": "tools", "tool": "echo", "args": {"text": "a", "text": "b"}}',
    ],
    ids=["tool twice", "agent_id twice", "a downstream argument twice"],
)
def test_a_duplicate_key_is_refused_before_any_policy_check_or_downstream_call(gateway, server_log, config_dir, arguments):
    gateway.send_bytes(b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": '
                       b'{"name": "execute_tool", "arguments": ' + arguments + b"}}\n")
    answer = gateway.read_message(timeout=10)
    assert answer["id"] == 7
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "Duplicate key" in answer["error"]["message"]
    still_serves(gateway)
    assert harness.read_log(server_log) == []  # no session was ever opened
    audited = [json.loads(line)["tool"] for line in config_dir.path("audit.jsonl").read_text().splitlines()]
    assert "execute_tool" not in audited  # it never reached the tool, so no decision was made


def test_cancelling_unknown_or_finished_requests_is_harmless_and_unanswered(shared):
    assert shared.request("ping", {}, id="done")["result"] == {}
    for request_id in ("done", "never-sent", 12345, None, 1.5, True):
        shared.notify("notifications/cancelled", {"requestId": request_id, "reason": "test"})
    shared.notify("notifications/cancelled")
    shared.notify("notifications/cancelled", {"requestId": {"nested": 1}})
    shared.send_bytes(ping_bytes("after-cancels") + b"\n")
    assert shared.read_message(timeout=10)["id"] == "after-cancels"
    still_serves(shared)


# --- arguments of the gateway's own tools ----------------------------------------------------------

BAD_ARGUMENTS = [
    ("list_servers", {"agent_id": 5}),
    ("list_servers", {"agent_id": None}),
    ("list_servers", {"include_metadata": "true"}),
    ("list_servers", {"include_metadata": 1}),
    ("list_servers", {"surprise": True}),
    ("get_server_tools", {"server": 1}),
    ("get_server_tools", {"server": None}),
    ("get_server_tools", {"server": "tools", "agent_id": ["dev"]}),
    ("get_server_tools", {"server": "tools", "names": ["echo"]}),
    ("get_server_tools", {"server": "tools", "pattern": 3}),
    ("get_server_tools", {"server": "tools", "pattern": "e*h*"}),
    ("get_server_tools", {"server": "tools", "max_schema_tokens": "10"}),
    ("get_server_tools", {"server": "tools", "max_schema_tokens": 1.5}),
    ("get_server_tools", {"server": "tools", "max_schema_tokens": 0}),
    ("execute_tool", {"tool": "echo", "args": {}}),
    ("execute_tool", {"server": "tools", "args": {}}),
    ("execute_tool", {"server": "tools", "tool": "echo"}),
    ("execute_tool", {"server": ["tools"], "tool": "echo", "args": {}}),
    ("execute_tool", {"server": "tools", "tool": 1, "args": {}}),
    ("execute_tool", {"server": "tools", "tool": "echo", "args": []}),
    ("execute_tool", {"server": "tools", "tool": "echo", "args": None}),
    ("execute_tool", {"server": "tools", "tool": "echo", "args": {}, "timeout_ms": "100"}),
    ("execute_tool", {"server": "tools", "tool": "echo", "args": {}, "timeout_ms": -1}),
    ("execute_tool", {"server": "tools", "tool": "echo", "args": {}, "agent_id": 0}),
]


def test_wrong_types_missing_required_and_unknown_keys_are_invalid_params_for_every_gateway_tool(gateway, server_log):
    for name, arguments in BAD_ARGUMENTS:
        if "agent_id" not in arguments:
            arguments = {"agent_id": "dev", **arguments}  # a valid identity: only the argument is wrong
        answer = gateway.request("tools/call", {"name": name, "arguments": arguments})
        assert answer.get("error", {}).get("code") == INVALID_PARAMS, (name, arguments, answer)
    assert harness.read_log(server_log) == []
    still_serves(gateway)


@pytest.mark.parametrize(
    "params",
    [{"name": 3}, {"arguments": {}}, {"name": "list_servers", "arguments": "dev"},
     {"name": "list_servers", "arguments": [1]}, {"name": "no_such_tool", "arguments": {}},
     {"name": "get_gateway_status", "arguments": {}}],
    ids=["name a number", "name missing", "arguments a string", "arguments an array", "unknown tool",
         "debug-only tool"],
)
def test_a_malformed_tools_call_is_invalid_params(shared, params):
    assert shared.request("tools/call", params)["error"]["code"] == INVALID_PARAMS
    still_serves(shared)


# --- fuzz ------------------------------------------------------------------------------------------

FUZZ_SEED = 20250326
FUZZ_MESSAGES = 3000
VALID_EVERY = 25

TEMPLATES = [
    {"jsonrpc": "2.0", "id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": "a", "method": "tools/list", "params": {}},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_servers", "arguments": {"agent_id": "dev"}}},
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
     "params": {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "tools", "pattern": "e*"}}},
    {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
     "params": {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": "nope", "tool": "echo", "args": {}}}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}},
    {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}},
    [{"jsonrpc": "2.0", "id": 6, "method": "ping"}],
]
ODD_VALUES = [None, True, False, 0, -1, 2**63, 1.5, "", "x" * 300, "\u0000", "\ud800", "*", "../", [], {}, [1, [2]],
              {"a": {"b": {}}}, "tools", "dev", "execute_tool"]


def _mutate_value(rng: random.Random, value):
    """A structural mutation: change, drop or add one member somewhere in the message."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        choice = rng.random()
        if choice < 0.3:
            return {k: v for k, v in value.items() if k != key}
        if choice < 0.5:
            return {**value, rng.choice(["id", "method", "params", "jsonrpc", "extra", "arguments"]): rng.choice(ODD_VALUES)}
        return {**value, key: _mutate_value(rng, value[key])}
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = rng.randrange(len(value))
        return value[:index] + [_mutate_value(rng, value[index])] + value[index + 1:]
    return rng.choice(ODD_VALUES)


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """A byte-level mutation: flip, insert, delete or truncate."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice, where = rng.random(), rng.randrange(len(data) + 1)
        if choice < 0.3 and where < len(data):
            data[where] = rng.randrange(256)
        elif choice < 0.55:
            data[where:where] = bytes([rng.choice(b'{}[]",:\\ \t\r0aZ\x00\xff\xc3\xed')])
        elif choice < 0.8 and where < len(data):
            del data[where]
        else:
            del data[where:]
    return bytes(data)


def fuzz_lines(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    while len(lines) < count:
        message = rng.choice(TEMPLATES)
        if rng.random() < 0.6:
            message = _mutate_value(rng, message)
        try:
            data = json.dumps(message).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            continue
        if rng.random() < 0.5:
            data = _mutate_bytes(rng, data)
        data = data.replace(b"\n", b" ")  # one message per line, so answers can be counted
        if b"valid-" in data:  # the ids and cancellations of the valid calls are off limits
            continue
        lines.append(data + b"\n")
    return lines


def test_fuzzed_input_never_crashes_the_gateway_or_corrupts_stdout_and_valid_calls_stay_correct(gateway):
    lines = fuzz_lines(FUZZ_SEED, FUZZ_MESSAGES)
    valid_ids = []
    for index, line in enumerate(lines):
        gateway.send_bytes(line)
        if index % VALID_EVERY == 0:
            request_id = f"valid-{index}"
            valid_ids.append(request_id)
            gateway.send(tool_call(request_id, "list_servers", {"agent_id": "dev"}))
    answers: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while len(answers) < len(valid_ids):  # answers come in any order: pooled calls overtake
        message = gateway.read_message(timeout=max(deadline - time.monotonic(), 0))
        if isinstance(message, dict) and str(message.get("id")).startswith("valid-"):
            answers[message["id"]] = message
    assert gateway.process.poll() is None
    for request_id, answer in answers.items():
        assert answer["result"]["structuredContent"] == {"servers": [{"name": "tools", "description": ""}]}, request_id
    still_serves(gateway)
    stdout = gateway.all_stdout_bytes()
    assert harness.protocol_problems(stdout) == []
    for request_id in valid_ids:  # each valid call answered exactly once
        assert stdout.count(f'"id":"{request_id}"'.encode()) == 1, request_id


def test_the_fuzz_corpus_is_fixed_by_its_seed_and_mostly_invalid():
    first, again = fuzz_lines(FUZZ_SEED, 300), fuzz_lines(FUZZ_SEED, 300)
    assert first == again
    unparsable = 0
    for line in first:
        try:
            json.loads(line)
        except ValueError:
            unparsable += 1
    assert 50 < unparsable < 250  # both broken bytes and well-formed-but-wrong messages


def test_an_integer_id_beyond_64_bits_is_echoed_exactly(shared):
    shared.send_bytes(b'{"jsonrpc":"2.0","id":1180591620717411303424,"method":"ping"}\n')
    assert shared.read_message(timeout=10) == {"jsonrpc": "2.0", "id": 2**70, "result": {}}
    still_serves(shared)
