"""Sessions to downstream MCP servers; the only module that imports `mcp` and `asyncio`.

Two strategies, chosen per server by `ServerSpec.session`; callers never know which:

per-call (default)  every call opens its own session in its own event loop on its own
                    thread, and the calling worker thread waits on a Future with the
                    call's deadline. At the deadline (or on cancellation) the worker
                    raises at once and the session unwinds in the background. A result
                    is handed back as soon as it arrives; the session closes afterwards,
                    in the background too.
keep-alive          one session per (server, agent), owned by one dedicated thread that
                    runs one long-lived event loop. Workers hand it calls with
                    `run_coroutine_threadsafe` and wait with their own deadline; calls run
                    as concurrent tasks, multiplexed by request id. A timed-out or
                    cancelled call is cancelled in the loop (the SDK then sends
                    `notifications/cancelled`) and the session stays. The session closes
                    when idle for `idle_timeout_ms` (a timer in its own loop), on
                    `retire()` (config changed or removed), on `shutdown()`, or when its
                    process exits; the next call then opens a fresh one.

`mcp` and `asyncio` are imported inside functions: `import mcp` costs most of a second,
and the gateway must answer `initialize` before that (see `Downstream.preload`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, TextIO
from urllib.parse import urlsplit

from .errors import DownstreamError, GatewayError, RequestCancelled, ServerUnavailable, ToolTimeout
from .model import HTTP, KEEP_ALIVE, SSE, STDIO, ServerSpec

log = logging.getLogger(__name__)

_POLL_S = 0.02  # how often a waiting worker looks at its cancel event
_REAP_S = 2.0  # bound on waiting for a killed server to be reaped
_EXIT_STATUS_WAIT_S = 0.5  # bound on waiting for a crashed server's exit status
_STARTING, _READY = "starting", "ready"
_SEND_ATTEMPTS = 3  # kept sessions found closing before a call was sent: open a fresh one
_DRAIN_S = 1.0  # bound on letting cancelled calls send their notifications/cancelled


class Downstream:
    """Runs calls on per-call or kept-alive sessions and makes sure nothing outlives it."""

    def __init__(self, errlog: TextIO | None = None):
        # stdio children write their stderr here; the SDK needs a real file descriptor.
        self._errlog = errlog if errlog is not None else sys.stderr
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self._kept: dict[tuple[str, str | None], _KeptSession] = {}  # the open ones, by (server, agent)
        self._kept_alive: set[_KeptSession] = set()  # every kept session whose thread still runs
        self._preloader: threading.Thread | None = None
        self._closed = False

    def preload(self) -> None:
        """Import the SDK client in the background so the first call does not pay for it."""
        with self._lock:
            if self._preloader is None:
                self._preloader = threading.Thread(target=_import_client, name="downstream-preload", daemon=True)
                self._preloader.start()

    def list_tools(
        self, spec: ServerSpec, timeout_s: float, cancel: threading.Event | None = None, *, agent: str | None = None
    ) -> list[dict]:
        return self._run(spec, "tools/list", _list_all, timeout_s, cancel, agent=agent)

    def call_tool(
        self,
        spec: ServerSpec,
        tool: str,
        arguments: dict,
        timeout_s: float,
        cancel: threading.Event | None = None,
        *,
        agent: str | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> dict:
        """Call `tool` on a fresh session. The result comes back as soon as it arrives;
        the session closes afterwards, and `on_closed` (if given) is called exactly once
        when it has, on every path: the caller's hold on a server slot lasts until then."""

        async def work(session: Any) -> dict:
            return await _send_call(session, tool, arguments)

        return self._run(spec, "tools/call", work, timeout_s, cancel, agent=agent, on_closed=on_closed)

    def list_and_call_tool(
        self,
        spec: ServerSpec,
        tool: str,
        arguments: dict,
        timeout_s: float,
        cancel: threading.Event | None = None,
        *,
        check: Callable[[list[dict]], None],
        agent: str | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> dict:
        """List the server's tools, pass them to `check`, then call `tool`: one session.

        For a call the tool cache cannot vouch for (empty, expired, or not knowing the
        tool), this costs one server start-up where list_tools + call_tool would cost two.
        `check` runs on the session's thread between the two requests: it fills the cache
        and raises a GatewayError (no such tool, arguments that break the schema) to close
        the session without calling. `on_closed` is as for call_tool.
        """

        async def work(session: Any) -> dict:
            check(await _list_all(session))
            return await _send_call(session, tool, arguments)

        return self._run(spec, "tools/call", work, timeout_s, cancel, agent=agent, on_closed=on_closed)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel every live session, kill its process groups, and join the threads (bounded)."""
        with self._lock:
            self._closed = True
            calls = list(self._calls)
            kept = list(self._kept_alive)
            for session in kept:
                self._drop_locked(session, "the gateway is shutting down", on_purpose=True)
        for call in calls:
            call.abort(ServerUnavailable(f"Server {call.spec.name!r} was stopped: the gateway is shutting down"))
            call.kill_groups()
        for session in kept:
            session.kill_groups()
            session.wake()
        deadline = time.monotonic() + timeout_s
        threads = [call.thread for call in calls] + [session.thread for session in kept] + [self._preloader]
        for thread in filter(None, threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.live_sessions:
            log.warning("%s downstream session(s) still cleaning up after shutdown", self.live_sessions)

    def retire(self, servers: Mapping[str, ServerSpec]) -> None:
        """Close every kept-alive session whose server is gone from `servers` or changed."""
        with self._lock:
            stale = [session for session in self._kept.values() if servers.get(session.spec.name) != session.spec]
            for session in stale:
                gone = session.spec.name not in servers
                reason = "its config entry was removed" if gone else "its config entry changed"
                self._drop_locked(session, reason, on_purpose=True)
        for session in stale:
            session.wake()

    def status(self) -> dict:
        """Per-call sessions in flight, and every open kept-alive session."""
        now = time.monotonic()
        with self._lock:
            kept = [
                {
                    "server": session.spec.name,
                    "agent": session.agent,
                    "age_s": round(now - session.opened_at, 3),
                    "calls": session.calls,
                    "idle_s": 0.0 if session.holders else round(now - session.last_used, 3),
                    "in_flight": session.holders,
                }
                for session in self._kept.values()
            ]
            live = len(self._calls)
        kept.sort(key=lambda entry: (entry["server"], entry["agent"] or ""))
        return {"live_sessions": live, "kept_sessions": kept}

    @property
    def live_sessions(self) -> int:
        with self._lock:
            return len(self._calls)

    def _run(
        self,
        spec: ServerSpec,
        method: str,
        work: Callable[[Any], Awaitable[Any]],
        timeout_s: float,
        cancel: threading.Event | None,
        agent: str | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> Any:
        if spec.session == KEEP_ALIVE:
            # A kept session outlives the call, so `on_closed` fires when the call ends.
            try:
                _check_startable(spec, cancel)
                return self._run_kept(spec, agent, method, work, time.monotonic() + timeout_s, timeout_s, cancel)
            finally:
                if on_closed is not None:
                    on_closed()
        try:
            _check_startable(spec, cancel)
            call = _Call(spec, method, work, self._errlog)
            call.on_closed = on_closed
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

        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = call.timeout_error(timeout_s)
                call.abort(error)
                raise error
            try:
                return call.future.result(timeout=min(remaining, _POLL_S))
            except concurrent.futures.TimeoutError:
                pass
            if cancel is not None and cancel.is_set():
                error = RequestCancelled()
                call.abort(error)
                raise error

    def _drive(self, call: _Call) -> None:
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

    # --- kept-alive sessions: the registry ---------------------------------------------
    # Everything below that reads or writes a session's counters (holders, calls,
    # last_used, closing) holds self._lock; the session's loop thread takes it briefly too.

    def _run_kept(
        self,
        spec: ServerSpec,
        agent: str | None,
        method: str,
        work: Callable[[Any], Awaitable[Any]],
        deadline: float,
        timeout_s: float,
        cancel: threading.Event | None,
    ) -> Any:
        for _ in range(_SEND_ATTEMPTS):
            session = self._hold(spec, agent)
            try:
                return session.call(method, work, deadline, timeout_s, cancel)
            except _SessionGone:
                continue  # it closed before the call was sent: a fresh session may take it
            finally:
                self._release(session)
        raise ServerUnavailable(f"Server {spec.name!r} closed its session again and again before the call was sent")

    def _hold(self, spec: ServerSpec, agent: str | None) -> _KeptSession:
        """The open session of (server, agent), opened if needed, with one more holder."""
        key = (spec.name, agent)
        with self._lock:
            if self._closed:
                raise ServerUnavailable(f"Server {spec.name!r} is unavailable: the gateway is shutting down")
            stale = self._kept.get(key)
            if stale is not None and stale.spec != spec:
                self._drop_locked(stale, "its config entry changed", on_purpose=True)
            elif stale is not None and stale.exited():
                self._drop_locked(stale, "its process exited", on_purpose=False)
            else:
                stale = None
            session = self._kept.get(key)
            if session is None:
                session = _KeptSession(self, spec, agent, self._errlog)
                self._kept[key] = session
                self._kept_alive.add(session)
                session.thread.start()
            session.holders += 1
        if stale is not None:
            stale.wake()
        return session

    def _release(self, session: _KeptSession) -> None:
        with self._lock:
            session.holders -= 1
            session.last_used = time.monotonic()
            abandoned = session.holders == 0 and not session.ready.done() and session.closing is None
            if abandoned:  # every caller gave up while it was starting: do not leave it starting
                self._drop_locked(session, "no call waited for it to finish starting", on_purpose=True)
        if abandoned:
            session.wake()

    def _drop_locked(self, session: _KeptSession, reason: str, on_purpose: bool) -> None:
        """Mark `session` closing (the first reason wins) and take it out of the registry."""
        if session.closing is None:
            session.closing, session.closed_on_purpose = reason, on_purpose
            log.info("Closing the kept-alive session of server %r for agent %r: %s", session.spec.name, session.agent, reason)
        if self._kept.get(session.key) is session:
            del self._kept[session.key]

    def _drop(self, session: _KeptSession, reason: str, on_purpose: bool) -> None:
        with self._lock:
            self._drop_locked(session, reason, on_purpose)

    def _idle_left(self, session: _KeptSession) -> float:
        """Seconds until `session` has been idle long enough to close; 0 once it is closing."""
        with self._lock:
            if session.closing is not None:
                return 0.0
            idle_s = session.spec.idle_timeout_ms / 1000
            if session.holders:
                return idle_s  # look again later; last_used moves when the calls end
            left = session.last_used + idle_s - time.monotonic()
            if left <= 0:
                self._drop_locked(session, f"it was idle for {session.spec.idle_timeout_ms} ms", on_purpose=True)
                return 0.0
            return left

    def _forget(self, session: _KeptSession) -> None:
        """Called by the session's thread as it ends."""
        with self._lock:
            self._drop_locked(session, "its session ended", on_purpose=False)
            self._kept_alive.discard(session)


def _check_startable(spec: ServerSpec, cancel: threading.Event | None) -> None:
    if spec.unusable:
        raise ServerUnavailable(spec.unusable)
    if cancel is not None and cancel.is_set():
        raise RequestCancelled()


class _LoopProcesses:
    """Process cleanup for whatever owns an event loop that spawned stdio servers.

    The owner sets `spec` and `_loop` (a `_loop_class()` instance, None until created).
    """

    # The SDK starts a stdio server with start_new_session=True, so the server's pid is
    # also its process-group id. Our loop class records the transport of every process
    # spawned in the loop (the SDK spawns via loop.subprocess_exec), so once the session
    # has closed, however it ended, we SIGKILL each whole group. The SDK kills the group
    # only when the server outlives its stdin by 2 s, so without this a grandchild that
    # ignores stdin would survive a server that exits promptly.
    # We then wait, bounded, until the loop's child watcher has reaped the server itself.

    spec: ServerSpec
    _loop: Any

    async def _reap(self) -> None:
        import anyio

        self.kill_groups()
        with anyio.move_on_after(_REAP_S, shield=True):
            for transport in self._loop.spawned:
                while transport.get_returncode() is None:
                    await anyio.sleep(0.01)

    def kill_groups(self) -> None:
        """SIGKILL every process group started in this loop; safe from any thread."""
        loop = self._loop
        for transport in loop.spawned if loop is not None else ():
            try:
                os.killpg(transport.get_pid(), signal.SIGKILL)
            except ProcessLookupError:
                pass  # the whole group is already gone
            except PermissionError:
                log.warning("Server %r: no permission to kill process group %s", self.spec.name, transport.get_pid())

    def exit_status(self) -> str | None:
        """How the (first) server process ended, for error messages; None if unknown."""
        spawned = self._loop.spawned if self._loop is not None else []
        code = spawned[0].get_returncode() if spawned else None
        if code is None:
            return None
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


class _Call(_LoopProcesses):
    """One session: its thread, its event loop, and every process started in that loop."""

    def __init__(self, spec: ServerSpec, method: str, work: Callable[[Any], Awaitable[Any]], errlog: TextIO):
        self.spec = spec
        self.method = method
        self.work = work
        self.errlog = errlog
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.phase = _STARTING
        self.thread: threading.Thread | None = None
        self.on_closed: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._loop: Any = None
        self._scope: Any = None
        self._aborted = False

    def run(self) -> None:
        """Thread body: drive the session in a fresh loop and settle the Future."""
        import asyncio

        try:
            _import_client()
            with asyncio.Runner(loop_factory=self._new_loop) as runner:
                result = runner.run(self._session())
        except BaseException as exc:  # the thread must settle the Future whatever happened
            self._settle(exception=_translate(self, exc))
        else:
            self._settle(result=result)

    def _new_loop(self) -> Any:
        with self._lock:
            self._loop = _loop_class()()
            return self._loop

    async def _session(self) -> Any:
        import anyio
        from mcp import ClientSession

        try:
            with anyio.CancelScope() as scope:
                with self._lock:
                    self._scope = scope
                    if self._aborted:
                        scope.cancel()
                async with contextlib.AsyncExitStack() as stack:
                    read, write = await self._open(stack)
                    session = await stack.enter_async_context(ClientSession(read, write))
                    # The caller hears the outcome now: closing the session can take the
                    # SDK's grace periods (seconds, for a server that ignores EOF or
                    # SIGTERM), which must not delay the answer or turn it into a timeout.
                    try:
                        await session.initialize()
                        self.phase = _READY
                        result = await self.work(session)
                    except Exception as exc:
                        await self._await_exit_status(exc)
                        self._settle(exception=_translate(self, exc))
                        raise
                    self._settle(result=result)
                    return result
            return None  # cancelled by abort(), which already settled the Future
        finally:
            await self._reap()

    async def _open(self, stack: contextlib.AsyncExitStack) -> Any:
        return await _open_transport(self.spec, self.errlog, stack)

    async def _await_exit_status(self, exc: BaseException) -> None:
        """After a closed connection, give a dying server a moment to be reaped, so the
        error can say how it ended; a server that closed stdout and lives on costs this bound."""
        import anyio
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        leaf = _first_leaf(exc)
        if not (isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED):
            return
        with anyio.move_on_after(_EXIT_STATUS_WAIT_S):
            while self._loop.spawned and self.exit_status() is None:
                await anyio.sleep(0.01)

    def abort(self, error: BaseException) -> None:
        """Settle the Future with `error` now; the session unwinds in the background."""
        self._settle(exception=error)
        with self._lock:
            self._aborted = True
            loop, scope = self._loop, self._scope
        if scope is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(scope.cancel)

    def timeout_error(self, timeout_s: float) -> GatewayError:
        ms = round(timeout_s * 1000)
        if self.phase == _STARTING:
            return ServerUnavailable(f"Server {self.spec.name!r} did not finish starting within {ms} ms")
        return ToolTimeout(f"Server {self.spec.name!r} did not answer within {ms} ms")

    def _settle(self, result: Any = None, exception: BaseException | None = None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # first outcome wins
            if exception is not None:
                self.future.set_exception(exception)
            else:
                self.future.set_result(result)


# --- kept-alive sessions: one session, its thread and its loop ---------------------------


class _SessionGone(Exception):
    """The kept session closed before this call was sent; a fresh session may take it."""


@dataclass(frozen=True)
class _Attempt:
    """What `_translate` needs to know about one call on a kept session."""

    spec: ServerSpec
    method: str
    phase: str
    exit_status: Callable[[], str | None]


class _KeptSession(_LoopProcesses):
    """One kept-alive session of one (server, agent).

    Its thread runs one event loop for the session's whole life: `_hold_open` opens the
    transport and the ClientSession, then waits for a reason to close. Worker threads
    hand calls to the loop (`call`), each waiting with its own deadline. The counters
    are guarded by the owning Downstream's lock; `_session`, `_tasks` and `_stop` are
    touched only in the loop thread.
    """

    method = "initialize"  # what `_translate` reports while the session is starting

    def __init__(self, owner: Downstream, spec: ServerSpec, agent: str | None, errlog: TextIO):
        self.spec = spec
        self.agent = agent
        self.key = (spec.name, agent)
        self.errlog = errlog
        self.phase = _STARTING
        self.ready: concurrent.futures.Future = concurrent.futures.Future()  # None once initialized
        self.opened_at = self.last_used = time.monotonic()
        self.calls = 0  # calls sent on this session
        self.holders = 0  # worker threads waiting for the session or for a call on it
        self.closing: str | None = None  # why it is closing, once it is
        self.closed_on_purpose = False  # closed by the gateway, rather than failed
        self.thread = threading.Thread(target=self._main, name=f"downstream-keep-{spec.name}", daemon=True)
        self._owner = owner
        self._lock = owner._lock
        self._loop: Any = None
        self._stop: Any = None  # asyncio.Event: set in the loop to leave the session
        self._scope: Any = None  # cancels the opening if the session closes while starting
        self._session: Any = None
        self._tasks: set[Any] = set()

    # --- worker threads ---------------------------------------------------------------

    def call(
        self,
        method: str,
        work: Callable[[Any], Awaitable[Any]],
        deadline: float,
        timeout_s: float,
        cancel: threading.Event | None,
    ) -> Any:
        """Run `work(session)` in the session's loop; wait until the deadline at most."""
        import asyncio

        ms = round(timeout_s * 1000)
        name = self.spec.name
        _wait(self.ready, deadline, cancel, lambda: ServerUnavailable(f"Server {name!r} did not finish starting within {ms} ms"),
              cancel_future=False)
        sent = threading.Event()
        coroutine = self._serve(method, work, sent)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop has already closed
            coroutine.close()
            raise _SessionGone() from None
        try:
            # At the deadline or on cancellation the task is cancelled in the loop, and
            # the SDK tells the server with notifications/cancelled; the session stays.
            return _wait(future, deadline, cancel, lambda: ToolTimeout(f"Server {name!r} did not answer within {ms} ms"))
        except concurrent.futures.CancelledError:
            if not sent.is_set():
                raise _SessionGone() from None
            raise ServerUnavailable(f"Server {name!r} was closed during {method}: {self.closing}") from None
        except ServerUnavailable:
            if self.closed_on_purpose:
                raise ServerUnavailable(f"Server {name!r} was closed during {method}: {self.closing}") from None
            # The connection failed (the process died, say): drop the session so the next
            # call opens a fresh one. This call is not retried: the tool may not be idempotent.
            self._owner._drop(self, "its connection failed", on_purpose=False)
            self.wake()
            raise

    def exited(self) -> bool:
        """Whether the server process (if any) has already exited."""
        spawned = self._loop.spawned if self._loop is not None else []
        return bool(spawned) and spawned[0].get_returncode() is not None

    def wake(self) -> None:
        """Tell the loop to look at `closing`; safe from any thread, at any time."""
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(self._begin_close)

    # --- the session's own thread and loop --------------------------------------------

    def _main(self) -> None:
        import asyncio

        try:
            _import_client()
            with asyncio.Runner(loop_factory=self._new_loop) as runner:
                runner.run(self._hold_open())
        except BaseException as exc:  # the thread must settle `ready` whatever happened
            self._settle_ready(_translate(self, exc))
            if self.phase == _READY:
                log.debug("kept-alive session of %r ended with an error", self.spec.name, exc_info=exc)
        finally:
            self._settle_ready(ServerUnavailable(f"Server {self.spec.name!r} was closed while starting: {self.closing}"))
            self._owner._forget(self)

    def _new_loop(self) -> Any:
        import asyncio

        loop = _loop_class()()
        loop.on_exit = self._process_exited
        with self._lock:
            self._loop = loop
            self._stop = asyncio.Event()
        return loop

    async def _hold_open(self) -> None:
        import anyio
        from mcp import ClientSession

        try:
            with anyio.CancelScope() as scope:
                with self._lock:
                    self._scope = scope
                    if self.closing is not None:
                        scope.cancel()
                async with contextlib.AsyncExitStack() as stack:
                    read, write = await _open_transport(self.spec, self.errlog, stack)
                    session = await stack.enter_async_context(ClientSession(read, write))
                    await session.initialize()
                    self._session, self.phase = session, _READY
                    self._settle_ready(None)
                    log.info("Opened a kept-alive session of server %r for agent %r", self.spec.name, self.agent)
                    await self._wait_for_close()
                    await self._end_calls()
                # Leaving the stack closes the session, then the transport: stdin is
                # closed and the SDK waits (bounded) for the server to exit.
        finally:
            await self._reap()

    async def _wait_for_close(self) -> None:
        """Return once the session is closing: dropped, or idle for idle_timeout_ms."""
        import anyio

        while (left := self._owner._idle_left(self)) > 0:
            with anyio.move_on_after(left):
                await self._stop.wait()

    async def _end_calls(self) -> None:
        """End the calls still running, waiting a little for them.

        Closed on purpose: cancel them (each tells the server). Closed because the
        process exited: let them fail on their own with the connection, so their
        callers learn what happened; cancel only those still waiting after the drain.
        """
        import asyncio

        tasks = list(self._tasks)
        if not tasks:
            return
        if self.closed_on_purpose:
            for task in tasks:
                task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=_DRAIN_S)
        for task in pending:
            task.cancel()

    async def _serve(self, method: str, work: Callable[[Any], Awaitable[Any]], sent: threading.Event) -> Any:
        import asyncio

        with self._lock:
            if self.closing is not None or self._session is None:
                raise _SessionGone()
            self.calls += 1
        sent.set()
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            return await work(self._session)
        except Exception as exc:
            raise _translate(_Attempt(self.spec, method, _READY, self.exit_status), exc) from None
        finally:
            self._tasks.discard(task)

    def _begin_close(self) -> None:
        """In the loop: stop waiting, or stop opening."""
        self._stop.set()
        if self.phase == _STARTING and self._scope is not None:
            self._scope.cancel()

    def _process_exited(self) -> None:
        """In the loop, when the server process exits on its own while the session is open."""
        if self.phase == _READY:
            self._owner._drop(self, f"its process exited ({self.exit_status() or 'status unknown'})", on_purpose=False)
            self._begin_close()

    def _settle_ready(self, outcome: BaseException | None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # first outcome wins
            if outcome is None:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(outcome)


def _wait(
    future: concurrent.futures.Future,
    deadline: float,
    cancel: threading.Event | None,
    timeout_error: Callable[[], BaseException],
    cancel_future: bool = True,
) -> Any:
    """The future's result, waiting until the deadline at most and ending early on cancel."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if cancel_future:
                future.cancel()
            raise timeout_error()
        try:
            return future.result(timeout=min(remaining, _POLL_S))
        except concurrent.futures.TimeoutError:
            pass
        if cancel is not None and cancel.is_set():
            if cancel_future:
                future.cancel()
            raise RequestCancelled()


async def _open_transport(spec: ServerSpec, errlog: TextIO, stack: contextlib.AsyncExitStack) -> Any:
    """Enter the transport of `spec` on `stack`; returns its (read, write) streams."""
    if spec.transport == STDIO:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # The SDK gives the child only its minimal environment plus spec.env.
        params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env), cwd=spec.cwd)
        return await stack.enter_async_context(stdio_client(params, errlog=errlog))
    if spec.transport == HTTP:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # No client-side timeouts: the caller's deadline bounds the whole call.
        client = httpx2.AsyncClient(headers=dict(spec.headers), timeout=None, verify=_tls_context())
        client = await stack.enter_async_context(client)
        return await stack.enter_async_context(streamable_http_client(spec.url, http_client=client))
    if spec.transport == SSE:
        from mcp.client.sse import sse_client

        session = sse_client(spec.url, headers=dict(spec.headers), httpx_client_factory=_sse_http_client)
        return await stack.enter_async_context(session)
    raise ServerUnavailable(f"Server {spec.name!r} has an unknown transport {spec.transport!r}")


@functools.cache
def _tls_context() -> Any:
    """One TLS context for every HTTP session, built as httpx2 builds its default one.

    Building it loads the CA store, about 18 ms on these machines: a client made per call
    would pay that on every call, more than half of a whole local HTTP call.
    """
    import httpx2

    return httpx2.create_ssl_context()


def _sse_http_client(headers: dict | None = None, timeout: Any = None, auth: Any = None) -> Any:
    """The SDK's SSE client factory, with the shared TLS context."""
    import httpx2

    return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=_tls_context())


def _translate(call: _Call, exc: BaseException) -> BaseException:
    """The one place where SDK and transport failures become gateway errors.

    Messages are one sentence naming the server, and never carry env values, header
    values or a URL's query string.
    """
    spec, method = call.spec, call.method
    name = f"Server {spec.name!r}"
    starting = call.phase == _STARTING
    leaf = _first_leaf(exc)
    if isinstance(leaf, (GatewayError, RequestCancelled)):
        return leaf
    if isinstance(leaf, ImportError):
        log.error("The mcp SDK cannot be imported: %s", leaf)
        return ServerUnavailable(f"{name} cannot be reached: the mcp SDK is not installed correctly")

    import httpx2
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED
    from pydantic import ValidationError

    if isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED:
        status = call.exit_status()
        when = "before answering initialize" if starting else f"during {method}"
        return ServerUnavailable(f"{name} closed the connection {when}" + (f" ({status})" if status else ""))
    if isinstance(leaf, MCPError):
        if starting:
            return ServerUnavailable(f"{name} failed to initialize: {leaf.message}")
        return DownstreamError(f"{name} answered {method} with error {leaf.code}: {leaf.message}", downstream_code=leaf.code)
    if isinstance(leaf, httpx2.HTTPStatusError):
        return ServerUnavailable(f"{name} could not be reached at {_safe_url(spec.shown_url)}: HTTP {leaf.response.status_code}")
    if isinstance(leaf, httpx2.HTTPError):
        reason = "connection failed" if isinstance(leaf, httpx2.ConnectError) else type(leaf).__name__
        return ServerUnavailable(f"{name} could not be reached at {_safe_url(spec.shown_url)}: {reason}")
    if isinstance(leaf, FileNotFoundError) and spec.transport == STDIO and starting:
        if spec.cwd and leaf.filename == spec.cwd:
            return ServerUnavailable(f"{name} could not be started: working directory {spec.cwd!r} not found")
        return ServerUnavailable(f"{name} could not be started: command {spec.shown_command!r} not found")
    if isinstance(leaf, OSError) and spec.transport == STDIO and starting:
        return ServerUnavailable(f"{name} could not be started: {leaf.strerror or type(leaf).__name__}")
    if isinstance(leaf, (ValidationError, RuntimeError)):
        # A malformed result, an unsupported protocol version, or structured content
        # that does not match the tool's output schema.
        if starting:
            return ServerUnavailable(f"{name} failed to initialize: {_first_line(leaf)}")
        return DownstreamError(f"{name} returned an invalid {method} result: {_first_line(leaf)}")
    log.warning("%s: unexpected %s during %s", name, type(leaf).__name__, method)
    log.debug("unexpected downstream failure", exc_info=exc)
    return ServerUnavailable(f"{name} failed unexpectedly ({type(leaf).__name__})")


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real failure inside nested ExceptionGroups, skipping cancellations."""
    import asyncio

    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [_first_leaf(inner) for inner in exc.exceptions]
    return next((leaf for leaf in leaves if not isinstance(leaf, asyncio.CancelledError)), leaves[0])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _safe_url(url: str | None) -> str:
    """scheme://host:port/path: no credentials, no query string, no fragment."""
    parts = urlsplit(url or "")
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def _list_all(session: Any) -> list[dict]:
    """Every tool of the session's server, following pagination cursors."""
    from mcp_types import PaginatedRequestParams

    tools: list[dict] = []
    cursor = None
    while True:
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools += [_wire(tool) for tool in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return tools


async def _send_call(session: Any, tool: str, arguments: dict) -> dict:
    """One tools/call request, one round trip; the result goes back as the server gave it.

    Not `ClientSession.call_tool`: on a session that has not listed tools it first sends
    its own tools/list to check structuredContent against the tool's outputSchema. That is
    a second round trip on every short-lived session, and a check the gateway's client
    makes itself if it wants to. `send_request` still checks the result's shape.
    """
    from mcp_types import CallToolRequest, CallToolRequestParams, CallToolResult

    request = CallToolRequest(params=CallToolRequestParams(name=tool, arguments=arguments))
    result = _wire(await session.send_request(request, CallToolResult))
    result.pop("resultType", None)  # 2026-only; older clients do not expect it
    return result


def _wire(model: Any) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


@functools.cache
def _loop_class() -> type:
    """An event loop that remembers the transport of every process it spawns, and can
    tell its owner when one exits."""
    import asyncio

    class RecordingLoop(asyncio.SelectorEventLoop):
        def __init__(self) -> None:
            super().__init__()
            self.spawned: list[asyncio.SubprocessTransport] = []
            self.on_exit: Callable[[], None] | None = None  # called in the loop when one exits

        async def subprocess_exec(self, protocol_factory: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
            transport, protocol = await super().subprocess_exec(self._watched(protocol_factory), *args, **kwargs)
            self.spawned.append(transport)
            return transport, protocol

        def _watched(self, protocol_factory: Callable[[], Any]) -> Callable[[], Any]:
            # asyncio has no public "process exited" hook besides the protocol's own
            # process_exited(); chain ours onto the protocol the SDK's spawner builds.
            def factory() -> Any:
                protocol = protocol_factory()
                exited = protocol.process_exited

                def process_exited() -> None:
                    exited()
                    if self.on_exit is not None:
                        self.on_exit()

                protocol.process_exited = process_exited
                return protocol

            return factory

    return RecordingLoop


_import_lock = threading.Lock()


def _import_client() -> None:
    """Import the SDK client once, under a lock: two threads importing mcp's circular
    modules at the same time see half-initialized modules and fail with ImportError."""
    with _import_lock:
        import httpx2  # noqa: F401
        import mcp.client.session  # noqa: F401
        import mcp.client.sse  # noqa: F401
        import mcp.client.stdio  # noqa: F401
        import mcp.client.streamable_http  # noqa: F401
