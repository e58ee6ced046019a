"""The JSON-RPC 2.0 endpoint: envelopes, ids, the worker pool, cancellation, batches.

Over 400 lines for one job: answering every request once, cancelling and shutting down
share the Endpoint's one lock and table of requests in flight, so they stay in one class.

Knows nothing of MCP: methods are strings, params and results are plain values, handed
to `send` as such (only the transport encodes them). This is the one place where
exceptions become wire errors, on the way in (a handler raising) and on the way out (a
result that cannot be encoded), and every request is answered exactly once (or, if the
client cancelled it, not at all), including at shutdown.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

from .cancellation import CancelEvent
from .errors import InternalError, InvalidRequest, MethodNotFound, RequestCancelled, RpcError
from .framing import Unreadable, encode, valid_request_id
from .outgoing import OutgoingRequests, Peer

logger = logging.getLogger(__name__)

Respond = Callable[[dict | None], None]
# Hands one JSON value (a message, or a batch's array) to the transport, which encodes and
# delivers it; raises (ValueError, TypeError, RecursionError ...) when it cannot be encoded.
Send = Callable[[Any], None]

# After the grace, cancelled work gets this long to answer before shutdown answers for it.
CANCEL_WAIT_S = 1.0


@dataclass
class RequestContext:
    """What a handler knows of the request it serves."""

    request_id: Any
    method: str
    cancelled: threading.Event = field(default_factory=CancelEvent)  # wakes the waits below when set
    by_shutdown: bool = False  # cancelled by the gateway stopping, not by the client
    caller: Any = None  # who the transport vouches for (an HTTP bearer token's agent); opaque here
    peer: Peer | None = None  # sends notifications and requests of the gateway to the client


class Method(NamedTuple):
    handler: Callable[[Any, RequestContext], Any]
    inline: bool = False  # answered on the reader thread, in arrival order (cheap methods only)


class _Envelope(NamedTuple):
    request_id: Any
    method: str
    params: Any
    is_notification: bool


def _id_key(request_id: Any) -> tuple[bool, Any]:
    # "1" and 1 are different ids; keying on the type keeps them apart.
    return (isinstance(request_id, str), request_id)


def _response(request_id: Any, *, result: Any = None, error: RpcError | None = None) -> dict:
    message: dict[str, Any] = {"jsonrpc": "2.0"}
    if request_id is not None:
        message["id"] = request_id
    if error is not None:
        message["error"] = error.to_dict()
    else:
        message["result"] = result
    return message


_SHUTTING_DOWN = InternalError("The gateway is shutting down")


class _BadEnvelope(Exception):
    """Not a valid request; carries the id to echo when one could be read."""

    def __init__(self, message: str, request_id: Any = None):
        super().__init__(message)
        self.error = InvalidRequest(message)
        self.request_id = request_id


def _open_envelope(message: Any) -> _Envelope | None:
    """Check the envelope; None means a response from the client, which we ignore."""
    if not isinstance(message, dict):
        raise _BadEnvelope("A request must be a JSON object")
    has_id = "id" in message
    request_id = message.get("id")
    if has_id and not valid_request_id(request_id):
        raise _BadEnvelope("Request id must be a string or an integer")
    if message.get("jsonrpc") != "2.0":
        raise _BadEnvelope('The "jsonrpc" member must be exactly "2.0"', request_id)
    if "method" not in message:
        if has_id and ("result" in message or "error" in message):
            return None
        raise _BadEnvelope('The "method" member is missing', request_id)
    method = message["method"]
    if not isinstance(method, str):
        raise _BadEnvelope('The "method" member must be a string', request_id)
    params = message.get("params")
    if "params" in message and not isinstance(params, (dict, list)):
        raise _BadEnvelope('The "params" member must be an object or an array', request_id)
    return _Envelope(request_id, method, params, not has_id)


class _BatchCollector:
    """Gathers one answer (or None) per batch element and sends the array once all are in."""

    def __init__(self, size: int, send: Callable[[list[dict]], None]):
        self._pending = size
        self._answers: list[dict] = []
        self._lock = threading.Lock()
        self._send = send

    def respond(self, response: dict | None) -> None:
        with self._lock:
            if response is not None:
                self._answers.append(response)
            self._pending -= 1
            done = self._pending == 0
        if done:
            self._send(self._answers)  # empty: nothing to answer (a reply callback hears None)


class _AnswerOnce:
    """A request's `respond`, which lets only the first answer (or silence) through.

    Shutdown may answer for a request whose worker is stuck; should the worker finish
    after all, its answer is dropped here rather than sent a second time.
    """

    def __init__(self, respond: Respond):
        self._respond = respond
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, response: dict | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._respond(response)


_NOT_ENCODABLE = "Result could not be encoded as JSON"


class _Pending(NamedTuple):
    context: RequestContext
    future: Future
    respond: _AnswerOnce


class Endpoint:
    """Dispatches parsed messages to handlers and writes exactly one answer per request."""

    def __init__(
        self,
        methods: Mapping[str, Method],
        notifications: Mapping[str, Callable[[Any], None]],
        send: Send,
        *,
        max_workers: int = 8,
        cancel_notification: str | None = None,
        batches_allowed: Callable[[], bool] = lambda: False,
        pool: ThreadPoolExecutor | None = None,
    ):
        self._methods = methods
        self._notifications = notifications
        self._transport_send = send
        self._cancel_notification = cancel_notification
        self._batches_allowed = batches_allowed
        # A shared pool (one per HTTP gateway, many endpoints) is its owner's to shut down.
        self._owns_pool = pool is None
        self._pool = pool or ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gateway-worker")
        self._in_flight: dict[tuple[bool, Any], _Pending] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy_workers = 0  # running a request, or blocked delivering its answer
        self._closing = False
        self.outgoing = OutgoingRequests(self._send, cancel_notification)
        self.peer = Peer(self.outgoing, self._send)

    # --- input -----------------------------------------------------------------------

    def consume(self, message: Any, *, caller: Any = None, reply: Send | None = None) -> None:
        """Handle one message (or batch). With `reply`, its answer goes there instead of to
        `send`, exactly once: the answer, or None when there is none (a notification, a
        response, a request the client cancelled). `caller` reaches handlers as
        `context.caller`. A request answered on `reply` gets no peer: such a transport has no
        channel yet for the gateway's own messages to the client (see README, What passes through)."""
        send, send_batch = self._send, self._send_batch
        peer = self.peer if reply is None else None
        if reply is not None:
            def send(answer: dict | None) -> None:
                reply(None) if answer is None else self._send(answer, reply)

            def send_batch(answers: list[dict]) -> None:
                reply(None) if not answers else self._send_batch(answers, reply)
        if isinstance(message, Unreadable):
            send(_response(message.request_id, error=message.error))
        elif isinstance(message, list):
            self._consume_batch(message, send, send_batch, caller, peer)
        else:
            self._consume_one(message, send, caller, peer)

    def _consume_batch(self, batch: list, send: Respond, send_batch: Callable[[list[dict]], None], caller: Any,
                       peer: Peer | None) -> None:
        if not batch:
            send(_response(None, error=InvalidRequest("A batch must not be empty")))
            return
        if not self._batches_allowed():
            send(_response(None, error=InvalidRequest("Batches are not supported in this protocol version")))
            return
        collector = _BatchCollector(len(batch), send_batch)
        for message in batch:
            self._consume_one(message, collector.respond, caller, peer)

    def _consume_one(self, message: Any, respond: Respond, caller: Any = None, peer: Peer | None = None) -> None:
        try:
            envelope = _open_envelope(message)
        except _BadEnvelope as exc:
            respond(_response(exc.request_id, error=exc.error))
            return
        if envelope is None:
            self.outgoing.answer(message)  # an answer to a request of the gateway (or ignored)
            respond(None)
        elif envelope.is_notification:
            self._notify(envelope)
            respond(None)
        elif envelope.method not in self._methods:
            respond(_response(envelope.request_id, error=MethodNotFound(f"Method {envelope.method!r} not found")))
        else:
            self._start(envelope, respond, caller, peer)

    def _notify(self, envelope: _Envelope) -> None:
        if envelope.method == self._cancel_notification:
            self._cancel(envelope.params)
            return
        handler = self._notifications.get(envelope.method)
        if handler is None:
            logger.debug("Ignoring unknown notification %r", envelope.method)
            return
        try:
            handler(envelope.params)
        except Exception:
            logger.exception("Notification handler for %r failed", envelope.method)

    def _start(self, envelope: _Envelope, respond: Respond, caller: Any = None, peer: Peer | None = None) -> None:
        method = self._methods[envelope.method]
        context = RequestContext(envelope.request_id, envelope.method, caller=caller, peer=peer)
        key = _id_key(envelope.request_id)
        with self._lock:
            # Checked for inline methods too: a ping reusing the id of a running call
            # would otherwise give the client two answers with one id.
            if key in self._in_flight:
                duplicate = InvalidRequest(f"Request id {envelope.request_id!r} is already in use")
                respond(_response(envelope.request_id, error=duplicate))
                return
            if not method.inline:
                if self._closing:
                    respond(_response(envelope.request_id, error=_SHUTTING_DOWN))
                    return
                once = _AnswerOnce(respond)
                future = self._pool.submit(self._run_pooled, method, envelope, context, once)
                self._in_flight[key] = _Pending(context, future, once)
                return
        respond(self._run(method, envelope, context))

    # --- work ------------------------------------------------------------------------

    def _run_pooled(self, method: Method, envelope: _Envelope, context: RequestContext, respond: Respond) -> None:
        with self._lock:
            self._busy_workers += 1
        try:
            try:
                # Queued when shutdown began: answered at once instead of started.
                response = None if context.by_shutdown else self._run(method, envelope, context)
            finally:
                with self._lock:
                    self._in_flight.pop(_id_key(envelope.request_id), None)
            if context.cancelled.is_set() and not context.by_shutdown:
                respond(None)  # the client cancelled it and expects no answer
            elif response is None:
                respond(_response(envelope.request_id, error=_SHUTTING_DOWN))  # still answered, once
            else:
                respond(response)
        finally:
            with self._lock:
                self._busy_workers -= 1
                self._idle.notify_all()

    def _run(self, method: Method, envelope: _Envelope, context: RequestContext) -> dict | None:
        """The single boundary where exceptions become wire errors."""
        try:
            result = method.handler(envelope.params, context)
        except RequestCancelled:
            return None
        except RpcError as exc:
            return _response(envelope.request_id, error=exc)
        except Exception:
            logger.exception("Request %r (%s) failed", envelope.request_id, envelope.method)
            return _response(envelope.request_id, error=InternalError())
        return _response(envelope.request_id, result=result)

    def _cancel(self, params: Any) -> None:
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if not valid_request_id(request_id):
            return
        with self._lock:
            entry = self._in_flight.get(_id_key(request_id))
        if entry is None:
            logger.debug("Cancellation for unknown or finished request %r", request_id)
            return
        entry.context.cancelled.set()

    # --- output ----------------------------------------------------------------------

    def _send(self, message: dict | None, to: Send | None = None) -> None:
        """The output side of the boundary: whatever encoding raises, the id gets an answer."""
        if message is None:
            return
        to = to or self._transport_send
        try:
            to(message)
        except Exception:
            logger.exception("Answer to request %r could not be encoded", message.get("id"))
            to(_not_encodable(message))

    def _send_batch(self, answers: list[dict], to: Send | None = None) -> None:
        if not answers:
            return
        to = to or self._transport_send
        try:
            to(answers)
        except Exception:
            # Rare (batches exist in one protocol version): find the answers that fail.
            logger.exception("A batch answer could not be encoded")
            to([answer if _encodable(answer) else _not_encodable(answer) for answer in answers])

    # --- shutdown --------------------------------------------------------------------

    def refuse_new_requests(self) -> None:
        """From here on a request that would need a worker is answered "shutting down"."""
        with self._lock:
            self._closing = True

    def shutdown(self, grace_s: float, cancel_wait_s: float = CANCEL_WAIT_S) -> None:
        """Let in-flight work finish for `grace_s`, then cancel what is left; returns
        within about `grace_s + cancel_wait_s`, whatever handlers do.

        New requests are refused from here on. Every request received before is answered
        exactly once: by its handler, or, when cancelled here (not by the client), still
        queued, or stuck past `cancel_wait_s`, with an error saying the gateway is
        shutting down.
        """
        with self._lock:
            self._closing = True
            futures = [pending.future for pending in self._in_flight.values()]
        _, unfinished = wait(futures, timeout=grace_s)
        if unfinished:
            logger.info("Cancelling %d request(s) not finished at shutdown", len(unfinished))
            with self._lock:
                for pending in self._in_flight.values():
                    if not pending.context.cancelled.is_set():  # the client's own cancels stay unanswered
                        pending.context.by_shutdown = True
                        pending.context.cancelled.set()
            wait(unfinished, timeout=cancel_wait_s)
        with self._lock:
            left = [pending for pending in self._in_flight.values() if pending.context.by_shutdown]
        if left:
            # On a thread of its own: the wire itself may be what the stuck work is stuck on.
            answering = threading.Thread(target=self._answer_shutting_down, args=(left,),
                                         name="gateway-shutdown-answers", daemon=True)
            answering.start()
            answering.join(cancel_wait_s)
        if self._owns_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _answer_shutting_down(left: list[_Pending]) -> None:
        for pending in left:
            pending.future.cancel()
            pending.respond(_response(pending.context.request_id, error=_SHUTTING_DOWN))

    def wait_workers_idle(self, timeout: float) -> bool:
        """True once no worker is running or answering a request (False after `timeout`).

        A worker can stay busy past shutdown only when blocked on the wire itself.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._busy_workers == 0, timeout)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)


def _not_encodable(message: dict) -> dict:
    return _response(message.get("id"), error=InternalError(_NOT_ENCODABLE))


def _encodable(message: dict) -> bool:
    try:
        encode(message)
    except Exception:
        return False
    return True
