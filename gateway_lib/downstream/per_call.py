"""Per-call sessions: every call opens its own session in its own event loop on its own thread.

The calling worker waits on the session's Future with the call's deadline. At the deadline
(or on cancellation) the worker raises at once and the session unwinds in the background.
A result is handed back as soon as it arrives; the session closes afterwards, in the
background too, and `on_closed` fires once it has.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from typing import Any, Awaitable, Callable, TextIO

from ..errors import GatewayError, ServerUnavailable, ToolTimeout
from ..model import ServerSpec
from . import loop, sdk, waiting
from .oauth import OAuthGate, SessionAuth
from .translate import READY, STARTING, first_leaf, translate, unreadable

log = logging.getLogger(__name__)

EXIT_STATUS_WAIT_S = 0.5  # bound on waiting for a crashed server's exit status

Work = Callable[[Any], Awaitable[Any]]


class PerCallSessions:
    """The per-call sessions in flight, so shutdown can stop them all."""

    def __init__(self, errlog: TextIO, oauth: OAuthGate | None = None):
        self._errlog = errlog
        self._oauth = oauth
        self._lock = threading.Lock()
        self._calls: set[PerCallSession] = set()
        self._closed = False

    def run(
        self,
        spec: ServerSpec,
        method: str,
        work: Work,
        deadline: float | waiting.MovingDeadline,
        timeout_s: float,
        cancel: threading.Event | None,
        on_closed: Callable[[], None] | None,
        relay: Any = None,
    ) -> Any:
        """Run `work` on a fresh session; `on_closed` fires once, when the session has closed."""
        try:
            call = PerCallSession(spec, method, work, self._errlog, on_closed, relay,
                                  self._oauth.session(spec) if self._oauth is not None else None)
            with self._lock:
                if self._closed:
                    raise ServerUnavailable(f"Server {spec.name!r} is unavailable: the gateway is shutting down")
                self._calls.add(call)
        except BaseException:
            if on_closed is not None:
                on_closed()  # no session was started, so it is closed now
            raise
        call.thread = threading.Thread(target=self._drive, args=(call,), name=f"downstream-{spec.name}", daemon=True)
        call.thread.start()
        return waiting.result_by(call.future, deadline, cancel, lambda: call.timeout_error(timeout_s), call.abort)

    def _drive(self, call: PerCallSession) -> None:
        try:
            call.run()
        finally:
            with self._lock:
                self._calls.discard(call)
            if call.on_closed is not None:
                try:
                    call.on_closed()
                except Exception:
                    log.exception("on_closed of a %s session to %r failed", call.method, call.spec.name)

    def shutdown(self) -> list[PerCallSession]:
        """Refuse new calls and fail every live one now; each session then closes as usual."""
        with self._lock:
            self._closed = True
            calls = list(self._calls)
        for call in calls:
            call.abort(ServerUnavailable(f"Server {call.spec.name!r} was stopped: the gateway is shutting down"))
        return calls

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._calls)


class PerCallSession(loop.LoopProcesses):
    """One session: its thread, its event loop, and every process started in that loop."""

    def __init__(self, spec: ServerSpec, method: str, work: Work, errlog: TextIO, on_closed: Callable[[], None] | None,
                 relay: Any = None, auth: SessionAuth | None = None):
        self.spec = spec
        self.relay = relay  # what the server may send the gateway's client during this call
        self.auth = auth
        self.method = method
        self.work = work
        self.errlog = errlog
        self.on_closed = on_closed
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.phase = STARTING
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._loop: Any = None
        self._scope: Any = None
        self._work_scope: Any = None  # cancels only the work, once the session is ready
        self._aborted = False

    def run(self) -> None:
        """Thread body: drive the session in a fresh loop and settle the Future."""
        try:
            sdk.import_client()
            result = loop.run(self._session, self._set_loop)
        except BaseException as exc:  # the thread must settle the Future whatever happened
            if not self.future.done():  # else the session already translated it, once
                self._settle(exception=translate(self, exc))
        else:
            self._settle(result=result)

    def _set_loop(self, new_loop: Any) -> None:
        with self._lock:
            self._loop = new_loop

    async def _session(self) -> Any:
        try:
            with loop.cancel_scope() as scope:
                with self._lock:
                    self._scope = scope
                    if self._aborted:
                        scope.cancel()
                async with contextlib.AsyncExitStack() as stack:
                    session = await sdk.open_session(self.spec, self.errlog, stack, self._unreadable,
                                                     self.record_processes, self.relay, auth=self.auth)
                    # The caller hears the outcome now: closing the session can take the
                    # SDK's grace periods (seconds, for a server that ignores EOF or
                    # SIGTERM), which must not delay the answer or turn it into a timeout.
                    try:
                        await sdk.handshake(session, self.spec)
                        self.phase = READY
                        self.record_processes()
                        # Aborting ends only the work at first, so the SDK can tell the
                        # server (notifications/cancelled) before the session closes.
                        with loop.cancel_scope() as work_scope:
                            with self._lock:
                                self._work_scope = work_scope
                                if self._aborted:
                                    work_scope.cancel()
                            result = await self.work(session)
                        if work_scope.cancelled_caught:
                            return None  # aborted, and abort() already settled the Future
                    except Exception as exc:
                        await self._await_exit_status(exc)
                        self._settle(exception=translate(self, exc))
                        raise
                    self._settle(result=result)
                    return result
            return None  # cancelled by abort(), which already settled the Future
        finally:
            await self.reap()

    async def _await_exit_status(self, exc: BaseException) -> None:
        """After a closed connection, give a dying server a moment to be reaped, so the
        error can say how it ended; a server that closed stdout and lives on costs this bound."""
        if sdk.is_connection_closed(first_leaf(exc), self.spec.transport) and self.spawned_any():
            await loop.poll_until(lambda: self.exit_status() is not None, EXIT_STATUS_WAIT_S)

    def _unreadable(self, reason: str) -> None:
        """In the loop: the server's answer cannot be parsed; one request is in flight, so it was that one's."""
        self.abort(unreadable(self, reason))

    def abort(self, error: BaseException) -> None:
        """Settle the Future with `error` now; the session unwinds in the background."""
        self._settle(exception=error)
        with self._lock:
            self._aborted = True
            event_loop, scope = self._loop, self._work_scope or self._scope
        if scope is not None:
            loop.call_soon(event_loop, scope.cancel)

    def timeout_error(self, timeout_s: float) -> GatewayError:
        ms = round(timeout_s * 1000)
        signing_in = self.auth.required_error() if self.auth is not None and self.phase == STARTING else None
        if signing_in is not None:
            return signing_in
        if self.phase == STARTING:
            return ServerUnavailable(f"Server {self.spec.name!r} did not finish starting within {ms} ms")
        return ToolTimeout(f"Server {self.spec.name!r} did not answer within {ms} ms")

    def _settle(self, result: Any = None, exception: BaseException | None = None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # first outcome wins
            if exception is not None:
                self.future.set_exception(exception)
            else:
                self.future.set_result(result)
