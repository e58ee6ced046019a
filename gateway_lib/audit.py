"""The audit log: one JSON line per gateway tool call and per config reload.

Argument values are never written, only their names. A failing disk must not fail a
call, so write errors are logged once and swallowed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from typing import Any

logger = logging.getLogger(__name__)


def default_audit_path(environ: dict[str, str] | os._Environ) -> str:
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "agent-mcp-gateway", "audit.jsonl")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Appends records as whole lines under one lock, so lines never interleave."""

    def __init__(self, path: str | None):
        self.path = path
        self._lock = threading.Lock()
        self._file = None
        self._failed = False
        self.records_written = 0

    def record(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": utc_now(), "event": event, **fields}, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self.path is None or self._failed:
                return
            try:
                if self._file is None:
                    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                    self._file = open(self.path, "a", encoding="utf-8")
                self._file.write(line)
                self._file.flush()
                self.records_written += 1
            except OSError as exc:
                self._failed = True
                logger.error("Audit log %s cannot be written (%s); auditing is off until restart", self.path, exc.strerror)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
