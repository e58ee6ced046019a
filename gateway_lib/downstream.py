"""Short-lived sessions to downstream MCP servers; the only module that imports `mcp`.

Every call opens its own session in its own event loop on its own thread, and the
calling worker thread waits on a Future with the call's deadline. At the deadline (or
on cancellation) the worker raises at once and the session unwinds in the background.

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
from typing import Any, Awaitable, Callable, TextIO
from urllib.parse import urlsplit

from .errors import DownstreamError, GatewayError, RequestCancelled, ServerUnavailable, ToolTimeout
from .model import HTTP, SSE, STDIO, ServerSpec

log = logging.getLogger(__name__)

_POLL_S = 0.02  # how often a waiting worker looks at its cancel event
_REAP_S = 2.0  # bound on waiting for a killed server to be reaped
_EXIT_STATUS_WAIT_S = 0.5  # bound on waiting for a crashed server's exit status
_STARTING, _READY = "starting", "ready"


class Downstream:
    """Opens one short-lived session per call and makes sure nothing outlives it."""

    def __init__(self, errlog: TextIO | None = None):
        # stdio children write their stderr here; the SDK needs a real file descriptor.
        self._errlog = errlog if errlog is not None else sys.stderr
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self._preloader: threading.Thread | None = None
        self._closed = False

    def preload(self) -> None:
        """Import the SDK client in the background so the first call does not pay for it."""
        with self._lock:
            if self._preloader is None:
                self._preloader = threading.Thread(target=_import_client, name="downstream-preload", daemon=True)
                self._preloader.start()

    def list_tools(
        self, spec: ServerSpec, timeout_s: float, cancel: threading.Event | None = None
    ) -> list[dict]:
        async def work(session: Any) -> list[dict]:
            from mcp_types import PaginatedRequestParams

            tools: list[dict] = []
            cursor = None
            while True:
                page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
                tools += [_wire(tool) for tool in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    return tools

        return self._run(spec, "tools/list", work, timeout_s, cancel)

    def call_tool(
        self, spec: ServerSpec, tool: str, arguments: dict, timeout_s: float, cancel: threading.Event | None = None
    ) -> dict:
        async def work(session: Any) -> dict:
            result = _wire(await session.call_tool(tool, arguments))
            result.pop("resultType", None)  # 2026-only; older clients do not expect it
            return result

        return self._run(spec, "tools/call", work, timeout_s, cancel)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel every live session, kill its process groups, and join the threads (bounded)."""
        with self._lock:
            self._closed = True
            calls = list(self._calls)
        for call in calls:
            call.abort(ServerUnavailable(f"Server {call.spec.name!r} was stopped: the gateway is shutting down"))
            call.kill_groups()
        deadline = time.monotonic() + timeout_s
        threads = [call.thread for call in calls] + [self._preloader]
        for thread in filter(None, threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.live_sessions:
            log.warning("%s downstream session(s) still cleaning up after shutdown", self.live_sessions)

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
    ) -> Any:
        if spec.unusable:
            raise ServerUnavailable(spec.unusable)
        if cancel is not None and cancel.is_set():
            raise RequestCancelled()
        call = _Call(spec, method, work, self._errlog)
        with self._lock:
            if self._closed:
                raise ServerUnavailable(f"Server {spec.name!r} is unavailable: the gateway is shutting down")
            self._calls.add(call)
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


class _Call:
    """One session: its thread, its event loop, and every process started in that loop."""

    def __init__(self, spec: ServerSpec, method: str, work: Callable[[Any], Awaitable[Any]], errlog: TextIO):
        self.spec = spec
        self.method = method
        self.work = work
        self.errlog = errlog
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.phase = _STARTING
        self.thread: threading.Thread | None = None
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
        spec = self.spec
        if spec.transport == STDIO:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            # The SDK gives the child only its minimal environment plus spec.env.
            params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env), cwd=spec.cwd)
            return await stack.enter_async_context(stdio_client(params, errlog=self.errlog))
        if spec.transport == HTTP:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            # No client-side timeouts: the caller's deadline bounds the whole call.
            client = await stack.enter_async_context(httpx2.AsyncClient(headers=dict(spec.headers), timeout=None))
            return await stack.enter_async_context(streamable_http_client(spec.url, http_client=client))
        if spec.transport == SSE:
            from mcp.client.sse import sse_client

            return await stack.enter_async_context(sse_client(spec.url, headers=dict(spec.headers)))
        raise ServerUnavailable(f"Server {spec.name!r} has an unknown transport {spec.transport!r}")

    # Process cleanup. The SDK starts a stdio server with start_new_session=True, so the
    # server's pid is also its process-group id. Our loop class records the transport of
    # every process spawned in this call's loop (the SDK spawns via loop.subprocess_exec),
    # so once the session has closed, however it ended, we SIGKILL each whole group. The
    # SDK kills the group only when the server outlives its stdin by 2 s, so without this a
    # grandchild that ignores stdin would survive a server that exits promptly.
    # We then wait, bounded, until the loop's child watcher has reaped the server itself.

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

    async def _reap(self) -> None:
        import anyio

        self.kill_groups()
        with anyio.move_on_after(_REAP_S, shield=True):
            for transport in self._loop.spawned:
                while transport.get_returncode() is None:
                    await anyio.sleep(0.01)

    def kill_groups(self) -> None:
        """SIGKILL every process group started by this call; safe from any thread."""
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


def _wire(model: Any) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


@functools.cache
def _loop_class() -> type:
    """An event loop that remembers the transport of every process it spawns."""
    import asyncio

    class RecordingLoop(asyncio.SelectorEventLoop):
        def __init__(self) -> None:
            super().__init__()
            self.spawned: list[asyncio.SubprocessTransport] = []

        async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
            transport, protocol = await super().subprocess_exec(*args, **kwargs)
            self.spawned.append(transport)
            return transport, protocol

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
