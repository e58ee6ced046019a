"""Warm spare sessions: per-call sessions of stdio servers, started before a call needs them.

A spare is started, initialized and (when the tool cache needs it) has listed the server's
tools; then it waits for exactly one request, serves it, and closes like any per-call
session. Every call therefore still runs in a process no other call touched: a spare only
moves the server's start-up off the call's clock.

Bounds: at most one spare per server. A spare is closed after `idle_s` without use (and not
replaced until that server's next call), when its server's entry changes or goes away
(compared as the whole resolved ServerSpec, ${VAR} values included, so a spare never serves
a call under a config other than the one it was started for), at shutdown, and when its
process dies. A spare that fails to start or dies is replaced on the next call only, and
after the second failure in a row only once a growing backoff has passed: never a crash
loop. Failures are logged once per streak, shown in status, and never fail a call: the
call starts its own process as it would without spares.

Only stdio servers get spares: their session costs a process start-up, and a dead spare is
seen at once (its process exits). An HTTP session costs a connection, and one left waiting
could be expired by the server unseen.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, TextIO

from ..errors import GatewayError, RequestCancelled, ServerUnavailable, ToolTimeout
from ..model import PER_CALL, STDIO, ServerSpec
from . import loop, sdk, waiting
from .translate import READY, STARTING, first_leaf, translate, unreadable

log = logging.getLogger(__name__)

EAGER, LAZY, OFF = "eager", "lazy", "off"
STRATEGIES = (EAGER, LAZY, OFF)
DEFAULT_IDLE_S = 600.0
BACKOFF_BASE_S = 2.0  # the wait after a second failure in a row; doubled by each further one
BACKOFF_CAP_S = 300.0
WARM_AT_ONCE = 2  # servers warmed at the same time after the handshake: a 2-core machine stays usable
WARM_STEP_S = 60.0
START_BOUND_MS = 60_000  # bound on a spare starting, for a server without timeout_ms  # bound on one warm-up step (a spare starting, or a listing session)
CLOSE_RETRY_S = 0.02  # a spare closed while its process is being spawned looks again this soon
EXIT_STATUS_WAIT_S = 0.5  # as for per-call sessions: let a crashed server be reaped before saying how it ended

Work = Callable[[Any], Any]

# What a spare's life came to (see SparePool._ended).
_SERVED, _FAILED, _IDLE, _CLOSED = "served", "failed", "idle", "closed"
# A spare's own state: STARTING -> WAITING -> TAKEN, or -> CLOSING from the first two.
_STARTING, _WAITING, _TAKEN, _CLOSING = "starting", "waiting", "taken", "closing"


@dataclass(frozen=True)
class SpareSettings:
    """GATEWAY_INIT_STRATEGY and GATEWAY_SPARE_IDLE_S; a bare Downstream keeps no spares."""

    strategy: str = OFF
    idle_s: float = DEFAULT_IDLE_S


class ToolLists(Protocol):
    """Where a spare puts the tool list it fetched (the gateway's ToolCatalog)."""

    def is_cached(self, spec: ServerSpec) -> bool: ...

    def store(self, spec: ServerSpec, tools: list[dict]) -> None: ...


class SpareGone(Exception):
    """The spare ended before the call reached it; a fresh session takes the call."""


def may_have_spare(spec: ServerSpec) -> bool:
    return spec.session == PER_CALL and spec.transport == STDIO and spec.spare and not spec.unusable


def backoff_s(failures: int) -> float:
    """How long to wait before the next spare after `failures` failures in a row."""
    if failures <= 1:
        return 0.0  # one death is replaced on the next call
    return min(BACKOFF_BASE_S * 2 ** (failures - 2), BACKOFF_CAP_S)


@dataclass
class _Record:
    """One server's spare (if any) and its counters; guarded by the pool's lock."""

    spare: Spare | None = None
    served_by_spare: int = 0
    served_fresh: int = 0
    failures: int = 0  # spares in a row that failed to start or died before serving
    last_error: str | None = None
    backoff_s: float = 0.0
    retry_at: float = 0.0  # monotonic; no new spare before it
    idle_closed: bool = False
    in_flight: int = 0  # calls taken (by a spare or fresh) and not yet answered


class SparePool:
    """The spares of every server: taken by calls, replaced after use, closed when stale."""

    def __init__(self, settings: SpareSettings, errlog: TextIO):
        self.settings = settings
        self._errlog = errlog
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._alive: set[Spare] = set()  # every spare whose thread still runs
        self._lists: ToolLists | None = None
        self._warmups: list[Warmup] = []
        self._closed = False

    def use_tool_lists(self, lists: ToolLists) -> None:
        self._lists = lists

    # --- calls ---------------------------------------------------------------------

    def take(self, spec: ServerSpec) -> Spare | None:
        """The server's waiting spare if it was started for exactly `spec`; else None.

        Counts a call in flight until `answered`. A spare started for another spec (the
        entry or a ${VAR} value changed) is closed.
        """
        with self._lock:
            record = self._record(spec.name)
            record.in_flight += 1
            spare = record.spare
            if spare is None:
                return None
            if spare.spec != spec:
                record.spare = None
                stale = spare
            elif spare.claim():
                record.spare = None
                return spare
            else:
                return None  # still starting: it serves the next call
        stale.close("its config entry changed", _CLOSED)
        return None

    def counted_fresh(self, spec: ServerSpec) -> None:
        with self._lock:
            self._record(spec.name).served_fresh += 1

    def answered(self, spec: ServerSpec) -> None:
        """A call of the server has its answer: start the next spare if no other call waits.

        Not at once when a spare is taken: on a 2-core machine a start-up beside calls still
        waiting for theirs slows them down (measured: a call on a spare took 2.5 times a
        kept-alive call while its successor started; a burst of 10 took 1.1 times as long).
        """
        with self._lock:
            record = self._record(spec.name)
            record.in_flight -= 1
            if record.in_flight > 0:
                return
        self.replenish(spec)

    def replenish(self, spec: ServerSpec) -> Spare | None:
        """Start the server's next spare in the background, unless one is there or may not be.

        Returns the spare now starting, if this call started one.
        """
        if self.settings.strategy == OFF or not may_have_spare(spec):
            return None
        with self._lock:
            if self._closed:
                return None
            record = self._record(spec.name)
            record.idle_closed = False  # a call came: an idle-closed server gets a spare again
            if record.spare is not None or time.monotonic() < record.retry_at:
                return None
            spare = record.spare = Spare(self, spec, self._errlog, self._lists, self.settings.idle_s)
            self._alive.add(spare)
            spare.thread.start()  # under the lock: shutdown never sees a thread it cannot join
        return spare

    # --- eager start, reload, shutdown ---------------------------------------------

    def warm(self, servers: Mapping[str, ServerSpec], list_once: Callable[[ServerSpec, threading.Event], list[dict]]) -> None:
        """Eager start: a spare for every server that may have one, and every tool list cached."""
        if self.settings.strategy != EAGER:
            return
        warmup = Warmup(self, list(servers.values()), self._lists, list_once)
        with self._lock:
            if self._closed:
                return
            self._warmups.append(warmup)
            warmup.start()

    def retire(self, servers: Mapping[str, ServerSpec]) -> None:
        """Close the spares of servers that changed or went away; eager: start their successors."""
        with self._lock:
            stale = [(name, r.spare) for name, r in self._records.items()
                     if r.spare is not None and servers.get(name) != r.spare.spec]
            for name, _ in stale:
                self._records[name].spare = None
            fresh = [spec for name, spec in servers.items() if name not in self._records]
        for name, spare in stale:
            reason = "its config entry was removed" if name not in servers else "its config entry changed"
            spare.close(reason, _CLOSED)
        if self.settings.strategy == EAGER:
            for spec in [servers[name] for name, _ in stale if name in servers] + fresh:
                self.replenish(spec)

    def shutdown(self) -> list[Spare]:
        """Close every spare (failing a call one serves); returns them, for the caller to
        join and to escalate to SIGTERM and SIGKILL as for any session."""
        with self._lock:
            self._closed = True
            spares = list(self._alive)
            warmups = list(self._warmups)
            for record in self._records.values():
                record.spare = None
        for warmup in warmups:
            warmup.stop()
        for spare in spares:
            spare.close("the gateway is shutting down", _CLOSED)
            spare.abort(ServerUnavailable(f"Server {spare.spec.name!r} was stopped: the gateway is shutting down"))
        return spares

    def join_warmups(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = [thread for warmup in self._warmups for thread in warmup.threads]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- what spares report ----------------------------------------------------------

    def serving(self, spare: Spare) -> None:
        with self._lock:
            record = self._record(spare.spec.name)
            record.served_by_spare += 1
            record.failures, record.last_error, record.backoff_s, record.retry_at = 0, None, 0.0, 0.0

    def ended(self, spare: Spare, outcome: str, error: str | None) -> None:
        """Called by the spare's thread as it ends."""
        with self._lock:
            self._alive.discard(spare)
            record = self._record(spare.spec.name)
            if record.spare is spare:
                record.spare = None
            if outcome == _IDLE:
                record.idle_closed = True
            if outcome != _FAILED:
                return
            record.failures += 1
            record.last_error = error
            record.backoff_s = backoff_s(record.failures)
            record.retry_at = time.monotonic() + record.backoff_s
            first = record.failures == 1
        # Once per streak: a server that keeps failing must not flood the log.
        (log.warning if first else log.debug)("A spare session of server %r failed: %s; calls start their own process",
                                              spare.spec.name, error)

    def status(self) -> dict[str, dict]:
        """Per server: whether a spare is ready, its process and RSS, calls served by spare vs fresh."""
        now = time.monotonic()
        with self._lock:
            items = [(name, record, record.spare) for name, record in sorted(self._records.items())]
            return {name: _status(record, spare, now) for name, record, spare in items}

    @property
    def serving_count(self) -> int:
        with self._lock:
            return sum(1 for spare in self._alive if spare.state == _TAKEN)

    def _record(self, name: str) -> _Record:
        return self._records.setdefault(name, _Record())


def _status(record: _Record, spare: Spare | None, now: float) -> dict:
    ready = spare is not None and spare.state == _WAITING
    if spare is not None:
        state = "ready" if ready else spare.state
    elif record.idle_closed:
        state = "idle-closed"
    elif record.retry_at > now:
        state = "backing-off"
    else:
        state = "none"
    pid = spare.pid if spare is not None else None
    return {
        "ready": ready,
        "state": state,
        "pid": pid,
        "rss_bytes": _rss_bytes(pid) if ready else None,
        "served_by_spare": record.served_by_spare,
        "served_fresh": record.served_fresh,
        "failures": record.failures,
        "last_error": record.last_error,
        "backoff_s": record.backoff_s,
        "retry_in_s": round(max(0.0, record.retry_at - now), 3),
    }


def _rss_bytes(pid: int | None) -> int | None:
    """Resident set size of a spare's process (Linux /proc); None where unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Spare(loop.LoopProcesses):
    """One spare session: its thread, its event loop, and the process it started.

    `state` and the handed-over call are guarded by `_lock`; the pool's lock is never taken
    while holding it.
    """

    def __init__(self, pool: SparePool, spec: ServerSpec, errlog: TextIO, lists: ToolLists | None, idle_s: float):
        self.spec = spec
        self.errlog = errlog
        self.method = "initialize"  # what `translate` reports while starting; then the served request's
        self.phase = STARTING
        self.state = _STARTING
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
        self._outcome: tuple[str, str | None] = (_CLOSED, None)

    # --- other threads -----------------------------------------------------------------

    def claim(self) -> bool:
        """WAITING -> TAKEN, for the one call that will use this spare (under the pool's lock)."""
        with self._lock:
            if self.state != _WAITING or self.exited():
                return False
            self.state = _TAKEN
            return True

    def close(self, reason: str, outcome: str) -> bool:
        """Close without serving, if the spare is not taken; safe from any thread."""
        with self._lock:
            if self.state not in (_STARTING, _WAITING):
                return False
            self.state = _CLOSING
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
                if self.state in (_STARTING, _WAITING):  # failed to start, or broke while waiting
                    self.state = _CLOSING
                    self._outcome = (_FAILED, str(error))
            if serving:
                self._settle(exception=error)
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            serving, on_closed = self._serving, self._on_closed
            if self.state == _TAKEN and not serving and not self._aborted:
                self._outcome = (_FAILED, f"Server {self.spec.name!r}: its spare ended before a call reached it")
            outcome, error = (_SERVED, None) if serving else self._outcome
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
                    if self.state == _CLOSING:
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
            if scope.cancelled_caught and self.state == _STARTING:
                self._fail(f"Server {self.spec.name!r}: its spare did not finish starting within {round(bound_s * 1000)} ms")
        finally:
            await self.reap()

    async def _start(self, stack: contextlib.AsyncExitStack) -> Any:
        """Open, initialize and (if the cache needs it) list the tools: the session."""
        session = await sdk.open_session(self.spec, self.errlog, stack, self._unreadable, self.record_processes)
        await sdk.handshake(session, self.spec)
        self.phase = READY
        self.record_processes()
        if self._lists is not None and not self._lists.is_cached(self.spec):
            self._lists.store(self.spec, await sdk.list_all(session))
        return session

    def _fail(self, error: str) -> None:
        with self._lock:
            if self.state in (_STARTING, _WAITING):
                self.state = _CLOSING
                self._outcome = (_FAILED, error)

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
            if self.state != _STARTING:
                return False
            self.pid = spawned[0].get_pid() if spawned else None
            self.state = _WAITING
        self.settled.set()
        log.debug("A spare session of server %r is ready", self.spec.name)
        return True

    async def _wait_for_work(self) -> str:
        """Wait for a call, `idle_s` at most: "serve", "close", or "wait" (taken, call not here yet)."""
        with loop.move_on_after(self._idle_s):
            await self._wake.wait()
        with self._lock:
            if self.state == _WAITING:  # nobody came within idle_s
                self.state = _CLOSING
                self._outcome = (_IDLE, f"it was idle for {self._idle_s:g} s")
            if self.state != _TAKEN or self._aborted or self.exited():
                return "close"  # closing, or the call goes to a fresh session (or gave up)
            if self._work is None:
                self._wake.clear()  # claimed, and the call is on its way
                return "wait"
            self._serving = True
        self._pool.serving(self)
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
            if self.state != _WAITING:
                return
            self.state = _CLOSING
            self._outcome = (_FAILED, f"Server {self.spec.name!r}: its spare exited while waiting "
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


class Warmup:
    """The eager start after the handshake: a few servers at a time, each step bounded.

    A server that may have a spare gets one (which lists its tools into the cache as it
    starts); any other server with an empty cache is listed on one transient per-call
    session, which closes when the list is in.
    """

    def __init__(self, pool: SparePool, specs: list[ServerSpec], lists: ToolLists | None,
                 list_once: Callable[[ServerSpec, threading.Event], list[dict]]):
        self._pool = pool
        self._lists = lists
        self._list_once = list_once
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        for spec in specs:
            if not spec.unusable:
                self._todo.put(spec)
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"downstream-warmup-{n}", daemon=True)
                        for n in range(WARM_AT_ONCE)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                spec = self._todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._warm(spec)
            except Exception:
                log.exception("Warming server %r failed unexpectedly", spec.name)

    def _warm(self, spec: ServerSpec) -> None:
        if may_have_spare(spec):
            spare = self._pool.replenish(spec)
            if spare is not None:  # one start at a time per warm-up thread; shutdown ends it
                spare.settled.wait(WARM_STEP_S)
            return
        if self._lists is None or self._lists.is_cached(spec):
            return
        try:
            self._lists.store(spec, self._list_once(spec, self._stop))
        except (GatewayError, RequestCancelled) as exc:
            log.info("Could not list the tools of server %r at start-up: %s", spec.name, exc)
