"""Watch both config files and reload them when they change.

A watchdog observer watches the directories that hold the files: the directory of each
path as configured and, when that is a symlink, the directory of the file it points to.
A directory that does not exist yet (a symlink re-pointed at a folder still to be made) is
waited for at its nearest existing ancestor: its creation there reloads the file and
watches the new directory. Watching directories rather than files is what catches every
way of saving:

    in-place write           modified / closed events on the file
    temp file, rename over   a move whose *destination* is the file
    delete, then re-create   deleted, then created
    many writes in a row     many events, coalesced by the debouncer

Events go to a Debouncer, which calls the Reloader on its own thread once the file has
been quiet for `delay_s`, so one save is one reload. Nothing raised while handling an
event or reloading escapes to the observer's or the debouncer's thread: either dying
would stop reloading silently.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Iterable

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from .reload import DEFAULT_DEBOUNCE_S, GATEWAY_RULES, KINDS, MCP_CONFIG, Reloader

logger = logging.getLogger(__name__)

DEFAULT_DELAY_S = DEFAULT_DEBOUNCE_S
# A file rewritten without pause (a log-like burst) still reloads this often.
DEFAULT_MAX_DELAY_S = 1.0

# Opened and closed-without-writing events come from reading, our own reloads included:
# reacting to them would reload forever.
_CHANGES = frozenset({EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED, EVENT_TYPE_CREATED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED})
# The same, asked of the kernel where the backend can filter (inotify does); directories
# appearing matter only where a config's directory is awaited.
_CHANGE_EVENTS = [FileModifiedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent,
                  DirCreatedEvent, DirMovedEvent]


class Debouncer:
    """Collects keys and hands them to `flush` on its own thread, once no key has come
    for `delay_s` (and at most `max_delay_s` after the first one)."""

    def __init__(self, flush: Callable[[frozenset[str]], None], delay_s: float = DEFAULT_DELAY_S,
                 max_delay_s: float = DEFAULT_MAX_DELAY_S, name: str = "config-debouncer"):
        self._flush = flush
        self._delay_s = delay_s
        self._max_delay_s = max_delay_s
        # An RLock underneath: push() may run in a signal handler on the main thread, and
        # must not deadlock if that thread is inside stop() at the time.
        self._cond = threading.Condition(threading.RLock())
        self._pending: set[str] = set()
        self._first = 0.0  # when the oldest pending key came
        self._due = 0.0  # when to flush, unless more keys come
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def push(self, keys: Iterable[str], immediate: bool = False) -> None:
        """Note `keys` as changed; with `immediate`, flush as soon as the thread can."""
        now = time.monotonic()
        with self._cond:
            if not self._pending:
                self._first = now
            self._pending.update(keys)
            self._due = now if immediate else now + self._delay_s
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            keys = self._next_batch()
            if keys is None:
                return
            try:
                self._flush(keys)
            except Exception:
                logger.exception("Handling a config change failed; still watching")

    def _next_batch(self) -> frozenset[str] | None:
        """Waits until pending keys are due; None once stopped."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._pending:
                    remaining = min(self._due, self._first + self._max_delay_s) - time.monotonic()
                    if remaining <= 0:
                        keys = frozenset(self._pending)
                        self._pending.clear()
                        return keys
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()


class _Handler(FileSystemEventHandler):
    """Passes every event to `on_event`, and never lets an exception reach the observer."""

    def __init__(self, on_event: Callable[[FileSystemEvent], None]):
        super().__init__()
        self._on_event = on_event

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            logger.exception("Could not handle file event %r; still watching", event)


