"""Per-server cache of downstream tool lists, and the argument validators built from them.

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
from typing import Any, Callable

from .model import ServerSpec

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 300.0


@dataclass
class _Entry:
    spec: ServerSpec
    tools: list[dict]
    fetched_at: float
    validators: dict[str, Any] = field(default_factory=dict)
    ttl_s: float | None = None  # the server's own ttlMs, when it gave one


class ToolCatalog:
    def __init__(self, list_tools: Callable[..., list[dict]], ttl_s: float = DEFAULT_TTL_S, clock=time.monotonic):
        self._list_tools = list_tools
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[str, tuple[str, ...]], _Entry] = {}
        self._lock = threading.Lock()
        self._fill_locks: dict[str, threading.Lock] = {}

    def tools(
        self, spec: ServerSpec, timeout_s: float, cancel: threading.Event, refresh: bool = False, agent: str | None = None,
        relay: Any = None,
    ) -> list[dict]:
        """The server's tool list, from cache when fresh; one fetch at a time per server.

        A fetch runs on behalf of `agent` (a kept-alive server lists on that agent's own
        session); the list it gets is the server's, cached for every agent.
        """
        caps = relay.capability_key() if relay is not None else ()
        seen = self._fresh(spec, caps)
        if seen is not None and not refresh:
            return seen.tools
        with self._fill_lock(spec.name):
            current = self._fresh(spec, caps)
            if current is not None and current is not seen:
                return current.tools  # another thread filled or refreshed it while we waited
            extra = {"relay": relay} if relay is not None else {}
            tools = self._list_tools(spec, timeout_s, cancel, agent=agent, **extra)
            self.store(spec, tools, caps)
            return tools

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

    def store(self, spec: ServerSpec, tools: list[dict], caps: tuple[str, ...] = ()) -> None:
        """Replace the server's cached list with one fetched elsewhere."""
        ttl_ms = getattr(tools, "ttl_ms", None)  # a downstream list may carry the server's ttlMs
        ttl_s = ttl_ms / 1000 if isinstance(ttl_ms, int) and not isinstance(ttl_ms, bool) and ttl_ms >= 0 else None
        with self._lock:
            self._entries[(spec.name, caps)] = _Entry(spec, tools, self._clock(), ttl_s=ttl_s)
        logger.debug("Cached %d tool(s) of server %r", len(tools), spec.name)

    def validator(self, spec: ServerSpec, definition: dict, caps: tuple[str, ...] = ()) -> Any | None:
        """A compiled validator of the tool's inputSchema, built once per cached list.

        None when the server's schema is itself invalid: the server then judges its own input.
        """
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        name = definition["name"]
        with self._lock:
            entry = self._entries.get((spec.name, caps))
            if entry is not None and entry.spec == spec and name in entry.validators:
                return entry.validators[name]  # None too: an invalid schema is judged once
        schema = definition.get("inputSchema") or {"type": "object"}
        cls = validator_for(schema)
        try:
            cls.check_schema(schema)
            validator = cls(schema)
        except SchemaError:
            logger.warning("Tool %r of server %r has an invalid inputSchema; not checking its arguments", name, spec.name)
            validator = None
        with self._lock:
            if entry is not None and self._entries.get((spec.name, caps)) is entry:
                entry.validators[name] = validator
        return validator

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
