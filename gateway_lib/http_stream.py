"""One POST's way back to its client: what the gateway sends while serving it, then its answer.

The endpoint's worker puts messages in (`send` for the gateway's notifications and requests,
`reply` for the answer); the connection's thread takes them out in order and writes either
one JSON body (nothing came before the answer) or a text/event-stream, one event per
message, the answer last. Over HTTP/1.1 the stream is chunked, so the connection stays
reusable; an HTTP/1.0 client's stream ends by closing the connection.
Events carry no ids: the gateway does not replay a stream (no Last-Event-ID resumption).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from .framing import encode

logger = logging.getLogger(__name__)

EVENT = "event"  # a notification or request of the gateway, before the answer
ANSWER = "answer"  # the answer (None: the client cancelled, nothing is answered)

CONTENT_TYPE = "text/event-stream"
END_OF_CHUNKS = b"0\r\n\r\n"


class PostExchange:
    """The queue between the worker serving one request and the thread writing its POST's reply."""

    def __init__(self) -> None:
        self._items: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
        self._lock = threading.Lock()
        self._open = True

    def send(self, message: Any) -> None:
        """A message of the gateway to the client; dropped once the reply is over (the call
        ended or the client left, so nobody on this POST will read it)."""
        try:
            data = encode(message)
        except (ValueError, TypeError, RecursionError):
            logger.warning("A %s for the HTTP client could not be encoded; dropped", message.get("method"))
            return
        with self._lock:
            if self._open:
                self._items.put((EVENT, data))

    def reply(self, answer: Any) -> None:
        # Encoded here, on the endpoint's side: one that cannot be encoded raises, and the
        # endpoint answers the id with an internal error instead.
        self._items.put((ANSWER, None if answer is None else encode(answer)))

    def get(self, timeout: float) -> tuple[str, bytes | None]:
        """The next message, in order; queue.Empty after `timeout`."""
        return self._items.get(timeout=timeout)

    def close(self) -> None:
        with self._lock:
            self._open = False


def sse_chunk(data: bytes, chunked: bool = True) -> bytes:
    """One message as one SSE event, framed as one HTTP chunk (`chunked`, HTTP/1.1)."""
    event = b"event: message\ndata: " + data.rstrip(b"\n") + b"\n\n"  # encode() never embeds a newline
    return b"%X\r\n%s\r\n" % (len(event), event) if chunked else event
