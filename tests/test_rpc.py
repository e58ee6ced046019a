"""Unit tests of the JSON-RPC endpoint, driven with plain dicts and a list of written lines."""

import json
import queue
import threading

import pytest

from gateway_lib.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    InvalidParams,
    RequestCancelled,
)
from gateway_lib.framing import decode_line, encode
from gateway_lib.rpc import Endpoint, Method

WAIT_S = 5


class Wire:
    """Encodes what it is sent as the real writer does, and collects it; `next()` waits
    (bounded) for the next message."""

    def __init__(self):
        self.lines: queue.Queue = queue.Queue()

    def write(self, message) -> None:
        self.lines.put(json.loads(encode(message)))

    def next(self):
        return self.lines.get(timeout=WAIT_S)

    def assert_silent(self):
        assert self.lines.empty()


@pytest.fixture
def wire():
    return Wire()


def make_endpoint(wire, methods=None, notifications=None, batches=False):
    base = {
        "echo": Method(lambda params, ctx: params, inline=True),
        "pooled_echo": Method(lambda params, ctx: params),
    }
    base.update(methods or {})
    return Endpoint(base, notifications or {}, wire.write, max_workers=4,
                    cancel_notification="notifications/cancelled", batches_allowed=lambda: batches)


@pytest.fixture
def endpoint(wire):
    ep = make_endpoint(wire)
    yield ep
    ep.shutdown(WAIT_S)


@pytest.mark.parametrize("request_id", [1, "1", 0, -5, "", "abc"])
def test_ids_are_echoed_exactly(endpoint, wire, request_id):
    endpoint.consume({"jsonrpc": "2.0", "id": request_id, "method": "echo", "params": {"x": 1}})
    answer = wire.next()
    assert answer == {"jsonrpc": "2.0", "id": request_id, "result": {"x": 1}}
    assert type(answer["id"]) is type(request_id)


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": None, "method": "echo"},
        {"jsonrpc": "2.0", "id": True, "method": "echo"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "echo"},
        {"jsonrpc": "2.0", "id": {"a": 1}, "method": "echo"},
        {"jsonrpc": "2.0", "id": [1], "method": "echo"},
    ],
    ids=["null id", "bool id", "float id", "object id", "array id"],
)
def test_unusable_ids_are_invalid_requests_answered_without_an_id(endpoint, wire, message):
    endpoint.consume(message)
    answer = wire.next()
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "id" not in answer


@pytest.mark.parametrize(
    "message",
    [
        {"id": 3, "method": "echo"},
        {"jsonrpc": "1.0", "id": 3, "method": "echo"},
        {"jsonrpc": "2.0", "id": 3, "method": 42},
        {"jsonrpc": "2.0", "id": 3},
        {"jsonrpc": "2.0", "id": 3, "method": "echo", "params": "text"},
    ],
    ids=["jsonrpc missing", "jsonrpc not 2.0", "method not a string", "method missing", "params a string"],
)
def test_malformed_envelopes_are_invalid_requests_that_keep_the_id(endpoint, wire, message):
    endpoint.consume(message)
    answer = wire.next()
    assert answer["error"]["code"] == INVALID_REQUEST
    assert answer["id"] == 3


def test_a_non_object_message_is_an_invalid_request(endpoint, wire):
    endpoint.consume("hello")
    assert wire.next()["error"]["code"] == INVALID_REQUEST


def test_unknown_methods_get_method_not_found(endpoint, wire):
    endpoint.consume({"jsonrpc": "2.0", "id": 1, "method": "server/discover"})
    answer = wire.next()
    assert answer["error"]["code"] == METHOD_NOT_FOUND
    assert "server/discover" in answer["error"]["message"]


