"""A request's cancel flag that wakes whoever waits on it, so waits block instead of polling."""

from __future__ import annotations

import threading
from typing import Callable


class CancelEvent(threading.Event):
    """A threading.Event that also calls the wake-ups registered with `on_set` when set.

    The endpoint makes one per request; the waits below it (a server slot, a downstream
    answer) register a wake-up and block with their deadline as the only bound.
    """

    def __init__(self) -> None:
        super().__init__()
        self._wakeups_lock = threading.Lock()
        self._wakeups: list[Callable[[], None]] = []

    def set(self) -> None:
        super().set()
        with self._wakeups_lock:
            wakeups, self._wakeups = self._wakeups, []
        for wake in wakeups:
            wake()

    def on_set(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` once when the event is set (at once if it already is); returns the undo."""
        with self._wakeups_lock:
            if not self.is_set():
                self._wakeups.append(wake)
                return lambda: self._forget(wake)
        wake()
        return _nothing

    def _forget(self, wake: Callable[[], None]) -> None:
        with self._wakeups_lock:
            if wake in self._wakeups:
                self._wakeups.remove(wake)


def on_cancel(cancel: threading.Event | None, wake: Callable[[], None]) -> Callable[[], None] | None:
    """Register `wake` for when `cancel` is set; None if `cancel` cannot tell (then poll it)."""
    if isinstance(cancel, CancelEvent):
        return cancel.on_set(wake)
    return None


def _nothing() -> None:
    pass
