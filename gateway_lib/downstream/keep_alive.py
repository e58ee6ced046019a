"""Kept-alive sessions: one long-lived session per (server, agent), and the registry of them.

Each session is owned by one dedicated thread that runs one long-lived event loop.
Workers hand it calls and wait with their own deadline; calls run as concurrent tasks,
multiplexed by request id. A timed-out or cancelled call is cancelled in the loop (the
SDK then sends `notifications/cancelled`) and the session stays. The session closes when
idle for `idle_timeout_ms` (a timer in its own loop), on `retire()` (config changed or
removed), on `shutdown()`, or when its process exits; the next call then opens a fresh one.

Locks: the registry's lock guards its tables; each session's lock guards its counters.
The registry may take a session's lock while holding its own, never the other way round.

Over 400 lines on purpose: the registry and the session share one lifecycle (hold,
release, retire, close), and its lock order reads only with both halves in view.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TextIO

from ..errors import GatewayError, ServerUnavailable, ToolTimeout
from ..model import ServerSpec
from . import loop, sdk, waiting
from .oauth import OAuthGate, SessionAuth
from .per_call import Work
from .translate import READY, STARTING, translate, unreadable

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 3  # kept sessions found closing before a call was sent: open a fresh one
DRAIN_S = 1.0  # bound on letting cancelled calls send their notifications/cancelled
RECORD_EVERY_S = 1.0  # how often calls on a kept session record its server's processes

Key = tuple[str, str | None, tuple[str, ...]]  # (server, agent, client capabilities declared)


class SessionGone(Exception):
    """The kept session closed before this call was sent; a fresh session may take it."""


class KeptSessions:
    """The open kept-alive sessions by (server, agent), and every one whose thread still runs."""

    def __init__(self, errlog: TextIO, oauth: OAuthGate | None = None):
        self._errlog = errlog
        self._oauth = oauth
        self._lock = threading.Lock()
        self._open: dict[Key, KeptSession] = {}
        self._alive: set[KeptSession] = set()
        self._current: dict[str, ServerSpec] | None = None  # the servers of the last retire()
        self._closed = False

    def run(
        self,
        spec: ServerSpec,
        agent: str | None,
        method: str,
        work: Work,
        deadline: float | waiting.MovingDeadline,
        timeout_s: float,
        cancel: threading.Event | None,
        relay: Any = None,
    ) -> Any:
        for _ in range(SEND_ATTEMPTS):
            session = self._hold(spec, agent, relay)
            try:
                return session.call(method, work, deadline, timeout_s, cancel)
            except SessionGone:
                continue  # it closed before the call was sent: a fresh session may take it
            finally:
                session.release()
        raise ServerUnavailable(f"Server {spec.name!r} closed its session again and again before the call was sent")

    def _hold(self, spec: ServerSpec, agent: str | None, relay: Any = None) -> KeptSession:
        """The open session of (server, agent, capabilities), opened if needed, with one more holder.

        A session declares the client capabilities once, when it opens: calls whose client
        declared another set get a session of their own.

        A call made under an older config than the last retire() saw (it took its
        snapshot before a reload) gets a session of its own, closed when the call ends:
        it never displaces the session of the newer config.
        """
        key = (spec.name, agent, relay.capability_key() if relay is not None else ())
        with self._lock:
            if self._closed:
                raise ServerUnavailable(f"Server {spec.name!r} is unavailable: the gateway is shutting down")
            if self._current is not None and self._current.get(spec.name) != spec:
                session = self._start(spec, agent, key, relay)
                session.retire("it served a call made under an older config")
                return session
            session = self._open.get(key)
            if session is not None and session.spec != spec:
                self._open.pop(key).retire("its config entry changed")
            elif session is not None and session.exited():
                self._open.pop(key).end("its process exited", on_purpose=False)
            session = self._open.get(key)
            if session is None or not session.hold():
                session = self._start(spec, agent, key, relay)
                self._open[key] = session
            return session

    def _start(self, spec: ServerSpec, agent: str | None, key: Key, relay: Any) -> KeptSession:
        """A new session with one holder; under the lock."""
        session = KeptSession(self, spec, agent, self._errlog, key, relay,
                              self._oauth.session(spec) if self._oauth is not None else None)
        session.hold()
        self._alive.add(session)
        session.thread.start()
        return session

    def retire(self, servers: Mapping[str, ServerSpec]) -> None:
        """Retire every session whose server is gone from `servers` or changed: the next
        call opens a fresh one, and each retired one closes once its running calls end."""
        with self._lock:
            self._current = dict(servers)
            stale = [session for session in self._open.values() if servers.get(session.spec.name) != session.spec]
            for session in stale:
                del self._open[session.key]
        for session in stale:
            gone = session.spec.name not in servers
            session.retire("its config entry was removed" if gone else "its config entry changed")

    def shutdown(self) -> list[KeptSession]:
        """Refuse new sessions and start closing every one (its calls are cancelled)."""
        with self._lock:
            self._closed = True
            self._open.clear()
            sessions = list(self._alive)
        for session in sessions:
            session.end("the gateway is shutting down", on_purpose=True)
        return sessions

    def status(self) -> list[dict]:
        with self._lock:
            sessions = list(self._open.values())
        return [session.status() for session in sessions]

    # --- what a session tells its registry (from its own threads) ----------------------

    def discard(self, session: KeptSession) -> None:
        """`session` is closing: the next call for its key opens a fresh one."""
        with self._lock:
            if self._open.get(session.key) is session:
                del self._open[session.key]

    def ended(self, session: KeptSession) -> None:
        """`session`'s thread is ending."""
        with self._lock:
            if self._open.get(session.key) is session:
                del self._open[session.key]
            self._alive.discard(session)


