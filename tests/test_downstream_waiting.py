"""gateway_lib.downstream.waiting: a worker's wait ends when the answer comes, on cancel, or at the deadline."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from gateway_lib.cancellation import CancelEvent
from gateway_lib.downstream import waiting
from gateway_lib.errors import RequestCancelled, ToolTimeout
from gateway_lib.relay import CallClock


def far() -> float:
    return time.monotonic() + 60


def in_thread(wait) -> concurrent.futures.Future:
    """Run `wait()` on a thread of its own; its outcome lands in the returned future."""
    outcome: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            outcome.set_result(wait())
        except BaseException as exc:
            outcome.set_exception(exc)

    threading.Thread(target=run).start()
    return outcome


@pytest.fixture(autouse=True)
def no_polling(monkeypatch):
    # An hour between looks: only a real wake-up can end the waits below within their bounds.
    monkeypatch.setattr(waiting, "POLL_S", 3600.0)


def test_the_wait_returns_the_answer_as_soon_as_it_is_set():
    answer: concurrent.futures.Future = concurrent.futures.Future()
    outcome = in_thread(lambda: waiting.result_by(answer, far(), CancelEvent(), lambda: ToolTimeout("late")))

    answer.set_result("the answer")

    assert outcome.result(timeout=10) == "the answer"


def test_the_wait_ends_on_cancellation_and_gives_the_work_up():
    answer: concurrent.futures.Future = concurrent.futures.Future()
    cancel, given_up = CancelEvent(), []
    outcome = in_thread(lambda: waiting.result_by(answer, far(), cancel, lambda: ToolTimeout("late"), given_up.append))

    cancel.set()

    assert isinstance(outcome.exception(timeout=10), RequestCancelled)
    assert [type(error) for error in given_up] == [RequestCancelled]


def test_the_wait_ends_at_the_deadline_with_the_callers_error():
    answer: concurrent.futures.Future = concurrent.futures.Future()
    given_up = []
    with pytest.raises(ToolTimeout, match="^late$"):
        waiting.result_by(answer, time.monotonic() + 0.05, CancelEvent(), lambda: ToolTimeout("late"), given_up.append)
    assert [type(error) for error in given_up] == [ToolTimeout]


def test_a_call_clock_that_moves_its_deadline_wakes_the_wait_at_once():
    # The clock's own time is a fake: the wait's only way to learn that the call's time ran
    # out while the client was answering is the clock waking it (it would sleep two minutes).
    now, read = [0.0], threading.Event()

    class Clock(CallClock):
        def deadline(self) -> float:
            try:
                return super().deadline()
            finally:
                read.set()  # the wait has read the deadline: it blocks next, or is woken

    clock = Clock(timeout_s=60, cap_s=120, clock=lambda: now[0])
    answer: concurrent.futures.Future = concurrent.futures.Future()
    with clock.paused():
        outcome = in_thread(lambda: waiting.result_by(answer, clock, CancelEvent(), lambda: ToolTimeout("late")))
        assert read.wait(10)
        now[0] = 200.0  # past the cap, as the pause ends
    assert isinstance(outcome.exception(timeout=10), ToolTimeout)


def test_a_cancel_event_wakes_what_registered_and_forgets_what_unregistered():
    event, woken = CancelEvent(), []
    forget = event.on_set(lambda: woken.append("forgotten"))
    event.on_set(lambda: woken.append("kept"))
    forget()

    event.set()
    event.on_set(lambda: woken.append("late"))  # already set: woken at once

    assert woken == ["kept", "late"]
