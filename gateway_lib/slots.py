"""Per-server concurrency limits: calls past a server's `max_concurrency` wait their turn.

The wait counts against the call's own deadline and ends early when the call is cancelled.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .cancellation import on_cancel
from .errors import RequestCancelled, ToolTimeout
from .model import ServerSpec

_CANCEL_CHECK_S = 0.05  # how often a queued call looks at a cancel flag that cannot wake it (a plain Event)


def _nothing() -> None:
    pass


class _Slots:
    """The slots of one server at one limit: a count under a Condition, so waiters block."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self.changed = threading.Condition()

    def wake(self) -> None:
        with self.changed:
            self.changed.notify_all()


class ServerSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, int], _Slots] = {}
        self.waiting = 0

    def acquire(self, spec: ServerSpec, deadline: float, cancel: threading.Event) -> Callable[[], None]:
        """Wait for a slot of the server; returns the function that gives it back.

        The release may be called from any thread, and more than once (only the first
        counts), so a slot can be held until a session closes after its caller returned.
        """
        if spec.max_concurrency is None:
            return _nothing
        slots = self._server_slots(spec.name, spec.max_concurrency)
        self._acquire(slots, spec, deadline, cancel)
        once = threading.Lock()  # taken by the first release and never given back

        def release() -> None:
            if once.acquire(blocking=False):
                with slots.changed:
                    slots.in_use -= 1
                    slots.changed.notify_all()

        return release

    def _acquire(self, slots: _Slots, spec: ServerSpec, deadline: float, cancel: threading.Event) -> None:
        with self._lock:
            self.waiting += 1
        forget = on_cancel(cancel, slots.wake)
        try:
            with slots.changed:
                while slots.in_use >= slots.limit:
                    if cancel.is_set():
                        raise RequestCancelled()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ToolTimeout(
                            f"Server {spec.name!r} is at its limit of {spec.max_concurrency} concurrent call(s) "
                            "and no slot freed up before the deadline",
                            server=spec.name,
                        )
                    slots.changed.wait(remaining if forget is not None else min(remaining, _CANCEL_CHECK_S))
                slots.in_use += 1
        finally:
            if forget is not None:
                forget()
            with self._lock:
                self.waiting -= 1

    def _server_slots(self, name: str, limit: int) -> _Slots:
        # Keyed by limit too, so a reload that changes the limit starts a fresh count.
        with self._lock:
            return self._slots.setdefault((name, limit), _Slots(limit))
