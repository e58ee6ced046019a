"""A worker's wait for a session's Future: until the call's deadline at most, ending early on cancel."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable, Protocol

from ..cancellation import on_cancel
from ..errors import RequestCancelled

POLL_S = 0.02  # how often to look at a cancel flag that cannot wake the waiter (a plain Event)


class MovingDeadline(Protocol):
    """A deadline that moves (a call's clock, `relay.CallClock`), and says when it does."""

    def deadline(self) -> float: ...

    def on_move(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` whenever the deadline moves; returns the undo."""
        ...


def result_by(
    future: concurrent.futures.Future,
    deadline: float | MovingDeadline,
    cancel: threading.Event | None,
    timeout_error: Callable[[], BaseException],
    give_up: Callable[[BaseException], None] = lambda error: None,
) -> Any:
    """The future's result (or its exception), waiting until `deadline` (monotonic) at most.

    `deadline` may move: a call's deadline moves when the server reports progress or while
    the client is answering one of the server's requests; each move wakes the wait, which
    reads it again.

    At the deadline raise `timeout_error()`; once `cancel` is set raise RequestCancelled.
    Either way `give_up(error)` is called first, so the session can stop its work. The
    wait blocks until the future settles, the cancel flag is set, the deadline moves, or
    the deadline passes.
    """
    woken = threading.Event()
    future.add_done_callback(lambda _: woken.set())
    forget = on_cancel(cancel, woken.set)
    moving = not isinstance(deadline, (int, float))
    unmove = deadline.on_move(woken.set) if moving else None
    try:
        while True:
            woken.clear()  # before reading: a move from here on wakes the wait below
            remaining = (deadline.deadline() if moving else deadline) - time.monotonic()
            if remaining <= 0:
                error = timeout_error()
                give_up(error)
                raise error
            if future.done():
                return future.result()
            if cancel is not None and cancel.is_set():
                error = RequestCancelled()
                give_up(error)
                raise error
            woken.wait(remaining if forget is not None else min(remaining, POLL_S))
    finally:
        if forget is not None:
            forget()
        if unmove is not None:
            unmove()
