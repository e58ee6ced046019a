"""Event loops for downstream sessions and the process groups they spawn; the only asyncio/anyio importer.

Every name here imports asyncio or anyio inside itself: importing this module costs
nothing, so the gateway can answer `initialize` before any of them load.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import signal
from typing import Any, Callable, Coroutine, Iterable

from ..model import ServerSpec
from .processes import ProcessTree

log = logging.getLogger(__name__)

REAP_S = 2.0  # bound on waiting for a killed server to be reaped
_REAP_POLL_S = 0.01  # the child watcher offers no awaitable "reaped": look this often


def run(main: Callable[[], Coroutine[Any, Any, Any]], on_loop: Callable[[Any], None]) -> Any:
    """Run `main()` to the end in a fresh process-recording loop; `on_loop` gets the loop first."""
    import asyncio

    def new_loop() -> Any:
        loop = _loop_class()()
        on_loop(loop)
        return loop

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main())


def submit(coroutine: Coroutine[Any, Any, Any], loop: Any) -> concurrent.futures.Future:
    """Schedule `coroutine` on `loop` from another thread; RuntimeError if the loop has closed."""
    import asyncio

    return asyncio.run_coroutine_threadsafe(coroutine, loop)


def call_soon(loop: Any, callback: Callable[[], None]) -> None:
    """Run `callback` in `loop` soon; from any thread; nothing if the loop has already closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def cancel_scope() -> Any:
    """A scope whose `cancel()` ends what runs inside it (anyio's, so SDK task groups see it)."""
    import anyio

    return anyio.CancelScope()


def move_on_after(seconds: float, shield: bool = False) -> Any:
    import anyio

    return anyio.move_on_after(seconds, shield=shield)


def new_event() -> Any:
    """An event for the running loop (set and awaited only in that loop)."""
    import asyncio

    return asyncio.Event()


def current_task() -> Any:
    import asyncio

    return asyncio.current_task()


async def wait_tasks(tasks: Iterable[Any], timeout: float) -> set[Any]:
    """Wait for `tasks` to end, `timeout` at most; returns those still pending."""
    import asyncio

    _, pending = await asyncio.wait(list(tasks), timeout=timeout)
    return pending


async def poll_until(done: Callable[[], bool], bound_s: float) -> None:
    """Wait until `done()` or `bound_s` passes, looking every few ms (for states with no awaitable)."""
    import anyio

    with anyio.move_on_after(bound_s):
        while not done():
            await anyio.sleep(_REAP_POLL_S)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking `fn(*args)` on a worker thread; a cancelled caller stops waiting for it.

    The function must end on its own (relayed requests end when their call does).
    """
    import anyio

    return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


def is_cancellation(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError)


class LoopProcesses:
    """The processes of whatever owns an event loop that spawned stdio servers.

    The owner sets `spec` and `_loop` (a loop made by `run`, None until created). The loop
    keeps the transport and the process tree (see processes.py) of every process spawned
    in it (the SDK spawns via loop.subprocess_exec). The SDK closes a session as the spec
    says (stdin, then SIGTERM to the group, then SIGKILL); once it has closed, however it
    ended, `reap` kills what is left of each tree: without that a grandchild that ignores
    stdin would survive a server that exits promptly. It then waits, bounded, until the
    loop's child watcher has reaped the server itself.
    """

    spec: ServerSpec
    _loop: Any

    async def reap(self) -> None:
        import anyio

        self.kill_processes()
        with anyio.move_on_after(REAP_S, shield=True):
            for transport in self._loop.spawned:
                while transport.get_returncode() is None:
                    await anyio.sleep(_REAP_POLL_S)

    def record_processes(self) -> None:
        """Note every process the servers have started so far (in the loop, at quiet moments)."""
        for tree in self._trees():
            tree.record()

    def terminate_processes(self) -> None:
        """SIGTERM every server's group whose leader still runs; safe from any thread."""
        for tree in self._trees():
            tree.signal_group(signal.SIGTERM)

    def kill_processes(self) -> None:
        """SIGKILL every server's group and recorded descendants; safe from any thread."""
        for tree in self._trees():
            tree.kill()

    def _trees(self) -> list[ProcessTree]:
        loop = self._loop
        return list(loop.trees) if loop is not None else []

    def exit_status(self) -> str | None:
        """How the (first) server process ended, for error messages; None if unknown."""
        code = self._first_returncode()
        if code is None:
            return None
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def exited(self) -> bool:
        """Whether the server process (if any) has already exited."""
        return self._first_returncode() is not None

    def spawned_any(self) -> bool:
        return bool(self._loop is not None and self._loop.spawned)

    def _first_returncode(self) -> int | None:
        spawned = self._loop.spawned if self._loop is not None else []
        return spawned[0].get_returncode() if spawned else None


@functools.cache
def _loop_class() -> type:
    """An event loop that remembers the transport of every process it spawns, and can
    tell its owner when one exits."""
    import asyncio

    class RecordingLoop(asyncio.SelectorEventLoop):
        def __init__(self) -> None:
            super().__init__()
            self.spawned: list[asyncio.SubprocessTransport] = []
            self.trees: list[ProcessTree] = []  # one per spawned process, in the same order
            self.on_exit: Callable[[], None] | None = None  # called in the loop when one exits

        async def subprocess_exec(self, protocol_factory: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
            factory = functools.partial(_watched_protocol, protocol_factory, lambda: self.on_exit)
            transport, protocol = await super().subprocess_exec(factory, *args, **kwargs)
            self.spawned.append(transport)
            self.trees.append(ProcessTree(transport.get_pid(), lambda: transport.get_returncode() is not None))
            return transport, protocol

    return RecordingLoop


def _watched_protocol(protocol_factory: Callable[[], Any], on_exit: Callable[[], Callable[[], None] | None]) -> Any:
    """The protocol the SDK's spawner builds, with our exit hook chained onto process_exited.

    Why a patch: asyncio has no public "this child exited" hook besides the subprocess
    protocol's own process_exited(), and the SDK (through anyio) builds that protocol, so
    the only way in is to wrap it. Only kept-alive sessions use the hook, to close at once
    when their server dies between calls instead of failing the next call.
    """
    protocol = protocol_factory()
    exited = protocol.process_exited

    def process_exited() -> None:
        exited()
        hook = on_exit()
        if hook is not None:
            hook()

    protocol.process_exited = process_exited
    return protocol

