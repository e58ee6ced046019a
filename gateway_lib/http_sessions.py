"""The HTTP sessions: a bounded, thread-safe store of per-session protocol state, by session id.

Ordered by last use, so expiry and eviction look only at the oldest end: lookups, creation
and sweeping cost O(1) per session touched, and there is no background thread.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 3600.0
DEFAULT_MAX_SESSIONS = 1024


@dataclass(eq=False)
class HttpSession:
    """One client's session: its own endpoint and protocol state, bound to one identity."""

    session_id: str = field(repr=False)
    endpoint: Any
    protocol: Any
    agent: str | None  # the bearer token's agent at initialize; every later request must match
    last_used: float = 0.0
    busy: int = 0  # requests of this session being served right now

    def close(self) -> None:
        # No grace: whatever still runs is cancelled and answered "shutting down" at once.
        self.endpoint.shutdown(0.0, 0.0)


class SessionStoreFull(Exception):
    """Every session is busy: none can be evicted to make room."""


class SessionStore:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_sessions: int = DEFAULT_MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic):
        self._ttl_s = ttl_s
        self._max = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, HttpSession] = OrderedDict()

    def add(self, endpoint: Any, protocol: Any, agent: str | None) -> HttpSession:
        """Store a new session under a fresh random id, evicting the oldest idle one if full."""
        with self._lock:
            ended = self._sweep_locked()
            if len(self._sessions) >= self._max:
                oldest = next((s for s in self._sessions.values() if not s.busy), None)
                if oldest is None:
                    raise SessionStoreFull(f"All {self._max} HTTP sessions are busy")
                del self._sessions[oldest.session_id]
                ended.append(oldest)
                logger.info("Evicted the least recently used HTTP session to make room")
            session = HttpSession(secrets.token_urlsafe(32), endpoint, protocol, agent, self._clock())
            self._sessions[session.session_id] = session
        self._close(ended)
        return session

    def acquire(self, session_id: str) -> HttpSession | None:
        """The live session with this id, marked busy (release it), or None if unknown or expired."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            now = self._clock()
            if not session.busy and now - session.last_used > self._ttl_s:
                del self._sessions[session_id]
                expired = session
            else:
                session.busy += 1
                session.last_used = now
                self._sessions.move_to_end(session_id)
                return session
        self._close([expired])
        return None

    def release(self, session: HttpSession) -> None:
        with self._lock:
            session.busy -= 1
            session.last_used = self._clock()
            if session.session_id in self._sessions:  # not removed meanwhile
                self._sessions.move_to_end(session.session_id)

    def remove(self, session_id: str) -> HttpSession | None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            self._close([session])
        return session

    def count(self) -> int:
        """Sessions open now (expired ones are swept first)."""
        with self._lock:
            ended = self._sweep_locked()
            count = len(self._sessions)
        self._close(ended)
        return count

    def close_all(self) -> list[HttpSession]:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        return sessions

    def _sweep_locked(self) -> list[HttpSession]:
        now = self._clock()
        ended = []
        # Oldest first; a busy session is in use, so it is not idle however old its mark.
        # Only the expired end is looked at (no copy of the whole store under the lock).
        for session in self._sessions.values():
            if now - session.last_used <= self._ttl_s:
                break
            if not session.busy:
                ended.append(session)
        for session in ended:
            del self._sessions[session.session_id]
        return ended

    @staticmethod
    def _close(sessions: list[HttpSession]) -> None:
        for session in sessions:
            try:
                session.close()
            except Exception:
                logger.exception("Closing an HTTP session failed")
