"""Messages the gateway itself sends to its client: notifications, and requests awaiting an answer.

Knows JSON-RPC only, never MCP. Requests of the gateway take ids from their own space
("gw-1", "gw-2", …), which cannot be mistaken for the client's; the endpoint hands every
response it reads to `OutgoingRequests.answer`. Every wait is bounded, and a request
given up on (deadline, cancellation, shutdown) is withdrawn with the cancel notification
so the client can stop asking its user.

`send` is whatever writes one message for the endpoint's transport; a transport that
answers each request on its own stream gives each request a `Peer` of its own.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import time
from typing import Any, Callable

from .errors import INTERNAL_ERROR, RequestCancelled

logger = logging.getLogger(__name__)

_POLL_S = 0.02  # how often a waiting thread looks at its cancel event


class PeerError(Exception):
    """The client answered a request of the gateway with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class PeerTimeout(Exception):
    """The client did not answer a request of the gateway in time."""


class OutgoingRequests:
    """The table of requests sent to the client and not yet answered."""

    def __init__(self, send: Callable[[dict], None], cancel_notification: str | None):
        self._send = send
        self._cancel_notification = cancel_notification
        self._ids = itertools.count(1)
        self._pending: dict[str, concurrent.futures.Future] = {}
        self._lock = threading.Lock()

    def answer(self, message: dict) -> bool:
        """Settle the request `message` answers; False if it answers none of ours."""
        request_id = message.get("id")
        with self._lock:
            future = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
        if future is None:
            logger.debug("Ignoring a response for unknown request %r", request_id)
            return False
        error = message.get("error")
        if "result" in message:
            future.set_result(message["result"])
        elif isinstance(error, dict) and isinstance(error.get("code"), int) and not isinstance(error.get("code"), bool):
            future.set_exception(PeerError(error["code"], str(error.get("message", "")), error.get("data")))
        else:
            future.set_exception(PeerError(INTERNAL_ERROR, "The client sent a malformed error response"))
        return True

    def request(self, method: str, params: Any, timeout_s: float, cancel: threading.Event | None = None,
                send: Callable[[dict], None] | None = None, asked: set[str] | None = None) -> Any:
        """Send a request and wait for its result at most `timeout_s` (ending early on `cancel`).

        While it waits, its id is in `asked` (see `withdraw_all`).
        Raises PeerError (the client's error), PeerTimeout, or RequestCancelled.
        """
        request_id = f"gw-{next(self._ids)}"
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._pending[request_id] = future
            if asked is not None:
                asked.add(request_id)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        (send or self._send)(message)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerTimeout(f"The client did not answer {method} within {round(timeout_s * 1000)} ms")
                try:
                    return future.result(timeout=min(remaining, _POLL_S))
                except concurrent.futures.TimeoutError:
                    pass
                if cancel is not None and cancel.is_set():
                    raise RequestCancelled()
        except (PeerTimeout, RequestCancelled):
            self._withdraw(request_id, send or self._send)
            raise
        finally:
            if asked is not None:
                with self._lock:
                    asked.discard(request_id)

    def withdraw_all(self, asked: set[str], send: Callable[[dict], None]) -> None:
        """Withdraw every request in `asked` still waiting, at once: their waits end with
        RequestCancelled. Called before the request they serve is answered, so the cancels
        go out first (over HTTP, on the stream that ends with that answer)."""
        with self._lock:
            futures = [(request_id, self._pending.pop(request_id)) for request_id in list(asked)
                       if request_id in self._pending]
        for request_id, future in futures:
            future.set_exception(RequestCancelled())
            self._send_cancel(request_id, send)

    def _withdraw(self, request_id: str, send: Callable[[dict], None]) -> None:
        with self._lock:
            still_pending = self._pending.pop(request_id, None) is not None
        if still_pending:
            self._send_cancel(request_id, send)

    def _send_cancel(self, request_id: str, send: Callable[[dict], None]) -> None:
        if self._cancel_notification is not None:
            send({"jsonrpc": "2.0", "method": self._cancel_notification,
                  "params": {"requestId": request_id, "reason": "The gateway stopped waiting for this answer"}})

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


class Peer:
    """What a handler may send to the client while it serves one request."""

    def __init__(self, outgoing: OutgoingRequests, send: Callable[[dict], None]):
        self._outgoing = outgoing
        self._send = send
        self._asked: set[str] = set()  # this peer's requests still waiting (guarded by outgoing's lock)

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def request(self, method: str, params: Any, timeout_s: float, cancel: threading.Event | None = None) -> Any:
        return self._outgoing.request(method, params, timeout_s, cancel, send=self._send, asked=self._asked)

    def withdraw_all(self) -> None:
        """The request this peer serves is over: withdraw what it still waits for."""
        self._outgoing.withdraw_all(self._asked, self._send)
