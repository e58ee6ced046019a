"""Newline-delimited JSON over byte streams: the reader, the one writer, and fd 1's guard.

Knows lines, UTF-8 and JSON, and of JSON-RPC only what a line that never becomes a message
needs: the error code it gets and the id to echo (so `valid_request_id` lives here, and
the endpoint uses the same one). Knows nothing of methods or MCP.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import select
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

from .errors import InvalidRequest, ParseError, RpcError

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
# Unwritten answers past which writers wait: several full-size answers, yet a bound on memory.
DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024
_BACKLOG_RECHECK_S = 0.2
_DISCARD_CHUNK = 64 * 1024
_BOM = "\ufeff"


@dataclass(frozen=True)
class Unreadable:
    """A line that could not become a message; `request_id` is set when one was recoverable."""

    error: RpcError
    request_id: Any = None


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key could let the policy check and the downstream call read
    # different ones, so such a message is refused rather than resolved either way.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_line(raw: bytes) -> Any:
    """Turn one line into a JSON value, or an `Unreadable` saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Unreadable(ParseError("Parse error: the line is not valid UTF-8"))
    text = text.removeprefix(_BOM)
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        return Unreadable(InvalidRequest(f"Duplicate key {exc.args[0]!r} in one object"), _recover_id(text))
    except RecursionError:
        return Unreadable(ParseError("Parse error: JSON nested too deeply"))
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers past the digit limit
        return Unreadable(ParseError(f"Parse error: {_short_reason(exc)}"))


def valid_request_id(value: Any) -> bool:
    """JSON-RPC ids this gateway accepts and echoes: strings and integers (not bools)."""
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _recover_id(text: str) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    request_id = value.get("id") if isinstance(value, dict) else None
    return request_id if valid_request_id(request_id) else None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included
_COLON = re.compile(r"\s*:\s*")


def top_level_id(text: str) -> Any:
    """The `id` member of the object on a line that no parser takes (nested too deep, say),
    found without parsing what it holds; None when there is no valid id at its top level.

    A scan from string to string, counting the brackets between them, not a recursive
    descent: no depth stops it, and a line of megabytes of brackets takes milliseconds.
    """
    depth, scanned = 0, 0
    for string in _STRING.finditer(text):
        between = text[scanned:string.start()]
        depth += between.count("{") + between.count("[") - between.count("}") - between.count("]")
        scanned = string.end()
        if depth == 1 and string.group() == '"id"' and (colon := _COLON.match(text, scanned)):
            try:
                value, _ = json.JSONDecoder().raw_decode(text, colon.end())
            except (ValueError, RecursionError):
                return None
            return value if valid_request_id(value) else None
    return None


def _short_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    if "digits" in str(exc):
        return "number has too many digits"
    return str(exc)


