"""The audit log: one JSON line per gateway tool call and per config reload.

Argument values are never written, only their names. A failing disk must not fail a
call, and a write must never hold up its reply: the file is opened without blocking
(a FIFO with no reader is refused at once), must be a regular file or a character
device such as /dev/null, is written with single unbuffered writes (nothing is left over
for close() to fail on), and any error is logged once and turns auditing off.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from datetime import datetime, timezone
from typing import Any

logger = logging.getLogger(__name__)

FILE_MODE = 0o600  # audit lines name agents, servers and tools: for the owner only
# JSON allows these raw inside strings, but they end lines for Python's splitlines() and
# for some editors and viewers: one record must stay one line for every reader.
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}
# How long close() waits for a write in progress (writes do not block, so only a slow disk).
_CLOSE_WAIT_S = 1.0


def default_audit_path(environ: dict[str, str] | os._Environ) -> str:
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "agent-mcp-gateway", "audit.jsonl")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_record(record: dict[str, Any]) -> bytes:
    """One line of UTF-8 JSON that every line splitter sees as one line."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    for char, escape in _LINE_BREAKS.items():
        text = text.replace(char, escape)  # only ever inside a JSON string, where the escape means the same
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate in a name the client sent
        return json.dumps(record, ensure_ascii=True, default=str).encode("ascii") + b"\n"


class AuditLog:
    """Appends records as whole lines under one lock, so lines never interleave."""

    def __init__(self, path: str | None):
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._failed = False

    def record(self, event: str, **fields: Any) -> None:
        line = encode_record({"ts": utc_now(), "event": event, **fields})
        with self._lock:
            if self.path is None or self._failed:
                return
            try:
                if self._fd is None:
                    self._fd = _open(self.path)
                _write_all(self._fd, line)
            except OSError as exc:
                self._failed = True
                logger.error("Audit log %s cannot be written (%s); auditing is off until restart",
                             self.path, exc.strerror or exc)

    def close(self) -> None:
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            logger.warning("Audit log %s is busy; leaving it to the operating system to close", self.path)
            return
        try:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass  # every line was written whole or reported; nothing is buffered
                self._fd = None
        finally:
            self._lock.release()


class _NotAFile(OSError):
    pass


def _open(path: str) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        _require_file(os.stat(path).st_mode)  # said plainly, before open() reports ENXIO for a FIFO
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
    try:
        _require_file(os.fstat(fd).st_mode)  # what was opened, should the path have changed meanwhile
    except _NotAFile:
        os.close(fd)
        raise
    return fd


def _require_file(mode: int) -> None:
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        raise _NotAFile(f"it is {_kind(mode)}, not a regular file")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a block device" if stat.S_ISBLK(mode) else "a special file"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError("nothing could be written")
        view = view[written:]