def test_notifications_are_never_answered_known_or_not(wire):
    seen = []
    ep = make_endpoint(wire, notifications={"notifications/initialized": seen.append})
    ep.consume({"jsonrpc": "2.0", "method": "notifications/initialized", "params": {"k": 1}})
    ep.consume({"jsonrpc": "2.0", "method": "notifications/unknown"})
    ep.consume({"jsonrpc": "2.0", "method": "echo"})  # a known method, sent as a notification
    ep.consume({"jsonrpc": "2.0", "id": 9, "method": "echo"})
    assert wire.next()["id"] == 9  # the only answer
    wire.assert_silent()
    assert seen == [{"k": 1}]
    ep.shutdown(WAIT_S)


def test_responses_from_the_client_are_ignored(endpoint, wire):
    endpoint.consume({"jsonrpc": "2.0", "id": 4, "result": {}})
    endpoint.consume({"jsonrpc": "2.0", "id": 5, "method": "echo"})
    assert wire.next()["id"] == 5
    wire.assert_silent()


def test_parse_errors_from_framing_are_answered_without_an_id(endpoint, wire):
    endpoint.consume(decode_line(b"{oops"))
    answer = wire.next()
    assert answer["error"]["code"] == PARSE_ERROR
    assert "id" not in answer


def test_handler_errors_map_to_their_codes_and_crashes_to_a_stable_internal_error(wire):
    def invalid(params, ctx):
        raise InvalidParams("bad 'x'")

    def crash(params, ctx):
        raise KeyError("secret-ish detail")

    ep = make_endpoint(wire, {"invalid": Method(invalid), "crash": Method(crash)})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "invalid"})
    ep.consume({"jsonrpc": "2.0", "id": 2, "method": "crash"})
    answers = {a["id"]: a for a in (wire.next(), wire.next())}
    assert answers[1]["error"] == {"code": INVALID_PARAMS, "message": "bad 'x'"}
    assert answers[2]["error"] == {"code": INTERNAL_ERROR, "message": "Internal error"}
    ep.shutdown(WAIT_S)


def test_a_result_that_cannot_be_encoded_still_gets_an_answer(wire):
    ep = make_endpoint(wire, {"nan": Method(lambda p, c: {"x": float("nan")})})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "nan"})
    answer = wire.next()
    assert answer["id"] == 1
    assert answer["error"]["code"] == INTERNAL_ERROR
    ep.shutdown(WAIT_S)


def test_pooled_requests_really_run_concurrently(wire):
    barrier = threading.Barrier(3, timeout=WAIT_S)

    def meet(params, ctx):
        barrier.wait()  # only returns if all three run at the same time
        return {"n": params["n"]}

    ep = make_endpoint(wire, {"meet": Method(meet)})
    for n in range(3):
        ep.consume({"jsonrpc": "2.0", "id": n, "method": "meet", "params": {"n": n}})
    answers = sorted(wire.next()["id"] for _ in range(3))
    assert answers == [0, 1, 2]
    ep.shutdown(WAIT_S)


def test_cancellation_stops_the_work_and_sends_nothing(wire):
    started, observed = threading.Event(), threading.Event()

    def slow(params, ctx):
        started.set()
        if ctx.cancelled.wait(WAIT_S):
            observed.set()
            raise RequestCancelled()
        return {}

    ep = make_endpoint(wire, {"slow": Method(slow)})
    ep.consume({"jsonrpc": "2.0", "id": "job", "method": "slow"})
    assert started.wait(WAIT_S)
    ep.consume({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "job"}})
    assert observed.wait(WAIT_S)
    ep.consume({"jsonrpc": "2.0", "id": "after", "method": "echo"})
    assert wire.next()["id"] == "after"
    ep.shutdown(WAIT_S)
    wire.assert_silent()


def test_cancelling_unknown_or_finished_ids_is_harmless(endpoint, wire):
    endpoint.consume({"jsonrpc": "2.0", "id": 1, "method": "echo"})
    wire.next()
    for request_id in (1, "never", None, 2.5):
        endpoint.consume({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}})
    endpoint.consume({"jsonrpc": "2.0", "id": 2, "method": "echo"})
    assert wire.next()["id"] == 2