class MessageReader:
    """Reads one JSON value per line, never holding more than `max_line_bytes` of a line."""

    def __init__(self, stream: BinaryIO, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        self._stream = stream
        self._max = max_line_bytes

    def messages(self) -> Iterator[Any]:
        while True:
            raw = self._stream.readline(self._max + 1)
            if not raw:
                return
            if len(raw) > self._max and not raw.endswith(b"\n"):
                self._discard_rest_of_line()
                yield Unreadable(InvalidRequest(f"Message exceeds the {self._max}-byte line limit"))
                continue
            if raw.strip():  # blank lines separate nothing and ask nothing
                yield decode_line(raw)

    def listen(self, consume: Callable[[Any], None]) -> None:
        for message in self.messages():
            consume(message)

    def _discard_rest_of_line(self) -> None:
        while True:
            chunk = self._stream.readline(_DISCARD_CHUNK)
            if not chunk or chunk.endswith(b"\n"):
                return


def encode(message: Any) -> bytes:
    """One line of compact JSON; raises (ValueError, TypeError, RecursionError ...) when the
    value cannot be sent."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate from the client cannot be UTF-8; \u escapes keep the line valid.
        return json.dumps(message, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class MessageWriter:
    """The only writer of the wire, and the only encoder: whole lines, in order, on a thread of its own.

    `write` encodes on the caller's thread (a value that cannot be sent raises there) and
    queues the line; the writer's thread writes it. So the reader thread, which writes
    answers of its own (ping, errors for bad lines), never blocks on a client that stopped
    reading stdout, and still sees stdin's EOF. Only past `max_backlog_bytes` of unwritten
    lines does `write` wait for room (backpressure), and then only until `may_exceed()`
    says waiting is pointless (the client closed stdin, or the gateway is stopping) or
    the writer is closed.
    """

    def __init__(self, stream: BinaryIO, max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
                 may_exceed: Callable[[], bool] = lambda: False):
        self._stream = stream
        self._max_backlog = max_backlog_bytes
        self._may_exceed = may_exceed
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: stop
        self._changed = threading.Condition()  # guards the three below; writers wait on it for room
        self._backlog = 0  # bytes queued or being written
        self._closed = False
        self._waiting = 0  # threads waiting on `_changed` (writers for room, close() for the end)
        threading.Thread(target=self._deliver, name="gateway-writer", daemon=True).start()

    def write(self, message: Any) -> None:
        """Encode `message` and queue it as one line; raises, queueing nothing, if it cannot
        be encoded. A client that went away is not an error (the line is dropped)."""
        line = encode(message)
        with self._changed:
            while self._backlog and self._backlog + len(line) > self._max_backlog and not self._closed:
                if self._may_exceed():
                    break
                self._wait(_BACKLOG_RECHECK_S)  # woken as lines go out; rechecks may_exceed
            if self._closed:
                return
            self._backlog += len(line)
            self._lines.put(line)  # under the lock: lines keep the order of their writes

    def close(self, timeout: float) -> bool:
        """Wait up to `timeout` for the queued lines to be written, then drop whatever is
        left; False if lines were still waiting (the writer's thread may be blocked on the
        client for good). Later writes are dropped."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._backlog and not self._closed and (left := deadline - time.monotonic()) > 0:
                self._wait(left)
            stuck = self._backlog > 0
            self._closed = True
            self._changed.notify_all()
        self._lines.put(None)
        if stuck:
            logger.warning("The client is not reading its answers; giving up on the rest")
        return not stuck

    def _deliver(self) -> None:
        while (line := self._lines.get()) is not None:
            with self._changed:
                if self._closed:
                    return
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._gone()
                return
            with self._changed:
                self._backlog -= len(line)
                if self._waiting:
                    self._changed.notify_all()

    def _wait(self, timeout: float) -> None:
        self._waiting += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiting -= 1

    def _gone(self) -> None:
        # The client went away; nothing more can be delivered.
        with self._changed:
            self._closed = True
            self._backlog = 0
            self._changed.notify_all()
        logger.warning("Client closed the output stream; dropping further responses")


def peer_hung_up(stream: BinaryIO) -> bool:
    """Whether the other end of `stream` (a pipe, socket or terminal) has closed; never blocks.

    Only POLLHUP (and a socket's read-side shutdown) count: unread data does not, nor does
    a regular file, whose end is found by reading it.
    """
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(stream.fileno(), select.POLLHUP | getattr(select, "POLLRDHUP", 0))
    try:
        return bool(poller.poll(0))
    except OSError:
        return False


def claim_stdout() -> BinaryIO:
    """Keep a private handle on the real stdout and point fd 1 at stderr.

    From here on a stray print, a library, or a child process that inherits fd 1 writes
    to stderr; only the returned stream reaches the client.
    """
    sys.stdout.flush()
    wire_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(wire_fd, "wb", buffering=0)


def claim_stdin() -> BinaryIO:
    """A private buffered handle on a duplicate of fd 0, for the reader thread.

    The reader thread spends its life blocked inside readline(), holding the stream's
    lock. Were that stream sys.stdin's, the interpreter would need the lock to close
    sys.stdin while exiting after a signal, and would abort ("could not acquire lock
    ... at interpreter shutdown") instead of exiting 0. Nothing touches this handle
    at exit.
    """
    return os.fdopen(os.dup(0), "rb")
