"""What a downstream server does during one execute_tool, relayed to the gateway's client.

Progress (under the client's own token), log messages (at the client's level, the server
named as logger), and the server's requests to the client (sampling, elicitation, roots)
when the client declared the capability and the agent's rules allow the kind: as requests
of the gateway, or, to a 2026-07-28 client (which has no server-to-client requests), as
`input_required` rounds of its execute_tool (`input_rounds.py`). A kept-alive server that
asks for roots outside any call gets the client's roots as last fetched (`client_roots.py`),
when the rules still allow it. Every relayed request is audited (method, server, agent,
outcome; never its content).

The call's clock lives here too: a progress notification restarts the timeout, time
spent waiting for the client's answer does not count, and an absolute cap counted from
the call's start ends the call whatever happens.

Sending is the endpoint's (`outgoing.Peer`); the downstream module calls this one
through plain methods and never learns what lies above.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import policy
from .errors import INVALID_REQUEST, METHOD_NOT_FOUND, RequestCancelled
from .input_rounds import RoundsFull
from .outgoing import PeerError, PeerTimeout

logger = logging.getLogger(__name__)

MODERN_VERSION = "2026-07-28"  # the stateless generation: no server-to-client requests
DEFAULT_MAX_TIMEOUT_MS = 600_000

# RFC 5424 severities, as MCP names them, least severe first.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
DEFAULT_LOG_LEVEL = "info"

# Method -> (rules kind, client capability, what the SDK answers a server whose client lacks it).
CLIENT_REQUESTS = {
    "sampling/createMessage": ("sampling", "sampling", "Sampling not supported"),
    "elicitation/create": ("elicitation", "elicitation", "Elicitation not supported"),
    "roots/list": ("roots", "roots", "List roots not supported"),
}


class RelayRefused(Exception):
    """The request is not relayed; the downstream gets this JSON-RPC error at once."""

    def __init__(self, code: int, message: str, data: Any = None, outcome: str = "refused"):
        super().__init__(message)
        self.code, self.message, self.data, self.outcome = code, message, data, outcome


@dataclass(frozen=True)
class ClientLink:
    """What one tools/call knows of its client: how to reach it and what it declared."""

    peer: Any  # outgoing.Peer, or None when nothing can be sent
    version: str | None
    capabilities: dict = field(default_factory=dict)
    log_level: str | None = DEFAULT_LOG_LEVEL  # None: the client wants no log messages
    progress_token: Any = None
    meta: dict = field(default_factory=dict)  # the rest of the client's _meta, for the downstream
    cancel: threading.Event | None = None
    inputs: Any = None  # input_rounds.RoundCall: a 2026-07-28 client's requests go into its rounds
    roots: Any = None  # client_roots.ClientRoots of this client connection: what it answered to roots/list

    @property
    def has_server_requests(self) -> bool:
        return self.version != MODERN_VERSION

    def now(self) -> "ClientLink | None":
        """The link of the client request this call answers now: itself, or for a call in
        rounds the retry waiting for it (None while parked: nothing can be sent)."""
        return self if self.inputs is None else self.inputs.attached()


class CallClock:
    """The deadline of one call: restarted by progress, paused while the client answers, capped."""

    def __init__(self, timeout_s: float, cap_s: float, clock=time.monotonic):
        self._clock = clock
        self._timeout_s = min(timeout_s, cap_s)
        now = clock()
        self._cap = now + cap_s
        self._deadline = now + self._timeout_s
        self._paused = 0  # how many waits for the client are under way
        self._paused_at = 0.0
        self._lock = threading.Lock()
        self._on_move: list[Callable[[], None]] = []  # the waits to wake when the deadline moves

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def restart(self) -> None:
        """Progress was reported: the timeout counts again from now (never past the cap)."""
        with self._lock:
            self._deadline = max(self._deadline, min(self._clock() + self._timeout_s, self._cap))
        self._moved()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """While inside, the timeout does not run (the cap does)."""
        with self._lock:
            if self._paused == 0:
                self._paused_at = self._clock()
            self._paused += 1
        self._moved()
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1
                if self._paused == 0:
                    self._deadline = min(self._deadline + self._clock() - self._paused_at, self._cap)
            self._moved()

    def on_move(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` whenever the deadline moves (restarted, paused, resumed); returns the undo."""
        with self._lock:
            self._on_move.append(wake)
        return lambda: self._forget(wake)

    def _forget(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._on_move:
                self._on_move.remove(wake)

    def _moved(self) -> None:
        with self._lock:
            wakes = list(self._on_move)
        for wake in wakes:
            wake()

    def remaining(self) -> float:
        """Seconds left; while paused, what is left until the cap."""
        with self._lock:
            now = self._clock()
            end = self._cap if self._paused else min(self._deadline, self._cap)
            return end - now

    def deadline(self) -> float:
        """The monotonic time the call ends at, as things stand now."""
        return time.monotonic() + self.remaining()

    def until_cap(self) -> float:
        return self._cap - self._clock()


class CallRelay:
    """The relay of one execute_tool: handed to `downstream` for that call."""

    def __init__(self, link: ClientLink, clock: CallClock, *, server: str, agent: str | None, rules: Any, audit: Any,
                 current_rules: Any = None):
        self.link = link
        self.clock = clock
        self.server = server
        self.agent = agent
        self._rules = rules
        self._current_rules = current_rules or (lambda: rules)  # the rules in force now (after reloads)
        self._audit = audit
        self._ended = threading.Event()

    def end(self) -> None:
        """The call is over: requests still waiting for the client are withdrawn."""
        self._ended.set()

    # --- what the downstream session declares -----------------------------------------

    def capabilities(self) -> dict[str, dict]:
        """The client capabilities the downstream session declares: those the client declared,
        the gateway can relay, and the agent may use."""
        # A 2026-07-28 client's capabilities are declared too, so the server behaves as it
        # would for that client; its requests are then refused with a clear error (see `ask`).
        declared = self.link.capabilities
        return {
            capability: dict(declared[capability]) if isinstance(declared[capability], dict) else {}
            for kind, capability, _ in CLIENT_REQUESTS.values()
            if capability in declared and policy.decide_client_request(self._rules, self.agent, kind).allowed
        }

    def capability_key(self) -> tuple[str, ...]:
        """The declared set as a hashable key (tool lists may depend on it)."""
        caps = self.capabilities()
        keys = list(caps)
        if "url" in caps.get("elicitation", {}):
            keys.append("elicitation.url")
        if "tools" in caps.get("sampling", {}):
            keys.append("sampling.tools")
        return tuple(sorted(keys))

    # --- notifications ----------------------------------------------------------------

    def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """A downstream progress notification: restart the timeout, relay under the client's token."""
        self.clock.restart()
        link = self.link.now()
        if link is None or link.progress_token is None or link.peer is None:
            return
        params: dict[str, Any] = {"progressToken": link.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        link.peer.notify("notifications/progress", params)

    def log(self, level: str, data: Any, logger_name: str | None = None) -> None:
        """A downstream log message, relayed when at or above the client's level."""
        link = self.link.now()
        wanted = link.log_level if link is not None else None
        if wanted is None or link.peer is None or level not in LOG_LEVELS:
            return
        if LOG_LEVELS.index(level) < LOG_LEVELS.index(wanted):
            return
        name = self.server if not logger_name else f"{self.server}/{logger_name}"
        link.peer.notify("notifications/message", {"level": level, "logger": name, "data": data})

    # --- requests -----------------------------------------------------------------------

    def ask(self, method: str, params: dict | None) -> dict:
        """Relay one downstream request to the client and return the client's result.

        Raises RelayRefused with the error the downstream should get.
        """
        outcome = "answered"
        try:
            answer = self._ask(method, params)
            if method == "roots/list" and self.link.roots is not None and self.link.has_server_requests:
                # Kept for this server's requests outside any call; only from a client that
                # tells of changes (a 2026-07-28 client has no session to tell them on).
                self.link.roots.remember(answer)
            return answer
        except RelayRefused as exc:
            outcome = exc.outcome
            raise
        finally:
            self._audit.record("client_request", method=method, server=self.server, agent=self.agent, outcome=outcome)

    def _ask(self, method: str, params: dict | None) -> dict:
        entry = CLIENT_REQUESTS.get(method)
        if entry is None:
            raise _refused("unknown_method", METHOD_NOT_FOUND, f"Method {method!r} not found")
        kind, capability, unsupported = entry
        if not self.link.has_server_requests and self.link.inputs is None:
            raise _refused("unsupported_version", INVALID_REQUEST,
                           f"{unsupported}: the gateway's client speaks {MODERN_VERSION}, which has no "
                           "server-to-client requests, and this request cannot become an input_required round")
        declared = self.link.capabilities.get(capability)
        if declared is None or (self.link.peer is None and self.link.inputs is None):
            raise _refused("not_declared", INVALID_REQUEST, unsupported)
        if method == "elicitation/create" and (params or {}).get("mode") == "url" and not (
                isinstance(declared, dict) and "url" in declared):
            raise _refused("not_declared", INVALID_REQUEST, "URL mode elicitation not supported")
        decision = policy.decide_client_request(self._rules, self.agent, kind)
        if not decision.allowed:
            raise _refused("denied", INVALID_REQUEST,
                           f"{unsupported}: agent {self.agent!r} may not use {kind} (rule {decision.rule})")
        with self.clock.paused():  # a person may be answering: the timeout waits, the cap does not
            try:
                waiting = _Either(self.link.cancel, self._ended)
                if self.link.inputs is not None:  # asked in the next input_required round
                    return self.link.inputs.ask(method, params, max(self.clock.until_cap(), 0.0), waiting)
                return self.link.peer.request(method, params, max(self.clock.until_cap(), 0.0), waiting)
            except RoundsFull:
                raise _refused("too_many_parked", INVALID_REQUEST,
                               f"{unsupported}: too many calls of this client already wait for its answers") from None
            except PeerError as exc:
                raise _refused("client_error", exc.code, exc.message, exc.data) from None
            except PeerTimeout:
                raise _refused("timeout", INVALID_REQUEST, "The client did not answer before the call's time ran out")
            except RequestCancelled:
                raise _refused("cancelled", INVALID_REQUEST, "The call ended before the client answered") from None

    def roots_outside_call(self) -> dict:
        """What this session's server gets for a roots/list sent outside any call: the roots
        this relay's client last gave, if the rules in force still let the agent relay roots
        to this server. Raises RelayRefused otherwise."""
        outcome = "answered_from_cache"
        try:
            rules = self._current_rules()
            decision = policy.decide_server(rules, self.agent, self.server)
            if decision.allowed:
                decision = policy.decide_client_request(rules, self.agent, "roots")
            if not decision.allowed:
                raise _refused("denied", INVALID_REQUEST,
                               f"List roots not supported: agent {self.agent!r} may not relay roots (rule {decision.rule})")
            roots = self.link.roots.last() if self.link.roots is not None else None
            if roots is None:
                raise _refused("no_roots", INVALID_REQUEST, "List roots not supported outside a call: the gateway "
                               "holds no roots of its client (none fetched yet, or they changed since)")
            return roots
        except RelayRefused as exc:
            outcome = exc.outcome
            raise
        finally:
            self._audit.record("client_request", method="roots/list", server=self.server, agent=self.agent,
                               outcome=outcome, outside_call=True)


def _refused(outcome: str, code: int, message: str, data: Any = None) -> RelayRefused:
    return RelayRefused(code, message, data, outcome)


class _Either:
    """Set when either event is: the client cancelled, or the call ended."""

    def __init__(self, first: threading.Event | None, second: threading.Event):
        self._events = [e for e in (first, second) if e is not None]

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)
