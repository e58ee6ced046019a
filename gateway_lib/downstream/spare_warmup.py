"""The eager start after the handshake: every server warmed, a few at a time, each step bounded."""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Callable

from ..errors import GatewayError, RequestCancelled
from ..model import ServerSpec
from .spare_session import ToolLists, may_have_spare

if TYPE_CHECKING:
    from .spares import SparePool

log = logging.getLogger(__name__)

WARM_AT_ONCE = 2  # servers warmed at the same time after the handshake: a 2-core machine stays usable
WARM_STEP_S = 60.0  # bound on one warm-up step (a spare starting, or a listing session)


class Warmup:
    """The eager start after the handshake: a few servers at a time, each step bounded.

    A server that may have a spare gets one (which lists its tools into the cache as it
    starts); any other server with an empty cache is listed on one transient per-call
    session, which closes when the list is in.
    """

    def __init__(self, pool: SparePool, specs: list[ServerSpec], lists: ToolLists | None,
                 list_once: Callable[[ServerSpec, threading.Event], list[dict]]):
        self._pool = pool
        self._lists = lists
        self._list_once = list_once
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        for spec in specs:
            if not spec.unusable:
                self._todo.put(spec)
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"downstream-warmup-{n}", daemon=True)
                        for n in range(WARM_AT_ONCE)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                spec = self._todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._warm(spec)
            except Exception:
                log.exception("Warming server %r failed unexpectedly", spec.name)

    def _warm(self, spec: ServerSpec) -> None:
        if may_have_spare(spec):
            spare = self._pool.replenish(spec)
            if spare is not None:  # one start at a time per warm-up thread; shutdown ends it
                spare.settled.wait(WARM_STEP_S)
            return
        if self._lists is None or self._lists.is_cached(spec):
            return
        try:
            self._lists.store(spec, self._list_once(spec, self._stop))
        except (GatewayError, RequestCancelled) as exc:
            log.info("Could not list the tools of server %r at start-up: %s", spec.name, exc)
