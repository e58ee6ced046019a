"""The serving process's life: its signal handlers, threads that die, and an exit that cannot hang.

    SIGTERM, SIGINT, SIGQUIT   stop (the same clean shutdown as stdin EOF)
    SIGHUP                     reload both config files; remembered until a reloader exists

The handlers are installed before anything else is done, so an early signal never meets a
default action (SIGHUP's and SIGQUIT's would end the process). A thread that dies of an
uncaught exception is logged in one line and listed in status. And once shutdown has had
its bounded time, the process leaves at once (`leave`): a thread still stuck (the writer,
blocked on a client that stopped reading, or a worker waiting for room behind it) does
not keep it alive, as the interpreter's own exit, which joins it, would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import Any, Callable, NoReturn

logger = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGQUIT") if hasattr(signal, name))
RELOAD_SIGNAL = getattr(signal, "SIGHUP", None)


class _StopEvent(threading.Event):
    """An Event whose set() also writes a byte to a pipe, so the main thread can wait for it
    and for a signal's wakeup byte in one select()."""

    def __init__(self, wake_fd: int) -> None:
        super().__init__()
        self._wake_fd = wake_fd

    def set(self) -> None:
        super().set()
        try:
            os.write(self._wake_fd, b"\0")
        except OSError:  # a full pipe wakes the main thread all the same
            pass


class Signals:
    """The process's signal handlers: `stop` is set on a stop signal; SIGHUP calls the
    reload callback, or is remembered until `on_reload` gives one."""

    def __init__(self) -> None:
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        self.stop = _StopEvent(self._wake_write)
        self._reload: Callable[[], None] | None = None
        self._reload_requested = False

    def wait_for_stop(self, fallback_s: float = 1.0) -> None:
        """Block the main thread until `stop` is set, by a signal or by another thread.

        The kernel may deliver a signal to any thread, but Python runs its handler only in
        the main thread, once that thread wakes: blocked in Event.wait, it would notice a
        SIGTERM that another thread received only at its next timeout. Waiting on the
        wakeup fd instead (written at once by the C-level handler, whichever thread took
        the signal) starts a shutdown as soon as the signal arrives.
        """
        while not self.stop.is_set():
            readable, _, _ = select.select([self._wake_read], [], [], fallback_s)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)

    def install(self) -> "Signals":
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        handled = list(STOP_SIGNALS)
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        if RELOAD_SIGNAL is not None:
            signal.signal(RELOAD_SIGNAL, self._on_reload)
            handled.append(RELOAD_SIGNAL)
        # A parent may start us with these blocked; one sent meanwhile is delivered now, to
        # the handler, and later ones are not held back.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        return self

    def on_reload(self, callback: Callable[[], None]) -> None:
        """From now on SIGHUP calls `callback` (which must only hand the work to a thread)."""
        self._reload = callback
        if self._reload_requested:
            self._reload_requested = False
            callback()

    def _on_stop(self, *_: Any) -> None:
        self.stop.set()

    def _on_reload(self, *_: Any) -> None:
        callback = self._reload
        if callback is None:
            self._reload_requested = True
        else:
            callback()


class ThreadDeaths:
    """Catches every thread's uncaught exception: one log line, and a list for status.

    Only the exception's type (and, for a missing module, its name) is kept: a message
    could quote a secret.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deaths: list[dict[str, str]] = []

    def install(self) -> "ThreadDeaths":
        threading.excepthook = self._hook
        return self

    def status(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._deaths)

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        reason = describe(args.exc_value) if args.exc_value is not None else args.exc_type.__name__
        with self._lock:
            self._deaths.append({"thread": name, "error": reason})
        logger.error("Background thread %r stopped: %s; what it did is off until restart", name, reason)
        logger.debug("Traceback of thread %r", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def describe(exc: BaseException) -> str:
    if isinstance(exc, ImportError) and exc.name:
        return f"{type(exc).__name__} (module {exc.name!r} is missing)"
    return type(exc).__name__


def stuck_threads() -> list[str]:
    """Threads the interpreter would wait for at exit that are still running."""
    current = threading.current_thread()
    return [thread.name for thread in threading.enumerate()
            if thread is not current and not thread.daemon and thread.is_alive()]


def leave(code: int, workers_idle: Callable[[float], bool], stuck: list[str] | None = None,
          settle_s: float = 0.5, unfinished: list[str] | None = None) -> NoReturn:
    """End the process with `code` once shutdown has done all it can within its bounds.

    The interpreter's own exit is skipped (os._exit): by now every answer, audit record
    and downstream session is closed, so it would only free memory (about 0.3 s once the
    SDK is loaded), and it can hang, joining a pool worker or non-daemon thread that is
    stuck, or deadlock on module locks, finalizing while a daemon thread is inside an
    import. `workers_idle(timeout)` says whether the pool's workers are done; `stuck`
    names what the caller already knows is stuck (a daemon thread blocked on the wire,
    say): either is a warning. `unfinished` names daemon work nothing needs any more (the
    SDK's background import, for a gateway stopped before its first call): a debug line.
    """
    deadline = time.monotonic() + settle_s
    stuck = list(stuck or [])
    if not workers_idle(settle_s):
        stuck.append("a worker delivering an answer")
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join(max(deadline - time.monotonic(), 0))
    stuck += stuck_threads()
    if stuck:
        logger.warning("Exiting without waiting for what is still stuck: %s", ", ".join(stuck))
    if unfinished:
        logger.debug("Exiting without finishing what nothing needs: %s", ", ".join(unfinished))
    logging.shutdown()  # flushes every handler
    # fd 1 is stderr by now (framing.claim_stdout): this saves stray prints, not the wire.
    for stream in (sys.stdout, sys.__stdout__, sys.stderr, sys.__stderr__):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)