@dataclass(frozen=True)
class _Attempt:
    """What `translate` needs to know about one call on a kept session."""

    spec: ServerSpec
    method: str
    phase: str
    exit_status: Callable[[], str | None]


class KeptSession(loop.LoopProcesses):
    """One kept-alive session of one (server, agent).

    Its thread runs one event loop for the session's whole life: `_hold_open` opens the
    transport and the ClientSession, then waits for a reason to close. Worker threads
    hand calls to the loop (`call`), each waiting with its own deadline. The counters are
    guarded by `_lock`; `_session`, `_tasks` and `_stop` are touched only in the loop thread.
    """

    method = "initialize"  # what `translate` reports while the session is starting

    def __init__(self, registry: KeptSessions, spec: ServerSpec, agent: str | None, errlog: TextIO,
                 key: Key | None = None, relay: Any = None, auth: SessionAuth | None = None):
        self.spec = spec
        self.auth = auth
        self.agent = agent
        self.key: Key = key if key is not None else (spec.name, agent, ())
        self._declares = relay  # the first call's relay: the capabilities the session declares
        self.errlog = errlog
        self.phase = STARTING
        self.ready: concurrent.futures.Future = concurrent.futures.Future()  # None once initialized
        self.opened_at = self.last_used = time.monotonic()
        self.calls = 0  # calls sent on this session
        self.holders = 0  # worker threads waiting for the session or for a call on it
        self.closing: str | None = None  # why it is closing, once it is
        self.closed_on_purpose = False  # closed by the gateway, rather than failed
        self._retiring: str | None = None  # why it closes once the calls holding it end
        self.thread = threading.Thread(target=self._main, name=f"downstream-keep-{spec.name}", daemon=True)
        self._registry = registry
        self._lock = threading.Lock()
        self._loop: Any = None
        self._stop: Any = None  # an event of the loop: set in the loop to leave the session
        self._scope: Any = None  # cancels the opening if the session closes while starting
        self._session: Any = None
        self._recorded_at = 0.0
        self._tasks: dict[Any, str] = {}  # the calls in flight: task -> method
        self._failed: dict[Any, BaseException] = {}  # tasks cancelled to fail with this error

    # --- any thread -------------------------------------------------------------------

    def hold(self) -> bool:
        """Count one more worker waiting on this session; False if it is already closing."""
        with self._lock:
            if self.closing is not None:
                return False
            self.holders += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.holders -= 1
            self.last_used = time.monotonic()
            idle = self.holders == 0 and self.closing is None
            retired = self._retiring if idle else None
            abandoned = idle and not self.ready.done()
        if retired is not None:  # its last running call has ended
            self.close(retired, on_purpose=True)
        elif abandoned:  # every caller gave up while it was starting: do not leave it starting
            self.close("no call waited for it to finish starting", on_purpose=True)

    def retire(self, reason: str) -> None:
        """Close the session once no call holds it; at once if none does. Safe from any thread;
        the registry may hold its own lock (it has already stopped handing the session out)."""
        with self._lock:
            if self.closing is not None:
                return
            if self.holders:
                self._retiring = reason
                return
            self._mark_closing_locked(reason, on_purpose=True)
        self._log_closing(reason)
        self.wake()

    def close(self, reason: str, on_purpose: bool) -> None:
        """Close the session (the first reason wins) and tell the registry; from any thread
        that does not hold the registry's lock."""
        self.end(reason, on_purpose)
        self._registry.discard(self)

    def end(self, reason: str, on_purpose: bool) -> None:
        """Close the session (the first reason wins); the registry has already let it go."""
        self._mark_closing(reason, on_purpose)
        self.wake()

    def wake(self) -> None:
        """Tell the loop to look at `closing`."""
        with self._lock:
            event_loop = self._loop
        if event_loop is not None:
            loop.call_soon(event_loop, self._begin_close)

    def status(self) -> dict:
        now = time.monotonic()
        with self._lock:
            return {
                "server": self.spec.name,
                "agent": self.agent,
                "age_s": round(now - self.opened_at, 3),
                "calls": self.calls,
                "idle_s": 0.0 if self.holders else round(now - self.last_used, 3),
                "in_flight": self.holders,
            }

    def _mark_closing(self, reason: str, on_purpose: bool) -> None:
        with self._lock:
            first = self._mark_closing_locked(reason, on_purpose)
        if first:
            self._log_closing(reason)

    def _mark_closing_locked(self, reason: str, on_purpose: bool) -> bool:
        """Record why the session closes; False if it already was closing (the first reason wins)."""
        if self.closing is not None:
            return False
        self.closing, self.closed_on_purpose = reason, on_purpose
        return True

    def _log_closing(self, reason: str) -> None:
        log.info("Closing the kept-alive session of server %r for agent %r: %s", self.spec.name, self.agent, reason)

    # --- worker threads ---------------------------------------------------------------

    def call(self, method: str, work: Work, deadline: float | waiting.MovingDeadline, timeout_s: float,
             cancel: threading.Event | None) -> Any:
        """Run `work(session)` in the session's loop; wait until the deadline at most."""
        ms = round(timeout_s * 1000)
        name = self.spec.name
        waiting.result_by(self.ready, deadline, cancel, lambda: self._starting_timeout(ms))
        sent = threading.Event()
        coroutine = self._serve(method, work, sent)
        try:
            future = loop.submit(coroutine, self._loop)
        except RuntimeError:  # the loop has already closed
            coroutine.close()
            raise SessionGone() from None
        try:
            # At the deadline or on cancellation the task is cancelled in the loop, and
            # the SDK tells the server with notifications/cancelled; the session stays.
            return waiting.result_by(future, deadline, cancel,
                                     lambda: ToolTimeout(f"Server {name!r} did not answer within {ms} ms"),
                                     lambda error: future.cancel())
        except concurrent.futures.CancelledError:
            if not sent.is_set():
                raise SessionGone() from None
            raise ServerUnavailable(f"Server {name!r} was closed during {method}: {self.closing}") from None
        except ServerUnavailable:
            if self.closed_on_purpose:
                raise ServerUnavailable(f"Server {name!r} was closed during {method}: {self.closing}") from None
            # The connection failed (the process died, say): drop the session so the next
            # call opens a fresh one. This call is not retried: the tool may not be idempotent.
            self.close("its connection failed", on_purpose=False)
            raise

    def _starting_timeout(self, ms: int) -> GatewayError:
        signing_in = self.auth.required_error() if self.auth is not None else None
        return signing_in or ServerUnavailable(f"Server {self.spec.name!r} did not finish starting within {ms} ms")

    # --- the session's own thread and loop --------------------------------------------

    def _main(self) -> None:
        try:
            sdk.import_client()
            loop.run(self._hold_open, self._set_loop)
        except BaseException as exc:  # the thread must settle `ready` whatever happened
            self._settle_ready(translate(self, exc))
            if self.phase == READY:
                log.debug("kept-alive session of %r ended with an error", self.spec.name, exc_info=exc)
        finally:
            self._settle_ready(ServerUnavailable(f"Server {self.spec.name!r} was closed while starting: {self.closing}"))
            self._mark_closing("its session ended", on_purpose=False)
            self._registry.ended(self)

    def _set_loop(self, new_loop: Any) -> None:
        new_loop.on_exit = self._process_exited
        with self._lock:
            self._loop = new_loop
            self._stop = loop.new_event()

    async def _hold_open(self) -> None:
        try:
            with loop.cancel_scope() as scope:
                with self._lock:
                    self._scope = scope
                    if self.closing is not None:
                        scope.cancel()
                async with contextlib.AsyncExitStack() as stack:
                    session = await sdk.open_session(self.spec, self.errlog, stack, self._unreadable,
                                                     self.record_processes, self._declares, shared=True,
                                                     auth=self.auth)
                    self._declares = None  # the session outlives that call: do not hold on to it
                    await sdk.handshake(session, self.spec)
                    self._session, self.phase = session, READY
                    self.record_processes()
                    self._settle_ready(None)
                    log.info("Opened a kept-alive session of server %r for agent %r", self.spec.name, self.agent)
                    await self._wait_for_close()
                    await self._end_calls()
                # Leaving the stack closes the session, then the transport: stdin is
                # closed and the SDK waits (bounded) for the server to exit.
        finally:
            await self.reap()

    async def _wait_for_close(self) -> None:
        """Return once the session is closing: dropped, or idle for idle_timeout_ms."""
        while (left := self._idle_left()) > 0:
            with loop.move_on_after(left):
                await self._stop.wait()

    def _idle_left(self) -> float:
        """Seconds until the session has been idle long enough to close; 0 once it is closing."""
        with self._lock:
            if self.closing is not None:
                return 0.0
            idle_s = self.spec.idle_timeout_ms / 1000
            if self.holders:
                return idle_s  # look again later; last_used moves when the calls end
            left = self.last_used + idle_s - time.monotonic()
            if left > 0:
                return left
            reason = f"it was idle for {self.spec.idle_timeout_ms} ms"
            self._mark_closing_locked(reason, on_purpose=True)  # under the lock: no call slips in
        self._log_closing(reason)
        self._registry.discard(self)
        return 0.0

    async def _end_calls(self) -> None:
        """End the calls still running, waiting a little for them.

        Closed on purpose: cancel them (each tells the server). Closed because the
        process exited: let them fail on their own with the connection, so their
        callers learn what happened; cancel only those still waiting after the drain.
        """
        tasks = list(self._tasks)
        if not tasks:
            return
        if self.closed_on_purpose:
            for task in tasks:
                task.cancel()
        for task in await loop.wait_tasks(tasks, DRAIN_S):
            task.cancel()

    async def _serve(self, method: str, work: Work, sent: threading.Event) -> Any:
        with self._lock:
            if self.closing is not None or self._session is None:
                raise SessionGone()
            self.calls += 1
        sent.set()
        task = loop.current_task()
        self._tasks[task] = method
        try:
            return await work(self._session)
        except Exception as exc:
            raise translate(_Attempt(self.spec, method, READY, self.exit_status), exc) from None
        except BaseException as exc:
            failure = self._failed.pop(task, None)
            if failure is not None and loop.is_cancellation(exc):
                raise failure from None
            raise
        finally:
            self._tasks.pop(task, None)
            self._record_now_and_then()

    def _record_now_and_then(self) -> None:
        """Record the server's processes after a call, at most every RECORD_EVERY_S: a
        /proc scan costs milliseconds, and a call on a kept session one or two."""
        now = time.monotonic()
        if now - self._recorded_at >= RECORD_EVERY_S:
            self._recorded_at = now
            self.record_processes()

    def _unreadable(self, reason: str) -> None:
        """In the loop: an answer the SDK cannot parse arrived. It belongs to a call only
        if just one is in flight (the line's id cannot be matched to a call's); with more,
        they keep waiting until their deadlines."""
        if self.phase == STARTING:
            self._settle_ready(unreadable(self, reason))
            self._mark_closing("its answer to initialize cannot be read", on_purpose=False)
            self._begin_close()
            return
        if len(self._tasks) != 1:
            log.warning("Server %r sent an answer that cannot be read (%s) with %s calls in flight",
                        self.spec.name, reason, len(self._tasks))
            return
        [(task, method)] = self._tasks.items()
        self._failed[task] = unreadable(_Attempt(self.spec, method, READY, self.exit_status), reason)
        task.cancel()

    def _begin_close(self) -> None:
        """In the loop: stop waiting, or stop opening."""
        self._stop.set()
        if self.phase == STARTING and self._scope is not None:
            self._scope.cancel()

    def _process_exited(self) -> None:
        """In the loop, when the server process exits on its own while the session is open."""
        if self.phase == READY:
            self._mark_closing(f"its process exited ({self.exit_status() or 'status unknown'})", on_purpose=False)
            self._registry.discard(self)
            self._begin_close()

    def _settle_ready(self, outcome: BaseException | None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # first outcome wins
            if outcome is None:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(outcome)