def test_a_duplicate_in_flight_id_is_refused_and_the_first_still_answered(wire):
    release = threading.Event()
    ep = make_endpoint(wire, {"hold": Method(lambda p, c: {"released": release.wait(WAIT_S)})})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "hold"})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "hold"})
    refusal = wire.next()
    assert refusal["error"]["code"] == INVALID_REQUEST
    assert "already in use" in refusal["error"]["message"]
    ep.consume({"jsonrpc": "2.0", "id": "1", "method": "pooled_echo"})  # a string "1" is another id
    assert wire.next()["id"] == "1"
    release.set()
    assert wire.next() == {"jsonrpc": "2.0", "id": 1, "result": {"released": True}}
    ep.shutdown(WAIT_S)


def test_batches_are_refused_unless_the_protocol_version_allows_them(endpoint, wire):
    endpoint.consume([{"jsonrpc": "2.0", "id": 1, "method": "echo"}])
    answer = wire.next()
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "Batches" in answer["error"]["message"]


def test_an_empty_batch_is_an_invalid_request(wire):
    ep = make_endpoint(wire, batches=True)
    ep.consume([])
    assert wire.next()["error"]["code"] == INVALID_REQUEST
    ep.shutdown(WAIT_S)


def test_an_allowed_batch_gets_one_array_with_an_answer_per_request(wire):
    ep = make_endpoint(wire, batches=True)
    ep.consume([
        {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"a": 1}},
        {"jsonrpc": "2.0", "method": "notifications/whatever"},
        {"jsonrpc": "2.0", "id": 2, "method": "pooled_echo", "params": {"b": 2}},
        {"jsonrpc": "2.0", "id": 3, "method": "missing"},
    ])
    answer = wire.next()
    assert isinstance(answer, list)
    by_id = {a["id"]: a for a in answer}
    assert set(by_id) == {1, 2, 3}
    assert by_id[1]["result"] == {"a": 1}
    assert by_id[2]["result"] == {"b": 2}
    assert by_id[3]["error"]["code"] == METHOD_NOT_FOUND
    ep.shutdown(WAIT_S)


def test_a_batch_of_notifications_gets_no_answer_at_all(wire):
    ep = make_endpoint(wire, batches=True)
    ep.consume([{"jsonrpc": "2.0", "method": "notifications/a"}, {"jsonrpc": "2.0", "method": "notifications/b"}])
    ep.consume({"jsonrpc": "2.0", "id": "x", "method": "echo"})
    assert wire.next()["id"] == "x"
    wire.assert_silent()
    ep.shutdown(WAIT_S)


def _stubborn(started: threading.Event):
    """A handler that runs until cancelled, then says so."""
    def stubborn(params, ctx):
        started.set()
        ctx.cancelled.wait(WAIT_S)
        raise RequestCancelled()
    return stubborn


def test_shutdown_cancels_work_that_outlives_the_grace_period_and_still_answers_it(wire):
    started = threading.Event()
    ep = make_endpoint(wire, {"stubborn": Method(_stubborn(started))})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "stubborn"})
    assert started.wait(WAIT_S)
    ep.shutdown(0.05)
    assert ep.in_flight == 0
    answer = wire.next()
    assert answer["id"] == 1
    assert answer["error"]["code"] == INTERNAL_ERROR
    assert "shutting down" in answer["error"]["message"]
    wire.assert_silent()


def test_requests_arriving_during_shutdown_are_refused_not_dropped(wire):
    ep = make_endpoint(wire)
    ep.shutdown(0.05)
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "pooled_echo"})
    answer = wire.next()
    assert answer["id"] == 1
    assert answer["error"]["code"] == INTERNAL_ERROR


def test_an_inline_request_reusing_an_in_flight_id_is_refused(wire):
    release = threading.Event()
    ep = make_endpoint(wire, {"hold": Method(lambda p, c: {"released": release.wait(WAIT_S)})})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "hold"})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "echo"})  # inline, same id
    refusal = wire.next()
    assert refusal["id"] == 1
    assert refusal["error"]["code"] == INVALID_REQUEST
    release.set()
    assert wire.next() == {"jsonrpc": "2.0", "id": 1, "result": {"released": True}}
    ep.shutdown(WAIT_S)
    wire.assert_silent()


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


