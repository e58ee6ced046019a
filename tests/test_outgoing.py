"""Unit tests of the gateway's own requests to its client, through the JSON-RPC endpoint:
ids in their own space, answers matched by id, bounded waits, withdrawal by cancel."""

import queue
import threading

import pytest

from gateway_lib.errors import RequestCancelled
from gateway_lib.outgoing import PeerError, PeerTimeout
from gateway_lib.rpc import Endpoint, Method
from test_rpc import Wire  # the endpoint's tests' wire: encodes as the real writer does

WAIT_S = 5


@pytest.fixture
def wire():
    return Wire()


@pytest.fixture
def endpoint(wire):
    def ask_client(params, context):
        # A handler that asks the client something and answers with what it said.
        try:
            return {"client_said": context.peer.request("ask/me", {"q": params["q"]}, params.get("timeout_s", WAIT_S),
                                                        context.cancelled)}
        except PeerError as exc:
            return {"client_error": exc.code}
        except PeerTimeout:
            return {"timeout": True}

    ep = Endpoint({"ask": Method(ask_client)}, {}, wire.write, max_workers=4, cancel_notification="notifications/cancelled")
    yield ep
    ep.shutdown(WAIT_S)


def test_a_handler_can_ask_the_client_and_gets_the_answer_matched_by_id(endpoint, wire):
    endpoint.consume({"jsonrpc": "2.0", "id": 1, "method": "ask", "params": {"q": "a"}})
    endpoint.consume({"jsonrpc": "2.0", "id": 2, "method": "ask", "params": {"q": "b"}})
    first, second = wire.next(), wire.next()
    assert {first["params"]["q"], second["params"]["q"]} == {"a", "b"}
    assert first["id"] != second["id"] and all(str(m["id"]).startswith("gw-") for m in (first, second))
    # Answered out of order: each lands on its own request.
    for message in (second, first):
        endpoint.consume({"jsonrpc": "2.0", "id": message["id"], "result": {"echo": message["params"]["q"]}})
    answers = {m["id"]: m["result"] for m in (wire.next(), wire.next())}
    assert answers == {1: {"client_said": {"echo": "a"}}, 2: {"client_said": {"echo": "b"}}}


def test_the_clients_error_answer_reaches_the_handler_with_its_code(endpoint, wire):
    endpoint.consume({"jsonrpc": "2.0", "id": 1, "method": "ask", "params": {"q": "a"}})
    asked = wire.next()
    endpoint.consume({"jsonrpc": "2.0", "id": asked["id"], "error": {"code": -32042, "message": "no"}})
    assert wire.next()["result"] == {"client_error": -32042}


def test_an_unanswered_request_times_out_and_is_withdrawn_with_a_cancel(endpoint, wire):
    endpoint.consume({"jsonrpc": "2.0", "id": 1, "method": "ask", "params": {"q": "a", "timeout_s": 0.2}})
    asked = wire.next()
    cancel = wire.next()
    assert cancel["method"] == "notifications/cancelled" and cancel["params"]["requestId"] == asked["id"]
    assert wire.next()["result"] == {"timeout": True}
    assert endpoint.outgoing.pending == 0


def test_a_cancelled_call_withdraws_its_pending_request(endpoint, wire):
    endpoint.consume({"jsonrpc": "2.0", "id": 7, "method": "ask", "params": {"q": "a"}})
    asked = wire.next()
    endpoint.consume({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}})
    withdrawn = wire.next()
    assert withdrawn["method"] == "notifications/cancelled" and withdrawn["params"]["requestId"] == asked["id"]
    # A late answer to the withdrawn request is ignored, and the cancelled call gets no answer.
    endpoint.consume({"jsonrpc": "2.0", "id": asked["id"], "result": {}})
    with pytest.raises(queue.Empty):
        wire.lines.get(timeout=0.3)


def test_answers_to_unknown_ids_are_ignored(endpoint, wire):
    for request_id in ("gw-999", 5, "5"):
        endpoint.consume({"jsonrpc": "2.0", "id": request_id, "result": {}})
    endpoint.consume({"jsonrpc": "2.0", "id": 1, "method": "ask", "params": {"q": "still serving"}})
    asked = wire.next()
    assert asked["params"] == {"q": "still serving"}
    endpoint.consume({"jsonrpc": "2.0", "id": asked["id"], "result": {}})
    assert wire.next()["result"] == {"client_said": {}}


def test_a_wait_ends_early_when_its_cancel_event_is_set(wire):
    ep = Endpoint({}, {}, wire.write, cancel_notification="notifications/cancelled")
    cancel = threading.Event()
    outcome: queue.Queue = queue.Queue()

    def ask():
        try:
            ep.peer.request("ask/me", None, 60, cancel)
        except RequestCancelled:
            outcome.put("cancelled")

    thread = threading.Thread(target=ask)
    thread.start()
    asked = wire.next()
    cancel.set()
    assert outcome.get(timeout=WAIT_S) == "cancelled"
    assert wire.next()["params"]["requestId"] == asked["id"]
    thread.join(WAIT_S)
    ep.shutdown(WAIT_S)


def test_requests_still_waiting_when_their_call_ends_are_withdrawn_before_its_answer(wire):
    # The downstream's request waits on a thread of its own; the call it belongs to ends first.
    outcome: queue.Queue = queue.Queue()

    def leave_a_question(params, context):
        def ask():
            try:
                context.peer.request("ask/me", None, 60)
            except RequestCancelled:
                outcome.put("withdrawn")

        threading.Thread(target=ask).start()
        asked.put(wire.next())
        return {"done": True}

    asked: queue.Queue = queue.Queue()
    ep = Endpoint({"leave": Method(leave_a_question)}, {}, wire.write, cancel_notification="notifications/cancelled")
    ep.consume({"jsonrpc": "2.0", "id": 1, "method": "leave"})
    question = asked.get(timeout=WAIT_S)
    withdrawn, answer = wire.next(), wire.next()
    assert withdrawn["method"] == "notifications/cancelled" and withdrawn["params"]["requestId"] == question["id"]
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": {"done": True}}
    assert outcome.get(timeout=WAIT_S) == "withdrawn"
    assert ep.outgoing.pending == 0
    ep.shutdown(WAIT_S)
