"""Sessions to downstream MCP servers: the façade the gateway tools call.

Two strategies, chosen per server by `ServerSpec.session`; callers never know which:
per-call (default, `per_call.py`, with a warm spare session per server from `spares.py`)
and kept-alive (`keep_alive.py`). The other modules:
`waiting.py` (a worker's bounded wait), `loop.py` (event loops and process groups; the
only asyncio/anyio importer), `sdk.py` (transports, the protocol-era probe, list/call
helpers), `sdk_relay.py` (the relay's SDK callbacks), `sdk_oauth.py` (the SDK's OAuth
providers) — the three the only importers of mcp, httpx2 and pydantic — and
`translate.py` (SDK failures → gateway errors).

A call may come with a relay (`gateway_lib.relay.CallRelay`, built by the tools): the
session then declares the client's capabilities, hands the server's progress, log
messages and requests to it, and the call's deadline is the relay's clock, which
progress restarts and a wait for the client pauses.

Nothing here imports asyncio or the SDK at module level: `import mcp` costs most of a
second, and the gateway must answer `initialize` before that (see `Downstream.preload`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable, Mapping, TextIO

from ..errors import RequestCancelled, ServerUnavailable
from ..model import KEEP_ALIVE, ServerSpec
from ..oauth_store import TokenStore
from . import sdk, waiting
from .keep_alive import KeptSessions
from .oauth import OAuthGate
from .opened import sessions_opened
from .per_call import PerCallSessions, Work
from .spares import WARM_STEP_S, SpareGone, SparePool, SpareSettings, ToolLists

log = logging.getLogger(__name__)


class Downstream:
    """Runs calls on per-call or kept-alive sessions and makes sure nothing outlives it."""

    def __init__(self, errlog: TextIO | None = None, spares: SpareSettings | None = None,
                 token_store: TokenStore | None = None):
        # stdio children write their stderr here; the SDK needs a real file descriptor.
        errlog = errlog if errlog is not None else sys.stderr
        # With a token store, http/sse servers that answer 401 are signed in to (oauth.py).
        oauth = OAuthGate(token_store) if token_store is not None else None
        self._per_call = PerCallSessions(errlog, oauth)
        self._kept = KeptSessions(errlog, oauth)
        self._spares = SparePool(spares or SpareSettings(), errlog, oauth)  # without settings: no spares
        self._lock = threading.Lock()
        self._preloader: threading.Thread | None = None

    def preload(self) -> None:
        """Import the SDK client in the background so the first call does not pay for it."""
        with self._lock:
            if self._preloader is None:
                self._preloader = threading.Thread(target=sdk.import_client, name="downstream-preload", daemon=True)
                self._preloader.start()

    @property
    def preloading(self) -> bool:
        """Whether the background import of the SDK is still running. Shutdown does not
        wait for it: a gateway closed before its first call need not finish an import
        (most of a second of CPU) that nothing will use; serve.py leaves it unfinished."""
        with self._lock:
            return self._preloader is not None and self._preloader.is_alive()

    def use_tool_lists(self, lists: ToolLists) -> None:
        """Spares list a server's tools into `lists` as they start, when it has no fresh list."""
        self._spares.use_tool_lists(lists)

    def warm(self, servers: Mapping[str, ServerSpec]) -> None:
        """The eager start: a spare per server that may have one, every tool list cached (background)."""
        self._spares.warm(servers, self._list_once)

    def list_tools(
        self, spec: ServerSpec, timeout_s: float, cancel: threading.Event | None = None, *, agent: str | None = None,
        relay: Any = None,
    ) -> list[dict]:
        return self._run(spec, "tools/list", sdk.list_all, timeout_s, cancel, agent=agent, relay=relay)

    def call_tool(
        self,
        spec: ServerSpec,
        tool: str,
        arguments: dict,
        timeout_s: float,
        cancel: threading.Event | None = None,
        *,
        agent: str | None = None,
        on_closed: Callable[[], None] | None = None,
        relay: Any = None,
    ) -> dict:
        """Call `tool` on a fresh session. The result comes back as soon as it arrives;
        the session closes afterwards, and `on_closed` (if given) is called exactly once
        when it has, on every path: the caller's hold on a server slot lasts until then."""

        async def work(session: Any) -> dict:
            return await sdk.send_call(session, tool, arguments, relay)

        return self._run(spec, "tools/call", work, timeout_s, cancel, agent=agent, on_closed=on_closed, relay=relay)

    def list_and_call_tool(
        self,
        spec: ServerSpec,
        tool: str,
        arguments: dict,
        timeout_s: float,
        cancel: threading.Event | None = None,
        *,
        check: Callable[[list[dict]], None],
        agent: str | None = None,
        on_closed: Callable[[], None] | None = None,
        relay: Any = None,
    ) -> dict:
        """List the server's tools, pass them to `check`, then call `tool`: one session.

        For a call the tool cache cannot vouch for (empty, expired, or not knowing the
        tool), this costs one server start-up where list_tools + call_tool would cost two.
        `check` runs on the session's thread between the two requests: it fills the cache
        and raises a GatewayError (no such tool, arguments that break the schema) to close
        the session without calling. `on_closed` is as for call_tool.
        """

        async def work(session: Any) -> dict:
            check(await sdk.list_all(session))
            return await sdk.send_call(session, tool, arguments, relay)

        return self._run(spec, "tools/call", work, timeout_s, cancel, agent=agent, on_closed=on_closed, relay=relay)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Close every session as the MCP spec says, all within `timeout_s`.

        Calls in flight fail at once. Each session closes its server's stdin (the SDK
        does that as the session closes); a third of the bound later, servers still
        running get SIGTERM (their group); at two thirds, SIGKILL (their group while the
        leader lives, and every recorded descendant); the rest of the bound is for the
        threads to end.
        """
        started = time.monotonic()
        owners: list[Any] = [*self._kept.shutdown(), *self._spares.shutdown(), *self._per_call.shutdown()]
        for escalate, at in ((_terminate, 1 / 3), (_kill, 2 / 3), (None, 1.0)):
            until = started + timeout_s * at
            for owner in owners:
                if owner.thread is not None:
                    owner.thread.join(max(0.0, until - time.monotonic()))
            owners = [owner for owner in owners if owner.thread is not None and owner.thread.is_alive()]
            if escalate is not None:
                for owner in owners:
                    escalate(owner)
        self._spares.join_warmups(max(0.0, started + timeout_s - time.monotonic()))
        if self.live_sessions:
            log.warning("%s downstream session(s) still cleaning up after shutdown", self.live_sessions)

    def retire(self, servers: Mapping[str, ServerSpec]) -> None:
        """Close every kept-alive session and spare whose server is gone from `servers` or changed."""
        self._kept.retire(servers)
        self._spares.retire(servers)

    def status(self) -> dict:
        """Per-call sessions in flight, every open kept-alive session, and the spares per server."""
        kept = sorted(self._kept.status(), key=lambda entry: (entry["server"], entry["agent"] or ""))
        return {"live_sessions": self.live_sessions, "sessions_opened": sessions_opened(), "kept_sessions": kept,
                "init_strategy": self._spares.settings.strategy, "spares": self._spares.status()}

    @property
    def live_sessions(self) -> int:
        return self._per_call.live + self._spares.serving_count

    def _run(
        self,
        spec: ServerSpec,
        method: str,
        work: Work,
        timeout_s: float,
        cancel: threading.Event | None,
        agent: str | None = None,
        on_closed: Callable[[], None] | None = None,
        relay: Any = None,
    ) -> Any:
        deadline: float | waiting.MovingDeadline = time.monotonic() + timeout_s
        if relay is not None:
            deadline = relay.clock  # moves with progress and with waits for the client
        if spec.session == KEEP_ALIVE:
            # A kept session outlives the call, so `on_closed` fires when the call ends.
            try:
                _check_startable(spec, cancel)
                return self._kept.run(spec, agent, method, work, deadline, timeout_s, cancel, relay)
            finally:
                if on_closed is not None:
                    on_closed()
        try:
            _check_startable(spec, cancel)
        except BaseException:
            if on_closed is not None:
                on_closed()  # no session was started, so it is closed now
            raise
        # A spare was opened before its call, declaring no client capabilities: it serves
        # only calls whose client has none to declare (the others do not count in its pool).
        pooled = relay is None or not relay.capability_key()
        spare = self._spares.take(spec) if pooled else None  # counts the call in flight
        try:
            if spare is not None:
                try:
                    return spare.serve(method, work, deadline, timeout_s, cancel, on_closed)
                except SpareGone:
                    pass  # it ended before the call reached it: a fresh session takes the call
            if pooled:
                self._spares.counted_fresh(spec)
            return self._per_call.run(spec, method, work, deadline, timeout_s, cancel, on_closed, relay)
        finally:
            if pooled:
                self._spares.answered(spec, spare)  # a taken spare's successor starts, if it has not yet

    def _list_once(self, spec: ServerSpec, stop: threading.Event) -> list[dict]:
        """The tool list on one transient per-call session, whatever the server's strategy."""
        deadline = time.monotonic() + WARM_STEP_S
        return self._per_call.run(spec, "tools/list", sdk.list_all, deadline, WARM_STEP_S, stop, None)


def _terminate(owner: Any) -> None:
    owner.terminate_processes()


def _kill(owner: Any) -> None:
    owner.kill_processes()


def _check_startable(spec: ServerSpec, cancel: threading.Event | None) -> None:
    if spec.unusable:
        raise ServerUnavailable(spec.unusable)
    if cancel is not None and cancel.is_set():
        raise RequestCancelled()
