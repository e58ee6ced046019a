"""How many downstream sessions the gateway has opened since it started (a /metrics counter).

Counted where every session opens (per-call, spare and kept-alive alike): one process-wide
count, since one process is one gateway.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_opened = 0


def count_opened() -> None:
    global _opened
    with _lock:
        _opened += 1


def sessions_opened() -> int:
    with _lock:
        return _opened
