"""A 2026-07-28 client's execute_tool in rounds: the downstream's requests to the client become input_required results.

That version has no server-to-client requests. When a downstream asks for sampling,
elicitation or roots during such a client's call, the call goes on running on a thread
of its own (its session, process and server slot held) while the client is answered
`input_required`: the requests under ids of the gateway's own, and an opaque
`requestState` naming the parked call. The client's retry of the same tools/call, with
`inputResponses` and that state, hands the answers down and waits for what comes next:
another round, or the result.

Bounds, all failing closed: a state is unguessable (256 bits) and single-use (each round
gets a new one), and only the same client connection, with the same caller and the same
tool arguments, can redeem it; a parked call waits for its retry no longer than the call
may run (its cap), and is then cancelled downstream; a call that ends while parked voids
its state; at most MAX_PARKED calls wait for a retry at once, past which the downstream's
request is refused.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from .cancellation import CancelEvent
from .errors import InputStateMismatch, InputStateUnknown, RequestCancelled
from .outgoing import PeerTimeout

logger = logging.getLogger(__name__)

MAX_PARKED = 32  # calls waiting for a client's retry at once, per client connection
STATE_BYTES = 32  # secrets.token_urlsafe(32): 256 bits
_POLL_S = 0.02  # how often a wait looks at a cancel flag that cannot wake it
ENDING_WAIT_S = 5.0  # after cancelling an expired call: how long its request waits for the call to end


class RoundsFull(Exception):
    """Too many calls wait for their client's retry; this request of the downstream is refused."""


@dataclass
class _Question:
    key: str
    method: str
    params: Any
    answer: concurrent.futures.Future


@dataclass(frozen=True)
class Owner:
    """Who may redeem a call's requestState: the caller the transport vouched for, and the call."""

    caller: Any
    name: str
    arguments: dict


class RoundCall:
    """One execute_tool of a 2026-07-28 client: its running call, and the questions it has open."""

    def __init__(self, rounds: InputRounds, owner: Owner, attached: Any):
        self.owner = owner
        self.cancel = CancelEvent()  # the call's own: it outlives the request that started it
        self._rounds = rounds
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._open: dict[str, _Question] = {}  # asked by the downstream, not yet answered
        self._outcome: tuple[bool, Any] | None = None  # (ok, result or exception) once the call ended
        self._attached = attached  # the ClientLink of the request waiting for this call; None while parked
        self.state: str | None = None
        self.finished_at: float | None = None  # when the call ended
        self.ended = threading.Event()

    # --- the downstream's side (a relay, on a worker thread of the session's loop) -------

    def attached(self) -> Any:
        """The ClientLink of the client request this call answers now (None while parked)."""
        with self._cond:
            return self._attached

    def ask(self, method: str, params: Any, timeout_s: float, stop: Any) -> Any:
        """Put one downstream request to the client (in the next round) and wait for its answer.

        Raises PeerTimeout when no answer came within `timeout_s` (the call is then cancelled
        downstream), RequestCancelled when `stop` is set, RoundsFull when it could not be asked.
        """
        question = _Question(f"input-{next(self._ids)}", method, params, concurrent.futures.Future())
        with self._cond:
            self._open[question.key] = question
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    return question.answer.result(timeout=min(remaining, _POLL_S))
                except concurrent.futures.TimeoutError:
                    pass
                if stop is not None and stop.is_set():
                    raise RequestCancelled()
        finally:
            with self._cond:
                self._open.pop(question.key, None)
        # No retry came in time: the call is over. Cancel it, so the downstream hears of it
        # (notifications/cancelled) before this request of its gets its error.
        self._rounds.forget(self)
        self.cancel.set()
        self.ended.wait(ENDING_WAIT_S)
        raise PeerTimeout(f"The client did not retry with an answer to {method} within {round(timeout_s * 1000)} ms")

    # --- the client's side (the endpoint's worker serving a tools/call) ---------------------

    def run(self, work: Callable[[Any, threading.Event], dict]) -> None:
        """Start the call on a thread of its own: `work(link, cancel)` returns its result."""
        link = replace(self._attached, inputs=self, cancel=self.cancel)

        def main() -> None:
            try:
                outcome: tuple[bool, Any] = (True, work(link, self.cancel))
            except BaseException as exc:  # handed to the request waiting, if one is
                outcome = (False, exc)
            with self._cond:
                self._outcome = outcome
                self.finished_at = time.monotonic()
                parked = self._attached is None
                self._cond.notify_all()
            if parked:  # ended (its cap, the server giving up) with no request to answer: its state is void
                self._rounds.forget(self)
                logger.info("An execute_tool waiting for its client's retry ended first; its outcome is dropped")
            self.ended.set()

        threading.Thread(target=main, name="gateway-round-call", daemon=True).start()

    def deliver(self, responses: dict) -> None:
        """The client's answers, by the keys it was asked under; keys not open are ignored."""
        with self._cond:
            for key, answer in responses.items():
                question = self._open.pop(key, None)
                if question is not None and not question.answer.done():
                    question.answer.set_result(answer)

    def next_round(self, link: Any, request_cancel: threading.Event) -> dict:
        """Wait (as `link`'s request) for the call's result or its next questions; the answer to send.

        The wait ends with the call at the latest, which its own deadline bounds.
        """
        while True:
            with self._cond:
                self._attached = link
                while self._outcome is None and not self._open and not request_cancel.is_set():
                    self._cond.wait(_POLL_S * 10)
                if self._outcome is not None:
                    self._attached = None
                    ok, value = self._outcome
                    if ok:
                        return value
                    raise value
                if request_cancel.is_set():
                    self._attached = None
                    self.cancel.set()  # the client gave up on the call (or the gateway is stopping)
                    raise RequestCancelled()
                questions = dict(self._open)
                self._attached = None  # parked from here on: nothing is relayed until the retry
            state = self._rounds.park(self)
            if state is _ENDED:
                continue  # the call ended meanwhile: its outcome is the answer
            if state is None:
                with self._cond:  # too many parked: these requests are refused, the call goes on
                    for question in questions.values():
                        if self._open.pop(question.key, None) is not None and not question.answer.done():
                            question.answer.set_exception(RoundsFull())
                continue
            requests = {}
            for key, question in questions.items():
                request: dict[str, Any] = {"method": question.method}
                if question.params is not None:
                    request["params"] = question.params
                requests[key] = request
            return {"resultType": "input_required", "inputRequests": requests, "requestState": state}