class ConfigWatcher:
    """Watches the reloader's two files and reloads the one that changed.

    `request_reload()` (what SIGHUP calls) reloads both at once, on the debouncer thread.
    """

    def __init__(self, reloader: Reloader, delay_s: float = DEFAULT_DELAY_S,
                 max_delay_s: float = DEFAULT_MAX_DELAY_S):
        self._reloader = reloader
        self._paths = reloader.paths
        self._debouncer = Debouncer(self._reload, delay_s, max_delay_s)
        self._observer = Observer()
        self._observer.name = "config-watcher"
        self._handler = _Handler(self._on_event)
        self._watched: set[str] = set()
        self._names: dict[str, str] = self._file_names()
        self._awaited: dict[str, set[str]] = {}  # missing directory -> kinds of the files in it

    def start(self) -> None:
        try:
            self._refresh_watches()
            self._observer.start()
        except OSError as exc:  # e.g. the inotify watch limit: serve on, SIGHUP still reloads
            logger.error("Cannot watch the config files (%s); edits need SIGHUP to take effect", exc)
        # Last, so that only the debouncer thread ever refreshes the watches from now on.
        self._debouncer.start()

    def request_reload(self) -> None:
        """Reload both files soon. Only notes the request: safe in a signal handler."""
        self._debouncer.push(KINDS, immediate=True)

    def stop(self) -> None:
        if self._observer.is_alive():
            self._observer.stop()
        self._debouncer.stop()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (self._observer, self._debouncer):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            if thread.is_alive():
                thread.join(remaining)

    def is_alive(self) -> bool:
        return self._observer.is_alive() and self._debouncer.is_alive()

    # --- events -----------------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        if event.is_directory:
            self._on_directory_event(event)
            return
        names = self._names
        # An editor that renames its temp file over the config names it only as dest_path.
        kinds = {names[os.fsdecode(path)] for path in (event.src_path, event.dest_path) if path
                 and os.fsdecode(path) in names}
        if kinds:
            logger.debug("Config change %s on %s", event.event_type, sorted(kinds))
            self._debouncer.push(kinds)

    def _on_directory_event(self, event: FileSystemEvent) -> None:
        awaited = self._awaited
        paths = [os.fsdecode(path) for path in (event.src_path, event.dest_path) if path]
        # The awaited directory itself, or one of its missing ancestors, has appeared.
        kinds = {kind for missing, missing_kinds in awaited.items() for kind in missing_kinds
                 if any(missing == path or missing.startswith(path.rstrip(os.sep) + os.sep) for path in paths)}
        if kinds:
            logger.debug("Awaited config directory appeared (%s)", sorted(kinds))
            self._debouncer.push(kinds)

    def _reload(self, kinds: frozenset[str]) -> None:
        # A symlinked config may point somewhere new now: watch there too, before reading.
        self._refresh_watches()
        if MCP_CONFIG in kinds:
            self._reloader.reload_servers()
        if GATEWAY_RULES in kinds:
            self._reloader.reload_rules()

    # --- what to watch ----------------------------------------------------------------

    def _file_names(self) -> dict[str, str]:
        """Every name an event may give a config file: as configured, and resolved."""
        names = {}
        for kind, path in self._paths.items():
            names[os.path.abspath(path)] = kind
            names[os.path.realpath(path)] = kind
        return names

    def _refresh_watches(self) -> None:
        names = self._file_names()
        self._names = names  # one reference swap: the observer thread reads it unlocked
        awaited: dict[str, set[str]] = {}
        for name, kind in names.items():
            directory = os.path.dirname(name)
            if not os.path.isdir(directory):  # a re-pointed symlink's target, not made yet
                awaited.setdefault(directory, set()).add(kind)
        self._awaited = awaited  # swapped whole, like the names
        wanted = {os.path.dirname(name) for name in names} - awaited.keys()
        wanted |= {_nearest_existing(directory) for directory in awaited}
        for directory in sorted(wanted - self._watched):
            self._observer.schedule(self._handler, directory, recursive=False, event_filter=_CHANGE_EVENTS)
            self._watched.add(directory)
            logger.debug("Watching %s", directory)


def _nearest_existing(directory: str) -> str:
    while not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return directory
