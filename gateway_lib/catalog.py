"""Per-server cache of downstream tool lists, and the argument checkers built from them.

An entry is keyed by the server's whole frozen `ServerSpec`: when a reload changes the
entry, the spec no longer compares equal and the old list is never served again. A hit
opens no downstream session. A server may list different tools to clients of different
capabilities, so lists are kept per capability set (`caps`, the relay's capability key),
and a server's own `ttlMs` on its list (2026-07-28) shortens the cache's lifetime.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .argument_check import ArgumentChecker
from .errors import RequestCancelled, ToolTimeout, cut
from .model import ServerSpec

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 300.0
MAX_DESCRIPTION_CHARS = 16_384  # a longer tool description is cut, with a marker
_CANCEL_CHECK_S = 0.05  # how often a caller waiting for another's fetch looks at its cancel flag


class ToolLister(Protocol):
    def __call__(self, spec: ServerSpec, timeout_s: float, cancel: threading.Event | None, *,
                 agent: str | None = None) -> list[dict]: ...


@dataclass
class _Entry:
    spec: ServerSpec
    tools: list[dict]
    fetched_at: float
    checkers: dict[str, ArgumentChecker | None] = field(default_factory=dict)
    ttl_s: float | None = None  # the server's own ttlMs, when it gave one


class ToolCatalog:
    def __init__(self, list_tools: ToolLister, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic):
        self._list_tools = list_tools
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[str, tuple[str, ...]], _Entry] = {}
        self._lock = threading.Lock()
        self._fill_locks: dict[str, threading.Lock] = {}

    def tools(self, spec: ServerSpec, deadline: float, cancel: threading.Event, *, agent: str | None = None,
              hold: Callable[[], Callable[[], None]] | None = None, relay: Any = None) -> list[dict]:
        """The server's tool list, from cache when fresh; one fetch at a time per server.

        Waiting for another caller's fetch ends at `deadline` (ToolTimeout) or when `cancel`
        is set (RequestCancelled). A fetch first calls `hold()` (a server slot) and gives it
        back when done. It runs on behalf of `agent` (a kept-alive server lists on that
        agent's own session); the list it gets is the server's, cached for every agent.
        """
        caps = relay.capability_key() if relay is not None else ()
        entry = self._fresh(spec, caps)
        if entry is not None:
            return entry.tools
        fill = self._fill_lock(spec.name)
        self._wait_for(fill, spec, deadline, cancel)
        try:
            entry = self._fresh(spec, caps)
            if entry is not None:
                return entry.tools  # another caller filled it while we waited
            release = hold() if hold is not None else None
            try:
                extra = {"relay": relay} if relay is not None else {}
                tools = self._list_tools(spec, max(deadline - time.monotonic(), 0.001), cancel, agent=agent, **extra)
            finally:
                if release is not None:
                    release()
            return self.store(spec, tools, caps)
        finally:
            fill.release()

    def known(self, spec: ServerSpec, tool: str, caps: tuple[str, ...] = ()) -> dict | None:
        """The cached definition of `tool` when the list is fresh and knows it; never fetches.

        None means the caller must list again (the cache is empty, expired or dropped, or
        the tool is new to it): execute_tool then lists and calls in one session.
        """
        entry = self._fresh(spec, caps)
        if entry is None:
            return None
        return next((t for t in entry.tools if t.get("name") == tool), None)

    def is_cached(self, spec: ServerSpec, caps: tuple[str, ...] = ()) -> bool:
        """True when a fresh list of the server is at hand (a search lists the others first)."""
        return self._fresh(spec, caps) is not None

    def store(self, spec: ServerSpec, tools: list[dict], caps: tuple[str, ...] = ()) -> list[dict]:
        """Replace the server's cached list with one fetched elsewhere; returns it as cached
        (over-long descriptions cut)."""
        ttl_ms = getattr(tools, "ttl_ms", None)  # a downstream list may carry the server's ttlMs
        ttl_s = ttl_ms / 1000 if isinstance(ttl_ms, int) and not isinstance(ttl_ms, bool) and ttl_ms >= 0 else None
        kept = [_trimmed(tool) for tool in tools]
        with self._lock:
            self._entries[(spec.name, caps)] = _Entry(spec, kept, self._clock(), ttl_s=ttl_s)
        logger.debug("Cached %d tool(s) of server %r", len(kept), spec.name)
        return kept

    def checker(self, spec: ServerSpec, definition: dict, caps: tuple[str, ...] = ()) -> ArgumentChecker | None:
        """The tool's inputSchema, compiled once per cached list.

        None when the server's schema is itself invalid: that tool's arguments are then
        left to the server (logged once), and the server's other tools are checked as usual.
        """
        name = definition["name"]
        with self._lock:
            entry = self._entries.get((spec.name, caps))
            if entry is not None and entry.spec == spec and name in entry.checkers:
                return entry.checkers[name]  # None too: an invalid schema is judged once
        schema = definition.get("inputSchema") or {"type": "object"}
        try:
            checker: ArgumentChecker | None = ArgumentChecker(schema)
        except Exception as exc:  # SchemaError, an unknown $schema, a schema nested too deeply
            logger.warning("Tool %r of server %r has an invalid inputSchema (%s); its arguments are left to the server",
                           name, spec.name, type(exc).__name__)
            checker = None
        with self._lock:
            if entry is not None and self._entries.get((spec.name, caps)) is entry:
                entry.checkers[name] = checker
        return checker

    def forget_missing(self, current: dict[str, ServerSpec]) -> None:
        """Drop entries of servers that a reload removed or changed."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if current.get(k[0]) != e.spec]:
                del self._entries[key]

    def _fresh(self, spec: ServerSpec, caps: tuple[str, ...] = ()) -> _Entry | None:
        with self._lock:
            entry = self._entries.get((spec.name, caps))
        if entry is None or entry.spec != spec:
            return None
        ttl_s = self._ttl_s if entry.ttl_s is None else min(self._ttl_s, entry.ttl_s)
        if self._clock() - entry.fetched_at > ttl_s:
            return None
        return entry

    def _fill_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._fill_locks.setdefault(name, threading.Lock())

    @staticmethod
    def _wait_for(fill: threading.Lock, spec: ServerSpec, deadline: float, cancel: threading.Event) -> None:
        while not fill.acquire(timeout=max(min(deadline - time.monotonic(), _CANCEL_CHECK_S), 0)):
            if cancel.is_set():
                raise RequestCancelled()
            if time.monotonic() >= deadline:
                raise ToolTimeout(f"The tool list of server {spec.name!r} was still being fetched at the deadline",
                                  server=spec.name)


def _trimmed(tool: dict) -> dict:
    description = tool.get("description")
    if isinstance(description, str) and len(description) > MAX_DESCRIPTION_CHARS:
        return {**tool, "description": cut(description, MAX_DESCRIPTION_CHARS)}
    return tool