_ENDED = "ended"  # park(): the call ended before it could be parked


class InputRounds:
    """The parked calls of one client connection, by requestState."""

    def __init__(self, max_parked: int = MAX_PARKED):
        self._max = max_parked
        self._lock = threading.Lock()
        self._parked: dict[str, RoundCall] = {}

    def start(self, owner: Owner, link: Any, request_cancel: threading.Event,
              work: Callable[[Any, threading.Event], dict]) -> dict:
        """A new call: run it, and answer its first round (or its result)."""
        call = RoundCall(self, owner, link)
        call.run(work)
        return call.next_round(link, request_cancel)

    def resume(self, state: str, owner: Owner, responses: dict, link: Any, request_cancel: threading.Event) -> dict:
        """A retry: the answers go to the call `state` names, which is then waited for again."""
        with self._lock:
            call = self._parked.get(state)
            if call is not None and call.owner != owner:
                # Refused, and the call stays parked for the one who may redeem it.
                raise InputStateMismatch("This requestState belongs to another caller or another call: retry the "
                                         "original tools/call unchanged, from the client it was answered to")
            if call is not None:
                del self._parked[state]
                call.state = None
        if call is None:
            raise InputStateUnknown("Unknown requestState: it was already used, its call ended or expired, or it "
                                    "was never handed out; call execute_tool again without it")
        call.deliver(responses)
        return call.next_round(link, request_cancel)

    def park(self, call: RoundCall) -> str | None:
        """Name `call` by a fresh state while it waits for the retry; None when too many wait."""
        with self._lock:
            if call.finished_at is not None:
                return _ENDED
            if len(self._parked) >= self._max:
                logger.warning("%d calls already wait for their client's retry; refusing another", self._max)
                return None
            state = secrets.token_urlsafe(STATE_BYTES)
            self._parked[state] = call
            call.state = state
        return state

    def forget(self, call: RoundCall) -> None:
        with self._lock:
            if call.state is not None and self._parked.get(call.state) is call:
                del self._parked[call.state]
            call.state = None

    def close(self) -> None:
        """Cancel every parked call (the gateway is stopping); their states are void."""
        with self._lock:
            calls = list(self._parked.values())
            self._parked.clear()
        for call in calls:
            call.state = None
            call.cancel.set()

    @property
    def parked(self) -> int:
        with self._lock:
            return len(self._parked)
