"""The client's roots as last fetched: what a kept-alive server asking outside any call is answered.

One per client connection. Filled by every roots/list the client answers during a call;
emptied by the client's `notifications/roots/list_changed` (stale roots are never handed
out), and refetched then from the client in the background, one request at a time,
bounded in time. Which downstream sessions may be answered from it is the relay's and
the session router's business (one client, rules that allow it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

REFRESH_S = 10.0  # bound on waiting for the client's answer to a refetch
_REFETCHES = 3  # a refetch overtaken by another change is repeated, this many times at most


class ClientRoots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roots: dict | None = None
        self._generation = 0  # counts changes: a refetch begun before the last change is stale
        self._refreshing = False

    def remember(self, answer: Any) -> None:
        """The client answered roots/list with `answer` (as relayed during a call)."""
        if isinstance(answer, dict) and isinstance(answer.get("roots"), list):
            with self._lock:
                self._roots = answer

    def last(self) -> dict | None:
        with self._lock:
            return self._roots

    def changed(self, peer: Any) -> None:
        """The client's roots changed: forget them, and fetch them again through `peer` (if any)."""
        with self._lock:
            self._generation += 1
            self._roots = None
            if peer is None or self._refreshing:
                return  # a refetch under way sees the new generation and goes again
            self._refreshing = True
        threading.Thread(target=self._refetch, args=(peer,), name="gateway-roots-refetch", daemon=True).start()

    def _refetch(self, peer: Any) -> None:
        try:
            for _ in range(_REFETCHES):
                with self._lock:
                    generation = self._generation
                try:
                    answer = peer.request("roots/list", None, REFRESH_S)
                except Exception as exc:  # PeerError, PeerTimeout, a closed wire: no roots then
                    logger.info("Could not refetch the client's roots: %s", type(exc).__name__)
                    return
                with self._lock:
                    if generation == self._generation:
                        if isinstance(answer, dict) and isinstance(answer.get("roots"), list):
                            self._roots = answer
                        return
        finally:
            with self._lock:
                self._refreshing = False
