"""The gateway's own tools: list_servers, get_server_tools, execute_tool, get_gateway_status.

Each call takes one config snapshot at its start and uses it throughout, so the policy
check and the downstream call always see the same config. Every call is audited and
measured, whatever its outcome.

Over 400 lines for one class: the four tools and the checks they share (snapshot, policy,
rate limit, pins, argument and result limits); what stands apart is in tool_definitions.py,
answers.py, budget.py, call_record.py and relay.py.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from . import budget, pins, policy, search
from .answers import ENVELOPE_BYTES, estimate_tokens, fit_listing, object_result, within_budget
from .argument_check import ArgumentChecker
from .call_record import (
    OUTCOME_CANCELLED,
    OUTCOME_ERROR,
    OUTCOME_INTERNAL_ERROR,
    OUTCOME_INVALID_PARAMS,
    OUTCOME_OK,
    OUTCOME_TOOL_ERROR,
    CallRecord,
)
from .errors import (
    INTERNAL_ERROR_NAME,
    INVALID_PARAMS_NAME,
    DeniedByPolicy,
    DownstreamError,
    GatewayError,
    InternalError,
    InvalidArguments,
    InvalidParams,
    RequestCancelled,
    ServerUnavailable,
    ToolNotFound,
    cut,
)
from .framing import encode
from .jsonfile import quote
from .model import ServerSpec, Snapshot
from .ratelimit import RateLimiter
from .relay import DEFAULT_MAX_TIMEOUT_MS, CallClock, CallRelay, ClientLink
from .sendable import has_lone_surrogate, unsendable
from .tool_definitions import DEFINITIONS, input_schema

if TYPE_CHECKING:
    from .catalog import ToolCatalog
    from .metrics import Metrics
    from .slots import ServerSlots
    from .store import ConfigStore

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 60_000
MAX_TIMEOUT_MS = 86_400_000  # one day: a larger timeout_ms is a mistake, not a plan
class DownstreamCalls(Protocol):
    """What the tools need of downstream.Downstream."""

    def call_tool(self, spec: ServerSpec, tool: str, arguments: dict, timeout_s: float,
                  cancel: threading.Event | None = None, *, agent: str | None = None,
                  on_closed: Callable[[], None] | None = None) -> dict: ...

    def list_and_call_tool(self, spec: ServerSpec, tool: str, arguments: dict, timeout_s: float,
                           cancel: threading.Event | None = None, *, check: Callable[[list[dict]], None],
                           agent: str | None = None, on_closed: Callable[[], None] | None = None) -> dict: ...

    def status(self) -> dict: ...


class AuditSink(Protocol):
    def record(self, event: str, **fields: Any) -> None: ...


@dataclass(frozen=True)
class ToolSettings:
    debug: bool = False
    default_agent: str | None = None  # GATEWAY_DEFAULT_AGENT
    pinned_agent: str | None = None  # --agent / GATEWAY_AGENT
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_result_bytes: int | None = None  # no answer may be larger; a larger downstream result is refused
    max_result_tokens: int = budget.DEFAULT_MAX_RESULT_TOKENS  # GATEWAY_MAX_RESULT_TOKENS
    max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS  # GATEWAY_MAX_TIMEOUT_MS: no call runs longer


class GatewayTools:
    def __init__(self, store: ConfigStore, downstream: DownstreamCalls, catalog: ToolCatalog, slots: ServerSlots,
                 audit: AuditSink, metrics: Metrics, settings: ToolSettings,
                 status_extra: Callable[[], dict[str, Any]] = dict, pin_store: pins.PinStore | None = None,
                 limiter: RateLimiter | None = None):
        self._pins = pin_store  # None: no pinning
        self._store = store
        self._downstream = downstream
        self._catalog = catalog
        self._slots = slots
        self._audit = audit
        self._metrics = metrics
        self._settings = settings
        self._status_extra = status_extra
        self._limiter = limiter if limiter is not None else RateLimiter()
        self._handlers = {
            "list_servers": self._list_servers,
            "get_server_tools": self._get_server_tools,
            "execute_tool": self._execute_tool,
        }
        if settings.debug:
            self._handlers["get_gateway_status"] = self._get_gateway_status
        # A pinned gateway does not advertise agent_id (there is nothing to choose), but
        # still accepts it, so that a call naming another agent is refused by name.
        advertise_agent_id = settings.pinned_agent is None
        self._definitions = [
            {"name": name, "description": DEFINITIONS[name]["description"],
             "inputSchema": input_schema(DEFINITIONS[name], advertise_agent_id)}
            for name in self._handlers
        ]
        self._checkers = {name: ArgumentChecker(input_schema(DEFINITIONS[name])) for name in self._handlers}

    def definitions(self) -> list[dict[str, Any]]:
        return self._definitions

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event,
             caller: str | None = None, client: ClientLink | None = None) -> dict[str, Any]:
        """Run one gateway tool; `caller` is the agent the transport authenticated, if any."""
        handler = self._handlers.get(name)
        if handler is None:
            raise InvalidParams(f"Unknown tool {quote(name)}")
        record = CallRecord(name, arguments)
        snapshot = self._store.current()
        try:
            self._check_arguments(name, arguments)
            record.agent = policy.resolve_agent(
                snapshot.rules, arguments.get("agent_id"),
                default_agent=self._settings.default_agent, pinned=self._settings.pinned_agent,
                authenticated=caller,
            )
            self._limiter.take(record.agent, snapshot.rules.agents[record.agent].rate_limit)
            if name in ("execute_tool", "get_server_tools"):
                return self._within_limit(name, handler(snapshot, record, arguments, cancel, client))
            return self._within_limit(name, handler(snapshot, record, arguments, cancel))
        except InvalidParams:
            record.outcome, record.error_code = OUTCOME_INVALID_PARAMS, INVALID_PARAMS_NAME
            raise
        except GatewayError as exc:
            record.outcome, record.error_code = OUTCOME_ERROR, exc.code
            if record.agent is None:  # the identity itself was refused
                record.decision = "deny"
            return exc.to_result()
        except RequestCancelled:
            record.outcome = OUTCOME_CANCELLED
            raise
        except BaseException:
            record.outcome, record.error_code = OUTCOME_INTERNAL_ERROR, INTERNAL_ERROR_NAME
            raise
        finally:
            self._finish(record)

    def _finish(self, record: CallRecord) -> None:
        fields = record.audit_fields()
        self._audit.record("tool_call", **fields)
        failed = record.outcome not in (OUTCOME_OK, OUTCOME_TOOL_ERROR)
        self._metrics.observe(record.agent or "(unresolved)", record.tool, fields["duration_ms"], failed,
                              outcome=record.outcome)

    def _check_arguments(self, name: str, arguments: dict[str, Any]) -> None:
        problems = self._checkers[name].problems(arguments)
        if problems:
            raise InvalidParams(f"Invalid arguments for {name}: " + "; ".join(problems))
        # Checked here, not advertised in the schema: every character of tools/list costs every agent.
        if arguments.get("timeout_ms", 0) > MAX_TIMEOUT_MS:
            raise InvalidParams(f"Invalid arguments for {name}: $.timeout_ms: must be at most {MAX_TIMEOUT_MS} (one day)")

    def _within_limit(self, name: str, result: dict) -> dict:
        """`result`, if its answer fits the message limit; a downstream result that does not
        is a DOWNSTREAM_ERROR, anything else an internal error (never a line too long)."""
        limit = self._settings.max_result_bytes
        if limit is None:
            return result
        size = len(encode(result))
        if size + ENVELOPE_BYTES <= limit:
            return result
        if name == "execute_tool":
            raise DownstreamError(
                f"The tool returned {size} bytes, more than the gateway's limit of {limit} bytes; ask it for less",
                size=size, limit=limit,
            )
        raise InternalError(f"The answer of {name} would be {size} bytes, more than the message limit of {limit} bytes")

    # --- list_servers ----------------------------------------------------------------

    def _list_servers(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel: threading.Event) -> dict:
        servers = []
        for name, spec in sorted(snapshot.servers.servers.items()):
            if not policy.decide_server(snapshot.rules, record.agent, name).allowed:
                continue
            entry: dict[str, Any] = {"name": name, "description": spec.description}
            if arguments.get("include_metadata"):
                entry.update(spec.public_metadata())
            servers.append(entry)
        record.decision = "allow"
        return object_result({"servers": servers})

    # --- get_server_tools ------------------------------------------------------------

    def _get_server_tools(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel: threading.Event,
                          client: ClientLink | None = None) -> dict:
        pattern = arguments.get("pattern")
        if pattern is not None and not policy.is_valid_pattern(pattern):
            raise InvalidParams(policy.pattern_message(pattern))
        server = arguments.get("server")
        if isinstance(server, str):
            _refuse_unsendable_name("server", server)
        if search.is_search(arguments):
            return self._search_tools(snapshot, record, arguments, cancel, client)
        spec = self._allowed_server(snapshot, record, server)
        wanted = search.split_names(arguments.get("names"))
        permitted = self._visible_tools(snapshot, record, spec, self._timeout_s(spec, None), cancel, client)
        matched = [
            t for t in permitted
            if (wanted is None or t["name"] in wanted) and (pattern is None or policy.matches(pattern, t["name"]))
        ]
        listing = within_budget(matched, arguments.get("max_schema_tokens"))
        listing = {"server": server, **listing, "total_available": len(permitted)}
        return object_result(fit_listing(listing, self._settings.max_result_bytes))

    def _visible_tools(self, snapshot: Snapshot, record: CallRecord, spec: ServerSpec, timeout_s: float,
                       cancel, client: ClientLink | None = None) -> list[dict]:
        """The server's tools this agent may see: allowed by its rules and not held back by the pins.

        Listed with the client's capabilities declared (a server may list more to capable
        clients), held to the timeout: the progress-extended cap is execute_tool's.
        """
        deadline = time.monotonic() + timeout_s
        relay = self._relay(snapshot, record, spec, timeout_s, client, cap_s=timeout_s)
        try:
            # A listing that has to open a session takes a server slot, as a call does.
            tools = self._catalog.tools(spec, deadline, cancel, agent=record.agent,
                                        hold=lambda: self._slots.acquire(spec, deadline, cancel), relay=relay)
        finally:
            relay.end()
        blocked = self._pins.review(spec.name, tools, snapshot.rules.on_tool_change).blocked if self._pins else ()
        return [t for t in tools if t["name"] not in blocked
                and policy.decide_tool(snapshot.rules, record.agent, spec.name, t["name"]).allowed]

    def _search_tools(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel,
                      client: ClientLink | None = None) -> dict:
        server = arguments.get("server")
        if server not in (None, "*"):
            specs = [self._allowed_server(snapshot, record, server)]
        else:
            record.decision = "allow"
            specs = [spec for name, spec in sorted(snapshot.servers.servers.items())
                     if policy.decide_server(snapshot.rules, record.agent, name).allowed]
        deadline = time.monotonic() + self._settings.default_timeout_ms / 1000
        lists, unavailable = search.gather(
            specs, lambda spec, timeout_s: self._visible_tools(snapshot, record, spec, timeout_s, cancel, client),
            lambda spec: self._catalog.is_cached(spec, self._relay(snapshot, record, spec, 1, client).capability_key()),
            deadline,
        )
        answer = search.select(arguments, lists, estimate_tokens)
        if unavailable:
            answer["unavailable"] = unavailable
        return object_result(answer)

    # --- execute_tool ----------------------------------------------------------------

    def _execute_tool(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel: threading.Event,
                      client: ClientLink | None = None) -> dict:
        server, tool, args = arguments["server"], arguments["tool"], arguments["args"]
        # Before the policy check and any session: no server could read them.
        _refuse_unsendable_name("server", server)
        _refuse_unsendable_name("tool", tool)
        problem = unsendable(args)
        if problem is not None:
            raise InvalidArguments(f"Arguments for {quote(tool)} cannot be sent: {cut(problem, 300)}",
                                   problems=[cut(problem, 300)])
        decision = policy.decide_tool(snapshot.rules, record.agent, server, tool)
        record.decision, record.rule = ("allow" if decision.allowed else "deny"), decision.rule
        if not decision.allowed:
            raise DeniedByPolicy(
                f"Agent {record.agent!r} may not call tool {tool!r} on server {server!r}",
                rule=decision.rule,
            )
        spec = self._defined_server(snapshot, server)
        relay = self._relay(snapshot, record, spec, self._timeout_s(spec, arguments.get("timeout_ms")), client)
        timeout_s = relay.clock.timeout_s  # a timeout_ms above the cap is held to the cap
        deadline = time.monotonic() + timeout_s
        caps = relay.capability_key()
        definition = self._catalog.known(spec, tool, caps)
        pin_warnings: list[str] = []
        if definition is not None:
            # A cache hit: bad arguments are refused here, before any session is opened.
            pin_warnings.append(self._pin_warning(snapshot, spec, definition))
            self._check_downstream_arguments(spec, definition, args, deadline, cancel, caps)

        def check_listed(tools: list[dict]) -> None:
            # Runs inside the call's own session, between its tools/list and tools/call.
            listed = next((t for t in self._catalog.store(spec, tools, caps) if t.get("name") == tool), None)
            if listed is None:
                raise ToolNotFound(f"Server {server!r} has no tool {tool!r}", server=server, tool=tool)
            pin_warnings.append(self._pin_warning(snapshot, spec, listed, tools))
            self._check_downstream_arguments(spec, listed, args, deadline, cancel, caps)

        # The answer comes as soon as the result does, but the slot is given back only once
        # the session has closed: a server process still winding down counts against its
        # max_concurrency.
        release = self._slots.acquire(spec, deadline, cancel)
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            if definition is not None:
                result = self._downstream.call_tool(spec, tool, args, remaining, cancel,
                                                     agent=record.agent, on_closed=release, relay=relay)
            else:
                # The cache cannot vouch for the tool (empty, expired, or a tool it does not
                # know): list once and call in the same session, one server start-up.
                result = self._downstream.list_and_call_tool(spec, tool, args, remaining, cancel, check=check_listed,
                                                             agent=record.agent, on_closed=release, relay=relay)
        finally:
            relay.end()  # requests the downstream still waits on are withdrawn from the client
        self._check_result_size(result)
        result = self._fit_result(spec, arguments.get("max_result_tokens"), record, result)
        result = self._with_pin_warning(record, result, [w for w in pin_warnings if w])
        if result.get("isError"):
            record.outcome = OUTCOME_TOOL_ERROR
        return result

    def _pin_warning(self, snapshot: Snapshot, spec: ServerSpec, definition: dict,
                     listed: list[dict] | None = None) -> str | None:
        """Raises ToolChanged for a changed tool in block mode; its warning in warn mode."""
        if self._pins is None:
            return None
        if listed is not None:  # a fresh list: pins a first-seen server, reports its changes
            self._pins.review(spec.name, listed, snapshot.rules.on_tool_change)
        return self._pins.review_one(spec.name, definition, snapshot.rules.on_tool_change)

    @staticmethod
    def _with_pin_warning(record: CallRecord, result: dict, warnings: list[str]) -> dict:
        if not warnings:
            return result
        record.extra["tool_changed"] = warnings[-1]
        return {**result, "_meta": {**(result.get("_meta") or {}), pins.META_KEY: warnings[-1]}}

    def _fit_result(self, spec: ServerSpec, requested: int | None, record: CallRecord, result: dict) -> dict:
        cap = self._settings.max_result_bytes // budget.CHARS_PER_TOKEN if self._settings.max_result_bytes else None
        tokens = budget.resolve_tokens(requested, spec.max_result_tokens, self._settings.max_result_tokens, cap)
        fitted = budget.fit(result, tokens, cap)
        record.extra.update(result_chars=fitted.result_chars, returned_chars=fitted.returned_chars)
        return fitted.result

    def _check_result_size(self, result: dict) -> None:
        """A downstream result over the message limit is refused before it is fitted to a token budget."""
        limit = self._settings.max_result_bytes
        size = len(encode(result))
        if limit is not None and size + ENVELOPE_BYTES > limit:
            raise DownstreamError(
                f"The tool returned {size} bytes, more than the gateway's limit of {limit} bytes; ask it for less",
                size=size, limit=limit,
            )

    def _check_downstream_arguments(self, spec: ServerSpec, definition: dict, args: dict,
                                    deadline: float, cancel: threading.Event, caps: tuple[str, ...] = ()) -> None:
        checker = self._catalog.checker(spec, definition, caps)
        if checker is None:
            return
        name = definition["name"]
        try:
            problems = checker.problems(args, deadline=deadline, cancel=cancel, what=f"tool {name!r}")
        except (GatewayError, RequestCancelled):
            raise
        except Exception:  # an unresolvable $ref and the like: let the server judge
            logger.warning("Could not check arguments of %r on %r against its schema", name, spec.name)
            return
        if problems:
            raise InvalidArguments(
                f"Arguments do not match the inputSchema of {name!r}: " + "; ".join(problems),
                problems=problems,
            )

    # --- get_gateway_status ----------------------------------------------------------

    def _get_gateway_status(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel: threading.Event) -> dict:
        rules = snapshot.rules
        status = {
            "config_paths": {"mcp_config": snapshot.servers.path, "gateway_rules": rules.path},
            "policy_state": {
                "agent_ids": sorted(rules.agents),
                "defaults": {"deny_on_missing_agent": rules.deny_on_missing_agent},
                "default_agent": self._settings.default_agent,
                "pinned_agent": self._settings.pinned_agent,
            },
            "available_servers": sorted(snapshot.servers.servers),
            "warnings": list(snapshot.warnings),
            "metrics": self._metrics.snapshot(),
            "downstream": {**self._downstream.status(), "queued_calls": self._slots.waiting},
        }
        status.update(self._status_extra())
        return object_result(status)

    # --- shared ----------------------------------------------------------------------

    def _allowed_server(self, snapshot: Snapshot, record: CallRecord, server: str) -> ServerSpec:
        # The rules decide first, whether or not the server is defined: an agent learns
        # nothing about servers it may not use.
        decision = policy.decide_server(snapshot.rules, record.agent, server)
        record.decision, record.rule = ("allow" if decision.allowed else "deny"), decision.rule
        if not decision.allowed:
            raise DeniedByPolicy(f"Agent {record.agent!r} may not use server {server!r}", rule=decision.rule)
        return self._defined_server(snapshot, server)

    @staticmethod
    def _defined_server(snapshot: Snapshot, server: str) -> ServerSpec:
        spec = snapshot.servers.servers.get(server)
        if spec is None:
            raise ServerUnavailable(f"Server {server!r} is not defined in the gateway's .mcp.json", server=server)
        return spec

    def _relay(self, snapshot: Snapshot, record: CallRecord, spec: ServerSpec, timeout_s: float,
               client: ClientLink | None, cap_s: float | None = None) -> CallRelay:
        """What this call's downstream may send the client, and the call's clock."""
        clock = CallClock(timeout_s, self._settings.max_timeout_ms / 1000 if cap_s is None else cap_s)
        link = client or ClientLink(None, None, log_level=None)
        return CallRelay(link, clock, server=spec.name, agent=record.agent, rules=snapshot.rules, audit=self._audit,
                         current_rules=lambda: self._store.current().rules)

    def _timeout_s(self, spec: ServerSpec, requested_ms: int | None) -> float:
        return (requested_ms or spec.timeout_ms or self._settings.default_timeout_ms) / 1000


def _refuse_unsendable_name(key: str, value: str) -> None:
    if has_lone_surrogate(value):
        problem = f"$.{key}: contains a lone surrogate (\\ud800-\\udfff), which cannot be sent as UTF-8"
        raise InvalidArguments(f"The {key} name cannot be sent: {problem}", problems=[problem])