class _RaisingMapping(dict):
    """A result whose encoding raises something that is neither TypeError nor ValueError."""

    def items(self):
        raise RuntimeError("raised while encoding")


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "pooled"])
@pytest.mark.parametrize("result", [lambda: _nested(100_000), lambda: _RaisingMapping(a=1)],
                         ids=["RecursionError", "RuntimeError"])
def test_whatever_raises_while_encoding_an_answer_the_request_gets_one_internal_error_and_serving_goes_on(
        wire, inline, result):
    ep = make_endpoint(wire, {"bad": Method(lambda p, c: result(), inline=inline)})
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "bad"})  # an inline answer raising here would kill the reader
    answer = wire.next()
    assert answer["id"] == 1
    assert answer["error"]["code"] == INTERNAL_ERROR
    ep.consume({"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {"ok": True}})
    assert wire.next() == {"jsonrpc": "2.0", "id": 2, "result": {"ok": True}}
    ep.shutdown(WAIT_S)
    wire.assert_silent()


def test_a_batch_answer_that_cannot_be_encoded_keeps_the_answers_that_can(wire):
    ep = make_endpoint(wire, {"bad": Method(lambda p, c: _nested(100_000), inline=True)}, batches=True)
    ep.consume([{"jsonrpc": "2.0", "id": 1, "method": "bad"}, {"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {}}])
    by_id = {answer["id"]: answer for answer in wire.next()}
    assert by_id[1]["error"]["code"] == INTERNAL_ERROR
    assert by_id[2]["result"] == {}
    ep.shutdown(WAIT_S)


def test_shutdown_answers_every_queued_request_exactly_once(wire):
    started = threading.Event()
    ep = Endpoint({"stubborn": Method(_stubborn(started))}, {}, wire.write, max_workers=1)
    for request_id in (1, 2, 3):  # one runs, two wait in the queue for the only worker
        ep.consume({"jsonrpc": "2.0", "id": request_id, "method": "stubborn"})
    assert started.wait(WAIT_S)
    ep.shutdown(0.05)
    answers = [wire.next() for _ in range(3)]
    assert sorted(answer["id"] for answer in answers) == [1, 2, 3]
    assert {answer["error"]["code"] for answer in answers} == {INTERNAL_ERROR}
    assert all("shutting down" in answer["error"]["message"] for answer in answers)
    wire.assert_silent()


def test_shutdown_answers_for_a_handler_that_ignores_cancellation_and_drops_its_late_answer(wire):
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    def deaf(params, ctx):
        started.set()
        release.wait(WAIT_S)  # never looks at ctx.cancelled
        returned.set()
        return {"late": True}

    ep = make_endpoint(wire, {"deaf": Method(deaf)})
    ep.consume({"jsonrpc": "2.0", "id": "d", "method": "deaf"})
    assert started.wait(WAIT_S)
    ep.shutdown(0.05, cancel_wait_s=0.05)
    answer = wire.next()
    assert answer["id"] == "d" and answer["error"]["code"] == INTERNAL_ERROR
    release.set()
    assert returned.wait(WAIT_S)
    ep._pool.shutdown(wait=True)  # the worker has delivered (or dropped) whatever it had
    wire.assert_silent()


def test_a_request_cancelled_by_the_client_stays_unanswered_at_shutdown(wire):
    started = threading.Event()
    ep = make_endpoint(wire, {"slow": Method(_stubborn(started))})
    ep.consume({"jsonrpc": "2.0", "id": "c", "method": "slow"})
    assert started.wait(WAIT_S)
    ep.consume({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "c"}})
    ep.shutdown(WAIT_S)
    ep._pool.shutdown(wait=True)
    wire.assert_silent()
