"""One spare session: a per-call session of a stdio server, started before a call needs it.

A spare is started, initialized and (when the tool cache needs it) has listed the server's
tools; then it waits for exactly one request, serves it, and closes like any per-call
session. Its pool (spares.py) decides when spares start and end; this module runs one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Protocol, TextIO

from ..errors import GatewayError, ToolTimeout
from ..model import PER_CALL, STDIO, ServerSpec
from . import loop, sdk, waiting
from .oauth import SessionAuth
from .translate import READY, STARTING, first_leaf, translate, unreadable

if TYPE_CHECKING:
    from .spares import SparePool

log = logging.getLogger(__name__)

START_BOUND_MS = 60_000  # bound on a spare starting, for a server without timeout_ms
CLOSE_RETRY_S = 0.02  # a spare closed while its process is being spawned looks again this soon
# A taken spare's successor starts when its call is answered, or this long after the call
# began if it is still running, whichever first. Not at once: on two cores a start-up beside
# a call of a few ms slows that call down (measured in tests/benchmark_spares.py, see README's
# Sessions); a call still running after this long is one whose own work dominates.
SUCCESSOR_DELAY_S = 0.1
EXIT_STATUS_WAIT_S = 0.5  # as for per-call sessions: let a crashed server be reaped before saying how it ended

Work = Callable[[Any], Any]

# What a spare's life came to (see SparePool.ended).
SERVED, FAILED, IDLE, CLOSED = "served", "failed", "idle", "closed"
# A spare's own state: STARTING -> WAITING -> TAKEN, or -> CLOSING from the first two.
STATE_STARTING, STATE_WAITING, STATE_TAKEN, STATE_CLOSING = "starting", "waiting", "taken", "closing"


class ToolLists(Protocol):
    """Where a spare puts the tool list it fetched (the gateway's ToolCatalog)."""

    def is_cached(self, spec: ServerSpec) -> bool: ...

    def store(self, spec: ServerSpec, tools: list[dict]) -> None: ...


class SpareGone(Exception):
    """The spare ended before the call reached it; a fresh session takes the call."""


def may_have_spare(spec: ServerSpec) -> bool:
    return spec.session == PER_CALL and spec.transport == STDIO and spec.spare and not spec.unusable


class Spare(loop.LoopProcesses):
    """One spare session: its thread, its event loop, and the process it started.

    `state` and the handed-over call are guarded by `_lock`; the pool's lock is never taken
    while holding it.
    """

    def __init__(self, pool: SparePool, spec: ServerSpec, errlog: TextIO, lists: ToolLists | None, idle_s: float,
                 auth: SessionAuth | None = None):
        self.spec = spec
        self.auth = auth
        self.errlog = errlog
        self.method = "initialize"  # what `translate` reports while starting; then the served request's
        self.phase = STARTING
        self.state = STATE_STARTING
        self.pid: int | None = None
        self.future: concurrent.futures.Future = concurrent.futures.Future()  # the served request's outcome
        self.settled = threading.Event()  # set once the spare is waiting, or has ended
        self.thread = threading.Thread(target=self._main, name=f"downstream-spare-{spec.name}", daemon=True)
        self._pool = pool
        self._lists = lists
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._loop: Any = None
        self._scope: Any = None
        self._wake: Any = None  # a loop event: work was handed over, or the spare is closing
        self._work: Work | None = None
        self._on_closed: Callable[[], None] | None = None
        self._serving = False
        self._aborted = False
        self._successor = False  # whether this spare's successor was started
        self._outcome: tuple[str, str | None] = (CLOSED, None)

    # --- other threads -----------------------------------------------------------------

    def claim(self) -> bool:
        """WAITING -> TAKEN, for the one call that will use this spare (under the pool's lock)."""
        with self._lock:
            if self.state != STATE_WAITING or self.exited():
                return False
            self.state = STATE_TAKEN
            return True

    def close(self, reason: str, outcome: str) -> bool:
        """Close without serving, if the spare is not taken; safe from any thread."""
        with self._lock:
            if self.state not in (STATE_STARTING, STATE_WAITING):
                return False
            self.state = STATE_CLOSING
            self._outcome = (outcome, reason)
            event_loop, scope = self._loop, self._scope
        log.debug("Closing a spare session of server %r: %s", self.spec.name, reason)
        if event_loop is not None:
            loop.call_soon(event_loop, self._begin_close)
        return True

    def serve(self, method: str, work: Work, deadline: float, timeout_s: float, cancel: threading.Event | None,
              on_closed: Callable[[], None] | None) -> Any:
        """Run `work` on this (claimed) spare; SpareGone if it ended before the call reached it."""
        with self._lock:
            self.method, self._work, self._on_closed = method, work, on_closed
            event_loop = self._loop
        loop.call_soon(event_loop, self._wake.set)
        return waiting.result_by(self.future, deadline, cancel, lambda: self.timeout_error(timeout_s), self.abort)

    def abort(self, error: BaseException) -> None:
        """Settle the call with `error` now; the session unwinds in the background."""
        self._settle(exception=error)
        with self._lock:
            self._aborted = True
            serving, event_loop, scope = self._serving, self._loop, self._scope
        if event_loop is not None:
            loop.call_soon(event_loop, scope.cancel if serving and scope is not None else self._begin_close)

    def start_successor(self) -> None:
        """Once per taken spare: the pool starts the server's next spare (from any thread)."""
        with self._lock:
            if self._successor:
                return
            self._successor = True
        self._pool.successor_due(self.spec)

    def timeout_error(self, timeout_s: float) -> GatewayError:
        return ToolTimeout(f"Server {self.spec.name!r} did not answer within {round(timeout_s * 1000)} ms")

    # --- the spare's own thread and loop -------------------------------------------------

    def _main(self) -> None:
        try:
            sdk.import_client()
            loop.run(self._hold, self._set_loop)
        except BaseException as exc:  # the thread must settle everything whatever happened
            error = translate(self, exc)
            with self._lock:
                serving = self._serving
                if self.state in (STATE_STARTING, STATE_WAITING):  # failed to start, or broke while waiting
                    self.state = STATE_CLOSING
                    self._outcome = (FAILED, str(error))
            if serving:
                self._settle(exception=error)
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            serving, on_closed = self._serving, self._on_closed
            if self.state == STATE_TAKEN and not serving and not self._aborted:
                self._outcome = (FAILED, f"Server {self.spec.name!r}: its spare ended before a call reached it")
            outcome, error = (SERVED, None) if serving else self._outcome
        handed_back = not serving and self._settle(exception=SpareGone())
        self.settled.set()
        self._pool.ended(self, outcome, error)
        # Whoever ends up running the call releases its slot: the spare if it ran it (or
        # gave up on it after the caller's deadline), else the fresh session that takes over.
        if on_closed is not None and not handed_back:
            try:
                on_closed()
            except Exception:
                log.exception("on_closed of a spare session of %r failed", self.spec.name)

    def _set_loop(self, new_loop: Any) -> None:
        new_loop.on_exit = self._process_exited
        with self._lock:
            self._loop = new_loop
            self._wake = loop.new_event()

    async def _hold(self) -> None:
        try:
            bound_s = (self.spec.timeout_ms or START_BOUND_MS) / 1000
            with loop.cancel_scope() as scope:
                with self._lock:
                    self._scope = scope
                    if self.state == STATE_CLOSING:
                        scope.cancel()
                # The start-up is bounded by the scope's deadline (a nested scope could not
                # close before the transport's task groups it saw opened).
                scope.deadline = self._loop.time() + bound_s
                async with contextlib.AsyncExitStack() as stack:
                    session = await self._start(stack)
                    scope.deadline = math.inf
                    if not self._wait_now():
                        return
                    while (next_step := await self._wait_for_work()) == "wait":
                        pass
                    if next_step == "serve":
                        await self._run_work(session)
            if scope.cancelled_caught and self.state == STATE_STARTING:
                self._fail(f"Server {self.spec.name!r}: its spare did not finish starting within {round(bound_s * 1000)} ms")
        finally:
            await self.reap()

    async def _start(self, stack: contextlib.AsyncExitStack) -> Any:
        """Open, initialize and (if the cache needs it) list the tools: the session."""
        session = await sdk.open_session(self.spec, self.errlog, stack, self._unreadable, self.record_processes,
                                         auth=self.auth)
        await sdk.handshake(session, self.spec)
        self.phase = READY
        self.record_processes()
        if self._lists is not None and not self._lists.is_cached(self.spec):
            self._lists.store(self.spec, await sdk.list_all(session))
        return session

    def _fail(self, error: str) -> None:
        with self._lock:
            if self.state in (STATE_STARTING, STATE_WAITING):
                self.state = STATE_CLOSING
                self._outcome = (FAILED, error)

    def _unreadable(self, reason: str) -> None:
        """In the loop: an answer the SDK cannot parse. The served call's, or a failed start."""
        if self._serving:
            self.abort(unreadable(self, reason))
            return
        self._fail(str(unreadable(self, reason)))
        if self._scope is not None:
            self._scope.cancel()

    def _wait_now(self) -> bool:
        """STARTING -> WAITING; False if the spare was closed while starting."""
        spawned = self._loop.spawned
        with self._lock:
            if self.state != STATE_STARTING:
                return False
            self.pid = spawned[0].get_pid() if spawned else None
            self.state = STATE_WAITING
        self.settled.set()
        log.debug("A spare session of server %r is ready", self.spec.name)
        return True

    async def _wait_for_work(self) -> str:
        """Wait for a call, `idle_s` at most: "serve", "close", or "wait" (taken, call not here yet)."""
        with loop.move_on_after(self._idle_s):
            await self._wake.wait()
        with self._lock:
            if self.state == STATE_WAITING:  # nobody came within idle_s
                self.state = STATE_CLOSING
                self._outcome = (IDLE, f"it was idle for {self._idle_s:g} s")
            if self.state != STATE_TAKEN or self._aborted or self.exited():
                return "close"  # closing, or the call goes to a fresh session (or gave up)
            if self._work is None:
                self._wake.clear()  # claimed, and the call is on its way
                return "wait"
            self._serving = True
        self._pool.serving(self)
        self._loop.call_later(SUCCESSOR_DELAY_S, self.start_successor)  # unless the answer comes first
        return "serve"

    async def _run_work(self, session: Any) -> None:
        try:
            result = await self._work(session)
        except Exception as exc:
            if sdk.is_connection_closed(first_leaf(exc), self.spec.transport) and self.spawned_any():
                await loop.poll_until(lambda: self.exit_status() is not None, EXIT_STATUS_WAIT_S)
            self._settle(exception=translate(self, exc))
            return
        self._settle(result=result)

    def _begin_close(self) -> None:
        """In the loop: stop waiting, or stop starting."""
        if self._wake is not None:
            self._wake.set()
        if self.phase != STARTING or self._scope is None:
            return
        if not self.spawned_any():
            # Cancelled in the middle of its spawn, a process can be killed but never reaped
            # (anyio cancels the reaping too): look again once it is recorded, or started.
            self._loop.call_later(CLOSE_RETRY_S, self._begin_close)
            return
        self._scope.cancel()

    def _process_exited(self) -> None:
        """In the loop, when the server process exits on its own."""
        with self._lock:
            if self.state != STATE_WAITING:
                return
            self.state = STATE_CLOSING
            self._outcome = (FAILED, f"Server {self.spec.name!r}: its spare exited while waiting "
                                      f"({self.exit_status() or 'status unknown'})")
        self._wake.set()

    def _settle(self, result: Any = None, exception: BaseException | None = None) -> bool:
        """Settle the call's outcome; False if it was settled already (the first outcome wins)."""
        try:
            if exception is not None:
                self.future.set_exception(exception)
            else:
                self.future.set_result(result)
        except concurrent.futures.InvalidStateError:
            return False
        return True
