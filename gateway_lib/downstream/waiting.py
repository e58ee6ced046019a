"""A worker's wait for a session's Future: until the call's deadline at most, ending early on cancel."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable

from ..errors import RequestCancelled

POLL_S = 0.02  # how often a waiting worker looks at its cancel event


def result_by(
    future: concurrent.futures.Future,
    deadline: float,
    cancel: threading.Event | None,
    timeout_error: Callable[[], BaseException],
    give_up: Callable[[BaseException], None] = lambda error: None,
) -> Any:
    """The future's result (or its exception), waiting until `deadline` (monotonic) at most.

    At the deadline raise `timeout_error()`; once `cancel` is set raise RequestCancelled.
    Either way `give_up(error)` is called first, so the session can stop its work.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = timeout_error()
            give_up(error)
            raise error
        try:
            return future.result(timeout=min(remaining, POLL_S))
        except concurrent.futures.TimeoutError:
            pass
        if cancel is not None and cancel.is_set():
            error = RequestCancelled()
            give_up(error)
            raise error
