"""Per-agent token buckets over tools/call, configured by `agents.<id>.rate_limit` in the rules.

One bucket per agent for the whole gateway process, whatever transport or session the call
came by. A reload that changes an agent's limit gives it a bucket of the new size, keeping
no more tokens than the new burst; an agent whose limit is removed is not limited.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

from .errors import RateLimited
from .model import RateLimit


class _Bucket:
    __slots__ = ("limit", "tokens", "updated")

    def __init__(self, limit: RateLimit, now: float):
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = now


class RateLimiter:
    """Takes one token per call; a call finding the bucket empty is RATE_LIMITED."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def take(self, agent: str, limit: RateLimit | None) -> None:
        """Spend one call of `agent`'s budget, or raise RateLimited saying when to retry."""
        if limit is None:
            with self._lock:
                self._buckets.pop(agent, None)
            return
        per_second = limit.calls_per_minute / 60
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(agent)
            if bucket is None:
                bucket = self._buckets[agent] = _Bucket(limit, now)
            elif bucket.limit != limit:  # the rules were reloaded with another limit
                bucket.limit = limit
                bucket.tokens = min(bucket.tokens, float(limit.burst))
            bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * per_second)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait_s = (1 - bucket.tokens) / per_second
        retry_after_s = math.ceil(wait_s * 1000) / 1000
        raise RateLimited(
            f"Agent {agent!r} is over its rate limit of {limit.calls_per_minute:g} call(s) per minute "
            f"(burst {limit.burst}); retry after {retry_after_s:g} s",
            retry_after_s=retry_after_s,
        )
