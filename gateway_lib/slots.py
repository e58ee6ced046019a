"""Per-server concurrency limits: calls past a server's `max_concurrency` wait their turn.

The wait counts against the call's own deadline and ends early when the call is cancelled.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .errors import RequestCancelled, ToolTimeout
from .model import ServerSpec

_CANCEL_CHECK_S = 0.05  # how often a queued call looks at its cancel flag


def _nothing() -> None:
    pass


class ServerSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self.waiting = 0

    def acquire(self, spec: ServerSpec, deadline: float, cancel: threading.Event) -> Callable[[], None]:
        """Wait for a slot of the server; returns the function that gives it back.

        The release may be called from any thread, and more than once (only the first
        counts), so a slot can be held until a session closes after its caller returned.
        """
        if spec.max_concurrency is None:
            return _nothing
        semaphore = self._semaphore(spec.name, spec.max_concurrency)
        self._acquire(semaphore, spec, deadline, cancel)
        once = threading.Lock()  # taken by the first release and never given back

        def release() -> None:
            if once.acquire(blocking=False):
                semaphore.release()

        return release

    def _acquire(self, semaphore: threading.BoundedSemaphore, spec: ServerSpec, deadline: float, cancel: threading.Event) -> None:
        with self._lock:
            self.waiting += 1
        try:
            while not semaphore.acquire(timeout=min(_CANCEL_CHECK_S, max(deadline - time.monotonic(), 0))):
                if cancel.is_set():
                    raise RequestCancelled()
                if time.monotonic() >= deadline:
                    raise ToolTimeout(
                        f"Server {spec.name!r} is at its limit of {spec.max_concurrency} concurrent call(s) "
                        "and no slot freed up before the deadline",
                        server=spec.name,
                    )
        finally:
            with self._lock:
                self.waiting -= 1

    def _semaphore(self, name: str, limit: int) -> threading.BoundedSemaphore:
        # Keyed by limit too, so a reload that changes the limit starts a fresh count.
        with self._lock:
            return self._semaphores.setdefault((name, limit), threading.BoundedSemaphore(limit))
