"""Warm spare sessions: the pool that starts, hands out, replaces and closes them.

A spare (spare_session.py) is started, initialized and (when the tool cache needs it) has listed the server's
tools; then it waits for exactly one request, serves it, and closes like any per-call
session. Every call therefore still runs in a process no other call touched: a spare only
moves the server's start-up off the call's clock.

Bounds: at most one spare per server. A spare is closed after `idle_s` without use (and not
replaced until that server's next call), when its server's entry changes or goes away
(compared as the whole resolved ServerSpec, ${VAR} values included, so a spare never serves
a call under a config other than the one it was started for), at shutdown, and when its
process dies. A spare that fails to start or dies is replaced on the next call only, and
after the second failure in a row only once a growing backoff has passed: never a crash
loop. Failures are logged once per streak, shown in status, and never fail a call: the
call starts its own process as it would without spares.

The eager start after the handshake is spare_warmup.py's. Only stdio servers get spares: their session costs a process start-up, and a dead spare is
seen at once (its process exits). An HTTP session costs a connection, and one left waiting
could be expired by the server unseen.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, TextIO

from ..errors import ServerUnavailable
from ..model import ServerSpec
from .oauth import OAuthGate
from .spare_session import (CLOSED, FAILED, IDLE, STATE_TAKEN, STATE_WAITING, Spare, SpareGone, ToolLists,
                            may_have_spare)
from .spare_warmup import WARM_STEP_S, Warmup

__all__ = ["EAGER", "LAZY", "OFF", "STRATEGIES", "DEFAULT_IDLE_S", "WARM_STEP_S", "SpareGone", "SparePool",
           "SpareSettings", "ToolLists", "may_have_spare"]

log = logging.getLogger(__name__)

EAGER, LAZY, OFF = "eager", "lazy", "off"
STRATEGIES = (EAGER, LAZY, OFF)
DEFAULT_IDLE_S = 600.0
BACKOFF_BASE_S = 2.0  # the wait after a second failure in a row; doubled by each further one
BACKOFF_CAP_S = 300.0


@dataclass(frozen=True)
class SpareSettings:
    """GATEWAY_INIT_STRATEGY and GATEWAY_SPARE_IDLE_S; a bare Downstream keeps no spares."""

    strategy: str = OFF
    idle_s: float = DEFAULT_IDLE_S


def backoff_s(failures: int) -> float:
    """How long to wait before the next spare after `failures` failures in a row."""
    if failures <= 1:
        return 0.0  # one death is replaced on the next call
    return min(BACKOFF_BASE_S * 2 ** (failures - 2), BACKOFF_CAP_S)


class _Record:
    """One server's spare (if any) and its counters; guarded by the pool's lock."""

    spare: Spare | None = None
    served_by_spare: int = 0
    served_fresh: int = 0
    failures: int = 0  # spares in a row that failed to start or died before serving
    last_error: str | None = None
    backoff_s: float = 0.0
    retry_at: float = 0.0  # monotonic; no new spare before it
    idle_closed: bool = False
    fresh_in_flight: int = 0  # calls that took no spare and are not answered yet


class SparePool:
    """The spares of every server: taken by calls, replaced after use, closed when stale."""

    def __init__(self, settings: SpareSettings, errlog: TextIO, oauth: OAuthGate | None = None):
        self.settings = settings
        self._errlog = errlog
        self._oauth = oauth  # spares sign in as any session of their server would
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._alive: set[Spare] = set()  # every spare whose thread still runs
        self._lists: ToolLists | None = None
        self._warmups: list[Warmup] = []
        self._closed = False

    def use_tool_lists(self, lists: ToolLists) -> None:
        self._lists = lists

    # --- calls ---------------------------------------------------------------------

    def take(self, spec: ServerSpec) -> Spare | None:
        """The server's waiting spare if it was started for exactly `spec`; else None.

        Either way the call must be `answered`. A spare started for another spec (the entry
        or a ${VAR} value changed) is closed.
        """
        with self._lock:
            record = self._record(spec.name)
            spare, stale = record.spare, None
            if spare is not None and spare.spec != spec:
                record.spare, stale = None, spare
            elif spare is not None and spare.claim():
                record.spare = None
                return spare
            record.fresh_in_flight += 1  # none, changed, or still starting (it serves the next call)
        if stale is not None:
            stale.close("its config entry changed", CLOSED)
        return None

    def counted_fresh(self, spec: ServerSpec) -> None:
        with self._lock:
            self._record(spec.name).served_fresh += 1

    def answered(self, spec: ServerSpec, spare: Spare | None = None) -> None:
        """A call of the server has its answer; `spare` is the one it took, if any.

        A taken spare's successor is due now, unless it was already: the spare asks for it
        SUCCESSOR_DELAY_S after its call began (spare_session.py). The last answer of the
        calls that took no spare starts one too (`lazy`'s first call, a burst's end).
        """
        if spare is not None:
            spare.start_successor()  # once per spare: calls successor_due
            return
        with self._lock:
            record = self._record(spec.name)
            record.fresh_in_flight -= 1
            last = record.fresh_in_flight == 0
        if last:
            self.replenish(spec)

    def successor_due(self, spec: ServerSpec) -> None:
        """A taken spare's successor, unless calls of the server that took none are in flight.

        Those are a burst starting its own processes: on two cores a start-up beside them
        slows them down, and the last of them to be answered starts the spare instead
        (measured in tests/benchmark_spares.py: see README's Sessions).
        """
        with self._lock:
            if self._record(spec.name).fresh_in_flight > 0:
                return
        self.replenish(spec)

    def replenish(self, spec: ServerSpec) -> Spare | None:
        """Start the server's next spare in the background, unless one is there or may not be.

        Returns the spare now starting, if this call started one.
        """
        if self.settings.strategy == OFF or not may_have_spare(spec):
            return None
        with self._lock:
            if self._closed:
                return None
            record = self._record(spec.name)
            record.idle_closed = False  # a call came: an idle-closed server gets a spare again
            if record.spare is not None or time.monotonic() < record.retry_at:
                return None
            auth = self._oauth.session(spec) if self._oauth is not None else None
            spare = record.spare = Spare(self, spec, self._errlog, self._lists, self.settings.idle_s, auth)
            self._alive.add(spare)
            spare.thread.start()  # under the lock: shutdown never sees a thread it cannot join
        return spare

    # --- eager start, reload, shutdown ---------------------------------------------

    def warm(self, servers: Mapping[str, ServerSpec], list_once: Callable[[ServerSpec, threading.Event], list[dict]]) -> None:
        """Eager start: a spare for every server that may have one, and every tool list cached."""
        if self.settings.strategy != EAGER:
            return
        warmup = Warmup(self, list(servers.values()), self._lists, list_once)
        with self._lock:
            if self._closed:
                return
            self._warmups.append(warmup)
            warmup.start()

    def retire(self, servers: Mapping[str, ServerSpec]) -> None:
        """Close the spares of servers that changed or went away; eager: start their successors."""
        with self._lock:
            stale = [(name, r.spare) for name, r in self._records.items()
                     if r.spare is not None and servers.get(name) != r.spare.spec]
            for name, _ in stale:
                self._records[name].spare = None
            fresh = [spec for name, spec in servers.items() if name not in self._records]
        for name, spare in stale:
            reason = "its config entry was removed" if name not in servers else "its config entry changed"
            spare.close(reason, CLOSED)
        if self.settings.strategy == EAGER:
            for spec in [servers[name] for name, _ in stale if name in servers] + fresh:
                self.replenish(spec)

    def shutdown(self) -> list[Spare]:
        """Close every spare (failing a call one serves); returns them, for the caller to
        join and to escalate to SIGTERM and SIGKILL as for any session."""
        with self._lock:
            self._closed = True
            spares = list(self._alive)
            warmups = list(self._warmups)
            for record in self._records.values():
                record.spare = None
        for warmup in warmups:
            warmup.stop()
        for spare in spares:
            spare.close("the gateway is shutting down", CLOSED)
            spare.abort(ServerUnavailable(f"Server {spare.spec.name!r} was stopped: the gateway is shutting down"))
        return spares

    def join_warmups(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = [thread for warmup in self._warmups for thread in warmup.threads]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- what spares report ----------------------------------------------------------

    def serving(self, spare: Spare) -> None:
        with self._lock:
            record = self._record(spare.spec.name)
            record.served_by_spare += 1
            record.failures, record.last_error, record.backoff_s, record.retry_at = 0, None, 0.0, 0.0

    def ended(self, spare: Spare, outcome: str, error: str | None) -> None:
        """Called by the spare's thread as it ends."""
        with self._lock:
            self._alive.discard(spare)
            record = self._record(spare.spec.name)
            if record.spare is spare:
                record.spare = None
            if outcome == IDLE:
                record.idle_closed = True
            if outcome != FAILED:
                return
            record.failures += 1
            record.last_error = error
            record.backoff_s = backoff_s(record.failures)
            record.retry_at = time.monotonic() + record.backoff_s
            first = record.failures == 1
        # Once per streak: a server that keeps failing must not flood the log.
        (log.warning if first else log.debug)("A spare session of server %r failed: %s; calls start their own process",
                                              spare.spec.name, error)

    def status(self) -> dict[str, dict]:
        """Per server: whether a spare is ready, its process and RSS, calls served by spare vs fresh."""
        now = time.monotonic()
        with self._lock:
            items = [(name, record, record.spare) for name, record in sorted(self._records.items())]
            return {name: _status(record, spare, now) for name, record, spare in items}

    @property
    def serving_count(self) -> int:
        with self._lock:
            return sum(1 for spare in self._alive if spare.state == STATE_TAKEN)

    def _record(self, name: str) -> _Record:
        return self._records.setdefault(name, _Record())


def _status(record: _Record, spare: Spare | None, now: float) -> dict:
    ready = spare is not None and spare.state == STATE_WAITING
    if spare is not None:
        state = "ready" if ready else spare.state
    elif record.idle_closed:
        state = "idle-closed"
    elif record.retry_at > now:
        state = "backing-off"
    else:
        state = "none"
    pid = spare.pid if spare is not None else None
    return {
        "ready": ready,
        "state": state,
        "pid": pid,
        "rss_bytes": _rss_bytes(pid) if ready else None,
        "served_by_spare": record.served_by_spare,
        "served_fresh": record.served_fresh,
        "failures": record.failures,
        "last_error": record.last_error,
        "backoff_s": record.backoff_s,
        "retry_in_s": round(max(0.0, record.retry_at - now), 3),
    }


def _rss_bytes(pid: int | None) -> int | None:
    """Resident set size of a spare's process (Linux /proc); None where unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
